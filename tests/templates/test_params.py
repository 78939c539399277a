"""How many parameters a template needs, and what is wrong with a send's (``libs.templates.params``)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.templates.params import Needs, campaign_components, needs, placeholders, problems

ORDER = [
    {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
    {"type": "BODY", "text": "Hi {{1}}, order {{2}} ships on {{3}}. Thanks {{1}}!"},
    {"type": "FOOTER", "text": "Shop"},
    {"type": "BUTTONS", "buttons": [
        {"type": "URL", "text": "Track", "url": "https://x.io/t/{{1}}"},
        {"type": "QUICK_REPLY", "text": "Stop"},
        {"type": "URL", "text": "Home", "url": "https://x.io/"},
    ]},
]  # fmt: skip


def text(*values: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": v} for v in values]


def test_placeholders_count_distinct_names_positional_or_named() -> None:
    assert placeholders("Hi {{1}} and {{ 2 }}, {{1}} again") == 2
    assert placeholders("Hi {{first_name}}, code {{code}}") == 2
    assert placeholders("no braces {1} {{}}") == 0
    assert placeholders(None) == 0


def test_needs_reads_header_body_and_buttons() -> None:
    need = needs(ORDER)
    assert need is not None
    assert (need.header, need.body) == (1, 3)
    assert [(b.index, b.type, b.needed, b.allowed) for b in need.buttons] == [
        (0, "URL", 1, 1),
        (1, "QUICK_REPLY", 0, 1),
        (2, "URL", 0, 0),
    ]
    assert needs([{"type": "HEADER", "format": "IMAGE"}, {"type": "BODY", "text": "x"}]) == Needs(header=1)


def test_templates_with_components_zapq_does_not_model_are_not_checked() -> None:
    assert needs([{"type": "CAROUSEL", "cards": []}]) is None
    assert needs("not a list") is None


def test_a_fitting_send_has_no_problem() -> None:
    need = needs(ORDER)
    assert need is not None
    sent = [
        {"type": "header", "parameters": text("A1")},
        {"type": "body", "parameters": text("Ana", "A1", "Monday")},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": text("A1")},
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "1",
            "parameters": [{"type": "payload", "payload": "S"}],
        },
    ]
    assert problems(need, sent) == []


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ([{"type": "header", "parameters": text("A1")}, {"type": "body", "parameters": text("Ana")},
          {"type": "button", "index": "0", "parameters": text("A1")}],
         ["body needs 3 parameters, got 1"]),
        ([{"type": "body", "parameters": text("Ana", "A1", "Mon")},
          {"type": "button", "index": "0", "parameters": text("A1")}],
         ["header needs 1 parameter, got 0"]),
        ([{"type": "header", "parameters": text("A1")}, {"type": "body", "parameters": text("Ana", "A1", "Mon")}],
         ["button 0 (URL) needs 1 parameter, got 0"]),
        ([{"type": "header", "parameters": text("A1")}, {"type": "body", "parameters": text("Ana", "A1", "Mon")},
          {"type": "button", "index": "0", "parameters": text("A1")},
          {"type": "button", "index": "2", "parameters": text("x")},
          {"type": "button", "index": "7", "parameters": text("x")}],
         ["button 2 (URL) needs 0 parameter(s), got 1", "button 7 does not exist (the template has 3 buttons)"]),
    ],
)  # fmt: skip
def test_each_mismatch_is_named(sent: list[dict[str, Any]], expected: list[str]) -> None:
    need = needs(ORDER)
    assert need is not None
    assert problems(need, sent) == expected


def test_a_campaign_sends_its_variables_as_body_parameters() -> None:
    template = {"name": "t", "components": [{"type": "header", "parameters": text("x")}], "variables": ["a", "b"]}
    assert campaign_components(template) == [
        {"type": "header", "parameters": text("x")},
        {"type": "body", "parameters": text("", "")},
    ]
