"""The one send function shared by the three tier actors.

Steps, each an idempotent state transition so a redelivered job never sends twice:

1. claim the row (``queued`` → ``sending``); a row already sent, failed or cancelled is left alone;
2. build the provider client for the message's connection (its credentials decrypted once per connection
   settings: clients are cached) and call it once;
3. journal the provider's id in Redis (:mod:`libs.sending.journal`), then record it (``sending`` → ``sent``)
   and apply statuses that arrived early.

A message the customer-service window no longer allows (:mod:`libs.rules.window`) or that Meta refuses under
one of its rules (``RuleRefusedError``) ends ``failed`` with the rule as ``failure_reason`` and the job
finishes: a rule is not a fault (no dead letter, no Sentry event, no alert). Other failures are raised as
``libs.errors`` types for the retry middleware. A failure after which the provider
may have accepted the message (timeout, connection dropped mid-request) keeps the row in ``sending``: the
next attempt waits ``reconcile_seconds`` for a status webhook to reconcile it before sending again. A record
that failed after the provider answered (Postgres stalled, reset, failed over) also keeps the row in
``sending``, but its provider id is journaled: the next attempt records it and never sends again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import redis
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from libs import contracts
from libs.batching import Coalescer
from libs.campaigns.lanes import Lanes
from libs.errors import (
    ConnectionClosed,
    ConnectionNeedsAttentionError,
    Defer,
    DependencyUnavailableError,
    HoldExpiredError,
    PairRateLimited,
    PermanentError,
    ProviderError,
    ProviderRateLimited,
    RecordNotFoundError,
    RuleRefusedError,
)
from libs.messages.status_store import record_failed_async, record_sent_async, record_sent_many_async
from libs.providers import (
    BaileysBridgeClient,
    MetaCloudClient,
    OutboundContent,
    OutboundMessage,
    OutboundTemplate,
    OutboundText,
    Provider,
)
from libs.rules import window
from libs.rules.reasons import OUTSIDE_SERVICE_WINDOW
from libs.secrets import Secrets
from libs.sending import media_ref, store
from libs.sending.holds import CAMPAIGN, CONNECTION, Holds, hold_name
from libs.sending.holds import send_job as holds_send_job
from libs.sending.journal import Journal
from libs.sending.media_ref import MediaResolver
from libs.sending.metrics import ProviderMetrics
from libs.sending.throttle import Throttle
from libs.tracing import annotate, enabled, fail, hashed_key, recorded_traceparent, span

logger = logging.getLogger(__name__)

#: How long an ambiguous attempt waits for a status webhook before the message is sent again.
DEFAULT_RECONCILE_SECONDS = 30
#: Longest a send waits on a hold (inactive connection, paused campaign) by default: ``hold_max_age_seconds``.
DEFAULT_HOLD_MAX_AGE_S = 86_400
#: How often a message whose send is in flight or unconfirmed is looked at again.
RECHECK_S = 3.0
#: Gate order per tier: urgent first.
TIER_ORDER = {"urgent": 0, "normal": 10, "low": 20}


@dataclass
class SenderContext:
    """Per-process resources of the sender, created on the worker's event loop."""

    pool: AsyncConnectionPool
    #: The process's one provider HTTP client (``libs.providers.transport.provider_http_client``).
    http: httpx.AsyncClient
    throttle: Throttle
    graph_url: str
    api_version: str
    #: Decrypts the connections' stored credentials (``ZAPQ_SECRETS_KEYS``).
    secrets: Secrets
    #: The HTTP client for Baileys bridges, whose addresses customers choose: in ``prod`` every connection it
    #: opens goes through the outbound address guard (DNS rebinding included). ``None``: ``http``.
    bridge_http: httpx.AsyncClient | None = None
    reconcile_seconds: int = DEFAULT_RECONCILE_SECONDS
    metrics: ProviderMetrics = field(default_factory=ProviderMetrics)
    #: Where low-tier sends of a paused campaign are parked (None: they are held like other sends).
    lanes: Lanes | None = None
    #: Longest a held send waits (from its queue time); past it the message fails with the hold as reason.
    hold_max_age_s: int = DEFAULT_HOLD_MAX_AGE_S
    #: Turns a zapq media id (``med_…``) of a media send into the provider's (``libs.sending.media_ref``).
    media: MediaResolver | None = None
    #: Claims and records of the sends in flight, each batch in one statement (see ``libs.batching``).
    claims: Coalescer[int, store.Claimed | None] = field(init=False)
    #: (message id, provider id, the send's traceparent or None).
    records: Coalescer[tuple[int, str, str | None], None] = field(init=False)
    #: Provider clients by connection settings: built once, not per send.
    providers: dict[tuple[Any, ...], Provider] = field(init=False, default_factory=dict)
    #: Provider ids of accepted sends until their record commits (default: in the throttle's Redis).
    journal: Journal = field(default=None)  # type: ignore[assignment]
    #: Sends parked while their connection is inactive or their campaign paused (in the throttle's Redis).
    holds: Holds = field(init=False)

    def __post_init__(self) -> None:
        self.claims = Coalescer(lambda ids: store.claim_many(self.pool, ids, self.reconcile_seconds))
        self.records = Coalescer(lambda sent: record_sent_batch(self.pool, sent))
        if self.journal is None:
            self.journal = Journal(self.throttle.client, self.throttle.namespace)
        self.holds = Holds(self.throttle.namespace)


