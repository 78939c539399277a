"""Every Redis key zapq and Dramatiq use, named in one place.

All keys live under the broker's namespace (``ZAPQ_REDIS_NAMESPACE``, ``dramatiq`` by default):

    <ns>:<q>                     LIST   ids waiting in queue ``q``                     Dramatiq (BrokerKeys)
    <ns>:<q>.msgs                HASH   id → payload of ``q``
    <ns>:<q>.DQ / .DQ.msgs              the delay queue of ``q`` (retries, ``delay=``)
    <ns>:<q>.XQ / .XQ.msgs       ZSET   Dramatiq's dead set of ``q`` (nacked), by death time
    <ns>:__acks__.<worker>.<q>   SET    ids fetched by a worker and not yet acked
    <ns>:__heartbeats__          ZSET   worker id → last heartbeat (ms, Redis's clock)
    <ns>:zapq:job:<message id>   HASH   a job's lifecycle                              zapq (LifecycleKeys)
    <ns>:zapq:stats:<q>:<minute>, totals:<q>, durations:<q>, seq:<q>, taken:<q>   queue counters
    <ns>:zapq:deliveries:<id>    counter of deliveries without completion (poison guard), TTL below
    <ns>:zapq:throttle:…         send throttling (ThrottleKeys)
    <ns>:zapq:sent:<message id>  provider id journal (JournalKeys)
    <ns>:zapq:holds…             held sends (HoldKeys)
    <ns>:zapq:lanes:<q>:…        fair campaign lanes (LaneKeys)
    <ns>:zapq:budget:…           messaging-limit budget per portfolio, sends waiting for it (BudgetKeys)
    <ns>:zapq:events:endpoint:<id>:<flag>   event pump kicks (EndpointKeys)
    <ns>:zapq:provider:…         provider call metrics (ProviderMetricKeys)
    <ns>:zapq:alerts:dead-letters[:<bucket>]   dead-letter alert window (AlertKeys)
    <ns>:zapq:ratelimit:<key id> HASH   an API key's token bucket (RateLimitKeys)

Lua scripts (:mod:`libs.lua`) spell no key: they get whole keys in ``KEYS`` or, when they build keys from data
only known inside Redis (queue names of acks, worker ids, minutes), the prefixes and separators below in
``ARGV``. Dramatiq's own spelling (``.msgs``, ``.DQ``, ``.XQ``, ``__acks__``, ``__heartbeats__``) is pinned
against the installed Dramatiq by ``tests/test_dramatiq_ext.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Separator between the parts of a key.
SEP = ":"
#: Dramatiq's suffixes of a queue's payload hash, of its delay queue and of its dead set.
MSGS = ".msgs"
DELAYED = ".DQ"
DEAD = ".XQ"
#: Dramatiq's per-worker ack sets and heartbeat set.
ACKS = "__acks__"
HEARTBEATS = "__heartbeats__"
#: Everything zapq itself keeps is under ``<ns>:zapq:``.
ZAPQ = "zapq"

#: Delivery counters (:class:`libs.middleware.poison.PoisonGuard`) of jobs nobody finishes expire after this long.
DELIVERY_COUNTER_TTL_S = 7 * 24 * 3600


def zapq_prefix(namespace: str) -> str:
    """``<namespace>:zapq:``."""
    return f"{namespace}{SEP}{ZAPQ}{SEP}"


def inbound_messages(namespace: str) -> str:
    """Inbound messages stored, by company, connection and type (:mod:`libs.ingest.metrics`)."""
    return f"{zapq_prefix(namespace)}inbound_messages"


@dataclass(frozen=True, slots=True)
class BrokerKeys:
    """Dramatiq's own keys in one namespace (the layout of its ``dispatch.lua``)."""

    namespace: str

    @property
    def queue_prefix(self) -> str:
        """``<namespace>:``: a queue's list is this plus the queue name."""
        return f"{self.namespace}{SEP}"

    def queue(self, queue: str) -> str:
        """The list of ids waiting in ``queue`` (a delay queue's name gives the delay queue)."""
        return f"{self.queue_prefix}{queue}"

    def messages(self, queue: str) -> str:
        """The payloads of ``queue`` by Redis message id."""
        return f"{self.queue(queue)}{MSGS}"

    def delayed_messages(self, queue: str) -> str:
        """The payloads of ``queue``'s delay queue (``queue``: a canonical name)."""
        return f"{self.queue(queue)}{DELAYED}{MSGS}"

    def dead(self, queue: str) -> str:
        """Dramatiq's dead set of ``queue`` (ids by death time)."""
        return f"{self.queue(queue)}{DEAD}"

    def dead_messages(self, queue: str) -> str:
        """The payloads of Dramatiq's dead set of ``queue``."""
        return f"{self.dead(queue)}{MSGS}"

    @property
    def acks_prefix(self) -> str:
        """``<namespace>:__acks__.``: an ack set is this, a worker id, then :meth:`acks_suffix`."""
        return f"{self.namespace}{SEP}{ACKS}."

    def acks_of(self, worker_id: str) -> str:
        """The ack sets of worker ``worker_id`` are this plus a queue name."""
        return f"{self.acks_prefix}{worker_id}."

    @staticmethod
    def acks_suffix(queue: str) -> str:
        """What follows a worker id in the name of its ack set of ``queue``."""
        return f".{queue}"

    def acks(self, worker_id: str, queue: str) -> str:
        """The ids of ``queue`` fetched by worker ``worker_id`` and not acked yet."""
        return f"{self.acks_of(worker_id)}{queue}"

    @property
    def heartbeats(self) -> str:
        """Every worker's last heartbeat (ms on Redis's clock)."""
        return f"{self.namespace}{SEP}{HEARTBEATS}"


