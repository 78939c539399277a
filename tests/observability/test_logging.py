"""Logs of dead letters and retries never carry a full phone number or a token (PhoneMaskingFilter)."""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage

from libs import contracts
from libs.db.engine import Database
from libs.deadletters import actions
from libs.deadletters.store import Filter
from libs.errors import PermanentError, TransientError
from libs.middleware.policy import RetryPolicy
from libs.observability import JsonFormatter, PhoneMaskingFilter
from tests.helpers import drain
from tests.observability.support import PHONE, PHONE_FORMS, QUEUE, TOKEN, Attempts, declare


def assert_masked(output: str) -> None:
    """No full phone number nor token in ``output``; the masked form is there (it was logged, then masked)."""
    for secret in (*PHONE_FORMS, TOKEN):
        assert secret not in output, f"{secret!r} reached the logs"
    assert "55…88" in output


def test_dead_letter_and_retry_logs_are_masked(
    log_output: list[str], broker: Any, worker: dramatiq.Worker, db: Database
) -> None:
    # Given an actor that fails transiently once, then for good (its recipient and a token in the errors)
    attempts = Attempts()

    def send(recipient: str) -> None:
        if attempts.next() == 1:
            raise TransientError(f"provider timeout for {recipient}")
        raise PermanentError(f"recipient {recipient} rejected (access_token={TOKEN})")

    actor = declare(broker, send, "obs_log", RetryPolicy(attempts=3, kind="fixed", base_ms=50))

    # When it runs on the real worker and is dead-lettered and recorded
    actor.send(PHONE)
    drain(broker, worker, [QUEUE, contracts.DEAD_LETTER])

    # Then Dramatiq's error logs (with tracebacks), the retry and the dead-letter lines are all masked
    output = "\n".join(log_output)
    assert attempts.count == 2
    assert len(actions.list_rows(db, Filter(queue=QUEUE))) == 1
    assert "retrying message" in output and "dead-lettered message" in output
    assert "Traceback (most recent call last)" in output and "TransientError" in output
    assert_masked(output)


def test_filter_masks_exception_text_and_survives_bad_calls() -> None:
    # Given a record carrying an exception whose message names a recipient
    try:
        raise ValueError(f"no such recipient {PHONE}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed for %s", (PHONE,), exc_info)
    bad = logging.LogRecord("t", logging.ERROR, __file__, 1, "two %s %s", ("one",), None)

    # When it passes the filter and is formatted
    assert PhoneMaskingFilter().filter(record)
    formatted = logging.Formatter().format(record)

    # Then neither the message nor the traceback holds the number; a malformed call is let through
    assert "Traceback" in formatted and "55…88" in formatted
    assert PHONE.lstrip("+") not in formatted
    assert PhoneMaskingFilter().filter(bad)


def test_json_log_lines_carry_the_job_ids_and_stay_scrubbed() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(PhoneMaskingFilter())
    log = logging.getLogger("zapq.json-test")
    log.addHandler(handler)
    log.propagate = False
    message = Message(queue_name="messages", actor_name="send_message", args=(), kwargs={"message_id": 42}, options={})
    token = CurrentMessage._MESSAGE.set(MessageProxy(message))  # type: ignore[arg-type]
    try:
        log.warning("sending %s to %s", "job", PHONE)
    finally:
        CurrentMessage._MESSAGE.reset(token)
        log.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["job_id"] == message.message_id
    assert (line["queue"], line["actor"], line["message_id"], line["level"]) == (
        "messages",
        "send_message",
        42,
        "WARNING",
    )
    assert PHONE.lstrip("+") not in line["message"]
    assert line["time"].endswith("Z")
