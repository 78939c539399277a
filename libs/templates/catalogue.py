"""Template sends checked against the connection's catalogue before anything is queued.

``POST /api/messages`` with a template, and a template campaign's creation and start, are refused (422,
:class:`~libs.refusals.RuleViolationError` with one of these reasons) when the template is:

* ``template_unknown``: not in the catalogue under that name and language (the text lists the languages the
  name has, if any);
* ``template_not_approved``: known, but not sendable now (PENDING, REJECTED, PAUSED, DISABLED, …);
* ``template_parameters``: the send's header, body or button parameters do not match the placeholders of
  the template's components (:mod:`libs.templates.params`; every mismatch named).

Until a connection's catalogue has synced successfully once, template sends are not checked (a WARNING says
so, once per connection per process): a fresh connection, or one whose ``waba_id`` is not set yet, keeps
sending as before. Only Meta connections have a catalogue (Baileys connections are not checked).

The API process keeps each connection's catalogue for :attr:`TemplateCache.ttl_s` (``ZAPQ_TEMPLATE_CACHE_SECONDS``,
30 s): one Postgres read per connection per period, not one per send. A sync run by this process drops its
entry at once; a change another process made (a status webhook, the scheduler's sync) is seen within the TTL.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from libs.refusals import RuleViolationError
from libs.templates import params, store

logger = logging.getLogger(__name__)

#: Statuses a template may be sent in (FLAGGED: Meta warns that its quality is low; it still goes out).
SENDABLE = frozenset({"APPROVED", "FLAGGED"})
#: Statuses that stop running campaigns using the template.
STOPPING = frozenset({"PAUSED", "DISABLED"})

TEMPLATE_UNKNOWN = "template_unknown"
TEMPLATE_NOT_APPROVED = "template_not_approved"
TEMPLATE_PARAMETERS = "template_parameters"

#: Default seconds a connection's catalogue is kept by an API process.
DEFAULT_TTL_S = 30.0
#: Connections kept at most; past it the cache starts over.
MAX_ENTRIES = 10_000


def stop_reason(name: str, language: str, status: str, why: str | None) -> str:
    """The reason a campaign shows when its template stopped it (:data:`STOPPING`)."""
    return f"template {name} ({language}) is {status} by Meta" + (f": {why}" if why else "")


@dataclass(frozen=True, slots=True)
class Known:
    """One template of a catalogue, as a check needs it."""

    status: str
    needs: params.Needs | None


@dataclass(frozen=True, slots=True)
class Catalogue:
    """A connection's catalogue: its provider, when it last synced in full (``None``: never), its templates."""

    connection_id: int
    provider: str
    synced_at: dt.datetime | None
    templates: Mapping[tuple[str, str], Known]

    @property
    def enforced(self) -> bool:
        """Whether template sends on this connection are checked (a Meta connection synced once)."""
        return self.provider == "meta" and self.synced_at is not None


class TemplateCache:
    """Each connection's catalogue, read from Postgres at most once per ``ttl_s`` by this process."""

    def __init__(self, *, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[int, tuple[float, Catalogue | None]] = {}
        self._warned: set[int] = set()

    async def get(self, conn: AsyncConnection[Any], connection_id: int) -> Catalogue | None:
        """The connection's catalogue (``None``: no such connection), from memory while fresh."""
        now = self._clock()
        cached = self._entries.get(connection_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await _load(conn, connection_id)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[connection_id] = (now + self.ttl_s, found)
        return found

    def invalidate(self, connection_id: int | None = None) -> None:
        """Forget one connection's catalogue (all with ``None``): the next check reads it again."""
        if connection_id is None:
            self._entries.clear()
        else:
            self._entries.pop(connection_id, None)

    def warn_once(self, connection_id: int) -> bool:
        """True the first time this process is told about an unchecked connection (then it logs a WARNING)."""
        if connection_id in self._warned:
            return False
        self._warned.add(connection_id)
        return True


async def _load(conn: AsyncConnection[Any], connection_id: int) -> Catalogue | None:
    head = await store.catalogue(conn, connection_id)
    if head is None:
        return None
    templates: dict[tuple[str, str], Known] = {}
    if head["provider"] == "meta" and head["synced_at"] is not None:
        for row in await store.templates_of(conn, connection_id):
            needs = params.needs(row["components"]) if row["components"] is not None else None
            templates[(row["name"], row["language"])] = Known(status=row["status"], needs=needs)
    return Catalogue(connection_id, head["provider"], head["synced_at"], templates)


def refusal(catalogue: Catalogue, template: Mapping[str, Any], components: Sequence[Mapping[str, Any]]) -> None:
    """Raise :class:`~libs.refusals.RuleViolationError` when ``template`` (name, language) sent with
    ``components`` does not fit the (enforced) ``catalogue``."""
    name = str(template.get("name", ""))
    language = str(template.get("language") or "en_US")
    known = catalogue.templates.get((name, language))
    where = {"template": name, "language": language, "connection_id": catalogue.connection_id}
    if known is None:
        others = sorted(lang for (n, lang) in catalogue.templates if n == name)
        text = (
            f"template {name} has no {language} translation (it has {', '.join(others)})"
            if others
            else f"connection {catalogue.connection_id} has no template {name} ({language}) in its catalogue"
        )
        raise RuleViolationError(TEMPLATE_UNKNOWN, text, **where)
    if known.status not in SENDABLE:
        text = f"template {name} ({language}) is {known.status}, not APPROVED"
        raise RuleViolationError(TEMPLATE_NOT_APPROVED, text, status=known.status, **where)
    if known.needs is None:
        return  # known from a webhook only, or a component zapq does not model: Meta judges the parameters
    found = params.problems(known.needs, components)
    if found:
        text = f"template {name} ({language}): " + "; ".join(found)
        raise RuleViolationError(TEMPLATE_PARAMETERS, text, problems=found, **where)


async def check(
    cache: TemplateCache,
    conn: AsyncConnection[Any],
    connection_id: int,
    template: Mapping[str, Any],
    components: Sequence[Mapping[str, Any]],
) -> None:
    """Check a template send on ``connection_id`` (see the module docstring); a connection whose catalogue
    never synced is let through, with one WARNING per process."""
    catalogue = await cache.get(conn, connection_id)
    if catalogue is None or catalogue.provider != "meta":
        return
    if not catalogue.enforced:
        if cache.warn_once(connection_id):
            logger.warning(
                "connection %s: template sends are not checked: its template catalogue has never synced "
                "(set its waba_id, then `zapq templates sync --connection %s`)",
                connection_id,
                connection_id,
            )
        return
    refusal(catalogue, template, components)
