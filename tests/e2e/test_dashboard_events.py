"""The dashboard's event cards in a real browser, against a live API, a real dispatcher worker and a fake CRM.

The CRM fails an event's every attempt: the page shows the endpoint's failure and success rate, and the event's
attempts with the CRM's 500s; Replay on the event delivers it again (the CRM receives it once more), "Replay
since" the last hour queues every event of that hour again, and an endpoint disabled by a 410 shows its backlog
until Enable resumes it. The page stays within a 390-px-wide screen. Screenshots: ``/tmp/zapq-dashboard-events
.png`` (wide) and ``/tmp/zapq-dashboard-events-390.png`` (phone).

Browser set-up: :mod:`tests.e2e.browser`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.db.engine import Database
from libs.ingest.process import process_webhook
from libs.settings import Settings
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, NO_BROWSER, UI_TIMEOUT_MS
from tests.events.conftest import crm, dispatcher_worker, policy  # noqa: F401 - fixtures
from tests.fakes.crm import CrmReceiver
from tests.ingest import factories as f
from tests.middleware.support import wait_until

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright==1.65.2")

pytestmark = pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))

SCREENSHOT = Path("/tmp/zapq-dashboard-events.png")
SCREENSHOT_PHONE = Path("/tmp/zapq-dashboard-events-390.png")
NUMBER_ID = "pn-dashboard-events"
#: A query string that must never be shown (a token some receivers take in their URL).
URL_SECRET = "token=s3cr3t"


@pytest.fixture
def http(api_server: str, settings: Settings) -> Iterator[httpx.Client]:
    """A client of the served API, with the token."""
    headers = {"authorization": f"Bearer {settings.api_token}"}
    with httpx.Client(base_url=api_server, headers=headers, timeout=10) as client:
        yield client


def customer_writes(db: Database, sender: str, text: str, n: int) -> None:
    """An inbound text from ``sender``, sent now (a ``message.received`` event that occurred now)."""
    message = f.meta_message(
        f"wamid.D{sender}.{n}", "text", {"body": text}, sender=sender, timestamp=str(int(time.time()))
    )
    body = f.meta_payload(f.meta_change(number_id=NUMBER_ID, messages=[message]))
    process_webhook(db, f.webhook_row(db, f.dumps(body)))


def delivery_of(http: httpx.Client, event_id: str) -> dict[str, Any]:
    """The (only) delivery of an event, from the API."""
    [delivery] = http.get(f"/api/events/{event_id}").json()["deliveries"]
    return dict(delivery)


def newest_event(http: httpx.Client) -> dict[str, Any]:
    """The newest published event."""
    events = http.get("/api/events", params={"last": 1}).json()["events"]
    assert events, "no event published yet"
    return dict(events[0])


def test_endpoints_and_event_deliveries_on_the_dashboard(
    api_server: str,
    http: httpx.Client,
    settings: Settings,
    db: Database,
    crm: tuple[CrmReceiver, str],  # noqa: F811 - fixture
    policy: Any,  # noqa: F811 - fixture
) -> None:
    receiver, crm_url = crm
    policy(schedule=(0.1, 0.1))  # three attempts, then the delivery is given up
    # Given a company whose CRM receives its inbound messages, and fails every attempt for now
    company = http.post("/api/companies", json={"name": "Acme"}).json()
    connection = {"company_id": company["id"], "provider": "meta", "phone_number_id": NUMBER_ID, "access_token": "t"}
    assert http.post("/api/connections", json=connection).status_code == 201
    created = http.post(
        "/api/webhook-endpoints",
        json={"company_id": company["id"], "url": f"{crm_url}/hooks/acme?{URL_SECRET}",
              "event_types": ["message.received"], "description": "CRM <i>inbox</i>"},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    endpoint = created.json()
    receiver.config.secrets = [endpoint["secret"]]
    receiver.config.status = 500
    # And a customer's message (its text is HTML, to be shown as text) whose delivery is given up
    customer_writes(db, "5511900000001", "<b>hello</b>", 0)
    wait_until(
        lambda: http.get(f"/api/webhook-endpoints/{endpoint['id']}").json()["failed_deliveries"] == 1,
        timeout=20,
        what="the delivery given up",
    )
    first = newest_event(http)
    assert receiver.arrivals.count(first["id"]) == 3

    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            expect = playwright_api.expect
            # When the dashboard is opened with the token
            page.goto(api_server + "/")
            page.fill("#token", settings.api_token)
            page.click("#login-button")
            # Then the endpoint shows where it delivers (host and path, not its query), its success rate with the
            # attempt count, the failed delivery and the last failure
            row = page.locator(f'#endpoints tr[data-id="{endpoint["id"]}"]')
            expect(row.locator("td.url .url-text")).to_have_text(
                f"{crm_url.removeprefix('http://')}/hooks/acme", timeout=UI_TIMEOUT_MS
            )
            expect(row.locator("td.company")).to_have_text(f"Acme ({company['id']})")
            expect(row.locator("td.state")).to_have_text("enabled")
            expect(row.locator("td.rate")).to_have_text("0.0 % of 3")
            expect(row.locator("td.backlog")).to_have_text("0")
            expect(row.locator("td.failed")).to_have_text("1")
            expect(row.locator("td.failure .failure-reason")).to_contain_text("500")
            assert URL_SECRET not in page.locator("#endpoints").inner_text()
            # And the event is among the recent ones, its HTML shown as text
            event_row = page.locator(f'#events tr[data-id="{first["id"]}"]')
            expect(event_row.locator("td.type")).to_have_text("message.received")
            expect(event_row.locator("td.conversation")).to_have_text("contact:5511900000001")
            expect(event_row.locator("td.summary")).to_contain_text('"<b>hello</b>"')
            expect(page.locator("#events b, #endpoints i")).to_have_count(0)
            # When the event is opened
            event_row.click()
            # Then its delivery shows the three attempts and the CRM's 500s
            delivery = page.locator(f'#event-detail .delivery[data-endpoint-id="{endpoint["id"]}"]')
            expect(delivery.locator(".delivery-state")).to_have_text("failed", timeout=UI_TIMEOUT_MS)
            expect(delivery.locator("td.status-code")).to_have_text(["500", "500", "500"])

            # When the CRM is back and Replay is clicked on the event
            receiver.config.status = 200
            delivery.locator("button.replay-event").click()
            # Then it is queued and delivered again: a fourth attempt, a 200
            expect(delivery.locator(".replay-result")).to_have_text("queued 1", timeout=UI_TIMEOUT_MS)
            expect(delivery.locator(".delivery-state")).to_have_text("delivered", timeout=UI_TIMEOUT_MS)
            expect(delivery.locator("td.status-code")).to_have_text(["200", "500", "500", "500"])
            [received] = receiver.wait_for(1)
            assert received.webhook_id == first["id"] and receiver.arrivals.count(first["id"]) == 4
            expect(row.locator("td.failed")).to_have_text("0", timeout=UI_TIMEOUT_MS)

            # Given a second message, delivered at once
            customer_writes(db, "5511900000002", "second", 1)
            second = receiver.wait_for(2)[1]
            wait_until(
                lambda: delivery_of(http, second.webhook_id)["state"] == "delivered", timeout=20, what="it recorded"
            )
            expect(page.locator(f'#events tr[data-id="{second.webhook_id}"]')).to_have_count(1, timeout=UI_TIMEOUT_MS)
            # When everything of the last hour is replayed from the endpoint's row
            row.locator("select.since-choice").select_option("1")
            row.locator("button.replay-since").click()
            # Then both events are queued and the CRM receives each once more
            expect(row.locator(".replay-result")).to_have_text("queued 2", timeout=UI_TIMEOUT_MS)
            wait_until(
                lambda: receiver.arrivals.count(first["id"]) == 5 and receiver.arrivals.count(second.webhook_id) == 2,
                timeout=20,
                what="both events delivered again",
            )
            # And a custom time that is no time is refused with the API's reason
            row.locator("select.since-choice").select_option("custom")
            row.locator("input.since-custom").fill("yesterday-ish")
            row.locator("button.replay-since").click()
            expect(row.locator(".replay-result")).to_contain_text("since", timeout=UI_TIMEOUT_MS)
            expect(row.locator(".replay-result")).to_have_class("replay-result error")

            # Given the CRM answers 410 Gone to the next message: the endpoint is disabled with it undelivered
            receiver.config.status = 410
            customer_writes(db, "5511900000003", "third", 2)
            # Then the page shows it disabled, why, and its backlog
            expect(row.locator("td.state .endpoint-disabled")).to_have_text("disabled", timeout=UI_TIMEOUT_MS)
            expect(row.locator("td.state .disabled-reason")).to_have_text("the endpoint answered 410 Gone")
            expect(row.locator("td.backlog")).to_have_text("1", timeout=UI_TIMEOUT_MS)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            # When it is enabled from the page (the CRM answering again)
            receiver.config.status = 200
            row.locator("button.enable").click()
            # Then the waiting event goes out and the backlog empties
            assert [d.data["text"] for d in receiver.wait_for(3)][2] == "third"
            expect(row.locator("td.state")).to_have_text("enabled", timeout=UI_TIMEOUT_MS)
            expect(row.locator("td.backlog")).to_have_text("0", timeout=UI_TIMEOUT_MS)
            expect(row.locator("button.enable")).to_have_count(0)

            # And on a phone-sized screen nothing is wider than the screen
            page.locator(f'#events tr[data-id="{first["id"]}"]').click()
            expect(delivery.locator("td.status-code")).to_have_count(5, timeout=UI_TIMEOUT_MS)
            page.set_viewport_size({"width": 390, "height": 900})
            expect(page.locator("#events thead")).to_be_hidden()
            widths = page.evaluate(
                """() => ({page: document.documentElement.scrollWidth, screen: window.innerWidth,
                         cards: [...document.querySelectorAll('#endpoints, #events, #event-detail')]
                           .map((node) => node.closest('section')).map((s) => s.scrollWidth - s.clientWidth)})"""
            )
            assert widths["page"] <= widths["screen"] == 390, widths
            assert widths["cards"] == [0, 0, 0], widths
            page.locator("#event-detail").scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOT_PHONE), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000 and SCREENSHOT_PHONE.stat().st_size > 10_000
    print(f"\nscreenshots: {SCREENSHOT} {SCREENSHOT_PHONE}")
