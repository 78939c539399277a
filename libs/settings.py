"""zapq's settings: read once from ``ZAPQ_*`` environment variables into one frozen, validated object.

Only this module reads the environment. Every process calls :func:`load_settings` once at start-up and
passes the object (or parts of it) down.

``dev`` and ``test`` have explicit defaults for every secret (listed in ``DEV_DEFAULTS``) so that a fresh
checkout runs the demo without configuration; ``prod`` refuses to start while any secret is missing or
still a placeholder, naming the variable.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.secrets import DEV_SECRETS_KEY, InvalidSecretsKeyError, parse_keys

Environment = Literal["dev", "test", "prod"]
#: What the provider client's HTTP runs on (``libs/providers/transport.py``): zapq's own HTTP/1.1 transport, or a
#: maintained one — httpx over aiohttp (``httpx-aiohttp``), httpx's default (httpcore). See the README's figures.
HttpTransport = Literal["lean", "aiohttp", "httpx"]

#: Secrets that must be set to a real value in ``prod``; their dev/test defaults are documented here.
DEV_DEFAULTS: dict[str, str] = {
    "meta_app_secret": "dev-meta-app-secret",
    "meta_verify_token": "dev-verify-token",
    "baileys_webhook_secret": "dev-baileys-secret",
    "api_token": "dev-api-token",
    "secrets_keys": DEV_SECRETS_KEY,
}
#: Secrets ``prod`` accepts empty: the global Baileys secret is a migration path (``/webhooks/baileys`` answers
#: 401 while it is unset; each connection has its own secret and URL). When set, it must still be real.
OPTIONAL_IN_PROD = frozenset({"baileys_webhook_secret"})

#: Values that are never acceptable as a production secret.
PLACEHOLDERS = frozenset({"", "changeme", "change-me", "secret", "placeholder", "xxx", "todo", "replace-me"})


#: Seconds per unit of a schedule entry.
SCHEDULE_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"5s,5m,30m"`` → ``(5.0, 300.0, 1800.0)``; ``ValueError`` naming a bad entry."""
    delays: list[float] = []
    for entry in (e.strip() for e in text.split(",")):
        number = entry.rstrip("smhd")
        unit = entry[len(number) :] or "s"
        try:
            value = float(number) * SCHEDULE_UNITS[unit]
        except (KeyError, ValueError):
            raise ValueError(f"bad retry delay {entry!r}: use a number with ms, s, m, h or d") from None
        if value < 0:
            raise ValueError(f"bad retry delay {entry!r}: negative")
        delays.append(value)
    if not delays:
        raise ValueError("the retry schedule is empty")
    return tuple(delays)


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """``"10.0.0.1:26379,sentinel-2:26379"`` → ``[("10.0.0.1", 26379), ("sentinel-2", 26379)]``; ``ValueError``
    naming a bad entry."""
    addresses: list[tuple[str, int]] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad sentinel address {entry!r}: use host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


class SettingsError(RuntimeError):
    """The environment does not describe a valid configuration; the message names the variable."""