async def record_sent_batch(
    pool: AsyncConnectionPool, sent: list[tuple[int, str, str | None]]
) -> Sequence[BaseException | None]:
    """Record accepted sends in one transaction; if that fails, one by one, so a conflict (a deadlock with an
    ingest transaction) or a bad row costs only itself and an outage fails each caller with its own error."""
    try:
        await record_sent_many_async(pool, sent)
        return [None] * len(sent)
    except psycopg.Error:
        if len(sent) == 1:
            raise
    return await asyncio.gather(*(record_sent_async(pool, *one) for one in sent), return_exceptions=True)


#: The claimed row's columns a provider client is built from.
PROVIDER_SETTINGS = (
    "connection_id",
    "provider",
    "phone_number_id",
    "access_token",
    "bridge_url",
    "bridge_instance",
    "bridge_api_key",
)


#: Provider clients kept per process; past this many distinct connection settings the cache starts over.
MAX_CACHED_PROVIDERS = 10_000


def build_provider(ctx: SenderContext, row: store.Claimed) -> Provider:
    """The client for the claimed message's connection (cached by its settings — the encrypted credentials
    among them — so they are decrypted once, and a changed token or bridge address gets a new client).

    Raises :class:`libs.secrets.CannotDecryptError` when the key of a stored credential is not configured (the
    send is retried, then dead-lettered under that name; replay it once the key is back)."""
    key = tuple(row[name] for name in PROVIDER_SETTINGS)
    provider = ctx.providers.get(key)
    if provider is None:
        if len(ctx.providers) >= MAX_CACHED_PROVIDERS:
            ctx.providers.clear()
        provider = ctx.providers[key] = _new_provider(ctx, row)
    return provider


def _new_provider(ctx: SenderContext, row: store.Claimed) -> Provider:
    if row["provider"] == "meta":
        return MetaCloudClient(
            ctx.http,
            graph_url=ctx.graph_url,
            api_version=ctx.api_version,
            phone_number_id=row["phone_number_id"] or "",
            access_token=ctx.secrets.decrypt_optional(row["access_token"]) or "",
        )
    return BaileysBridgeClient(
        ctx.bridge_http or ctx.http,
        base_url=row["bridge_url"] or "",
        instance=row["bridge_instance"] or "",
        api_key=ctx.secrets.decrypt_optional(row["bridge_api_key"]) or "",
    )


def build_outbound(row: store.Claimed) -> OutboundMessage:
    """The provider-neutral message for a claimed row (:mod:`libs.messages.kinds`: text is the plain path)."""
    payload: dict[str, Any] = row["payload"] or {}
    client_ref = str(row["id"])
    kind = row["type"]
    if kind == "template":
        return OutboundTemplate(
            to=row["recipient"],
            name=payload["template"]["name"],
            language=payload["template"].get("language", "en_US"),
            components=payload["template"].get("components", []),
            client_ref=client_ref,
            reply_to=payload.get("reply_to"),
        )
    if kind != "text" and kind in payload:
        return OutboundContent(
            to=row["recipient"],
            kind=kind,
            content=payload[kind],
            reply_to=payload.get("reply_to"),
            client_ref=client_ref,
            target_from_me=bool(payload.get("reaction_from_me")),
        )
    return OutboundText(
        to=row["recipient"], body=row["body"] or "", reply_to=payload.get("reply_to"), client_ref=client_ref
    )


