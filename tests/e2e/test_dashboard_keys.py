"""Dashboard sign-in with an API key, in a real browser: the key lives in the tab's sessionStorage (no cookie is
set), and a read-only company key sees its own campaigns and connections, but no ops sections and no replay or
control buttons. Browser set-up: :mod:`tests.e2e.browser`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from libs.db.engine import Database
from libs.settings import Settings
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, NO_BROWSER, UI_TIMEOUT_MS

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright==1.65.2")

pytestmark = pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))


def test_a_read_only_key_sees_its_company_without_controls(
    api_server: str, settings: Settings, db: Database, broker: Any
) -> None:
    headers = {"authorization": f"Bearer {settings.api_token}"}
    with httpx.Client(base_url=api_server, headers=headers, timeout=10) as http:
        # Given two companies, each with a connection, a campaign and a webhook endpoint
        ids = []
        for name in ("Alpha", "Bravo"):
            company = http.post("/api/companies", json={"name": name}).json()
            connection = http.post("/api/connections", json={
                "company_id": company["id"], "provider": "meta", "phone_number_id": f"pn-{name}",
                "access_token": f"secret-{name}", "name": f"number {name}"}).json()  # fmt: skip
            http.post("/api/campaigns", json={"company_id": company["id"], "connection_id": connection["id"],
                                              "name": f"campaign {name}", "text": "hi"})  # fmt: skip
            http.post("/api/webhook-endpoints", json={"company_id": company["id"],
                                                      "url": f"https://{name.lower()}.example.com/h"})  # fmt: skip
            ids.append(company["id"])
        # And a read-only key of Alpha
        key = http.post("/api/keys", json={"company_id": ids[0], "scopes": [
            "campaigns:read", "connections:read", "events:read", "companies:read"]}).json()["key"]  # fmt: skip

    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            expect = playwright_api.expect
            # When the page is opened and the key entered
            page.goto(api_server + "/")
            page.fill("#token", key)
            page.click("#login-button")
            # Then Alpha's campaign, connection and endpoint show, and nothing of Bravo
            expect(page.locator("#campaigns tbody tr")).to_have_count(1, timeout=UI_TIMEOUT_MS)
            expect(page.locator("#campaigns tbody")).to_contain_text("campaign Alpha")
            expect(page.locator("#connections tbody tr")).to_have_count(1)
            expect(page.locator("#endpoints tbody tr")).to_have_count(1, timeout=UI_TIMEOUT_MS)
            expect(page.locator("main")).not_to_contain_text("Bravo")
            # And no ops section, and no replay or control button anywhere
            expect(page.locator("#queues-section")).to_be_hidden()
            expect(page.locator("#dead-letters-section")).to_be_hidden()
            expect(page.locator("main button:visible")).to_have_count(0)
            expect(page.locator("#status")).to_have_text("")
            # And the key is in this tab's sessionStorage, with no cookie
            assert page.evaluate("sessionStorage.getItem('zapq-token')") == key
            assert context.cookies() == []
        finally:
            browser.close()
