"""The console shows a message's kind and its media: an outbound image's link (and thumbnail), an inbound
medium's id and MIME type, an interactive message's sub-type; the list marks non-text kinds."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from libs.db.engine import Database
from libs.db.models import Direction, Message, MessageStatus
from libs.settings import Settings
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, NO_BROWSER, UI_TIMEOUT_MS

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright==1.65.2")
pytestmark = pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))

LINK = "https://media.example.invalid/shoe.jpg"


def _seed(http: httpx.Client, db: Database) -> dict[str, int]:
    company = http.post("/api/companies", json={"name": "Kinds"}).json()
    connection = http.post(
        "/api/connections",
        json={"company_id": company["id"], "provider": "meta", "phone_number_id": "pn-kinds", "access_token": "t",
              "service_window": "off"},
    ).json()  # fmt: skip
    image = http.post(
        "/api/messages",
        json={"company_id": company["id"], "to": "5511900000001", "image": {"link": LINK, "caption": "New shoe"}},
    ).json()
    buttons = {"type": "button", "body": {"text": "Move it?"},
               "action": {"buttons": [{"type": "reply", "reply": {"id": "y", "title": "Yes"}}]}}  # fmt: skip
    interactive = http.post(
        "/api/messages", json={"company_id": company["id"], "to": "5511900000002", "interactive": buttons}
    ).json()
    with db.session() as session:
        content = {"kind": "audio", "id": "9001", "mime_type": "audio/ogg", "voice": True}
        voice = Message(company_id=company["id"], connection_id=connection["id"], direction=Direction.INBOUND,
                        status=MessageStatus.RECEIVED, recipient="5511900000003", type="audio",
                        external_id="wamid.VOICE", payload={"content": content})  # fmt: skip
        session.add(voice)
        session.flush()
        voice_id = voice.id
    return {"image": image["id"], "interactive": interactive["id"], "voice": voice_id}


def test_a_message_shows_its_kind_and_media(api_server: str, settings: Settings, db: Database, broker: Any) -> None:
    headers = {"authorization": f"Bearer {settings.api_token}"}
    with httpx.Client(base_url=api_server, headers=headers, timeout=10) as http:
        ids = _seed(http, db)
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 900})
            page.route("**/*.invalid/**", lambda route: route.abort())
            page.goto(api_server + "/messages")
            page.fill("#token", settings.api_token)
            page.click("#login-button")
            rows = page.locator("#messages tbody tr")
            expect(rows).to_have_count(3, timeout=UI_TIMEOUT_MS)
            # The list marks each kind
            expect(page.locator(f'tr[data-id="{ids["image"]}"] td.text')).to_have_text("[image] New shoe")
            # An outbound image: its kind, a link to it and a thumbnail
            page.goto(f"{api_server}/messages#message/{ids['image']}")
            facts = page.locator("#facts")
            expect(facts).to_contain_text("image", timeout=UI_TIMEOUT_MS)
            expect(facts.locator(f'a[href="{LINK}"]')).to_have_count(1)
            expect(facts.locator("img.thumb")).to_have_attribute("src", LINK)
            # Interactive: its sub-type
            page.goto(f"{api_server}/messages#message/{ids['interactive']}")
            expect(facts).to_contain_text("interactive / button", timeout=UI_TIMEOUT_MS)
            # An inbound voice note: its media id and type
            page.goto(f"{api_server}/messages#message/{ids['voice']}")
            expect(facts).to_contain_text("media id 9001 (audio/ogg)", timeout=UI_TIMEOUT_MS)
        finally:
            browser.close()
