"""The request schemas of ``/openapi.json``: pydantic's JSON schema of each model, plus the rules its validators
enforce that pydantic cannot describe (one of text or template, the fields of a provider, a non-empty PATCH, …).

The models stay the one source of truth: this module only adds to what ``model_json_schema`` gives, and reads
the same constants the validators use. A rule the code enforces on a body the schema allows is a bug (a 422 a
generated client could not foresee); ``tests/api/test_contract.py`` (schemathesis, every check) finds them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from libs.access.keys import GLOBAL_ONLY_SCOPES, SCOPES
from libs.api.kinds import MAX_CAPTION
from libs.api.schemas import (
    BAILEYS_FIELDS,
    CAMPAIGN_MEDIA,
    KEYWORD_MAX,
    KIND_FIELDS,
    META_FIELDS,
    META_REQUIRED,
    PHONE_PATTERN,
)
from libs.events.types import EVENT_ID_PATTERN, EVENT_TYPES

Schema = dict[str, Any]

#: Text that is not blank: the API strips surrounding whitespace, so a required field needs one other character.
NOT_BLANK = r"\S"
#: A keyword: not blank, no C0/C1 control character (:data:`libs.api.schemas.CONTROL_CHARACTER`).
KEYWORD_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
#: Campaign text: braces only as ``{name}`` placeholders or doubled (``{{``, ``}}``), as
#: :func:`libs.campaigns.expand.bad_placeholder` reads it.
_PIECE = r"[^{}]|\{\{|\}\}|\{[^\W\d]\w*\}"
CAMPAIGN_TEXT_PATTERN = rf"^(?:{_PIECE})*(?:[^{{}}\s]|\{{\{{|\}}\}}|\{{[^\W\d]\w*\}})(?:{_PIECE})*$"
#: A URL the outbound guard reads without DNS (:meth:`libs.outbound.AddressGuard.check_url`): http(s), a host (a
#: name, an address or ``[IPv6]``), no user info, no control character.
_H = "[0-9A-Fa-f]{1,4}"
#: An IPv6 address (RFC 4291 text forms, without an embedded IPv4 part).
IPV6 = (
    rf"(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:|(?:{_H}:){{1,6}}:{_H}|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    rf"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    rf"|{_H}:(?::{_H}){{1,6}}|:(?:(?::{_H}){{1,7}}|:))"
)
_PORT = r"(?::(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
URL_PATTERN = (
    rf"^[hH][tT][tT][pP][sS]?://(?:\[{IPV6}\]|[^/?#@:\[\]\s\x00-\x1f\x7f]+){_PORT}(?:[/?#][^\x00-\x1f\x7f]*)?$"
)


def _walk(schema: Any) -> Iterator[Schema]:
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from _walk(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _walk(item)


def _not_blank(schema: Schema) -> None:
    for node in _walk(schema):
        if node.get("type") == "string" and node.get("minLength", 0) > 0 and "pattern" not in node:
            node["pattern"] = NOT_BLANK


def _without_null(prop: Schema) -> Schema:
    """``anyOf: [X, null]`` → ``X`` (keeping the description)."""
    options = [option for option in prop.get("anyOf", ()) if option.get("type") != "null"]
    if len(options) != 1:
        return prop
    kept = {key: value for key, value in prop.items() if key in ("description", "title")}
    return {**options[0], **kept}


def _one_of(schema: Schema, first: str, second: str) -> None:
    """Exactly one of two optional fields is given (and not null)."""
    _exactly_one(schema, (first, second))


def _exactly_one(schema: Schema, names: tuple[str, ...], also: dict[str, Schema] | None = None) -> None:
    """Exactly one of the optional fields ``names`` is given (and not null); ``also``: more properties of the
    branch of one of them (``{"reaction": {"context": {"type": "null"}}}``)."""
    props = schema["properties"]
    schema["oneOf"] = [
        {
            "required": [name],
            "properties": {
                name: _without_null(props[name]),
                **{other: {"type": "null"} for other in names if other != name},
                **(also or {}).get(name, {}),
            },
        }
        for name in names
    ]


def _message(schema: Schema) -> None:
    """``to`` a phone number; ``text`` or exactly one kind; a reaction quotes no message (``context``)."""
    schema["properties"]["to"]["pattern"] = PHONE_PATTERN
    _exactly_one(schema, ("text", *KIND_FIELDS), {"reaction": {"context": {"type": "null"}}})


#: An http(s) link as :func:`libs.api.kinds.check_link` reads it (surrounding whitespace is stripped first).
LINK_PATTERN = r"^\s*https?://.*\S"
#: The media reference models (``id`` xor ``link``), by schema name.
MEDIA_REFS = ("MediaRef", "ImageIn", "VideoIn", "AudioIn", "DocumentIn", "StickerIn", "TemplateDocument")


def _media_ref(schema: Schema) -> None:
    """Exactly one of ``id`` or ``link``; a link is http(s)."""
    schema["properties"]["link"]["anyOf"][0]["pattern"] = LINK_PATTERN
    _one_of(schema, "id", "link")


def _cta_parameters(schema: Schema) -> None:
    schema["properties"]["url"]["pattern"] = LINK_PATTERN


def _header(schema: Schema) -> None:
    """An interactive header carries exactly the field its ``type`` names."""
    kinds = ("text", "image", "video", "document")
    _exactly_one(schema, kinds, {kind: {"type": {"const": kind}} for kind in kinds})


def _button_component(schema: Schema) -> None:
    """A ``quick_reply`` button takes a ``payload`` parameter, a ``url`` one a ``text``; ``index`` 0 to 9 (a
    digit, or the number)."""
    props = schema["properties"]
    props["index"] = {"anyOf": [props["index"], {"type": "integer", "minimum": 0, "maximum": 9}]}
    schema["oneOf"] = [
        {
            "properties": {
                "sub_type": {"const": sub_type},
                "parameters": {"items": {"properties": {"type": {"const": parameter}}}},
            }
        }
        for sub_type, parameter in (("quick_reply", "payload"), ("url", "text"))
    ]


def _template_sync(schema: Schema) -> None:
    """``connection_id`` or ``company_id`` (or neither), not both."""
    schema["anyOf"] = [
        {"title": "not a connection", "properties": {"connection_id": {"type": "null"}}},
        {"title": "not a company", "properties": {"company_id": {"type": "null"}}},
    ]


def _opt_outs(schema: Schema) -> None:
    schema["properties"]["phones"]["items"]["pattern"] = PHONE_PATTERN


def _campaign(schema: Schema) -> None:
    """``text`` or ``template``, or one medium whose caption is ``text`` (none for audio and stickers; at most
    1,024 characters; never ``<medium>.caption``)."""
    props = schema["properties"]
    text = props["text"]["anyOf"][0]
    text["pattern"] = CAMPAIGN_TEXT_PATTERN
    text["description"] = "placeholders are {name} (a CSV column); write {{ and }} for braces"
    null = {"type": "null"}
    branches: list[Schema] = [
        {"required": ["text"], "properties": {"text": _without_null(props["text"]), "template": null}},
        {"required": ["template"], "properties": {"template": _without_null(props["template"]), "text": null}},
    ]
    for medium in CAMPAIGN_MEDIA:
        captioned = medium not in ("audio", "sticker")
        caption = {"anyOf": [null, {"type": "string", "maxLength": MAX_CAPTION}]} if captioned else null
        branches.append(
            {
                "required": [medium],
                "properties": {
                    medium: {"allOf": [_without_null(props[medium]), {"properties": {"caption": null}}]},
                    "text": caption,
                    "template": null,
                },
            }
        )
    for branch in branches:
        given = branch["required"][0]
        branch["properties"].update({m: null for m in CAMPAIGN_MEDIA if m != given})
    schema["oneOf"] = branches


def _connection(schema: Schema, schemas: dict[str, Schema]) -> None:
    """One complete schema per provider (``MetaConnectionIn``, ``BaileysConnectionIn``), chosen by ``provider``."""
    props = schema.pop("properties")
    common = {name: prop for name, prop in props.items() if name not in (*META_FIELDS, *BAILEYS_FIELDS)}
    mapping: dict[str, str] = {}
    for provider, own, required, other in (
        ("meta", META_FIELDS, META_REQUIRED, BAILEYS_FIELDS),
        ("baileys", BAILEYS_FIELDS, BAILEYS_FIELDS, META_FIELDS),
    ):
        name = f"{provider.capitalize()}ConnectionIn"
        own_props = {field: props[field] if field not in required else _without_null(props[field]) for field in own}
        schemas[name] = {
            "title": name,
            "description": f"A {provider} connection.",
            "type": "object",
            "additionalProperties": False,
            "required": ["company_id", "provider", *required],
            "properties": {
                **common,
                "provider": {"type": "string", "const": provider},
                **own_props,
                **{field: {"type": "null", "description": f"not for a {provider} connection"} for field in other},
            },
        }
        mapping[provider] = f"#/components/schemas/{name}"
    for key in ("properties", "required", "additionalProperties", "type"):
        schema.pop(key, None)
    schema["oneOf"] = [{"$ref": ref} for ref in mapping.values()]
    schema["discriminator"] = {"propertyName": "provider", "mapping": mapping}


def _patch(nullable: frozenset[str]) -> Callable[[Schema], None]:
    def rule(schema: Schema) -> None:
        schema["minProperties"] = 1
        for name, prop in schema["properties"].items():
            if name not in nullable:
                schema["properties"][name] = _without_null(prop)

    return rule


def _replay(schema: Schema) -> None:
    schema["properties"]["event_id"]["anyOf"][0]["pattern"] = EVENT_ID_PATTERN
    _one_of(schema, "event_id", "since")


def _company(schema: Schema) -> None:
    for name in ("opt_out_keywords", "opt_in_keywords"):
        items = schema["properties"][name]["anyOf"][0]["items"]
        items.update(minLength=1, maxLength=KEYWORD_MAX, pattern=KEYWORD_PATTERN)


def _key(schema: Schema) -> None:
    props = schema["properties"]
    props["scopes"]["items"]["enum"] = list(SCOPES)
    company_scopes = [scope for scope in SCOPES if scope not in GLOBAL_ONLY_SCOPES]
    schema["anyOf"] = [
        {"title": "a key for every company", "properties": {"company_id": {"type": "null"}}},
        {"title": "a company's key", "properties": {"scopes": {"items": {"enum": company_scopes}}}},
    ]


def _endpoint(schema: Schema) -> None:
    for name, prop in schema["properties"].items():
        target = prop["anyOf"][0] if "anyOf" in prop else prop
        if name == "url":
            target["pattern"] = URL_PATTERN
        elif name == "event_types":
            target["items"]["enum"] = list(EVENT_TYPES)


#: The rules of each request model, by model name.
RULES: dict[str, tuple[Callable[[Schema], None], ...]] = {
    "MessageIn": (_message,),
    "CampaignIn": (_campaign,),
    "ConnectionPatch": (_patch(frozenset()),),
    "EndpointIn": (_endpoint,),
    "EndpointPatch": (_endpoint, _patch(frozenset())),
    "ReplayIn": (_replay,),
    "OptOutIn": (_opt_outs,),
    "CompanyIn": (_company,),
    "KeyIn": (_key,),
    "TemplateSyncIn": (_template_sync,),
    "Header": (_header,),
    "ButtonComponent": (_button_component,),
    "CtaParameters": (_cta_parameters,),
    **{name: (_media_ref,) for name in MEDIA_REFS},
}


def model_schemas(model: type[BaseModel]) -> dict[str, Schema]:
    """``model``'s schema and those it refers to (by name), with every rule of this module applied."""
    schema = copy.deepcopy(model.model_json_schema(ref_template="#/components/schemas/{model}"))
    schemas: dict[str, Schema] = {**schema.pop("$defs", {}), model.__name__: schema}
    for name, each in list(schemas.items()):
        for rule in RULES.get(name, ()):
            rule(each)
    if model.__name__ == "ConnectionIn":
        _connection(schema, schemas)
    for each in schemas.values():
        _not_blank(each)
    return schemas
