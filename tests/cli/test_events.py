"""``zapq events …``: follow, page and inspect events through the real API, published by a real dispatcher.

Events come from real facts (an inbound webhook applied by the ingest's function, ``zapq send``, a connection
deactivated through the API); a real Dramatiq worker of the event dispatcher publishes them (and delivers them
to a fake CRM on loopback). ``tail`` runs as a real ``zapq`` subprocess, so Ctrl-C is a real SIGINT; ``list``
and ``show`` run in-process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from libs.cli.events import parse_sse
from libs.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from libs.db.engine import Database
from libs.ingest.process import process_webhook
from libs.ops.processes import free_port
from libs.settings import Settings
from tests.cli.conftest import serving, zapq
from tests.events.conftest import crm, dispatcher_worker, make_endpoint, policy  # noqa: F401 - fixtures
from tests.fakes.crm import CrmReceiver
from tests.ingest import factories as f

ZAPQ = str(Path(sys.executable).with_name("zapq"))
#: Longest wait for a subprocess or an event (seconds); a wait ends as soon as its condition holds.
DEADLINE_S = 30.0


@pytest.fixture
def served(settings: Settings, db: Database) -> Iterator[str]:
    """A fresh API per test, started after the tables were emptied (overrides the module-wide one): its feed
    listener starts from the event counters as they are now, and would ignore events numbered below them."""
    with serving(settings) as url:
        yield url


def _as_in_a_terminal() -> None:
    """Give the child Ctrl-C's default disposition, as a terminal gives a foreground command: a test run started
    in the background (``pytest … &``, CI under ``nohup``) has SIGINT ignored, the child would inherit that and
    the test's Ctrl-C would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Tail:
    """``zapq events tail …`` in a subprocess; its stdout and stderr lines as they arrive."""

    def __init__(self, api_url: str, *argv: str, piped_to: str | None = None) -> None:
        command = [ZAPQ, "events", "tail", "--api-url", api_url, *argv]
        if piped_to is not None:  # through a shell pipe; the pipeline's exit code is tail's (pipefail)
            command = ["bash", "-o", "pipefail", "-c", f"{shlex.join(command)} | {piped_to}"]
        self.process = subprocess.Popen(
            command,
            env=os.environ.copy(),
            preexec_fn=_as_in_a_terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._open = 2
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate()`` holds (or fail, also when the process ended without it)."""
        with self._changed:
            self._changed.wait_for(lambda: predicate() or self._open == 0, DEADLINE_S)
            assert predicate(), f"tail: waited for {what}; stdout {self.out}, stderr {self.err}"

    def following(self, count: int = 1) -> None:
        """Wait until the stream has been opened ``count`` times."""
        self.wait_for(lambda: sum("following events" in line for line in self.err) >= count, "the stream")

    def lines(self, count: int) -> None:
        """Wait for ``count`` lines on stdout."""
        self.wait_for(lambda: len(self.out) >= count, f"{count} events")

    def exit_code(self, *, interrupt: bool) -> int:
        """Ctrl-C (SIGINT) when ``interrupt``; then the exit code, once the output is read to its end."""
        if interrupt:
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(DEADLINE_S)
        for reader in self._readers:
            reader.join(DEADLINE_S)
        return code

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE_S)


def columns(line: str) -> list[str]:
    """A ``tail`` line's columns: time, type, company, conversation, summary."""
    return re.split(r"\s{2,}", line, maxsplit=4)


def inbound(db: Database, number_id: str, wamid: str, sender: str, text: str) -> None:
    """A customer's text, as a Meta webhook stored by the edge and applied by the ingest worker's function."""
    change = f.meta_change(
        number_id=number_id,
        contacts=[{"profile": {"name": "Ana"}, "wa_id": sender}],
        messages=[f.meta_message(wamid, "text", {"body": text}, sender=sender)],
    )
    process_webhook(db, f.webhook_row(db, f.dumps(f.meta_payload(change))))


def send(capsys: pytest.CaptureFixture[str], company: dict[str, Any], text: str, *extra: str) -> int:
    """``zapq send`` a text to +55 11 98888 7777; the message id."""
    code, out, err = zapq(capsys, "send", "--company", str(company["id"]), "--to", "5511988887777", "--text", text,
                          *extra)  # fmt: skip
    assert code == EXIT_OK, err
    return int(out.split()[1])


def published(http: httpx.Client, company: dict[str, Any], count: int, **params: Any) -> list[dict[str, Any]]:
    """The company's first ``count`` published events, long-polling the feed until there are that many."""
    events: list[dict[str, Any]] = []
    cursor = "0"
    for _ in range(count * 4):
        page = http.get("/api/events", params={"company_id": company["id"], "after": cursor, "wait": 10, **params})
        assert page.status_code == 200, page.text
        events += page.json()["events"]
        cursor = page.json()["next_cursor"]
        if len(events) >= count:
            return events[:count]
    raise AssertionError(f"only {len(events)} of {count} events were published")


def test_parse_sse_follows_the_whatwg_rules() -> None:
    lines = [": ping", "id: 7", "event: message.status", "data: {", "data: }", "", "data:x", "", "id: 8", ""]
    events = list(parse_sse(lines))
    # comments skipped, data lines joined, the id kept until a new one, a default type, no dispatch without data
    assert [(e.id, e.event, e.data) for e in events] == [("7", "message.status", "{\n}"), ("7", "message", "x")]


@pytest.mark.usefixtures("dispatcher_worker")
def test_tail_prints_each_event_the_dispatcher_publishes_and_ctrl_c_exits_0(
    capsys: pytest.CaptureFixture[str], api_url: str, company: dict[str, Any], db: Database
) -> None:
    # Given `zapq events tail` following the company's events
    with Tail(api_url, "--company", str(company["id"])) as tail:
        tail.following()
        # When a customer writes, and the company answers with `zapq send`
        inbound(db, f"pn-{company['id']}", "wamid.IN1", "5511988887777", "hello, has my order shipped?")
        message_id = send(capsys, company, "Yes, it left today")
        # Then one line per event is printed, in order: time, type, company, conversation and a summary
        tail.lines(2)
        # And Ctrl-C ends it with exit code 0, without a traceback
        assert tail.exit_code(interrupt=True) == EXIT_OK
    received, created = (columns(line) for line in tail.out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", received[0]), received
    assert received[1:4] == ["message.received", f"company {company['id']}", "contact:5511988887777"]
    assert re.fullmatch(r'message \d+ from Ana: text "hello, has my order shipped\?"', received[4]), received
    assert created[1:4] == ["message.created", f"company {company['id']}", "contact:5511988887777"]
    assert created[4] == f'message {message_id} to 5511988887777: text "Yes, it left today", normal'
    assert tail.err[0] == "zapq: following events from the next event (Ctrl-C stops)"
    assert not any("Traceback" in line for line in tail.err), tail.err


@pytest.mark.usefixtures("dispatcher_worker")
def test_tail_json_with_a_type_filter_prints_the_feeds_event_and_stops_after_count(
    capsys: pytest.CaptureFixture[str], api_url: str, http: httpx.Client, company: dict[str, Any]
) -> None:
    # Given a tail of connection.status events only, as JSON, stopping after one
    with Tail(api_url, "--types", "connection.status", "--json", "--count", "1") as tail:
        tail.following()
        # When a message is created (filtered out) and then the connection is deactivated
        send(capsys, company, "Hi")
        assert http.post(f"/api/connections/{company['connection']['id']}/deactivate").status_code == 200
        # Then it exits 0 by itself, having printed one JSON line: the connection.status event of the feed
        assert tail.exit_code(interrupt=False) == EXIT_OK
    [line] = tail.out
    created, status = published(http, company, 2)
    assert created["type"] == "message.created"
    assert json.loads(line) == status
    assert status["type"] == "connection.status" and status["data"]["status"] == "inactive"


@pytest.mark.usefixtures("dispatcher_worker")
def test_tail_piped_into_head_exits_0_when_head_has_its_line(
    capsys: pytest.CaptureFixture[str], api_url: str, company: dict[str, Any]
) -> None:
    # Given `zapq events tail --json | head -n 1`
    with Tail(api_url, "--json", piped_to="head -n 1") as tail:
        tail.following()
        # When two events are published (head exits after the first; tail writes the second into a closed pipe)
        send(capsys, company, "one")
        send(capsys, company, "two")
        # Then tail ends with exit code 0 and no broken-pipe traceback
        assert tail.exit_code(interrupt=False) == EXIT_OK
    assert len(tail.out) == 1 and json.loads(tail.out[0])["type"] == "message.created"
    assert tail.err == ["zapq: following events from the next event (Ctrl-C stops)"], tail.err


@pytest.mark.usefixtures("dispatcher_worker")
def test_tail_resumes_after_the_api_restarts_without_missing_or_repeating_an_event(
    capsys: pytest.CaptureFixture[str], settings: Settings, company: dict[str, Any]
) -> None:
    port = free_port()
    with contextlib.ExitStack() as cleanup:
        # Given a tail of an API (on its own port) that has shown one message's event
        with serving(settings, port) as stream_url:
            tail = cleanup.enter_context(Tail(stream_url, "--company", str(company["id"])))
            tail.following()
            first = send(capsys, company, "one")  # through the other API (ZAPQ_API_URL)
            tail.lines(1)
        # When that API stops, a message is created while it is down, and it comes back on the same port
        tail.wait_for(lambda: any("reconnecting" in line for line in tail.err), "the stream to be lost")
        second = send(capsys, company, "two")
        with serving(settings, port):
            # Then the tail reconnects after the last event it showed and shows the missed one, then the next
            tail.following(2)
            third = send(capsys, company, "three")
            tail.lines(3)
            assert tail.exit_code(interrupt=True) == EXIT_OK
    shown = [int(columns(line)[4].split()[1]) for line in tail.out]
    assert shown == [first, second, third]
    # And the outage is reported once, however many reconnection attempts it took
    assert sum("reconnecting" in line for line in tail.err) == 1, tail.err
    assert re.fullmatch(r"zapq: reconnected; following events after cursor \d+ \(Ctrl-C stops\)", tail.err[-1])


@pytest.mark.usefixtures("dispatcher_worker")
def test_list_pages_through_the_feed_with_the_next_cursor(
    capsys: pytest.CaptureFixture[str], http: httpx.Client, company: dict[str, Any]
) -> None:
    # Given three published events of the company
    ids = [send(capsys, company, text) for text in ("one", "two", "three")]
    events = published(http, company, 3)
    # When the first page of two is listed
    code, out, err = zapq(capsys, "events", "list", "--company", str(company["id"]), "--limit", "2")
    # Then it shows two events and the cursor after the second, saying more are waiting
    assert code == EXIT_OK, err
    header, *rows, last = out.splitlines()
    assert header.split() == ["CURSOR", "ID", "OCCURRED_AT", "TYPE", "COMPANY", "CONVERSATION", "SUMMARY"]
    assert [row.split()[:2] for row in rows] == [[e["cursor"], e["id"]] for e in events[:2]]
    assert f"message {ids[0]} to 5511988887777" in rows[0]
    assert last == f"next cursor: {events[1]['cursor']} (more events waiting: run again with it)"
    # When the next page is asked for with that cursor, as JSON
    code, out, _ = zapq(capsys, "events", "list", "--company", str(company["id"]), "--after", events[1]["cursor"],
                        "--json")  # fmt: skip
    # Then it holds the third event, and nothing more is waiting
    page = json.loads(out)
    assert code == EXIT_OK and page["events"] == [events[2]] and page["has_more"] is False
    assert page["next_cursor"] == events[2]["cursor"]


@pytest.mark.usefixtures("dispatcher_worker")
def test_show_prints_the_event_with_its_delivery_attempts(
    capsys: pytest.CaptureFixture[str],
    http: httpx.Client,
    company: dict[str, Any],
    crm: tuple[CrmReceiver, str],  # noqa: F811 - the fixture
    policy: Any,  # noqa: F811 - the fixture
) -> None:
    receiver, url = crm
    # Given an endpoint of the company whose receiver fails the first delivery with a 500
    endpoint = make_endpoint(http, company["id"], url + "/hooks/zapq")  # type: ignore[arg-type]
    receiver.config.secrets = [endpoint["secret"]]
    receiver.config.script = [500]
    # When a message is created and its event reaches the receiver at the second attempt
    send(capsys, company, "Hi")
    [event] = published(http, company, 1)
    receiver.wait_for(1, timeout=DEADLINE_S)
    # Then `events show` prints the event, its data, and the delivery with both attempts, newest first
    code, out, err = zapq(capsys, "events", "show", event["id"])
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0] == f"event {event['id']}: message.created"
    assert lines[1] == f"company {company['id']}  sequence 1  cursor {event['cursor']}"
    assert '"text": "Hi",' in out
    delivery = next(i for i, line in enumerate(lines) if line.startswith(f"endpoint {endpoint['id']}: delivered at"))
    assert lines[delivery].endswith("(2 attempt(s))")
    assert re.fullmatch(r"  #2  \S+  HTTP 200  \d+ ms.*", lines[delivery + 1]), lines[delivery + 1]
    assert re.fullmatch(r"  #1  \S+  HTTP 500  \d+ ms.*", lines[delivery + 2]), lines[delivery + 2]
    # And --json gives the API's answer
    code, out, _ = zapq(capsys, "events", "show", event["id"], "--json")
    shown = json.loads(out)
    assert code == EXIT_OK and [d["state"] for d in shown["deliveries"]] == ["delivered"]
    assert [a["status_code"] for a in shown["deliveries"][0]["log"]] == [200, 500]


def test_refusals_exit_2_with_the_apis_reason(capsys: pytest.CaptureFixture[str], api_url: str) -> None:
    # An unknown event type, in the feed and in the stream
    code, out, err = zapq(capsys, "events", "list", "--types", "message.received,message.exploded")
    assert (code, out) == (EXIT_USAGE, "")
    assert err == "zapq: unknown event type(s): message.exploded (HTTP 400)\n"
    code, out, err = zapq(capsys, "events", "tail", "--types", "nope")
    assert (code, out, err) == (EXIT_USAGE, "", "zapq: unknown event type(s): nope (HTTP 400)\n")
    # A cursor that is not one, in the feed and in the stream
    code, _, err = zapq(capsys, "events", "list", "--after", "yesterday")
    assert code == EXIT_USAGE and "bad cursor 'yesterday'" in err and "(HTTP 400)" in err
    code, _, err = zapq(capsys, "events", "tail", "--after", "-1")
    assert code == EXIT_USAGE and "bad cursor '-1'" in err
    # A long poll beyond 30 s
    code, _, err = zapq(capsys, "events", "list", "--wait", "31")
    assert code == EXIT_USAGE and "wait must be a number of seconds from 0 to 30" in err


def test_an_unknown_event_exits_3(capsys: pytest.CaptureFixture[str], api_url: str) -> None:
    code, out, err = zapq(capsys, "events", "show", "evt_00000000000003e7")
    assert (code, out, err) == (EXIT_NOT_FOUND, "", "zapq: no event evt_00000000000003e7 (HTTP 404)\n")
    code, _, err = zapq(capsys, "events", "show", "not-an-event")
    assert code == EXIT_NOT_FOUND and "no event not-an-event" in err


@pytest.mark.parametrize("argv", [["tail"], ["list"], ["show", "evt_0000000000000001"]], ids=lambda a: a[0])
def test_an_api_that_is_down_exits_1_naming_the_url(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = zapq(capsys, "events", *argv, "--api-url", url)
    assert (code, out) == (EXIT_FAILED, "")
    assert f"cannot reach the zapq API at {url}" in err
