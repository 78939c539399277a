"""The demo stack's ready-made rows, made through the operations API as a user would: a demo company and a Meta
connection to the fake Graph API (``tests/fakes/meta.py``), and the block ``./dev up`` and ``zapq demo`` print.

:func:`seed_demo` is idempotent: it finds the connection of :data:`DEMO_PHONE_NUMBER_ID` and creates it (and
its company) only when it is missing; it always sets the connection's token to the fake's, so a connection
made by an older version (or by hand, with another token) sends again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from libs.settings import DEV_DEFAULTS, Settings

#: The sample webhook's number (Meta's documented example) and its display number.
DEMO_PHONE_NUMBER_ID = "106540352242922"
DEMO_DISPLAY_NUMBER = "15550783881"
#: The access token the fake Graph API accepts (``tests.fakes.meta.DEFAULT_TOKEN``).
FAKE_META_TOKEN = "fake-meta-token"
DEMO_COMPANY_NAME = "Demo company"
#: A recipient for the printed ``zapq send`` (the fake Graph API accepts any number).
DEMO_RECIPIENT = "+5511999990000"


class SeedError(Exception):
    """The API refused or failed a seeding call (the reason is the API's)."""


@dataclass(frozen=True)
class DemoStack:
    """What the demo rows are."""

    company_id: int
    connection_id: int
    created: bool


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise SeedError(f"{method} {path}: {exc or type(exc).__name__}") from exc
    if response.is_error:
        raise SeedError(f"{method} {path}: HTTP {response.status_code} {response.text[:200]}")
    return response.json()


def seed_demo(http: httpx.Client) -> DemoStack:
    """The demo company and its Meta connection, created if missing (``http``: the API with its token)."""
    connections = _call(http, "GET", "/api/connections")
    found = next(
        (c for c in connections if c["provider"] == "meta" and c["phone_number_id"] == DEMO_PHONE_NUMBER_ID), None
    )
    if found is not None:
        patch = {"access_token": FAKE_META_TOKEN, "service_window": "off"}
        _call(http, "PATCH", f"/api/connections/{found['id']}", json=patch)
        return DemoStack(company_id=found["company_id"], connection_id=found["id"], created=False)
    company = _call(http, "POST", "/api/companies", json={"name": DEMO_COMPANY_NAME})
    connection = _call(
        http,
        "POST",
        "/api/connections",
        json={
            "company_id": company["id"],
            "provider": "meta",
            "name": "Demo number (fake Meta)",
            "phone_number_id": DEMO_PHONE_NUMBER_ID,
            "display_phone_number": DEMO_DISPLAY_NUMBER,
            "access_token": FAKE_META_TOKEN,
            # a test number: free-form sends to numbers that never wrote (README: WhatsApp rules)
            "service_window": "off",
        },
    )
    return DemoStack(company_id=company["id"], connection_id=connection["id"], created=True)


def token_shown(settings: Settings) -> str:
    """The API token as the block shows it: the dev default in clear, any other only by its variable."""
    if settings.api_token == DEV_DEFAULTS.get("api_token"):
        return settings.api_token
    return "$ZAPQ_API_TOKEN (yours)"


def next_steps(settings: Settings, stack: DemoStack | None, *, api_url: str | None = None) -> str:
    """The block printed when ``./dev up`` is ready and at the end of ``zapq demo``: where to look, what to run."""
    url = (api_url or settings.api_url).rstrip("/")
    company = stack.company_id if stack else "ID"
    lines = [
        "─" * 78,
        f"  dashboard   {url}/            token: {token_shown(settings)}",
        f"  API docs    {url}/docs        (OpenAPI: {url}/openapi.json)",
    ]
    if stack is not None:
        lines.append(
            f"  demo        company {stack.company_id}, connection {stack.connection_id} "
            f"(Meta number {DEMO_PHONE_NUMBER_ID}, fake Graph API at {settings.meta_graph_url})"
        )
    lines += [
        "  try, in another shell (source .venv/bin/activate first):",
        f'    zapq send --company {company} --to {DEMO_RECIPIENT} --text "Hello from zapq"',
        '    zapq dev webhook --text "Hi, a customer here"',
        f"    zapq events tail --company {company}        (or: zapq message ID)",
        "  more: README.md, 'Your first hour'",
        "─" * 78,
    ]
    return "\n".join(lines)