def _ambiguous(exc: BaseException) -> bool:
    """True when the provider may have accepted the request although we saw an error."""
    return isinstance(exc, ProviderError) and exc.maybe_delivered


async def _not_claimed(ctx: SenderContext, message_id: int) -> None:
    state = await store.inspect(ctx.pool, message_id)
    if state is None:
        raise RecordNotFoundError(f"message {message_id} does not exist")
    if state["direction"] != "out":
        raise RecordNotFoundError(f"message {message_id} is not outbound")
    if state["external_id"] is not None or state["status"] in (
        "sent",
        "delivered",
        "read",
        "played",
        "failed",
        "cancelled",
    ):
        return  # already done: a redelivered job
    if state["campaign_status"] == "cancelled":
        await store.execute(ctx.pool, store.CANCEL, {"id": message_id})
        return
    if state["campaign_status"] == "paused":
        if ctx.lanes is not None and state["priority"] == "low":
            await _park(ctx, ctx.lanes, message_id, state)
            return
        await _hold(ctx, message_id, state, hold_name(CAMPAIGN, state["campaign_id"]), "campaign paused")
        return
    if state["connection_status"] == "needs_attention":
        raise ConnectionNeedsAttentionError("the connection needs attention", provider="zapq")
    if state["connection_status"] is None:
        raise RecordNotFoundError(f"the connection of message {message_id} no longer exists")
    if state["connection_status"] != "active":
        reason = f" ({state['connection_reason']})" if state["connection_reason"] else ""
        hold = hold_name(CONNECTION, state["connection_id"])
        await _hold(ctx, message_id, state, hold, f"connection {state['connection_id']} inactive{reason}")
        return
    if state["status"] == "sending":
        # The provider accepted it but its record failed: record the journaled answer now.
        if await _recorded_from_journal(ctx, message_id, lookup_fails_quietly=True) is not None:
            return
        # Another delivery of this job may still be sending it, or an attempt ended ambiguously: look again
        # soon; past the reconcile window the claim succeeds and the message is sent again.
        wait_s = min(RECHECK_S, max(0.5, ctx.reconcile_seconds - float(state["sending_for_s"] or 0)))
        raise Defer(int(wait_s * 1000), "the message is being sent or its last attempt is unconfirmed")
    raise RecordNotFoundError(f"message {message_id} is in state {state['status']}")


async def _hold(ctx: SenderContext, message_id: int, state: dict[str, Any], hold: str, reason: str) -> None:
    """Park the send under ``hold`` until it ends (:mod:`libs.sending.holds`) — no deferral loop, no defer
    budget — or fail it when it has waited longer than ``hold_max_age_s`` already."""
    if float(state["age_s"]) > ctx.hold_max_age_s:
        title = f"HoldExpiredError: held longer than {ctx.hold_max_age_s} s: {reason}"
        await record_failed_async(ctx.pool, message_id, code=None, title=title[:500])
        raise HoldExpiredError(f"message {message_id} held longer than {ctx.hold_max_age_s} s: {reason}")
    deadline = float(state["queued_epoch"]) + ctx.hold_max_age_s
    job = holds_send_job(message_id, state["priority"])
    await ctx.holds.park_async(ctx.throttle.client, hold, job, company_id=int(state["company_id"]), deadline=deadline)
    logger.info("message %s held: %s", message_id, reason)


async def _park(ctx: SenderContext, lanes: Lanes, message_id: int, state: dict[str, Any]) -> None:
    """Park the send of a paused campaign until resume (no deferral loop, no defer budget spent).

    If the campaign was resumed or cancelled while parking, unpark it here: its own unpark may have run
    before this send was parked.
    """
    campaign_id = int(state["campaign_id"])
    message = contracts.SEND_LOW.message(contracts.SendMessage(message_id))
    await lanes.park_async(ctx.throttle.client, campaign_id, int(state["company_id"]), message)
    now = await store.inspect(ctx.pool, message_id)
    if now is None or now["campaign_status"] != "paused":
        await lanes.unpark_async(ctx.throttle.client, campaign_id)


