"""Fixtures for the ``zapq`` commands, most of which drive the API (``zapq campaign …``, ``zapq send``,
``zapq events …``, ``zapq endpoints …``).

The API app (:func:`libs.api.app.create_app`) is served by uvicorn on a free 127.0.0.1 port in a thread, on
this session's Postgres database and Redis namespace; the CLI runs in-process through
:func:`libs.cli.main.main` (capsys) and talks to it over HTTP, as it would in production.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from libs.api.app import create_app
from libs.cli.main import main
from libs.db.engine import Database
from libs.ops.processes import wait_http
from libs.settings import Settings
from tests.api.conftest import make_company, make_connection


@contextlib.contextmanager
def serving(settings: Settings, port: int = 0) -> Iterator[str]:
    """A new API app served by uvicorn in a background thread on ``port`` (0: a free one; the same port again
    to bring a stopped API back); its base URL. Open streams are cut one second after the stop begins."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(create_app(settings), log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_http(f"{url}/healthz", timeout=10)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def served(settings: Settings, migrated: str) -> Iterator[str]:
    """The API on a free port, served by uvicorn in a background thread; its base URL."""
    with serving(settings) as url:
        yield url


@pytest.fixture
def api_url(served: str, db: Database, broker: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The served API with an empty database and Redis namespace; ``ZAPQ_API_URL`` points at it."""
    monkeypatch.setenv("ZAPQ_API_URL", served)
    return served


@pytest.fixture
def http(api_url: str, settings: Settings) -> Iterator[httpx.Client]:
    """A client of the served API with the token, for setting up and checking."""
    headers = {"authorization": f"Bearer {settings.api_token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def company(http: httpx.Client) -> dict[str, Any]:
    """A company with one Meta connection (``company["connection"]``), created through the API."""
    created = make_company(http)  # type: ignore[arg-type]  # the helpers only need .post()
    created["connection"] = make_connection(http, created["id"])  # type: ignore[arg-type]
    return created


def zapq(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``zapq argv`` in-process: (exit code, stdout, stderr); argparse's own refusals exit 2."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