@dataclass(frozen=True, slots=True)
class LifecycleKeys:
    """Keys of the job lifecycle and queue counters (:mod:`libs.middleware.lifecycle`) in one namespace."""

    namespace: str

    @property
    def prefix(self) -> str:
        """``<namespace>:zapq:``."""
        return zapq_prefix(self.namespace)

    @property
    def job_prefix(self) -> str:
        """A job's hash is this plus its message id."""
        return f"{self.prefix}job{SEP}"

    def job(self, message_id: str) -> str:
        """The hash of one job."""
        return f"{self.job_prefix}{message_id}"

    @property
    def stats_prefix(self) -> str:
        """Per-minute counters: this, the queue, :data:`SEP`, the Unix minute."""
        return f"{self.prefix}stats{SEP}"

    def stats(self, queue: str, minute: int) -> str:
        """Counters of ``queue`` during the Unix minute ``minute``."""
        return f"{self.stats_prefix}{queue}{SEP}{minute}"

    def stats_of(self, queue: str) -> str:
        """The per-minute counters of ``queue`` are this plus the minute."""
        return f"{self.stats_prefix}{queue}{SEP}"

    @property
    def totals_prefix(self) -> str:
        """All-time counters: this plus the queue."""
        return f"{self.prefix}totals{SEP}"

    def totals(self, queue: str) -> str:
        """All-time counters of ``queue``."""
        return f"{self.totals_prefix}{queue}"

    @property
    def durations_prefix(self) -> str:
        """Recent durations: this plus the queue."""
        return f"{self.prefix}durations{SEP}"

    def durations(self, queue: str) -> str:
        """Recent durations (ms) of completed jobs of ``queue``."""
        return f"{self.durations_prefix}{queue}"

    @property
    def seq_prefix(self) -> str:
        """Jobs that entered a queue: this plus the queue."""
        return f"{self.prefix}seq{SEP}"

    def seq(self, queue: str) -> str:
        """Jobs that entered ``queue``."""
        return f"{self.seq_prefix}{queue}"

    @property
    def taken_prefix(self) -> str:
        """Jobs a worker started: this plus the queue."""
        return f"{self.prefix}taken{SEP}"

    def taken(self, queue: str) -> str:
        """Jobs of ``queue`` a worker started."""
        return f"{self.taken_prefix}{queue}"

    @property
    def queue_waits(self) -> str:
        """The queue wait histograms of every queue (:mod:`libs.middleware.queuewait`)."""
        return f"{self.prefix}queue_waits"


@dataclass(frozen=True, slots=True)
class DeliveryKeys:
    """The poison guard's delivery counters (dropped with the ack, else expiring after ``DELIVERY_COUNTER_TTL_S``)."""

    namespace: str

    @property
    def prefix(self) -> str:
        """A counter is this plus the message id."""
        return f"{zapq_prefix(self.namespace)}deliveries{SEP}"

    def count(self, message_id: str) -> str:
        """Deliveries of ``message_id`` that did not finish."""
        return f"{self.prefix}{message_id}"


