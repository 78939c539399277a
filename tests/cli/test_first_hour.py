"""A new user's first hour, as README "Your first hour" walks it: ``zapq dev up`` starts the stack, seeds the demo
company and prints the next steps; then, through the CLI and HTTP only, a company and a connection, a sent
message, a received one, a campaign, a dead letter and its replay; Ctrl-C stops everything cleanly (exit 0).

The stack is the real one (uvicorn, Dramatiq workers, the fake Meta) from a Procfile like
``deploy/Procfile.dev`` on free ports, in this session's database and Redis namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.db.engine import Database
from libs.ops.processes import ROOT, free_port
from libs.ops.seed import FAKE_META_TOKEN
from libs.settings import Settings
from tests.cli.conftest import zapq
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, NO_BROWSER, UI_TIMEOUT_MS
from tests.fakes.meta import DEFAULT_TOKEN
from tests.middleware.support import wait_until


def _procfile(path: Path, api: int, ingest: int, meta: int) -> None:
    path.write_text(
        f"api: uvicorn services.api.app:app --host 127.0.0.1 --port {api} --no-access-log\n"
        f"webhook-api: uvicorn services.webhook_ingest.app:app --host 127.0.0.1 --port {ingest} --no-access-log\n"
        "webhook-worker: dramatiq services.webhook_ingest --processes 1 --threads 2\n"
        "message-sender: dramatiq services.message_sender --processes 1 --threads 4\n"
        "campaign-runner: dramatiq services.campaign_runner --processes 1 --threads 2\n"
        "ops-worker: dramatiq services.scheduler --processes 1 --threads 2\n"
        f"fake-meta: python -m tests.fakes.meta --port {meta} --webhook-url http://127.0.0.1:{ingest}/webhooks/meta"
        " --app-secret ${ZAPQ_META_APP_SECRET:-dev-meta-app-secret}\n"
    )


class Stack:
    """``zapq dev up`` as a child process; its output collected line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = zapq(capsys, *argv, "--json")
    assert code == 0, (argv, err)
    return json.loads(out)


def _status(capsys: pytest.CaptureFixture[str], message_id: int) -> str:
    return str(_json(capsys, "message", str(message_id))["status"])