class Settings(BaseSettings):
    """Every knob of a zapq process. Field ``x`` is read from ``ZAPQ_X``."""

    model_config = SettingsConfigDict(env_prefix="ZAPQ_", frozen=True, extra="ignore")

    env: Environment = "dev"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Prefix of every Redis key zapq and Dramatiq write (tests use one namespace per session).
    redis_namespace: str = "dramatiq"
    #: Redis Sentinel set (``host:port,host:port,...``); when set, zapq connects to the primary of
    #: ``redis_sentinel_master`` the sentinels name and follows it across failovers (``libs/redis_clients.py``);
    #: ``redis_url`` then gives only the database number and the data nodes' credentials.
    redis_sentinels: str = ""
    redis_sentinel_master: str = "zapq"
    #: Password of the sentinels themselves (``requirepass`` in sentinel.conf), if any.
    redis_sentinel_password: str = ""
    #: Password of the Redis data nodes; overrides one in ``redis_url``.
    redis_password: str = ""
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/zapq"
    database_pool_size: int = Field(default=10, ge=1, le=200)

    meta_app_secret: str = ""
    meta_verify_token: str = ""
    meta_graph_url: str = "https://graph.facebook.com"
    meta_api_version: str = "v21.0"
    baileys_webhook_secret: str = ""
    #: Header the Baileys bridge (Evolution API ``webhook.headers``) sends the shared secret in.
    baileys_secret_header: str = "x-zapq-secret"
    api_token: str = ""
    #: Where the operations API answers, for clients such as ``zapq campaign`` (``uvicorn services.api.app``).
    api_url: str = "http://127.0.0.1:8080"
    #: Keys credentials are encrypted with at rest (:mod:`libs.secrets`): comma-separated Fernet keys, newest
    #: first; the first encrypts, every one decrypts. Required in ``prod``.
    secrets_keys: str = ""
    sentry_dsn: str = ""
    #: OTLP/HTTP traces endpoint (e.g. ``http://otel-collector:4318/v1/traces``); empty: tracing off, at no cost.
    otel_endpoint: str = ""
    #: Share of messages traced while tracing is on (each trace whole or absent).
    otel_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    sentry_environment: str = ""
    #: Tune each worker process's garbage collector once it has booted (:func:`libs.runtime.tune_gc`); off in the
    #: test suite, whose one process boots many in-process workers.
    gc_tuning: bool = True

    #: Largest webhook body accepted at the edge (Meta documents up to 3 MB).
    #: Campaign sends kept in ``messages.low`` itself; the rest wait in per-company lanes, fed round-robin.
    campaign_feed_buffer: int = Field(default=1_000, ge=1, le=100_000)
    webhook_max_bytes: int = Field(default=3 * 1024 * 1024, ge=1024)
    #: Accepted-but-unprocessed webhooks older than this are enqueued again by the outbox sweep.
    webhook_sweep_after_seconds: int = Field(default=60, ge=1)
    #: A queued (or sending) message unchanged for this long whose send job is missing from Redis, and a started
    #: campaign with recipients left to expand and no expansion job, are enqueued again by the outbox sweeps
    #: (after two scans at least ``outbox_sweep_confirm_seconds`` apart found the job missing).
    outbox_sweep_after_seconds: int = Field(default=120, ge=1)
    outbox_sweep_confirm_seconds: int = Field(default=30, ge=0)
    #: Dead-letter ledger retention.
    dead_letter_retention_days: int = Field(default=90, ge=1)
    #: Deliveries without completion after which a message is dead-lettered as "worker died".
    max_deliveries: int = Field(default=3, ge=1)
    #: Deferrals (throttling) a message may take before it is dead-lettered.
    defer_budget: int = Field(default=100, ge=1)
    #: One Sentry alert per ``alert_window_minutes`` window in which more dead letters than this were recorded
    #: (a replayed job failing again counts once more).
    alert_dead_letter_threshold: int = Field(default=100, ge=1)
    alert_window_minutes: int = Field(default=10, ge=1)
    #: How long a send whose outcome is unknown (the provider call timed out or dropped mid-request) waits for
    #: a status webhook before the sender sends it again. A send the provider accepted is never sent again:
    #: its answer is journaled before it is recorded.
    send_reconcile_seconds: int = Field(default=30, ge=0, le=86_400)
    #: Longest a send waits while held — its connection inactive or its bridge disconnected, a non-campaign send
    #: of a paused campaign — counted from its queue time; past it the message fails with the hold as reason
    #: (dead-lettered, replayable). A paused campaign's own sends wait for its resume or cancel.
    hold_max_age_seconds: int = Field(default=86_400, ge=1)
    #: Under the sender's provider HTTP client: ``lean`` (zapq's transport, the default: the only one keeping
    #: the send rate at 1,000/s), ``aiohttp`` or ``httpx`` (maintained transports, for comparison or fallback).
    http_transport: HttpTransport = "lean"
    #: In-flight jobs per worker thread for ``concurrent=True`` async actors (the sender's provider calls).
    concurrent_jobs_per_thread: int = Field(default=64, ge=1, le=1000)
    #: Where workers and the scheduler keep the heartbeat files read by ``python -m libs.ops.probe``: each stack
    #: (Redis namespace) in its own subdirectory, :attr:`stack_heartbeat_dir`.
    heartbeat_dir: str = "/tmp/zapq-heartbeats"
    #: A worker silent for this long is dead: its unacked messages are requeued by the live workers.
    heartbeat_timeout_ms: int = Field(default=15_000, ge=1_000)
    #: A worker process that holds jobs yet finishes none for this long fails its liveness probe (Kubernetes
    #: restarts it). 0: the longest time limit of its actors plus a minute.
    worker_stall_seconds: float = Field(default=0, ge=0)

    #: Delays before each retry of an event delivery (s, m, h or d units); one more attempt than delays.
    event_retry_schedule: str = "5s,5m,30m,2h,5h,10h,10h"
    #: An event delivery's request gives up after this long.
    event_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    #: An endpoint whose every delivery failed for this long is disabled (with a Sentry alert).
    event_disable_after_hours: float = Field(default=120.0, gt=0)
    #: Published events (and their delivery logs) are kept this long.
    event_retention_days: int = Field(default=30, ge=1)
    #: How often an idle event publisher looks for new events (ms).
    event_publish_interval_ms: int = Field(default=10, ge=1, le=10_000)
    #: Keep-alive comment interval of ``GET /api/events/stream`` (seconds).
    event_stream_ping_seconds: float = Field(default=15.0, gt=0)
    #: ``text`` (one plain line per record) or ``json`` (one object per line, with the current job's ids).
    log_format: Literal["text", "json"] = "text"
    #: API keys (not the bootstrap ``ZAPQ_API_TOKEN``): requests per second each may make, sustained, and the burst
    #: it may make at once (a token bucket in Redis, shared by every API process). 0: no limit.
    api_rate_per_second: float = Field(default=50.0, ge=0)
    api_rate_burst: int = Field(default=100, ge=1)
    #: A verified API key is trusted for this long by each API process: a revocation takes effect within it.
    api_key_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    #: Hosts and CIDRs that outbound requests (webhook endpoints) may reach in ``prod`` although private.
    outbound_allowlist: str = ""
    #: A Meta connection's template catalogue is synced again by the scheduler once it is this old (seconds).
    template_sync_seconds: int = Field(default=3_600, ge=60)
    #: An API process keeps each connection's template catalogue this long before reading it again (seconds).
    template_cache_seconds: float = Field(default=30.0, ge=0, le=3_600)
    #: Meta's messaging limit (distinct business-initiated recipients per rolling 24 h per business portfolio)
    #: for every portfolio, overriding what Meta reports and the connections' own overrides; 0: not overridden.
    messaging_limit: int = Field(default=0, ge=0)
    #: Tests only: the messaging-limit budget reads its clock as Redis's plus an offset kept in Redis
    #: (:func:`libs.rules.budget.Budget.advance_test_clock`), so a test moves 24 h forward without waiting.
    #: Ignored in ``prod`` (:attr:`test_clock_on`).
    test_clock: bool = False

    #: Where media files (uploads, fetched inbound media) are kept when no object store is set.
    media_dir: str = "/var/tmp/zapq-media"
    #: An S3-compatible object store for media instead of ``media_dir`` (e.g. ``https://s3.eu-west-1.amazonaws.com``
    #: or a MinIO URL); empty: the local directory. The bucket must exist.
    media_s3_url: str = ""
    media_s3_bucket: str = "zapq-media"
    media_s3_region: str = "us-east-1"
    media_s3_access_key: str = ""
    media_s3_secret_key: str = ""
    #: Stored media (uploads and inbound files) is deleted this long after it was stored.
    media_retention_days: int = Field(default=90, ge=1)
    #: Largest file one inbound media job downloads (Meta: inbound media up to 100 MB).
    media_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _check_schedule(self) -> Settings:
        parse_schedule(self.event_retry_schedule)
        return self

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: str) -> str:
        parse_sentinels(value)
        return value

    @field_validator("otel_endpoint")
    @classmethod
    def _check_otel_endpoint(cls, value: str) -> str:
        url = urllib.parse.urlsplit(value)
        if value and (url.scheme not in ("http", "https") or not url.hostname):
            raise ValueError(f"ZAPQ_OTEL_ENDPOINT must be an http(s) URL (an OTLP/HTTP traces endpoint), not {value!r}")
        return value

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as ``(host, port)`` pairs (empty: no Sentinel)."""
        return parse_sentinels(self.redis_sentinels)

    @property
    def event_retry_delays(self) -> tuple[float, ...]:
        """``event_retry_schedule`` in seconds."""
        return parse_schedule(self.event_retry_schedule)

    @property
    def outbound_allowed(self) -> list[str]:
        """``outbound_allowlist`` as a list."""
        return [entry.strip() for entry in self.outbound_allowlist.split(",") if entry.strip()]

    @property
    def secrets_key_list(self) -> list[str]:
        """``secrets_keys`` as a list, newest first."""
        return parse_keys(self.secrets_keys)

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        try:
            keys = parse_keys(self.secrets_keys)
        except InvalidSecretsKeyError as exc:
            raise ValueError(f"ZAPQ_SECRETS_KEYS: {exc}") from None
        if self.env == "prod":
            for name in DEV_DEFAULTS:
                value = getattr(self, name)
                if name in OPTIONAL_IN_PROD and value == "":
                    continue
                if value.strip().lower() in PLACEHOLDERS or value in DEV_DEFAULTS.values():
                    raise ValueError(f"ZAPQ_{name.upper()} must be set to a real secret when ZAPQ_ENV=prod")
            if DEV_SECRETS_KEY in keys:
                raise ValueError("ZAPQ_SECRETS_KEYS must not hold the dev key when ZAPQ_ENV=prod")
        return self

    def with_dev_defaults(self) -> Settings:
        """Return a copy with the documented dev defaults filled in for empty secrets (never in prod)."""
        if self.env == "prod":
            return self
        missing = {name: value for name, value in DEV_DEFAULTS.items() if not getattr(self, name)}
        return self.model_copy(update=missing) if missing else self

    @property
    def test_clock_on(self) -> bool:
        """Whether the budget's test clock may be moved: ``test_clock``, never in ``prod``."""
        return self.test_clock and self.env != "prod"

    @property
    def stack_heartbeat_dir(self) -> str:
        """This stack's heartbeat directory: :attr:`heartbeat_dir` / the Redis namespace (the probe of one stack
        never counts another's processes)."""
        return os.path.join(self.heartbeat_dir, self.redis_namespace)

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL in SQLAlchemy's form (``postgresql+psycopg://``)."""
        url = self.database_url
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def libpq_url(self) -> str:
        """The database URL in libpq's form (``postgresql://``), for psycopg used directly."""
        return self.sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; raise :class:`SettingsError` naming the bad variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"])
            name = f"ZAPQ_{location.upper()}" if location else "configuration"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid zapq settings: " + "; ".join(problems)) from None
    return settings.with_dev_defaults()
