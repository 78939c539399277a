"""Schemathesis over ``/openapi.json`` with company A's key (every company scope): whatever it sends, no server
error, and no answer carries company B's ids or any secret (B's tokens and webhook secret, any key's text, the
bootstrap token). Bounded: a few examples per operation, well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from libs.api.app import create_app
from tests.access.conftest import World
from tests.access.test_matrix import _company_ids, _leaks
from tests.fakes.server import running_app

STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def company_schema(world: World) -> Iterator[Any]:
    """The live API (same database as the world) served on loopback, its schema, with A's key."""
    app_settings = world.settings.model_copy(update={"api_key_cache_seconds": 5.0, "api_rate_per_second": 0.0})
    with running_app(create_app(app_settings)) as url:
        document = world.client.get("/openapi.json", headers=world.admin).json()
        loaded = schemathesis.openapi.from_dict(document)
        loaded.config.update(base_url=url)
        STATE["world"] = world
        yield loaded


def no_other_company_data(ctx: Any, response: Any, case: Any) -> bool:
    """No id of another company, and no secret, in the answer."""
    world: World = STATE["world"]
    text = response.text
    assert _leaks(world, text) == [], f"{case.method} {case.formatted_path} leaks a secret"
    if response.headers.get("content-type", [""])[0].startswith("application/json") and text:
        ids = _company_ids(orjson.loads(text))
        assert ids <= {world.a.id}, f"{case.method} {case.formatted_path} answers company ids {ids}"
    return True


#: The live event stream never ends (see tests/api/test_fuzz.py).
schema = (
    schemathesis.pytest.from_fixture("company_schema")
    .exclude(path="/api/events/stream")
    .exclude(path="/api/events", method="GET")  # long-polls up to 30 s per example; its company filter: test_matrix
)


@pytest.mark.timeout(120)
@schema.parametrize()
@hypothesis_settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_a_company_key_gets_no_5xx_and_nothing_of_other_companies(case: Any) -> None:
    world: World = STATE["world"]
    case.call_and_validate(headers=world.auth(world.key_a), checks=[not_a_server_error, no_other_company_data])
