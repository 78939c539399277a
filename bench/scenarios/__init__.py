"""The benchmark scenarios, in the order a full run executes them."""

from __future__ import annotations

from collections.abc import Callable

from bench.harness import BenchRun
from bench.report import ScenarioResult
from bench.scenarios import core, events, fanout, ingest, peak, send

Scenario = Callable[[BenchRun, ScenarioResult], None]

SCENARIOS: dict[str, Scenario] = {
    "core": core.run,
    "send": send.run,
    "ingest": ingest.run,
    "fanout": fanout.run,
    "events": events.run,
    "peak": peak.run,
}
