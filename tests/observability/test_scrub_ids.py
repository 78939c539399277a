"""The log scrubber masks phone numbers and secrets only: ids, timestamps and other numbers pass unchanged."""

from __future__ import annotations

import datetime as dt
import string
import uuid

from hypothesis import given
from hypothesis import strategies as st

from libs.observability import scrub_text

words = st.text(alphabet=string.ascii_letters + " ,;()", max_size=20)
e164 = st.integers(min_value=10_000_000, max_value=999_999_999_999_999).map(str)
moments = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC))


@given(before=words, after=words, value=st.uuids())
def test_uuids_pass_unchanged(before: str, after: str, value: uuid.UUID) -> None:
    text = f"{before} job {value} {after}"
    assert scrub_text(text) == text


@given(before=words, moment=moments)
def test_iso_timestamps_pass_unchanged(before: str, moment: dt.datetime) -> None:
    for rendered in (
        moment.isoformat(),
        moment.isoformat(sep=" "),
        moment.strftime("%Y-%m-%d %H:%M:%S,%f")[:-3],
        moment.isoformat().replace("+00:00", "Z"),
    ):
        text = f"{before} scheduled at {rendered}"
        assert scrub_text(text) == text


@given(suffix=st.text(alphabet=string.ascii_letters + string.digits + "_=-", min_size=20, max_size=60))
def test_wamids_pass_unchanged(suffix: str) -> None:
    text = f"recorded wamid.{suffix} for message 42"
    assert scrub_text(text) == text


@given(before=words, after=words, number=e164, plus=st.booleans())
def test_e164_numbers_are_masked(before: str, after: str, number: str, plus: bool) -> None:
    text = f"{before} to {'+' if plus else ''}{number} {after}"
    scrubbed = scrub_text(text)
    assert number not in scrubbed
    assert f"{number[:2]}…{number[-2:]}" in scrubbed


@given(number=st.integers(min_value=0, max_value=9_999_999))
def test_short_numbers_pass_unchanged(number: int) -> None:
    text = f"message {number} took {number % 1000} ms (attempt 3 of 5)"
    assert scrub_text(text) == text


def test_ids_seen_mangled_in_dev_logs_now_pass() -> None:
    for line in (
        "dead-lettered message 8e72f1f0-9a1b-4c2d-85fb-a9427c0e1d2f of send_message",
        "scheduled at 2026-12-06 18:09:16+00:00",
        "script: c17c99538d507f4dd653f98a1b2c3d4e55a5e8cedb241 failed",
        "POST /v21.0/106540352242922/messages",
        "event evt_00000000000004d2 delivered",
    ):
        assert scrub_text(line) == line
