"""The ``ingest`` baseline: the HTTP stack alone — a Starlette endpoint that reads the body and answers 200.

Run exactly like the real edge: ``uvicorn bench.bare_ingest:app --workers 2 --http httptools --loop uvloop``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def accept(request: Request) -> Response:
    """Read the body, do nothing with it, answer as the edge does."""
    await request.body()
    return JSONResponse({"status": "accepted", "id": 0})


async def health(request: Request) -> Response:
    """Liveness."""
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/webhooks/meta", accept, methods=["POST"]), Route("/healthz", health, methods=["GET"])])
