"""Deferrals are logged at DEBUG, and counted per actor and cause in one INFO line a minute."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import pytest

from libs import contracts
from libs.middleware.deferlog import DeferralLog
from tests.helpers import drain
from tests.middleware.support import Probe, retry_middleware

LOGGER = "libs.middleware.retry"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_a_summary_counts_each_cause_once_a_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = Clock()
    log = DeferralLog(logging.getLogger(LOGGER), window_s=60, clock=clock)
    # Given 300 deferrals of one cause and 2 of another within the minute
    for i in range(300):
        log.record(f"job-{i}", "send_message", 100, "connection send rate limit")
    log.record("job-a", "send_message", 900, "recipient pair rate limit")
    log.record("job-b", "expand_campaign", 5, "connection send rate limit")
    # Then each is a DEBUG line, and no INFO line yet
    assert len(_lines(caplog, logging.DEBUG)) == 302
    assert _lines(caplog, logging.INFO) == []
    # When the minute is over and the next job finishes
    clock.now += 60
    log.flush_due()
    # Then one INFO line counts them per actor and cause, the most frequent first
    [summary] = _lines(caplog, logging.INFO)
    assert summary == (
        "deferred 302 job(s) in the last 60 s: 300 × send_message (connection send rate limit); "
        "1 × send_message (recipient pair rate limit); 1 × expand_campaign (connection send rate limit)"
    )
    # And a quiet window says nothing
    clock.now += 60
    log.flush_due()
    assert len(_lines(caplog, logging.INFO)) == 1


def test_a_real_workers_deferrals_are_debug_and_summarised_at_shutdown(
    caplog: pytest.LogCaptureFixture, broker: Any, worker: dramatiq.Worker, probe: Probe, test_actors: dict[str, Any]
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    retry_middleware(broker).deferrals.flush()  # nothing left from other tests
    caplog.clear()
    # Given an actor that defers three times by 10 ms, then succeeds
    probe.defer_ms = 10
    probe.scripts["busy"] = ["defer", "defer", "defer", "ok"]
    test_actors["test_scripted"].send("busy")
    drain(broker, worker, [contracts.WEBHOOKS])
    # Then each deferral is one DEBUG line with its job id, none at INFO
    assert len(_lines(caplog, logging.DEBUG)) == 3
    assert _lines(caplog, logging.INFO) == []
    # When the worker stops, the counts are summarised in one INFO line
    retry_middleware(broker).before_worker_shutdown(broker, worker)
    [summary] = _lines(caplog, logging.INFO)
    assert summary.startswith("deferred 3 job(s) in the last") and "3 × test_scripted (busy busy)" in summary
