"""The pull feed and the live stream: the same events in the same order, resumable, long-polling, shared."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from libs.api.app import create_app
from libs.db.engine import Database
from libs.events.types import EventOut
from libs.settings import Settings
from tests.events.conftest import company_with_number, customer_writes
from tests.fakes.server import running_app

NUMBER_ID = "pn-feed"


@pytest.fixture
def api_app(settings: Settings, db: Database, broker: Any, dispatcher_worker: Any) -> Any:
    """The API app (its event hub is ``app.state.ctx.hub``), with a dispatcher worker publishing events."""
    return create_app(settings)


@pytest.fixture
def api_url(api_app: Any) -> Iterator[str]:
    """The API served by uvicorn (real streaming)."""
    with running_app(api_app) as url:
        yield url


@pytest.fixture
def http(api_url: str, settings: Settings) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api_url, headers={"authorization": f"Bearer {settings.api_token}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
def company(http: httpx.Client) -> int:
    return company_with_number(http, NUMBER_ID)


def read_stream(
    http: httpx.Client,
    count: int,
    *,
    params: dict[str, Any],
    headers: dict[str, str] | None = None,
    started: threading.Event | None = None,
) -> list[dict[str, Any]]:
    """Open the stream and read ``count`` events (each an SSE message: id, event, data)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with http.stream("GET", "/api/events/stream", params=params, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        if started is not None:
            started.set()
        for line in response.iter_lines():
            if line.startswith(":"):
                continue  # keep-alive comment
            if not line:
                if current:
                    events.append(current)
                    current = {}
                    if len(events) == count:
                        return events
                continue
            name, _, value = line.partition(": ")
            current[name] = value
    return events


def test_feed_and_stream_return_the_same_events_in_the_same_order(
    http: httpx.Client, db: Database, company: int
) -> None:
    # Given a stream opened before anything happens
    started = threading.Event()
    streamed: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: streamed.extend(read_stream(http, 12, params={"company_id": company}, started=started))
    )
    reader.start()
    assert started.wait(10)
    # When customers write (three conversations, interleaved)
    for n in range(4):
        for sender in ("5511900000001", "5511900000002", "5511900000003"):
            customer_writes(db, NUMBER_ID, sender, f"{sender[-1]}:{n}", n)
    reader.join(20)
    assert len(streamed) == 12
    # Then the pull feed, paged three at a time, gives the same events in the same order
    pulled: list[dict[str, Any]] = []
    cursor = "0"
    while True:
        page = http.get("/api/events", params={"company_id": company, "after": cursor, "limit": 3}).json()
        pulled.extend(page["events"])
        cursor = page["next_cursor"]
        if not page["events"]:
            break
    assert [e["id"] for e in pulled] == [orjson.loads(s["data"])["id"] for s in streamed]
    assert [s["id"] for s in streamed] == [e["cursor"] for e in pulled]
    assert [s["event"] for s in streamed] == [e["type"] for e in pulled]
    # And each event is in the published shape, numbered without gaps per company
    for event in pulled:
        EventOut.model_validate(event)
    assert [e["sequence"] for e in pulled] == list(range(1, 13))
    assert [e["data"]["text"] for e in pulled if e["conversation"] == "contact:5511900000002"] == [
        f"2:{n}" for n in range(4)
    ]


def test_a_stream_resumed_with_last_event_id_misses_nothing(http: httpx.Client, db: Database, company: int) -> None:
    for n in range(5):
        customer_writes(db, NUMBER_ID, "5511900000001", f"m{n}", n)
    # Given a client that read the first two events and lost its connection
    first = read_stream(http, 2, params={"company_id": company, "after": "0"})
    # When more happen meanwhile and it comes back with the last id it saw
    for n in range(5, 8):
        customer_writes(db, NUMBER_ID, "5511900000001", f"m{n}", n)
    rest = read_stream(http, 6, params={"company_id": company}, headers={"last-event-id": first[-1]["id"]})
    # Then it gets every event after that one, once, in order
    texts = [orjson.loads(e["data"])["data"]["text"] for e in first + rest]
    assert texts == [f"m{n}" for n in range(8)]