async def send_message(
    ctx: SenderContext, message_id: int, *, final_attempt: bool, trace: str | None = None
) -> str | None:
    """Send message ``message_id`` at most once; a Postgres outage is a deferral, not a spent attempt.

    ``trace``: the job's ``traceparent``; the send is a ``message.send`` span of that trace (tracing on)."""
    with span("message.send", parent=trace, ids={"zapq.message": message_id}):
        try:
            return await _send_message(ctx, message_id, final_attempt=final_attempt)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise DependencyUnavailableError(f"database unavailable: {type(exc).__name__}") from exc


def _trace_provider(
    provider: str, row: Any, throttled_s: float, took_s: float, status: int | None, error_code: int | None = None
) -> None:
    """The throttle's answer time and the provider call's outcome on the send's span (nothing while tracing is
    off)."""
    if enabled():
        annotate(
            **{
                "zapq.provider": provider,
                "zapq.connection": hashed_key(row["connection_id"]),
                "zapq.throttle.ms": int(throttled_s * 1000),
                "zapq.provider.ms": int(took_s * 1000),
                "http.response.status_code": status,
                "zapq.provider.error_code": error_code,
            }
        )


async def _send_message(ctx: SenderContext, message_id: int, *, final_attempt: bool) -> str | None:
    """Send message ``message_id`` at most once; returns the provider id, or None if nothing was sent."""
    row = await ctx.claims(message_id)
    if row is None:
        await _not_claimed(ctx, message_id)
        return None
    pair_hits = 0
    # An earlier attempt may have been accepted and its record lost: never send twice. (On any failure here
    # the row stays ``sending``: whether the provider has it is not known, so only the journal may settle it.)
    if row["attempts"] > 1 and (journaled := await _recorded_from_journal(ctx, message_id)) is not None:
        return journaled
    if row["window_open"] is False:  # queued inside the window, reached us after it closed: Meta would refuse
        await _refuse(ctx, row, OUTSIDE_SERVICE_WINDOW, window.describe(row["window_closes_at"]))
        return None
    try:
        provider = build_provider(ctx, row)  # may refuse the connection's settings: release the claim too
        asked = time.monotonic()
        pair_hits = await ctx.throttle.acquire(
            row["connection_id"], row["recipient"], row["rate_per_second"], TIER_ORDER.get(row["priority"], 10)
        )
        # Attributes of the job's span, not spans of their own (one span per send): the acquire is one Redis call
        # (a wait is a deferral: a new job and span), the provider call's outcome and duration.
        started = time.monotonic()
        throttled = started - asked
        try:
            outbound = build_outbound(row)
            if not isinstance(outbound, OutboundText):  # media ids resolved per connection (text: nothing)
                outbound = await media_ref.resolve_outbound(outbound, row, resolver=ctx.media)
            result = await provider.send(outbound, pair_hits=pair_hits)
        except ProviderError as exc:
            took = time.monotonic() - started
            code = exc.code if exc.code is not None else exc.http_status
            ctx.metrics.observe(provider.name, took, str(code or "network"))
            _trace_provider(provider.name, row, throttled, took, exc.http_status, exc.code)
            fail(type(exc).__name__)
            raise
        took = time.monotonic() - started
        ctx.metrics.observe(provider.name, took)
        _trace_provider(provider.name, row, throttled, took, 200)
    except ConnectionClosed as exc:  # the session dropped: not this message's fault, hold it
        await store.execute(ctx.pool, store.RELEASE_DEFERRED, {"id": message_id})
        reason = f"{exc.provider} reported the session closed: {exc}"[:500]
        await store.execute(ctx.pool, store.CONNECTION_CLOSED, {"id": row["connection_id"], "reason": reason})
        state = await store.inspect(ctx.pool, message_id)
        if state is not None:  # held as any send of an inactive connection (released at once if it reopened)
            await _hold(ctx, message_id, state, hold_name(CONNECTION, row["connection_id"]), reason)
        return None
    except (Defer, ProviderRateLimited) as exc:
        wait = exc.code if isinstance(exc, ProviderRateLimited) and exc.code is not None else "local"
        ctx.metrics.outcome(row["company_id"], row["connection_id"], "throttled", wait)
        if isinstance(exc, PairRateLimited):
            await ctx.throttle.pair_refused(row["connection_id"], row["recipient"], pair_hits, exc.delay_ms)
        await store.execute(ctx.pool, store.RELEASE_DEFERRED, {"id": message_id})
        raise
    except RuleRefusedError as exc:  # a rule, not a fault: the message fails with it, the job is done
        ctx.metrics.outcome(row["company_id"], row["connection_id"], "failed", _code(exc))
        await _refuse(ctx, row, exc.reason, f"{type(exc).__name__}: {exc}", code=exc.code)
        return None
    except PermanentError as exc:
        ctx.metrics.outcome(row["company_id"], row["connection_id"], "failed", _code(exc))
        await _fail(ctx, row, exc)
        raise
    except Exception as exc:
        ctx.metrics.outcome(row["company_id"], row["connection_id"], "failed", _code(exc))
        if final_attempt:
            await _fail(ctx, row, exc)
        elif not _ambiguous(exc):
            await store.execute(ctx.pool, store.RELEASE, {"id": message_id})
        raise
    ctx.metrics.outcome(row["company_id"], row["connection_id"], "sent")
    await _record(ctx, message_id, result.external_id)
    if pair_hits:
        await ctx.throttle.pair_accepted(row["connection_id"], row["recipient"])
    return result.external_id


