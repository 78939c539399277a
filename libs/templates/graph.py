"""Read a WABA's templates from the Graph API (``GET /{version}/{waba-id}/message_templates``), every page.

Pages follow ``paging.cursors.after`` while Meta says there is more (``paging.next``; a full page without it
is followed too, since ``next`` is not promised): the last page is the one with no ``next`` and fewer than
``limit`` templates, or an empty one. Errors are translated here, once, by the send path's own mapping
(:func:`libs.providers.meta.map_meta_error`: an expired token is a ``ConnectionNeedsAttentionError``, a
throttle a ``ProviderRateLimited``, …); the token never appears in an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from libs.errors import ProviderPermanentError
from libs.providers._http import excerpt, map_transport_error, redact
from libs.providers.meta import PROVIDER, map_meta_error

#: Templates asked for per page (Meta's maximum page size is larger; 100 keeps each answer small).
PAGE_SIZE = 100
#: Pages read at most (250 templates per WABA, 6,000 when verified: 60 pages of 100).
MAX_PAGES = 200
#: The fields asked for.
FIELDS = "id,name,language,status,category,components,rejected_reason"
#: Timeouts of the Graph calls: connect 3 s, each read 15 s.
TIMEOUT = httpx.Timeout(15.0, connect=3.0)


@dataclass(frozen=True, slots=True)
class Graph:
    """Where the Graph API is (``ZAPQ_META_GRAPH_URL``, ``ZAPQ_META_API_VERSION``)."""

    url: str
    version: str


def graph_client() -> httpx.Client:
    """An HTTP client for the Graph API (no redirects followed: a redirect is an error, not a place to send a
    token to). The caller closes it."""
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False)


def _template(item: dict[str, Any]) -> dict[str, Any] | None:
    """One ``data[]`` item as a catalogue row, or ``None`` when it has no name, language or status."""
    name, language, status = item.get("name"), item.get("language"), item.get("status")
    if not (isinstance(name, str) and name and isinstance(language, str) and language and isinstance(status, str)):
        return None
    category = item.get("category")
    components = item.get("components")
    reason = item.get("rejected_reason")
    return {
        "name": name[:512],
        "language": language[:16],
        "template_id": str(item["id"])[:64] if isinstance(item.get("id"), (str, int)) else None,
        "status": status.upper()[:32],
        "category": category[:32] if isinstance(category, str) else None,
        "components": components if isinstance(components, list) else None,
        "reason": reason if isinstance(reason, str) and reason not in ("NONE", "") else None,
    }


def fetch_templates(
    http: httpx.Client, graph: Graph, *, waba_id: str, access_token: str, page_size: int | None = None
) -> list[dict[str, Any]]:
    """Every template of ``waba_id`` (name, language, template_id, status, category, components, reason), asked
    for ``page_size`` (default :data:`PAGE_SIZE`) a page; or a :class:`~libs.errors.ProviderError`."""
    page_size = page_size or PAGE_SIZE
    # quoted: a stored waba_id is any text (a tab in one made httpx refuse the URL: a 500 found by schemathesis)
    url = f"{graph.url.rstrip('/')}/{graph.version}/{quote(waba_id, safe='')}/message_templates"
    headers = {"Authorization": f"Bearer {access_token}"}
    found: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(MAX_PAGES):
        query: dict[str, Any] = {"fields": FIELDS, "limit": page_size}
        if after is not None:
            query["after"] = after
        try:
            response = http.get(url, params=query, headers=headers)
        except httpx.TransportError as exc:
            raise map_transport_error(exc, provider=PROVIDER) from exc
        except (UnicodeEncodeError, httpx.InvalidURL):  # a stored token of any text: not sendable in a header
            raise ProviderPermanentError(
                "the connection's access token cannot be sent (it is not ASCII text)", provider=PROVIDER
            ) from None
        if not response.is_success:
            raise redact(map_meta_error(response.status_code, response.content), access_token)
        body = _body(response.content)
        data = body.get("data")
        if not isinstance(data, list):
            raise ProviderPermanentError(
                "meta answered the template list without a data array", provider=PROVIDER, details=excerpt(body)
            )
        found += [row for row in (_template(item) for item in data if isinstance(item, dict)) if row is not None]
        paging = body.get("paging")
        paging = paging if isinstance(paging, dict) else {}
        cursors = paging.get("cursors")
        following = cursors.get("after") if isinstance(cursors, dict) else None
        more = bool(paging.get("next")) or len(data) >= page_size
        if not data or not more or not isinstance(following, str) or not following or following == after:
            return found
        after = following
    raise ProviderPermanentError(f"meta listed more than {MAX_PAGES} pages of templates", provider=PROVIDER)


def _body(content: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise ProviderPermanentError("meta answered the template list with no JSON object", provider=PROVIDER,
                                     details=excerpt(content))  # fmt: skip
    return body