def test_long_poll_answers_as_soon_as_an_event_is_published(http: httpx.Client, db: Database, company: int) -> None:
    # Given the feed is read to its end
    cursor = http.get("/api/events", params={"company_id": company}).json()["next_cursor"]
    # When a long poll waits and an event is published a moment later
    answer: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        answer["page"] = http.get("/api/events", params={"company_id": company, "after": cursor, "wait": 20}).json()
        answer["took"] = time.monotonic() - started

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)  # the poll is waiting by now (a head start, not a synchronisation)
    customer_writes(db, NUMBER_ID, "5511900000001", "now", 0)
    poller.join(25)
    # Then it answers with that event, long before its 20-s wait ran out
    assert [e["data"]["text"] for e in answer["page"]["events"]] == ["now"]
    assert answer["took"] < 5
    # And a wait with nothing published ends empty at its limit, with a cursor to continue from
    started = time.monotonic()
    empty = http.get("/api/events", params={"company_id": company, "after": answer["page"]["next_cursor"], "wait": 1})
    assert empty.json()["events"] == [] and 0.9 < time.monotonic() - started < 5


def test_last_gives_the_newest_events_and_the_cursor_to_follow_them(
    http: httpx.Client, db: Database, company: int
) -> None:
    # Given six messages in the feed (read through the stream: they are published)
    for n in range(6):
        customer_writes(db, NUMBER_ID, "5511900000001", f"m{n}", n)
    read_stream(http, 6, params={"company_id": company, "types": "message.received", "after": "0"})
    everything = http.get("/api/events", params={"company_id": company, "limit": 1000}).json()["events"]
    # When a reader asks for the last three
    page = http.get("/api/events", params={"company_id": company, "last": 3}).json()
    # Then it gets the newest three, oldest first, and nothing more to page through
    assert [e["id"] for e in page["events"]] == [e["id"] for e in everything[-3:]]
    assert [e["data"]["text"] for e in page["events"]] == ["m3", "m4", "m5"]
    assert page["has_more"] is False
    # And following its cursor gives exactly what is published next
    for n in range(6, 8):
        customer_writes(db, NUMBER_ID, "5511900000001", f"m{n}", n)
    following = read_stream(http, 2, params={"company_id": company, "after": page["next_cursor"]})
    assert [orjson.loads(e["data"])["data"]["text"] for e in following] == ["m6", "m7"]
    # And a filter nothing passes gives no events and a cursor all the same
    empty = http.get("/api/events", params={"company_id": company + 1000, "last": 3}).json()
    assert empty["events"] == [] and empty["next_cursor"].isdigit() and empty["has_more"] is False


def test_many_streams_share_one_listener(http: httpx.Client, api_app: Any, db: Database, company: int) -> None:
    # Given 20 streams open at once
    results: list[list[dict[str, Any]]] = []
    ready = [threading.Event() for _ in range(20)]
    readers = [
        threading.Thread(
            target=lambda e=e: results.append(read_stream(http, 5, params={"company_id": company}, started=e))
        )
        for e in ready
    ]
    for reader in readers:
        reader.start()
    assert all(e.wait(10) for e in ready)
    # When five events are published
    for n in range(5):
        customer_writes(db, NUMBER_ID, "5511900000001", f"m{n}", n)
    for reader in readers:
        reader.join(20)
    # Then every stream got all five
    assert len(results) == 20 and all(len(r) == 5 for r in results)
    # And new events were read from Postgres by the hub, once, not by each stream: one first page per stream,
    # then a few reads in all (each stream reading each event would be 100)
    assert api_app.state.ctx.hub.pg_reads <= 20 + 10


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"after": "abc"}, "bad cursor"),
        ({"after": "-1"}, "bad cursor"),
        ({"types": "message.received,nope"}, "unknown event type"),
        ({"wait": "31"}, "wait must be"),
        ({"wait": "soon"}, "wait must be"),
        ({"limit": "0"}, "limit must be"),
        ({"company_id": "x"}, "company_id must be"),
        ({"last": "0"}, "last must be"),
        ({"last": "1001"}, "last must be"),
        ({"last": "3", "wait": "1"}, "last reads the newest events"),
    ],
)
def test_bad_feed_requests_are_refused_with_the_reason(http: httpx.Client, params: dict[str, str], reason: str) -> None:
    response = http.get("/api/events", params=params)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    if "after" in params or "types" in params:  # the stream refuses them too, before it starts
        stream = http.get("/api/events/stream", params=params)
        assert stream.status_code == 400
        assert reason in stream.json()["error"]
