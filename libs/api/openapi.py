"""The OpenAPI 3.1 document, built from the route table and the pydantic request models."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from libs.api.links import links_from
from libs.api.query import ID, PATH_SCHEMAS, Param
from libs.api.schema_rules import model_schemas

CONVERTOR = re.compile(r"\{(\w+)(?::(\w+))?\}")


@dataclass(frozen=True)
class Endpoint:
    """One route: method, path (Starlette syntax), handler and its documentation."""

    method: str
    path: str
    handler: Callable[..., Any]
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    #: Whether ``body`` may be left out (the handler reads an absent body as the model's defaults).
    body_optional: bool = False
    #: Media type of a non-JSON body (e.g. ``text/csv``).
    content: str | None = None
    auth: bool = True
    #: Success status (201 for creates).
    status: int = 200
    #: The schema of a success answer, when it is one of the published models.
    response: type[BaseModel] | None = None
    #: Media type of a success answer other than JSON (e.g. ``text/event-stream``).
    produces: str | None = None
    #: The scope a key needs (:data:`libs.access.keys.SCOPES`), ``authenticated`` (any key) or ``public``.
    scope: str = ""
    #: Whether a success is written to the audit log (default: every method but GET).
    audit: bool | None = None
    #: Query (and header) parameters, as :mod:`libs.api.query` publishes them.
    query: tuple[Param, ...] = ()
    #: Other success answers (``{status: description}``), e.g. 200 for a repeated idempotent create.
    also: tuple[tuple[int, str], ...] = ()
    #: Why a request valid by the schema may still answer 422: what it names cannot be used, or a WhatsApp rule
    #: forbids it now (:class:`libs.refusals.InvalidError`, ``RuleViolationError``; ``details.reason`` says which).
    refuses: str = ""
    #: Other refusals this route answers (``{status: description}``), e.g. 413 / 415 of an upload, 502 of Meta.
    errors: tuple[tuple[int, str], ...] = ()

    @property
    def audited(self) -> bool:
        """Whether a success of this route is recorded in the audit log."""
        return self.method != "GET" if self.audit is None else self.audit


def _parameters(path: str) -> list[dict[str, Any]]:
    own = PATH_SCHEMAS.get(path, {})
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": own.get(name, ID if kind == "int" else {"type": "string", "minLength": 1}),
        }
        for name, kind in CONVERTOR.findall(path)
    ]


def _success(endpoint: Endpoint) -> dict[str, Any]:
    if endpoint.status == 204:
        return {"description": "done (no content)"}
    if endpoint.produces is not None:
        schema: dict[str, Any] = {"type": "string"}
        if endpoint.response is not None:
            schema["description"] = f"one event per message, data: {endpoint.response.__name__} as JSON"
        return {"description": "success", "content": {endpoint.produces: {"schema": schema}}}
    if endpoint.response is not None:
        ref = {"$ref": f"#/components/schemas/{endpoint.response.__name__}"}
        return {"description": "success", "content": {"application/json": {"schema": ref}}}
    return {"description": "success"}


#: ``:role:`target``` (Sphinx cross-references) and ``double-backtick literals`` of RST docstrings.
_RST_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?([^`<>]+?)`")
_RST_LITERAL = re.compile(r"``(.+?)``")


def markdown_of(docstring: str) -> str:
    """A handler's docstring as an OpenAPI description (CommonMark): RST literals and cross-references become
    code spans (``x`` → `x`, :func:`libs.a.b` → `b`), the indentation is dropped, paragraphs kept."""
    text = inspect.cleandoc(docstring)
    text = _RST_ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    text = _RST_LITERAL.sub(lambda m: f"`{m.group(1)}`", text)
    paragraphs = [" ".join(line.strip() for line in block.splitlines()) for block in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def _responses(endpoint: Endpoint, error: dict[str, Any]) -> dict[str, Any]:
    """Every answer the route can give: success, then each refusal with what causes it."""
    success = _success(endpoint)
    if links := links_from(endpoint.handler.__name__):
        success["links"] = links
    out: dict[str, Any] = {str(endpoint.status): success}
    for status, description in endpoint.also:
        out[str(status)] = {**_success(endpoint), "description": description}
    if endpoint.body is not None:
        out["400"] = {"description": "malformed JSON, or not an object", **error}
    elif endpoint.content is not None:
        out["400"] = {"description": "unreadable upload, or a bad query parameter", **error}
    elif endpoint.query:
        out["400"] = {"description": "a query parameter out of its schema", **error}
    if CONVERTOR.search(endpoint.path) or any(p.required for p in endpoint.query):
        out["404"] = {"description": "unknown id, or a row of another company", **error}
    if endpoint.auth and (endpoint.method != "GET" or any(p.name == "company_id" for p in endpoint.query)):
        out["409"] = {"description": "valid, but the row is not in a state that allows it (the reason says why: a "
                      "campaign already started, a message that is not failed …)", **error}  # fmt: skip
    if endpoint.body is not None or endpoint.content is not None:
        out["413"] = {"description": "body too large", **error}
        invalid = "invalid input (against this schema), with reasons"
        out["422"] = {"description": f"{invalid}; or {endpoint.refuses}" if endpoint.refuses else invalid, **error}
    elif endpoint.refuses:
        out["422"] = {"description": endpoint.refuses, **error}
    for status, description in endpoint.errors:
        out[str(status)] = {"description": description, **error}
    if endpoint.auth:
        out["401"] = {"description": "missing, invalid, revoked or expired key", **error}
        out["403"] = {"description": "the key lacks the scope, or names another company", **error}
        out["429"] = {"description": "the key's rate limit (see Retry-After)", **error}
    out["503"] = {"description": "Redis or Postgres is unavailable: retry later", **error}
    return out


def build_openapi(
    endpoints: Sequence[Endpoint],
    request_models: Sequence[type[BaseModel]],
    response_models: Sequence[type[BaseModel]] = (),
) -> dict[str, Any]:
    """The document served at ``/openapi.json``: request bodies with their cross-field rules
    (:mod:`libs.api.schema_rules`), every parameter (:mod:`libs.api.query`), every answer, and the links between
    operations (:mod:`libs.api.links`)."""
    schemas: dict[str, Any] = {}
    for model in request_models:
        schemas.update(model_schemas(model))
    for model in response_models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object",
        "properties": {"error": {"type": "string"}, "details": {}},
        "required": ["error"],
    }
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
            "operationId": endpoint.handler.__name__,
            "responses": _responses(endpoint, error),
        }
        doc = markdown_of(endpoint.handler.__doc__ or "")
        if doc:
            operation["description"] = doc
        if parameters := _parameters(endpoint.path) + [p.openapi() for p in endpoint.query]:
            operation["parameters"] = parameters
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": not endpoint.body_optional,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{endpoint.body.__name__}"}}},
            }
        elif endpoint.content is not None:
            body: dict[str, Any] = {"type": "string"}
            if endpoint.content == "multipart/form-data":  # one binary part named ``file`` (an upload)
                body = {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            operation["requestBody"] = {"required": True, "content": {endpoint.content: {"schema": body}}}
        operation["x-scopes"] = [] if endpoint.scope in ("public", "authenticated") else [endpoint.scope]
        operation["security"] = [{"bearer": []}] if endpoint.auth else []
        paths.setdefault(CONVERTOR.sub(r"{\1}", endpoint.path), {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "zapq API",
            "version": "1",
            "description": "Producers create messages, campaigns and connections; operators watch queues, "
            "look up jobs and replay dead letters. Authenticate with `Authorization: Bearer <API key>`; each operation "
            "names the scope its key needs in `x-scopes`. A 422 answers a body off this document's schemas, or "
            "a valid one naming something that cannot be used or breaking a WhatsApp rule now (an unknown company, "
            "the service window closed, an opted-out number, a template not approved: `details.reason` says which); "
            "a 409 a row not in a state that allows the action. No text holds U+0000 (422).",
        },
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas},
        "paths": paths,
    }
