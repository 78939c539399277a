"""The dashboard in a real browser (Playwright driving Debian's chromium) against a live API and worker.

A job fails until a flag flips and is dead-lettered; the page, opened with the API token, shows real queue
numbers; clicking Replay re-enqueues the job, which now succeeds: its row turns ``replayed`` and its job
state ``succeeded``. The screenshot is saved to ``/tmp/zapq-dashboard.png``.

Browser set-up: :mod:`tests.e2e.browser`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import httpx
import pytest
from dramatiq.common import q_name

from libs import contracts
from libs.db.engine import Database
from libs.enqueue import enqueue_many
from libs.settings import Settings
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, NO_BROWSER, UI_TIMEOUT_MS
from tests.helpers import drain
from tests.lifecycle_support import installed_lifecycle
from tests.middleware.support import PROBE, declare_test_actors, ledger_rows

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright==1.65.2")

SCREENSHOT = Path("/tmp/zapq-dashboard.png")

pytestmark = pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))


@pytest.fixture
def worker_but_events(broker: Any) -> Iterator[dramatiq.Worker]:
    """A real worker consuming every queue but ``event-delivery`` (jobs put there stay waiting)."""
    queues = {q_name(name) for name in broker.get_declared_queues()} - {contracts.EVENT_DELIVERY}
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=4, queues=queues)
    worker.start()
    yield worker
    worker.stop()
    broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]


def test_replay_from_the_dashboard(
    api_server: str, settings: Settings, db: Database, broker: Any, worker_but_events: dramatiq.Worker
) -> None:
    worker = worker_but_events
    actors = declare_test_actors(broker)
    PROBE.reset()
    headers = {"authorization": f"Bearer {settings.api_token}"}
    with installed_lifecycle(broker), httpx.Client(base_url=api_server, headers=headers, timeout=10) as http:
        # Given some state to look at: a company, its connection and a campaign with recipients
        company = http.post("/api/companies", json={"name": "Acme"}).json()
        connection = http.post(
            "/api/connections",
            json={"company_id": company["id"], "provider": "meta", "phone_number_id": "pn-1", "access_token": "t",
                  "service_window": "off",
                  "display_phone_number": "+1 555 0100", "name": "Acme main"},
        ).json()  # fmt: skip
        campaign = http.post(
            "/api/campaigns",
            json={"company_id": company["id"], "connection_id": connection["id"], "name": "Spring sale",
                  "text": "Hi {name}"},
        ).json()  # fmt: skip
        csv = "phone,name\n" + "".join(f"1415555{i:04d},N{i}\n" for i in range(40))
        http.post(f"/api/campaigns/{campaign['id']}/recipients", content=csv, headers={"content-type": "text/csv"})
        # And a job that fails until its flag flips: it is dead-lettered and recorded in the ledger
        failing = actors["test_flaky"].send("dashboard")
        drain(broker, worker, [contracts.MESSAGES, contracts.DEAD_LETTER])
        rows = ledger_rows(db)
        assert [r.message_id for r in rows] == [failing.message_id]
        dead_letter_id = rows[0].id
        # And 25 delivery jobs waiting (this worker does not consume event-delivery) and 5 low sends delayed
        # by 10 minutes
        pumps = [contracts.DELIVER_EVENTS.message(contracts.DeliverEvents(1000 + i)) for i in range(25)]
        enqueue_many(broker.client, settings.redis_namespace, pumps, lifecycle=True)
        for i in range(5):
            broker.enqueue(contracts.SEND_LOW.message(contracts.SendMessage(1000 + i)), delay=600_000)
        PROBE.fixed.add("dashboard")

        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                expect = playwright_api.expect
                # When the page is opened and the token entered
                page.goto(api_server + "/")
                expect(page.locator("#login")).to_be_visible()
                page.fill("#token", settings.api_token)
                page.click("#login-button")
                # Then the queue table shows the real numbers
                delivery_row = page.locator(f'#queues tr[data-queue="{contracts.EVENT_DELIVERY}"]')
                expect(delivery_row.locator("td.waiting")).to_have_text("25", timeout=UI_TIMEOUT_MS)
                low_row = page.locator(f'#queues tr[data-queue="{contracts.MESSAGES_LOW}"]')
                expect(low_row.locator("td.delayed")).to_have_text("5", timeout=UI_TIMEOUT_MS)
                messages_row = page.locator(f'#queues tr[data-queue="{contracts.MESSAGES}"]')
                expect(messages_row.locator("td.dead")).to_have_text("1", timeout=UI_TIMEOUT_MS)
                expect(messages_row.locator("svg.sparkline")).to_have_count(1)
                expect(page.locator("#campaigns tbody tr")).to_have_count(1)
                expect(page.locator("#connections td.status")).to_have_text("active")
                # And the dead letter, with a Replay button
                row = page.locator(f'#dead-letters tr[data-id="{dead_letter_id}"]')
                expect(row.locator("td.state")).to_have_text("dead", timeout=UI_TIMEOUT_MS)
                # When Replay is clicked
                row.locator("button.replay").click()
                # Then the row turns replayed and the job, now fixed, succeeds
                expect(row.locator("td.state")).to_have_text("replayed", timeout=UI_TIMEOUT_MS)
                expect(row.locator("td.job-state")).to_have_text("succeeded", timeout=UI_TIMEOUT_MS)
                expect(messages_row.locator("td.dead")).to_have_text("0", timeout=UI_TIMEOUT_MS)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            finally:
                browser.close()
        # And the API agrees
        job = http.get(f"/api/jobs/{failing.message_id}").json()
        assert job["state"] == "succeeded"
        assert len(PROBE.attempts["dashboard"]) == 3  # two failures, then the replay
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"\nscreenshot: {SCREENSHOT}")
