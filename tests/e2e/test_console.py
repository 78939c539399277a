"""The console page (``/messages``) in a real browser at a phone's width (390 px) and a desktop's (1,400 px).

At each width: nothing is wider than the viewport (also with a message open); the newest 50 messages show and
"Older" pages back with the cursor; a search by phone, by wamid and by message id finds the message; its
timeline opens; a failed message shows its error by name (Meta's title in the tooltip) and "Send again" queues
it again, its failure kept in the timeline. Then the dashboard fits the same width and draws its throughput
chart with axes. Screenshots: ``/tmp/zapq-console-<width>.png``, ``/tmp/zapq-dashboard-<width>.png``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.db.engine import Database
from libs.db.models import Direction, Message, MessageStatus
from libs.settings import Settings
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, NO_BROWSER, UI_TIMEOUT_MS

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright==1.65.2")
pytestmark = pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))

#: Every visible element's box must fit in the viewport (1 px of rounding allowed).
OVERFLOWING_JS = """() => [...document.querySelectorAll("body *")].filter((e) => {
  const r = e.getBoundingClientRect();
  return r.width > 0 && (r.right > innerWidth + 1 || r.left < -1);
}).map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}px`)
  .concat(document.documentElement.scrollWidth > innerWidth + 1 ? [`page ${document.documentElement.scrollWidth}px`]
  : [])"""


def _seed(http: httpx.Client, db: Database) -> dict[str, int]:
    """A company and connection; 55 older outbound messages, an inbound one, and a failed one (newest)."""
    company = http.post("/api/companies", json={"name": "Acme"}).json()
    connection = http.post(
        "/api/connections",
        json={"company_id": company["id"], "provider": "meta", "phone_number_id": "pn-console",
              "access_token": "t", "name": "Acme main", "service_window": "off"},
    ).json()  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    with db.session() as session:
        for i in range(55):
            session.add(
                Message(
                    company_id=company["id"],
                    connection_id=connection["id"],
                    direction=Direction.OUTBOUND,
                    status=MessageStatus.SENT,
                    recipient=f"55119000{i:05d}",
                    body=f"note {i}",
                    external_id=f"wamid.OLD{i}",
                    created_at=now - dt.timedelta(hours=2, minutes=i),
                    sent_at=now - dt.timedelta(hours=2, minutes=i),
                )
            )
        inbound = Message(company_id=company["id"], connection_id=connection["id"], direction=Direction.INBOUND,
                          status=MessageStatus.RECEIVED, recipient="5511911112222", body="Olá, a customer here",
                          external_id="wamid.CONSOLE-IN", created_at=now - dt.timedelta(minutes=5))  # fmt: skip
        session.add(inbound)
        session.flush()
        inbound_id = inbound.id
    failed = http.post(
        "/api/messages", json={"company_id": company["id"], "to": "+5511933334444", "text": "Your order"}
    ).json()
    with db.session() as session:
        row = session.get(Message, failed["id"])
        assert row is not None
        row.status, row.error_code, row.error_title = MessageStatus.FAILED, 131026, "(#131026) Message Undeliverable"
        row.failed_at, row.attempts = now, 1
    http.post(
        "/api/campaigns",
        json={"company_id": company["id"], "connection_id": connection["id"], "name": "A rather long name",
              "text": "Hi {name}"},
    ).raise_for_status()  # fmt: skip
    return {"company": company["id"], "inbound": inbound_id, "failed": failed["id"]}


@pytest.mark.parametrize("width", [390, 1400])
def test_find_a_message_read_its_timeline_and_send_it_again(
    width: int, api_server: str, settings: Settings, db: Database, broker: Any
) -> None:
    headers = {"authorization": f"Bearer {settings.api_token}"}
    with httpx.Client(base_url=api_server, headers=headers, timeout=10) as http:
        ids = _seed(http, db)
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(api_server + "/messages")
            page.fill("#token", settings.api_token)
            page.click("#login-button")
            rows = page.locator("#messages tbody tr")
            # Then the newest 50 show, newest first, and Older pages back to all 57
            expect(rows).to_have_count(50, timeout=UI_TIMEOUT_MS)
            expect(rows.first).to_have_attribute("data-id", str(ids["failed"]))
            assert page.evaluate(OVERFLOWING_JS) == []
            page.click("#older")
            expect(rows).to_have_count(57, timeout=UI_TIMEOUT_MS)
            expect(page.locator("#older")).to_be_hidden()

            # When the user searches a phone number as a person types it
            page.fill("#q", "+55 11 91111-2222")
            page.click("#search-button")
            # Then only that customer's message shows; opening it shows its timeline
            expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
            expect(rows.first).to_have_attribute("data-id", str(ids["inbound"]))
            rows.first.locator("a").click()
            expect(page.locator("#detail")).to_be_visible()
            expect(page.locator('#timeline li[data-stage="created"]')).to_have_count(1)
            expect(page.locator("#facts")).to_contain_text("wamid.CONSOLE-IN")
            assert page.evaluate(OVERFLOWING_JS) == []

            # And a wamid finds it too
            page.fill("#q", "wamid.CONSOLE-IN")
            page.click("#search-button")
            expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
            expect(rows.first).to_have_attribute("data-id", str(ids["inbound"]))

            # When the failed message is found by its id and opened
            page.fill("#q", f"#{ids['failed']}")
            page.click("#search-button")
            expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
            # (the wamid search before left one row too: wait for this search's row before opening it)
            expect(rows.first).to_have_attribute("data-id", str(ids["failed"]), timeout=UI_TIMEOUT_MS)
            rows.first.locator("a").click()
            # Then its error has a name, Meta's title in the tooltip
            error = page.locator("#facts .err")
            expect(error).to_have_text("Invalid recipient (Meta 131026)", timeout=UI_TIMEOUT_MS)
            expect(error).to_have_attribute("title", "(#131026) Message Undeliverable")
            expect(page.locator('#timeline li[data-stage="failed"]')).to_have_count(1)
            # When "Send again" is clicked
            page.click("#retry")
            # Then it is queued again, the failure kept in its timeline, and its job is waiting
            expect(page.locator("#retry-result")).to_contain_text("queued again", timeout=UI_TIMEOUT_MS)
            expect(page.locator("#facts")).to_contain_text("queued")
            expect(page.locator("#timeline li.earlier")).to_contain_text("Invalid recipient (Meta 131026)")
            expect(page.locator("#job")).to_contain_text("waiting", timeout=UI_TIMEOUT_MS)
            assert page.evaluate(OVERFLOWING_JS) == []
            page.screenshot(path=str(Path(f"/tmp/zapq-console-{width}.png")), full_page=True)

            # And the dashboard (its link in the header) fits too: no table spills out of its card
            page.click("header a[href='/']")
            expect(page.locator("#campaigns tbody tr")).to_have_count(1, timeout=UI_TIMEOUT_MS)
            expect(page.locator("#campaigns td.now-queued")).to_have_text("0")  # a state: queued now
            # And its throughput chart (vendored uPlot, no CDN) has axes, units and the current value
            chart = page.locator("#throughput-chart .uplot")
            expect(chart).to_have_count(1, timeout=UI_TIMEOUT_MS)
            expect(chart.locator("canvas")).to_have_count(1)
            expect(chart).to_contain_text("done / min")  # the legend
            axes = page.evaluate("throughputChart.axes.map((a) => a.label)")  # drawn on the canvas
            assert axes == ["time (minutes)", "jobs / min"]
            expect(page.locator("#throughput-now")).to_contain_text("last full minute: 0 done, 0 failed (jobs/min)")
            assert page.evaluate(OVERFLOWING_JS) == []
            page.screenshot(path=str(Path(f"/tmp/zapq-dashboard-{width}.png")), full_page=True)
        finally:
            browser.close()
