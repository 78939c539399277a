"""Names of the bench's own jobs (the bench process builds their messages; worker modules declare them)."""

from __future__ import annotations

from dataclasses import dataclass

from libs.contracts import Contract

#: Queue of the no-op actor, for both the zapq and the bare-Dramatiq worker.
QUEUE = "bench"
ACTOR = "bench_noop"


@dataclass(frozen=True, slots=True)
class Noop:
    """Payload of the no-op job."""

    n: int


NOOP: Contract[Noop] = Contract(ACTOR, QUEUE, Noop)


#: Queue and actor of the ``send`` baseline (:mod:`bench.bare_send`).
SEND_QUEUE = "bench-send"
SEND_ACTOR = "bare_send"

#: Queue and actor of the ``events`` baseline (:mod:`bench.bare_events`).
EVENT_QUEUE = "bench-events"
EVENT_ACTOR = "bare_deliver"
