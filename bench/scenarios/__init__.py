"""The benchmark scenarios, in the order a full run executes them."""

from __future__ import annotations

from collections.abc import Callable

from bench.harness import BenchRun
from bench.report import ScenarioResult
from bench.scenarios import core, events, fanout, ingest, media, peak, send, tracing

Scenario = Callable[[BenchRun, ScenarioResult], None]

SCENARIOS: dict[str, Scenario] = {
    "core": core.run,
    "send": send.run,
    "ingest": ingest.run,
    "fanout": fanout.run,
    "events": events.run,
    "peak": peak.run,
    "tracing": tracing.run,
    "media": media.run,
}
#: Scenarios run only when named (``python -m bench tracing``), not by a plain or ``--quick`` run.
ON_REQUEST = frozenset({"tracing"})