def _replay_in_the_browser(api: str, token: str, letter: int, message: int, capsys: Any) -> None:
    """Replay dead letter ``letter`` on the dashboard, then open ``message`` from its row: it reads sent."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(api + "/")
            page.fill("#token", token)
            page.click("#login-button")
            row = page.locator(f'#dead-letters tr[data-id="{letter}"]')
            expect(row.locator("td.state")).to_have_text("dead", timeout=UI_TIMEOUT_MS)
            row.locator("button.replay").click()
            expect(row.locator("td.state")).to_have_text("replayed", timeout=UI_TIMEOUT_MS)
            wait_until(lambda: _status(capsys, message) in ("sent", "delivered", "read"), timeout=30, what="sent")
            row.locator("a.message-link").click()
            expect(page.locator("#d-id")).to_have_text(f"#{message}", timeout=UI_TIMEOUT_MS)
            expect(page.locator("#facts dd").first).to_have_text(re.compile("^(sent|delivered|read)$"))
            expect(page.locator("#timeline li.earlier")).to_contain_text("Parameter value invalid (Meta 131009)")
        finally:
            browser.close()


def test_fake_meta_token_is_the_seeded_one() -> None:
    assert FAKE_META_TOKEN == DEFAULT_TOKEN


@pytest.mark.timeout(120)
def test_first_hour_from_dev_up_to_a_replayed_dead_letter(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    db: Database,
    broker: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api_port, ingest_port, meta_port = free_port(), free_port(), free_port()
    api, ingest, meta = (f"http://127.0.0.1:{p}" for p in (api_port, ingest_port, meta_port))
    _procfile(tmp_path / "Procfile", api_port, ingest_port, meta_port)
    env = {
        **os.environ,
        "ZAPQ_API_URL": api,
        "ZAPQ_META_GRAPH_URL": meta,
        "ZAPQ_HEARTBEAT_DIR": str(tmp_path / "heartbeats"),
    }
    for name in ("ZAPQ_API_URL", "ZAPQ_META_GRAPH_URL"):
        monkeypatch.setenv(name, env[name])
    stack = Stack([sys.executable, "-m", "libs.cli", "dev", "up", "--procfile", str(tmp_path / "Procfile")], env)
    try:
        # Given `zapq dev up`, the printed block names the dashboard, its token, the docs and three commands
        wait_until(lambda: "more: README.md" in stack.output(), timeout=60, what="the next-steps block")
        block = stack.output()
        assert f"dashboard   {api}/" in block and f"token: {settings.api_token}" in block
        assert f"API docs    {api}/docs" in block
        seeded = re.search(r"demo company (\d+) and connection (\d+) (created|found)", block)
        assert seeded is not None, block
        demo, demo_connection = seeded.group(1), seeded.group(2)
        assert f"zapq send --company {demo} --to" in block
        assert 'zapq dev webhook --text "' in block and f"zapq events tail --company {demo}" in block

        # When the user creates a company and a Meta connection with the fake's token
        code, out, err = zapq(capsys, "company", "create", "--name", "Acme")
        assert code == 0, err
        company = int(out)
        connection = _json(
            capsys, "connection", "create", "--company", str(company), "--provider", "meta",
            "--phone-number-id", "111222333", "--access-token", FAKE_META_TOKEN, "--service-window", "off",
        )  # fmt: skip
        assert connection["status"] == "active" and "access_token" not in connection
        listed = _json(capsys, "connection", "list", "--company", str(company))
        assert [c["id"] for c in listed] == [connection["id"]]

        # Then a message sent to a customer is sent (the fake Meta accepts it)
        sent = _json(capsys, "send", "--company", str(company), "--to", "+5511988887777", "--text", "Hello")
        wait_until(lambda: _status(capsys, sent["id"]) in ("sent", "delivered", "read"), timeout=30, what="sent")
        # (the row reads sent when the send's record commits; its job is marked done a moment after)
        job_done = lambda: _json(capsys, "message", str(sent["id"]))["job"]["state"] != "running"  # noqa: E731
        wait_until(job_done, timeout=30, what="the send's job done")
        shown = _json(capsys, "message", str(sent["id"]))
        assert shown["external_id"] and shown["job"]["state"] == "succeeded"
        job = _json(capsys, "job", str(sent["id"]))
        assert (job["found"], job["job_id"], job["state"]) == ("message", sent["job_id"], "succeeded")

        # And a customer's message posted as a signed webhook is received on the demo number
        posted = _json(capsys, "dev", "webhook", "--text", "Hi there", "--ingest-url", ingest)
        headers = {"authorization": f"Bearer {settings.api_token}"}
        with httpx.Client(base_url=api, headers=headers, timeout=10) as http:

            def inbound() -> list[dict[str, Any]]:
                page = http.get("/api/messages", params={"company_id": int(demo), "direction": "in"}).json()
                return [m for m in page["messages"] if m["external_id"] == posted["wamid"]]

            wait_until(lambda: bool(inbound()), timeout=30, what="the inbound message")
            assert inbound()[0]["body"] == "Hi there"

            # And a campaign of two sends them both
            code, out, err = zapq(
                capsys, "campaign", "create", "--company", demo, "--connection", demo_connection, "--name", "First",
                "--text", "Hi {name}",
            )  # fmt: skip
            assert code == 0, err
            campaign = out.strip()
            csv = tmp_path / "recipients.csv"
            csv.write_text("phone,name\n+5511900000001,Ana\n+5511900000002,Bia\n")
            assert zapq(capsys, "campaign", "import", campaign, str(csv))[0] == 0
            assert zapq(capsys, "campaign", "start", campaign)[0] == 0
            wait_until(
                lambda: _json(capsys, "campaign", "status", campaign)["sent_count"] == 2, timeout=30, what="campaign"
            )

            # And a send Meta refuses for good is dead-lettered, and its replay sends it
            http.post(f"{meta}/_fake/config", json={"forced_errors": [131009]}).raise_for_status()
            failing = _json(capsys, "send", "--company", demo, "--to", "+5511977776666", "--text", "Oops")
            wait_until(lambda: _status(capsys, failing["id"]) == "failed", timeout=30, what="the failure")
            wait_until(lambda: bool(_json(capsys, "dlq", "list")), timeout=30, what="the dead letter")
            [letter] = _json(capsys, "dlq", "list")
            code, out, err = zapq(capsys, "dlq", "replay", str(letter["id"]))
            assert code == 0, err
            wait_until(
                lambda: _status(capsys, failing["id"]) in ("sent", "delivered", "read"), timeout=30, what="replay"
            )

            # And the same from the dashboard: Replay on the dead letter, then its message page shows it sent
            if NO_BROWSER is None:
                http.post(f"{meta}/_fake/config", json={"forced_errors": [131009]}).raise_for_status()
                again = _json(capsys, "send", "--company", demo, "--to", "+5511955554444", "--text", "Third try")
                wait_until(lambda: len(_json(capsys, "dlq", "list")) == 2, timeout=30, what="the second dead letter")
                second = next(r for r in _json(capsys, "dlq", "list") if r["state"] == "dead")
                _replay_in_the_browser(api, settings.api_token, second["id"], again["id"], capsys)
    finally:
        # Finally Ctrl-C stops every process cleanly: exit 0, nothing killed, no heartbeat left
        stack.process.send_signal(signal.SIGINT)
        code = stack.process.wait(timeout=90)
        stack.reader.join(timeout=10)
    tail = "\n".join(stack.lines[-5:])
    assert code == 0, tail
    assert "killed" not in tail and "exit 0" in tail
    assert list((tmp_path / "heartbeats").rglob("*.alive")) == []
