"""How many parameters a template needs, and what is wrong with a send's parameters (pure, no I/O).

A template's components, as Meta lists them (``GET /{waba-id}/message_templates``)::

    [{"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},          1 header parameter
     {"type": "HEADER", "format": "IMAGE"},                                1 (the media)
     {"type": "BODY", "text": "Hi {{1}}, your order {{2}} has shipped"},   2 body parameters
     {"type": "BUTTONS", "buttons": [
        {"type": "URL", "url": "https://x.io/track/{{1}}"},               button 0: 1 parameter
        {"type": "QUICK_REPLY", "text": "Stop"},                           button 1: 0, or a payload
        {"type": "COPY_CODE", "example": "SAVE10"}]}]                      button 2: 1 (the code)

A send's components (``POST /{phone-number-id}/messages``) give ``parameters`` per ``header`` / ``body``
component and per ``button`` (by ``index``, a string). A placeholder is ``{{1}}`` (positional) or ``{{name}}``
(named parameters); each distinct one is one parameter. A template with a component zapq does not model
(carousel, limited-time offer, …) is not checked: Meta is then the judge (error 132000 on the send).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")

#: Header formats whose one parameter is the media or the place.
PARAMETER_HEADERS = frozenset({"IMAGE", "VIDEO", "DOCUMENT", "LOCATION"})
#: Top-level component types modelled here (anything else: the template is not checked).
KNOWN_COMPONENTS = frozenset({"HEADER", "BODY", "FOOTER", "BUTTONS"})
#: Buttons that may carry one optional parameter (a payload, a flow token) but need none.
OPTIONAL_PARAMETER_BUTTONS = frozenset({"QUICK_REPLY", "FLOW"})


@dataclass(frozen=True, slots=True)
class Button:
    """One button of a template: its position, type, and how many parameters a send gives it (needed, at most)."""

    index: int
    type: str
    needed: int
    allowed: int


@dataclass(frozen=True, slots=True)
class Needs:
    """The parameters a template needs: in its header, its body, and per button."""

    header: int = 0
    body: int = 0
    buttons: tuple[Button, ...] = ()


def placeholders(text: object) -> int:
    """How many distinct ``{{…}}`` placeholders ``text`` has (``{{1}}`` twice is one parameter)."""
    if not isinstance(text, str):
        return 0
    return len(set(PLACEHOLDER.findall(text)))


def _button(index: int, button: Mapping[str, Any]) -> Button:
    kind = str(button.get("type", "")).upper()
    if kind == "URL":
        dynamic = placeholders(button.get("url")) > 0
        return Button(index, kind, int(dynamic), int(dynamic))
    if kind == "COPY_CODE":
        return Button(index, kind, 1, 1)
    if kind in OPTIONAL_PARAMETER_BUTTONS:
        return Button(index, kind, 0, 1)
    return Button(index, kind, 0, 0)


def needs(components: object) -> Needs | None:
    """What a template with these (Meta's) components needs; ``None`` when it cannot be told (not a list, or a
    component type not modelled here)."""
    if not isinstance(components, list):
        return None
    header = body = 0
    buttons: list[Button] = []
    for component in components:
        if not isinstance(component, dict):
            return None
        kind = str(component.get("type", "")).upper()
        if kind not in KNOWN_COMPONENTS:
            return None
        if kind == "HEADER":
            fmt = str(component.get("format", "TEXT")).upper()
            header = 1 if fmt in PARAMETER_HEADERS else placeholders(component.get("text"))
        elif kind == "BODY":
            body = placeholders(component.get("text"))
        elif kind == "BUTTONS":
            listed = component.get("buttons")
            if isinstance(listed, list):
                buttons = [_button(i, b) for i, b in enumerate(listed) if isinstance(b, dict)]
    return Needs(header=header, body=body, buttons=tuple(buttons))


def _count(value: object) -> int:
    return len(value) if isinstance(value, list) else 0


def _plural(n: int) -> str:
    return f"{n} parameter" if n == 1 else f"{n} parameters"


def problems(need: Needs, sent: Sequence[Mapping[str, Any]]) -> list[str]:
    """What is wrong with a send's components (``sent``) for a template needing ``need``: one sentence each,
    naming the component and both counts; empty when they fit."""
    given = {"header": 0, "body": 0}
    buttons: dict[int, int] = {}
    found: list[str] = []
    for component in sent:
        kind = str(component.get("type", "")).lower()
        if kind in given:
            given[kind] += _count(component.get("parameters"))
        elif kind == "button":
            index = str(component.get("index", ""))
            if not index.isdigit():
                found.append(f"button index {index!r} is not a number")
                continue
            buttons[int(index)] = buttons.get(int(index), 0) + _count(component.get("parameters"))
    for part in ("header", "body"):
        wanted = getattr(need, part)
        if given[part] != wanted:
            found.append(f"{part} needs {_plural(wanted)}, got {given[part]}")
    by_index = {b.index: b for b in need.buttons}
    for position, count in sorted(buttons.items()):
        button = by_index.get(position)
        if button is None:
            found.append(f"button {position} does not exist (the template has {len(need.buttons)} buttons)")
        elif not button.needed <= count <= button.allowed:
            wanted = str(button.needed) if button.needed == button.allowed else f"at most {button.allowed}"
            found.append(f"button {position} ({button.type}) needs {wanted} parameter(s), got {count}")
    for button in need.buttons:
        if button.needed and button.index not in buttons:
            found.append(f"button {button.index} ({button.type}) needs {_plural(button.needed)}, got 0")
    return found


def campaign_components(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The components a campaign's template sends with: its own, plus one ``body`` component with a parameter
    per CSV column of ``variables`` (as the fan-out builds them, :mod:`libs.campaigns.expand`)."""
    components = [c for c in template.get("components") or [] if isinstance(c, dict)]
    variables: Iterable[str] = template.get("variables") or []
    params = [{"type": "text", "text": ""} for _ in variables]
    if params:
        components.append({"type": "body", "parameters": params})
    return components