@dataclass(frozen=True, slots=True)
class ThrottleKeys:
    """Send throttling (:mod:`libs.sending.throttle`)."""

    namespace: str

    @property
    def prefix(self) -> str:
        """``<namespace>:zapq:throttle:``."""
        return f"{zapq_prefix(self.namespace)}throttle{SEP}"

    def connection(self, connection_id: int) -> str:
        """The connection's send schedule (GCRA ``TAT``)."""
        return f"{self.prefix}conn{SEP}{connection_id}"

    def pair(self, connection_id: int, recipient: str) -> str:
        """The pair limit's schedule of one connection and recipient."""
        return f"{self.prefix}pair{SEP}{connection_id}{SEP}{recipient}"

    def admissions(self, connection_id: int) -> str:
        """The connection's admissions of the last second (sorted set)."""
        return f"{self.prefix}log{SEP}{connection_id}"

    def pair_refusals(self, connection_id: int, recipient: str) -> str:
        """The provider's refusals of one pair in a row, and until when the pair is held."""
        return f"{self.prefix}pairhits{SEP}{connection_id}{SEP}{recipient}"


@dataclass(frozen=True, slots=True)
class JournalKeys:
    """The provider id journal (:mod:`libs.sending.journal`)."""

    namespace: str

    def sent(self, message_id: int) -> str:
        """The provider id of a send whose record has not committed yet."""
        return f"{zapq_prefix(self.namespace)}sent{SEP}{message_id}"


@dataclass(frozen=True, slots=True)
class HoldKeys:
    """Held sends (:mod:`libs.sending.holds`)."""

    namespace: str

    @property
    def holds(self) -> str:
        """The set of holds with parked sends."""
        return f"{zapq_prefix(self.namespace)}holds"

    @property
    def hold_prefix(self) -> str:
        """A hold's parked sends: this plus the hold's name."""
        return f"{self.holds}{SEP}"

    def hold(self, hold: str) -> str:
        """The parked sends of one hold (sorted by deadline)."""
        return f"{self.hold_prefix}{hold}"

    @property
    def messages(self) -> str:
        """Payloads of parked sends by Redis message id."""
        return f"{self.holds}{MSGS}"


@dataclass(frozen=True, slots=True)
class BudgetKeys:
    """Meta's messaging-limit budget per business portfolio and the campaign sends waiting for it
    (:mod:`libs.rules.budget`)."""

    namespace: str

    @property
    def prefix(self) -> str:
        """``<namespace>:zapq:budget:``."""
        return f"{zapq_prefix(self.namespace)}budget{SEP}"

    @property
    def reached_prefix(self) -> str:
        """A portfolio's reached recipients: this plus the portfolio key."""
        return f"{self.prefix}reached{SEP}"

    def reached(self, portfolio: str) -> str:
        """ZSET recipient digest → when the portfolio last started a conversation with it (ms)."""
        return f"{self.reached_prefix}{portfolio}"

    @property
    def wait_prefix(self) -> str:
        """A campaign's sends waiting for budget: this plus the campaign id."""
        return f"{self.prefix}wait{SEP}"

    def wait(self, campaign_id: int | str) -> str:
        """LIST of the Redis message ids of one campaign's waiting sends, oldest first."""
        return f"{self.wait_prefix}{campaign_id}"

    @property
    def campaigns_prefix(self) -> str:
        """A portfolio's campaigns with waiting sends: this plus the portfolio key."""
        return f"{self.prefix}campaigns{SEP}"

    def campaigns(self, portfolio: str) -> str:
        """ZSET campaign id → when its first send started waiting (release order)."""
        return f"{self.campaigns_prefix}{portfolio}"

    @property
    def portfolios(self) -> str:
        """SET of portfolios with waiting sends."""
        return f"{self.prefix}portfolios"

    @property
    def limits(self) -> str:
        """HASH portfolio → its limit (-1: unlimited), as the last fan-out or quality update saw it."""
        return f"{self.prefix}limits"

    @property
    def campaign_portfolio(self) -> str:
        """HASH campaign id → portfolio key, for campaigns with waiting sends."""
        return f"{self.prefix}campaign-portfolio"

    @property
    def entries(self) -> str:
        """HASH Redis message id → ``<company>|<recipient digest>|<message row id>`` of each waiting send."""
        return f"{self.prefix}entries"

    @property
    def waiting_rows(self) -> str:
        """HASH message row id → Redis message id of each waiting send (a redelivered fan-out parks none twice)."""
        return f"{self.prefix}rows"

    @property
    def messages(self) -> str:
        """Payloads of waiting sends by Redis message id (not the queue's: idle, not waiting there)."""
        return f"{zapq_prefix(self.namespace)}budget{MSGS}"

    @property
    def test_clock(self) -> str:
        """Milliseconds added to Redis's clock by the budget scripts when ``ZAPQ_TEST_CLOCK`` is on."""
        return f"{self.prefix}test-clock"


