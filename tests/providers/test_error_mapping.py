"""Unit tests of ``map_meta_error`` and ``map_bridge_error`` over the whole code table (no network)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from libs.errors import (
    ConnectionClosed,
    ConnectionNeedsAttentionError,
    InvalidRecipientError,
    PairRateLimited,
    PermanentError,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderTimeoutError,
    ProviderTransientError,
    RateLimited,
    RuleRefusedError,
    TemplateError,
    TransientError,
)
from libs.providers import map_bridge_error, map_meta_error
from libs.providers._http import map_transport_error
from tests.fakes.meta_wire import default_http_status, error_envelope


def meta_body(code: Any, *, details: str = "some details", message: str = "whatever") -> bytes:
    """A Graph error body for ``code`` in the envelope of doc section B3."""
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "error_subcode": 2494055,
                "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
            }
        }
    ).encode()


META_TABLE: list[tuple[int, type[ProviderError]]] = [
    *((code, ConnectionNeedsAttentionError) for code in (0, 190)),
    *((code, ConnectionNeedsAttentionError) for code in (10, 200, 250, 299, 131005, 133010, 368, 131031)),
    *((code, ProviderRateLimited) for code in (4, 80007, 130429)),
    (131056, PairRateLimited),
    *((code, ProviderTransientError) for code in (1, 2, 131000, 131016, 131057, 133004)),
    *((code, InvalidRecipientError) for code in (131026, 131047, 131050)),
    *((code, TemplateError) for code in (132000, 132001, 132005, 132012, 132015, 132016)),
    *((code, ProviderPermanentError) for code in (100, 131008, 131009, 131048, 131051)),
    *((code, RuleRefusedError) for code in (131049, 470, 471, 479)),
]

#: Meta's rule errors and the reason each message fails with (no dead letter).
RULE_REASONS = [
    (131047, "outside_service_window"),
    (470, "outside_service_window"),
    (131049, "marketing_limit"),
    (131026, "undeliverable"),
    (131050, "user_stopped_marketing"),
    (132000, "template_rejected"),
    (132016, "template_rejected"),
    (471, "policy"),
]


@pytest.mark.parametrize(("code", "reason"), RULE_REASONS)
def test_meta_rule_errors_carry_their_reason(code: int, reason: str) -> None:
    # When a rule error is mapped
    error = map_meta_error(400, meta_body(code))
    # Then it is a rule refusal with the reason the message fails with
    assert isinstance(error, RuleRefusedError) and isinstance(error, PermanentError)
    assert error.reason == reason


@pytest.mark.parametrize("code", [100, 131000, 131051, 190, 130429])
def test_faults_are_not_rule_refusals(code: int) -> None:
    assert not isinstance(map_meta_error(400, meta_body(code)), RuleRefusedError)


@pytest.mark.parametrize(("code", "expected"), META_TABLE)
def test_meta_codes_map_to_their_class_whatever_the_http_status(code: int, expected: type[ProviderError]) -> None:
    # Given each documented code, under its usual status and under statuses Meta is not documented to use
    for status in {default_http_status(code), 400, 403, 429, 500}:
        # When it is mapped
        error = map_meta_error(status, meta_body(code))
        # Then the class depends on the code only, and the code, status and details are carried
        assert type(error) is expected, (code, status)
        assert (error.provider, error.code, error.http_status, error.details) == (
            "meta",
            code,
            status,
            "some details",
        )


@pytest.mark.parametrize(("code", "delay_ms"), [(130429, 1_000), (4, 60_000), (80007, 60_000), (131056, 1_000)])
def test_meta_rate_limits_defer_with_a_delay(code: int, delay_ms: int) -> None:
    error = map_meta_error(400, meta_body(code))
    assert isinstance(error, ProviderRateLimited) and isinstance(error, RateLimited)
    assert not isinstance(error, TransientError | PermanentError)
    assert error.delay_ms == delay_ms


@pytest.mark.parametrize(("pair_hits", "seconds"), [(0, 1), (1, 4), (2, 16), (3, 64), (-1, 1), (50, 4**8)])
def test_meta_pair_limit_backs_off_4_to_the_x(pair_hits: int, seconds: int) -> None:
    error = map_meta_error(400, meta_body(131056), pair_hits=pair_hits)
    assert isinstance(error, ProviderRateLimited)
    assert error.delay_ms == seconds * 1000


def test_meta_pair_hits_do_not_change_other_delays() -> None:
    error = map_meta_error(400, meta_body(130429), pair_hits=3)
    assert isinstance(error, ProviderRateLimited) and error.delay_ms == 1_000


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ProviderPermanentError),
        (403, ProviderPermanentError),
        (404, ProviderPermanentError),
        (401, ProviderPermanentError),
        (429, ProviderRateLimited),
        (500, ProviderTransientError),
        (503, ProviderTransientError),
        (302, ProviderTransientError),
    ],
)
def test_meta_unknown_code_falls_back_to_http_status(status: int, expected: type[ProviderError]) -> None:
    error = map_meta_error(status, meta_body(987654))
    assert type(error) is expected
    assert error.code == 987654


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, ConnectionNeedsAttentionError),
        (400, ProviderPermanentError),
        (403, ProviderPermanentError),
        (408, ProviderTransientError),
        (429, ProviderRateLimited),
        (500, ProviderTransientError),
        (502, ProviderTransientError),
        (504, ProviderTransientError),
    ],
)
@pytest.mark.parametrize(
    "body",
    [
        None,
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'{"error": "a string"}',
        b'{"error": {"message": "no code"}}',
        b'{"error": {"code": true}}',
        {"unexpected": "shape"},
    ],
)
def test_meta_body_without_code_is_classified_by_status(
    status: int, expected: type[ProviderError], body: bytes | dict[str, Any] | None
) -> None:
    error = map_meta_error(status, body)
    assert type(error) is expected
    assert error.code is None and error.http_status == status


def test_meta_parsed_dict_and_string_codes_are_accepted() -> None:
    assert type(map_meta_error(400, json.loads(meta_body(131026)))) is InvalidRecipientError
    assert type(map_meta_error(400, meta_body("131026"))) is InvalidRecipientError


def test_meta_message_text_is_never_used_for_classification() -> None:
    # A transient code whose text talks about invalid recipients and templates stays transient
    error = map_meta_error(400, meta_body(131000, message="Invalid recipient; template paused"))
    assert type(error) is ProviderTransientError
    # And a 401 from the fake's envelope is 'needs attention'
    assert type(map_meta_error(401, error_envelope(190))) is ConnectionNeedsAttentionError


def test_provider_error_hierarchy_used_by_the_retry_policy() -> None:
    assert issubclass(ProviderTimeoutError, TransientError)
    assert issubclass(InvalidRecipientError, PermanentError)
    assert issubclass(ConnectionNeedsAttentionError, PermanentError)


def bridge_body(status: int, message: Any) -> bytes:
    """An Evolution API error envelope."""
    return json.dumps({"status": status, "error": "Bad Request", "response": {"message": message}}).encode()


NOT_ON_WHATSAPP = [{"jid": "5511999999999@s.whatsapp.net", "exists": False, "number": "5511999999999"}]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, b'{"status":401,"error":"Unauthorized","response":{"message":"Unauthorized"}}', None),
        (401, None, None),
        (403, bridge_body(403, ["Forbidden"]), None),
        (404, bridge_body(404, ['The "x" instance does not exist']), None),
        (400, bridge_body(400, NOT_ON_WHATSAPP), InvalidRecipientError),
        (400, bridge_body(400, NOT_ON_WHATSAPP[0]), InvalidRecipientError),
        (400, {"status": 400, "response": {"message": NOT_ON_WHATSAPP}}, InvalidRecipientError),
        (400, bridge_body(400, [{**NOT_ON_WHATSAPP[0], "exists": True}]), ProviderPermanentError),
        (400, bridge_body(400, [{**NOT_ON_WHATSAPP[0], "exists": "false"}]), ProviderPermanentError),
        (400, bridge_body(400, ["exists: false"]), ProviderPermanentError),
        (400, bridge_body(400, ['instance requires property "text"']), ProviderPermanentError),
        (400, bridge_body(400, ["Error: Connection Closed"]), ConnectionClosed),
        (400, bridge_body(400, "Connection Closed"), ConnectionClosed),
        (400, bridge_body(400, ["Error: Connection Closed by the server, retry"]), ProviderPermanentError),
        (400, b"not json", ProviderPermanentError),
        (422, bridge_body(422, ["bad"]), ProviderPermanentError),
        (408, None, ProviderTransientError),
        (429, None, ProviderRateLimited),
        (500, bridge_body(500, ["Internal"]), ProviderTransientError),
        (502, b"<html>bad gateway</html>", ProviderTransientError),
        (503, None, ProviderTransientError),
    ],
)
def test_bridge_errors_map_by_status_and_structure(
    status: int, body: bytes | dict[str, Any] | None, expected: type[ProviderError] | None
) -> None:
    error = map_bridge_error(status, body)
    assert type(error) is (expected or ConnectionNeedsAttentionError)
    assert error.provider == "baileys" and error.http_status == status


def test_bridge_invalid_recipient_names_the_number() -> None:
    error = map_bridge_error(400, bridge_body(400, NOT_ON_WHATSAPP))
    assert "5511999999999" in str(error)


@pytest.mark.parametrize(
    ("failure", "maybe_delivered"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow connect"), False),
        (httpx.PoolTimeout("no free connection"), False),
        (httpx.ReadTimeout("no answer"), True),
        (httpx.WriteTimeout("stalled while sending"), True),
        (httpx.RemoteProtocolError("closed mid-answer"), True),
        (httpx.ReadError("reset"), True),
    ],
)
def test_network_failures_say_whether_the_request_may_have_been_delivered(
    failure: httpx.TransportError, maybe_delivered: bool
) -> None:
    # Given a network failure of a provider call
    # When it is translated (the one place that looks at httpx's exception types)
    error = map_transport_error(failure, provider="meta")
    # Then the provider error says, typed, whether the provider may have accepted the request
    assert error.maybe_delivered is maybe_delivered
    assert isinstance(error, ProviderTimeoutError) is isinstance(failure, httpx.TimeoutException)


def test_an_http_answer_is_never_an_ambiguous_delivery() -> None:
    # Given errors the provider answered with, and one without an answer
    answered = [map_meta_error(500, meta_body(131000)), map_meta_error(502, b"<html>"), map_bridge_error(500, b"{}")]
    unanswered = ProviderTransientError("no answer", provider="meta")
    # Then only the unanswered one may have been delivered
    assert [error.maybe_delivered for error in answered] == [False, False, False]
    assert unanswered.maybe_delivered is True
    assert ProviderTimeoutError("timed out", provider="meta", http_status=504).maybe_delivered is True