def _code(exc: BaseException) -> str:
    """A failed attempt's code for the metrics: the provider's, ``http_<status>``, or ``network``."""
    if isinstance(exc, ProviderError):
        if exc.code is not None:
            return str(exc.code)
        if exc.http_status is not None:
            return f"http_{exc.http_status}"
    return "network"


async def _record(ctx: SenderContext, message_id: int, provider_id: str) -> None:
    """Journal the provider's answer, record it, then drop the journal entry (kept if the record fails)."""
    await ctx.journal.write(message_id, provider_id)
    # with the send's trace context when traced: the row keeps it for its status webhooks and the "sent" event
    await ctx.records((message_id, provider_id, recorded_traceparent()))
    await ctx.journal.forget(message_id)


async def _recorded_from_journal(
    ctx: SenderContext, message_id: int, *, lookup_fails_quietly: bool = False
) -> str | None:
    """Record the journaled provider id of ``message_id`` if an earlier attempt left one; that id, or None.

    A journal that cannot be read means "unknown": the attempt is deferred (nothing is sent blind), unless
    ``lookup_fails_quietly`` (the caller defers anyway).
    """
    try:
        provider_id = await ctx.journal.read(message_id)
    except redis.RedisError as exc:
        if lookup_fails_quietly:
            return None
        raise DependencyUnavailableError(f"send journal unavailable: {type(exc).__name__}") from exc
    if provider_id is None:
        return None
    logger.info("message %s was accepted by the provider before its record failed: recording it", message_id)
    await ctx.records((message_id, provider_id, recorded_traceparent()))
    await ctx.journal.forget(message_id)
    return provider_id


async def _refuse(ctx: SenderContext, row: store.Claimed, reason: str, title: str, *, code: int | None = None) -> None:
    """End the message ``failed`` with the WhatsApp rule it broke (:mod:`libs.rules.reasons`). The job then
    finishes: no dead letter, no Sentry event, nothing toward the dead-letter alert (counted per reason)."""
    await record_failed_async(ctx.pool, row["id"], code=code, title=f"{reason}: {title}"[:500], reason=reason)
    logger.info("message %s failed by a WhatsApp rule: %s", row["id"], reason)


async def _fail(ctx: SenderContext, row: store.Claimed, exc: BaseException) -> None:
    code = exc.code if isinstance(exc, ProviderError) else None
    await record_failed_async(ctx.pool, row["id"], code=code, title=f"{type(exc).__name__}: {exc}"[:500])
    if isinstance(exc, ConnectionNeedsAttentionError):
        await store.execute(
            ctx.pool,
            store.CONNECTION_NEEDS_ATTENTION,
            {"id": row["connection_id"], "reason": f"{type(exc).__name__} (code {code})"},
        )