@dataclass(frozen=True, slots=True)
class LaneKeys:
    """The fair lanes of one queue (:mod:`libs.campaigns.lanes`)."""

    namespace: str
    queue: str

    @property
    def prefix(self) -> str:
        """``<namespace>:zapq:lanes:<queue>:``."""
        return f"{zapq_prefix(self.namespace)}lanes{SEP}{self.queue}{SEP}"

    @property
    def lane_prefix(self) -> str:
        """A company's lane is this plus the company id."""
        return f"{self.prefix}lane{SEP}"

    def lane(self, company_id: int | str) -> str:
        """One company's waiting ids."""
        return f"{self.lane_prefix}{company_id}"

    @property
    def ring(self) -> str:
        """Companies whose lane is not empty, in turn order."""
        return f"{self.prefix}ring"

    @property
    def members(self) -> str:
        """The same companies as a set."""
        return f"{self.prefix}members"

    @property
    def weights(self) -> str:
        """Company → weight."""
        return f"{self.prefix}weights"

    @property
    def credit(self) -> str:
        """Company → what is left of its turn (deficit round-robin)."""
        return f"{self.prefix}credit"

    @property
    def backlog(self) -> str:
        """Ids in all lanes together."""
        return f"{self.prefix}backlog"

    @property
    def parked(self) -> str:
        """Campaign → company, for campaigns with parked sends."""
        return f"{self.prefix}parked"

    def parked_of(self, campaign_id: int) -> str:
        """The parked ids of one campaign."""
        return f"{self.parked}{SEP}{campaign_id}"

    @property
    def parked_messages(self) -> str:
        """Payloads of parked sends (not in the queue's hash, so the queue does not look busy)."""
        return f"{self.parked}{MSGS}"


@dataclass(frozen=True, slots=True)
class SweepKeys:
    """The outbox sweeps' bookkeeping (:mod:`libs.jobscan`)."""

    namespace: str

    def suspects(self, sweep: str) -> str:
        """Rows one sweep found without a job: id → ``stamp first_seen`` (confirmed by the next scan)."""
        return f"{zapq_prefix(self.namespace)}sweep{SEP}{sweep}{SEP}suspects"

    def lock(self, sweep: str) -> str:
        """At most one sweep of a kind at a time."""
        return f"{zapq_prefix(self.namespace)}sweep{SEP}{sweep}{SEP}lock"


@dataclass(frozen=True, slots=True)
class EndpointKeys:
    """The pump flags of event endpoints (:mod:`libs.events.kicks`)."""

    namespace: str

    def flag(self, endpoint_id: int, flag: str) -> str:
        """One flag (``dirty``, ``queued``, ``wake``) of one endpoint."""
        return f"{zapq_prefix(self.namespace)}events{SEP}endpoint{SEP}{endpoint_id}{SEP}{flag}"


@dataclass(frozen=True, slots=True)
class ProviderMetricKeys:
    """Provider call metrics (:mod:`libs.sending.metrics`)."""

    namespace: str

    @property
    def _base(self) -> str:
        return f"{zapq_prefix(self.namespace)}provider{SEP}"

    @property
    def latency(self) -> str:
        """Latency bucket counts."""
        return f"{self._base}latency"

    @property
    def latency_sum(self) -> str:
        """Latency sums and counts."""
        return f"{self._base}latency_sum"

    @property
    def errors(self) -> str:
        """Error codes."""
        return f"{self._base}errors"

    @property
    def sends(self) -> str:
        """Send outcomes per company, connection, outcome and code."""
        return f"{self._base}sends"


@dataclass(frozen=True, slots=True)
class AlertKeys:
    """The dead-letter alert window (:mod:`libs.deadletters.alerts`)."""

    namespace: str

    @property
    def dead_letters(self) -> str:
        """Recent dead letters (sorted by when they were recorded)."""
        return f"{zapq_prefix(self.namespace)}alerts{SEP}dead-letters"

    def fired(self, bucket: int) -> str:
        """Set once the alert of window ``bucket`` fired."""
        return f"{self.dead_letters}{SEP}{bucket}"


@dataclass(frozen=True, slots=True)
class RateLimitKeys:
    """Per-API-key token buckets (:mod:`libs.api.ratelimit`)."""

    namespace: str

    def bucket(self, key_id: str) -> str:
        """The bucket of one API key."""
        return f"{zapq_prefix(self.namespace)}ratelimit{SEP}{key_id}"
