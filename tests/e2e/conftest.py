"""End-to-end fixtures: the API served for real (uvicorn), for the browser tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from libs.api.app import create_app
from libs.db.engine import Database
from libs.ops.processes import free_port
from libs.settings import Settings
from tests.middleware.support import wait_until


@pytest.fixture
def api_server(settings: Settings, db: Database, broker: Any) -> Iterator[str]:
    """The API served by uvicorn on a free port, in a thread of this process (same DB and namespace)."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=20, what="the API server to start")
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)
