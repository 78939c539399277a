"""Deliveries under failure: per-conversation order, an endpoint down and back, 410, give-up and replay,
"recover since", and receivers that are slow, huge, redirecting or speaking garbage — one bounded attempt each."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from libs.db.engine import Database
from tests.events.conftest import company_with_number, customer_writes, make_endpoint
from tests.fakes.crm import CrmReceiver
from tests.fakes.server import running_app
from tests.ingest import factories as f
from tests.middleware.support import wait_until

NUMBER_ID = "pn-failures"


def delivery_rows(db: Database) -> list[dict[str, Any]]:
    """Every delivery with its attempt log."""
    with db.session() as session:
        rows = session.execute(
            text(
                "SELECT d.id, d.state, d.attempts, a.status_code, a.error, a.latency_ms, a.response_excerpt "
                "FROM event_deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id ORDER BY a.id"
            )
        ).mappings()
        return [dict(r) for r in rows]


def endpoint_row(db: Database, endpoint_id: int) -> dict[str, Any]:
    with db.session() as session:
        row = session.execute(text("SELECT * FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id}).mappings()
        return dict(row.one())


def texts_by_contact(receiver: CrmReceiver) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for delivery in receiver.received:
        out.setdefault(delivery.data["contact"]["wa_id"], []).append(delivery.data["text"])
    return out


def test_a_failing_conversation_waits_in_order_while_others_flow(
    api: TestClient, db: Database, crm: tuple[CrmReceiver, str], policy: Any
) -> None:
    receiver, url = crm
    company_id = company_with_number(api, NUMBER_ID)
    endpoint = make_endpoint(api, company_id, url, event_types=["message.received"])
    receiver.config.secrets = [endpoint["secret"]]
    # Given the CRM fails the first 3 deliveries of conversation A (and none of B's)
    receiver.config.failing_contacts = {"5511900000001": 3}
    # When A and B each write three messages, interleaved
    for n in range(3):
        customer_writes(db, NUMBER_ID, "5511900000001", f"A{n}", n)
        customer_writes(db, NUMBER_ID, "5511900000002", f"B{n}", n)
    # Then everything arrives, each conversation in its order
    receiver.wait_for(6, timeout=20)
    assert texts_by_contact(receiver) == {"5511900000001": ["A0", "A1", "A2"], "5511900000002": ["B0", "B1", "B2"]}
    # And B did not wait for A: all of B arrived before A's first success
    order = [d.data["text"] for d in receiver.received]
    assert order.index("B2") < order.index("A0"), order
    # And A's head was tried 4 times (3 failures on the schedule, then delivered); nothing else retried
    failures = [r for r in delivery_rows(db) if r["status_code"] == 500]
    assert len(failures) == 3


@pytest.mark.timeout(240)
def test_receiver_down_for_60_seconds_then_back_gets_every_event_in_order(
    api: TestClient, db: Database, policy: Any
) -> None:
    # A schedule long enough to outlive a 60-second outage (≈ 90 s), quick enough to notice the return
    policy(schedule=(0.5, 1, 2, 4, 8, 15, 30, 30))
    receiver = CrmReceiver()
    company_id = company_with_number(api, NUMBER_ID)
    with running_app(receiver.app) as url:
        port = int(url.rsplit(":", 1)[1])
        endpoint = make_endpoint(api, company_id, url, event_types=["message.received"])
        receiver.config.secrets = [endpoint["secret"]]
        customer_writes(db, NUMBER_ID, "5511900000001", "A0", 0)
        receiver.wait_for(1)
    # When the CRM is down (connection refused) for 60 s while three conversations keep writing
    down_at = time.monotonic()
    contacts = [f"55119000000{c}" for c in range(1, 4)]
    n = 1
    while time.monotonic() - down_at < 60:
        for contact in contacts:
            customer_writes(db, NUMBER_ID, contact, f"{contact[-1]}-{n}", n)
        n += 1
        time.sleep(5)  # the pace of the customers, not a wait for the system
    assert any(r["error"] and "ConnectError" in r["error"] for r in delivery_rows(db))
    # And then comes back on the same address
    with running_app(receiver.app, port=port):
        expected = 1 + len(contacts) * (n - 1)
        receiver.wait_for(expected, timeout=90)
    # Then every event arrived, in order within each conversation
    got = texts_by_contact(receiver)
    for contact in contacts:
        assert got[contact] == [f"{contact[-1]}-{i}" for i in range(1, n)]
    assert endpoint_row(db, endpoint["id"])["enabled"] is True


def test_410_gone_disables_the_endpoint_at_once(
    api: TestClient, db: Database, crm: tuple[CrmReceiver, str], policy: Any
) -> None:
    receiver, url = crm
    company_id = company_with_number(api, NUMBER_ID)
    endpoint = make_endpoint(api, company_id, url)
    receiver.config.status = 410
    customer_writes(db, NUMBER_ID, "5511900000001", "hello", 0)
    wait_until(lambda: not endpoint_row(db, endpoint["id"])["enabled"], timeout=15, what="the endpoint disabled")
    row = endpoint_row(db, endpoint["id"])
    assert row["disabled_reason"] == "the endpoint answered 410 Gone"
    attempts = len(delivery_rows(db))
    # And nothing more is attempted while it is disabled
    customer_writes(db, NUMBER_ID, "5511900000001", "again", 1)
    time.sleep(1.0)  # a window in which a wrongly enabled pump would have tried
    assert len(delivery_rows(db)) == attempts
    # When it is enabled again, the delivery it refused goes out
    receiver.config.status = 200
    assert api.patch(f"/api/webhook-endpoints/{endpoint['id']}", json={"enabled": True}).status_code == 200
    [first] = receiver.wait_for(1, timeout=15)
    assert first.data["text"] == "hello"
    # And what happened while it was disabled is recovered on request ("replay since")
    since = first.data["timestamp"]
    recovered = api.post(f"/api/webhook-endpoints/{endpoint['id']}/replay", json={"since": since})
    assert recovered.status_code == 200
    assert [d.data["text"] for d in receiver.wait_for(2, timeout=15)] == ["hello", "again"]


def test_given_up_delivery_is_a_dead_letter_and_its_replay_delivers_it(
    api: TestClient, db: Database, crm: tuple[CrmReceiver, str], policy: Any
) -> None:
    receiver, url = crm
    policy(schedule=(0.1, 0.1))  # three attempts in all
    company_id = company_with_number(api, NUMBER_ID)
    endpoint = make_endpoint(api, company_id, url)
    receiver.config.status = 503
    customer_writes(db, NUMBER_ID, "5511900000001", "lost?", 0)
    # Then after three failed attempts the delivery is given up and recorded in the dead-letter ledger
    wait_until(lambda: f.dead_letters(db), timeout=15, what="a dead letter")
    [dead] = f.dead_letters(db)
    assert (dead.actor_name, dead.queue_name, dead.reason) == ("redeliver_event", "event-delivery", "delivery_failed")
    assert dead.attempts == 3
    assert "HTTP 503" in dead.error_message
    assert [r["state"] for r in delivery_rows(db)] == ["failed"] * 3
    # When the CRM is fixed and the dead letter replayed through the API
    receiver.config.status = 200
    assert api.post(f"/api/dead-letters/{dead.id}/replay").status_code == 200
    # Then the event is delivered, with the same webhook-id it always had
    [delivery] = receiver.wait_for(1, timeout=15)
    assert delivery.data["text"] == "lost?"
    assert api.get(f"/api/webhook-endpoints/{endpoint['id']}").json()["failed_deliveries"] == 0


def test_replay_since_a_time_delivers_everything_again(
    api: TestClient, db: Database, crm: tuple[CrmReceiver, str], policy: Any
) -> None:
    receiver, url = crm
    company_id = company_with_number(api, NUMBER_ID)
    endpoint = make_endpoint(api, company_id, url, event_types=["message.received"])
    for n in range(3):
        customer_writes(db, NUMBER_ID, "5511900000001", f"m{n}", n)
    first = receiver.wait_for(3)
    ids = [d.webhook_id for d in first]
    # (the receiver has them before the dispatcher records them: a delivery still in flight is not replayed)
    wait_until(
        lambda: [r["state"] for r in delivery_rows(db)] == ["delivered"] * 3, timeout=15, what="3 deliveries recorded"
    )
    # When everything since before those events is replayed
    response = api.post(f"/api/webhook-endpoints/{endpoint['id']}/replay", json={"since": "2020-01-01T00:00:00Z"})
    assert response.json() == {"queued": 3}
    # Then each arrives again, with its same webhook-id, in the same order
    wait_until(lambda: len(receiver.arrivals) >= 6, timeout=15, what="the replayed deliveries")
    assert receiver.arrivals == ids + ids
    # And one event can be replayed by id; an unknown id is refused
    again = api.post(f"/api/webhook-endpoints/{endpoint['id']}/replay", json={"event_id": ids[0]})
    assert again.json() == {"queued": 1}
    wait_until(lambda: len(receiver.arrivals) >= 7, timeout=15, what="the replayed event")
    bad = api.post(f"/api/webhook-endpoints/{endpoint['id']}/replay", json={"event_id": "evt_nope"})
    assert bad.status_code == 422


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A TCP server that answers every request with bytes that are not HTTP."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x00\xffnot http at all\r\n\r\n" * 10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    server.close()


def test_slow_huge_redirecting_or_garbage_receivers_cost_one_bounded_attempt(
    api: TestClient, db: Database, crm: tuple[CrmReceiver, str], garbage_server: str, policy: Any
) -> None:
    receiver, url = crm
    policy(timeout_s=1.0, schedule=(60.0,))  # one attempt now, the next a minute later (after this test)
    company_id = company_with_number(api, NUMBER_ID)
    # Given four endpoints of one company: slow, huge, redirecting, garbage
    slow = make_endpoint(api, company_id, url + "/slow")
    huge = make_endpoint(api, company_id, url + "/huge")
    moved = make_endpoint(api, company_id, url + "/moved")
    junk = make_endpoint(api, company_id, garbage_server + "/junk")
    receivers = {slow["id"]: "slow", huge["id"]: "huge", moved["id"]: "moved", junk["id"]: "junk"}
    # The one receiver answers per path: after 3 s (over the 1-s timeout), 20 MB of body, or a redirect
    receiver.config.paths = {
        "/slow": {"latency_ms": 3000},
        "/huge": {"body_bytes": 20 * 1024 * 1024},
        "/moved": {"status": 302, "headers": {"location": "http://169.254.169.254/latest/meta-data"}},
    }
    started = time.monotonic()
    customer_writes(db, NUMBER_ID, "5511900000001", "hello", 0)
    # Then each endpoint had exactly one attempt, each bounded in time and in what was kept of the answer
    wait_until(lambda: len(delivery_rows(db)) >= 4, timeout=20, what="four attempts")
    with db.session() as session:
        rows = session.execute(
            text(
                "SELECT d.endpoint_id, d.state, a.status_code, a.error, a.latency_ms, a.response_excerpt "
                "FROM event_deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id"
            )
        ).mappings()
        by_kind = {receivers[r["endpoint_id"]]: dict(r) for r in rows}
    assert time.monotonic() - started < 10
    assert by_kind["slow"]["status_code"] is None and "Timeout" in by_kind["slow"]["error"]
    assert by_kind["slow"]["latency_ms"] < 2500
    assert (by_kind["huge"]["state"], by_kind["huge"]["status_code"]) == ("delivered", 200)
    assert len(by_kind["huge"]["response_excerpt"]) <= 1024
    assert (by_kind["moved"]["state"], by_kind["moved"]["status_code"]) == ("pending", 302)  # not followed
    assert by_kind["junk"]["status_code"] is None and by_kind["junk"]["state"] == "pending"
    assert "RemoteProtocolError" in by_kind["junk"]["error"]
    assert len(delivery_rows(db)) == 4


def test_an_endpoint_failing_for_the_whole_disable_period_is_disabled(
    api: TestClient, db: Database, crm: tuple[CrmReceiver, str], policy: Any
) -> None:
    receiver, url = crm
    policy(schedule=(0.3,) * 10, disable_after_s=1.0)
    company_id = company_with_number(api, NUMBER_ID)
    endpoint = make_endpoint(api, company_id, url)
    receiver.config.status = 500
    customer_writes(db, NUMBER_ID, "5511900000001", "hello", 0)
    wait_until(lambda: not endpoint_row(db, endpoint["id"])["enabled"], timeout=15, what="the endpoint disabled")
    row = endpoint_row(db, endpoint["id"])
    assert row["disabled_reason"].startswith("every delivery failed since ")
    assert row["failing_since"] is not None
    listed = api.get(f"/api/webhook-endpoints?company_id={company_id}").json()
    assert listed[0]["enabled"] is False and listed[0]["backlog"] == 1


def _set_endpoint(db: Database, endpoint_id: int, *, failing: bool, last_success: str) -> None:
    with db.session() as session:
        session.execute(
            text(
                "UPDATE webhook_endpoints SET failing_since = CASE WHEN :failing THEN now() END, "
                f"last_success_at = {last_success} WHERE id = :id"
            ),
            {"failing": failing, "id": endpoint_id},
        )


def test_a_success_clears_failing_and_rewrites_the_endpoint_only_when_that_changes_something(
    api: TestClient, db: Database, crm: tuple[CrmReceiver, str], policy: Any
) -> None:
    receiver, url = crm
    company_id = company_with_number(api, NUMBER_ID)
    endpoint = make_endpoint(api, company_id, url)
    # Given an endpoint marked failing, whose last success is recent (stamped in the future: recent however slow
    # the machine)
    _set_endpoint(db, endpoint["id"], failing=True, last_success="now() + interval '1 hour'")
    # When a delivery succeeds, the endpoint is no longer failing
    customer_writes(db, NUMBER_ID, "5511900000001", "one", 0)
    receiver.wait_for(1)
    wait_until(lambda: endpoint_row(db, endpoint["id"])["failing_since"] is None, timeout=10, what="failing cleared")
    cleared = endpoint_row(db, endpoint["id"])
    assert cleared["last_success_at"] is not None
    # Given a healthy endpoint whose last success is recent
    _set_endpoint(db, endpoint["id"], failing=False, last_success="now() + interval '1 hour'")
    stamped = endpoint_row(db, endpoint["id"])["last_success_at"]
    # When another delivery succeeds, the row is left as it was (each batch of outcomes rewrote it before)
    customer_writes(db, NUMBER_ID, "5511900000002", "two", 0)
    receiver.wait_for(2)
    wait_until(lambda: [r["state"] for r in delivery_rows(db)] == ["delivered"] * 2, timeout=10, what="both recorded")
    assert endpoint_row(db, endpoint["id"])["last_success_at"] == stamped
    # And with a last success over a second old, a success stamps it again
    _set_endpoint(db, endpoint["id"], failing=False, last_success="now() - interval '5 seconds'")
    stale = endpoint_row(db, endpoint["id"])["last_success_at"]
    customer_writes(db, NUMBER_ID, "5511900000003", "three", 0)
    receiver.wait_for(3)
    wait_until(lambda: endpoint_row(db, endpoint["id"])["last_success_at"] > stale, timeout=10, what="a new stamp")


def test_replaying_a_given_up_event_from_its_endpoint_settles_its_dead_letter(
    api: TestClient, db: Database, crm: tuple[CrmReceiver, str], policy: Any
) -> None:
    receiver, url = crm
    policy(schedule=(0.1,))  # two attempts in all
    company_id = company_with_number(api, NUMBER_ID)
    endpoint = make_endpoint(api, company_id, url)
    receiver.config.status = 500
    customer_writes(db, NUMBER_ID, "5511900000001", "late", 0)
    wait_until(lambda: f.dead_letters(db), timeout=15, what="a dead letter")
    event_id = api.get("/api/events").json()["events"][0]["id"]
    # When the CRM is fixed and the event is replayed from its endpoint (not from the ledger)
    receiver.config.status = 200
    assert api.post(f"/api/webhook-endpoints/{endpoint['id']}/replay", json={"event_id": event_id}).json() == {
        "queued": 1
    }
    receiver.wait_for(1)
    # Then its dead letter is settled: a later ledger replay would send nothing twice
    [dead] = f.dead_letters(db)
    assert dead.replayed_at is not None and dead.replay_count == 1
