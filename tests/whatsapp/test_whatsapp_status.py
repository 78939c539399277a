"""Outbound status ordering: statuses only move forward, failed is terminal and only real before delivery."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.whatsapp import STATUS_RANK, is_known_status, status_advances

ORDER = ["queued", "sending", "sent", "delivered", "read", "played"]
ALL = [*STATUS_RANK, "failed"]


@pytest.mark.parametrize(("current", "new"), list(itertools.combinations(ORDER, 2)))
def test_forward_moves_advance_and_backward_moves_do_not(current: str, new: str) -> None:
    assert status_advances(current, new)
    assert not status_advances(new, current)


def test_delivered_may_be_skipped() -> None:
    assert status_advances("sent", "read")


@pytest.mark.parametrize("status", ALL)
def test_same_status_again_is_not_an_advance(status: str) -> None:
    assert not status_advances(status, status)


@pytest.mark.parametrize(("current", "allowed"), [(s, STATUS_RANK[s] < STATUS_RANK["delivered"]) for s in STATUS_RANK])
def test_failed_applies_only_before_delivery(current: str, allowed: bool) -> None:
    assert status_advances(current, "failed") is allowed


@pytest.mark.parametrize("new", ALL)
def test_nothing_leaves_failed(new: str) -> None:
    assert not status_advances("failed", new)


def test_pending_is_the_same_stage_as_sending() -> None:
    assert not status_advances("sending", "pending") and not status_advances("pending", "sending")
    assert status_advances("pending", "sent") and status_advances("queued", "pending")


@pytest.mark.parametrize(("current", "new"), [("sent", "deleted"), ("deleted", "read"), ("sent", "READ")])
def test_unknown_statuses_never_advance(current: str, new: str) -> None:
    assert not status_advances(current, new)


def test_is_known_status() -> None:
    assert all(is_known_status(s) for s in ALL)
    assert not is_known_status("deleted")


@settings(max_examples=300, deadline=None)
@given(
    a=st.sampled_from([*ALL, "deleted", ""]) | st.text(max_size=8),
    b=st.sampled_from([*ALL, "deleted", ""]) | st.text(max_size=8),
)
def test_advancing_is_antisymmetric(a: str, b: str) -> None:
    assert not (status_advances(a, b) and status_advances(b, a))
