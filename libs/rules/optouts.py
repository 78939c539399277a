"""Opt-outs: a company's suppression list, and the keywords that put people on it or take them off.

* **The list** (``opt_outs``): numbers that asked the company not to message them. Added through the API
  (``POST /api/opt-outs``, a CSV import), the CLI (``zapq opt-outs``), or by an inbound message that is one of
  the company's opt-out keywords; removed through the API / CLI or by an opt-in keyword.
* **Campaigns** skip listed numbers at fan-out (:mod:`libs.campaigns.expand`: the row is created ``cancelled``
  with reason ``opted_out`` and counted in the campaign's ``suppressed_count``; one anti-join per slice).
* **Direct sends** to a listed number are refused (422 ``opted_out``) unless the request says it is a
  transactional reply inside the customer-service window (``transactional: true``, and the window is open).
* **Keywords** match the *whole* inbound text, case- and accent-insensitively, surrounding spaces and
  punctuation ignored: ``Stop``, ``  PARAR! `` and ``DESCADASTRAR`` match; ``please stop`` does not. A company
  may set its own lists (``companies.opt_out_keywords`` / ``opt_in_keywords``); ``NULL`` means the defaults.
* Each change writes its event in the same statement: ``contact.opted_out`` / ``contact.opted_in``.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Iterable

#: Opt-out keywords when a company has not set its own.
DEFAULT_OPT_OUT_KEYWORDS: tuple[str, ...] = (
    "STOP",
    "PARAR",
    "PARE",
    "SAIR",
    "CANCELAR",
    "DESCADASTRAR",
    "UNSUBSCRIBE",
    "BAJA",
)
#: Opt-in keywords when a company has not set its own.
DEFAULT_OPT_IN_KEYWORDS: tuple[str, ...] = ("START", "VOLTAR", "RETOMAR", "ASSINAR", "SUBSCRIBE", "UNSTOP")

#: Longest inbound text looked at (a keyword is one or two words).
MAX_KEYWORD_TEXT = 64
_TRIM = string.whitespace + string.punctuation + "¡¿"

#: Where an opt-out came from.
SOURCES = frozenset({"api", "cli", "csv", "keyword"})

OPT_OUT = "opt_out"
OPT_IN = "opt_in"


def fold(text: str) -> str:
    """``"  Sáir! "`` → ``"sair"``: accents removed, case folded, spaces collapsed, edge punctuation dropped."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.casefold().split()).strip(_TRIM)


def folded(keywords: Iterable[str]) -> frozenset[str]:
    """A keyword list as :func:`match` compares it."""
    return frozenset(k for k in (fold(word) for word in keywords) if k)


DEFAULT_OPT_OUT = folded(DEFAULT_OPT_OUT_KEYWORDS)
DEFAULT_OPT_IN = folded(DEFAULT_OPT_IN_KEYWORDS)


def candidate(text: str | None) -> bool:
    """Whether an inbound text is short enough to be a keyword (only those cost a keyword lookup)."""
    return text is not None and 0 < len(text) <= MAX_KEYWORD_TEXT


def match(text: str, opt_out: frozenset[str], opt_in: frozenset[str]) -> str | None:
    """:data:`OPT_OUT`, :data:`OPT_IN` or ``None`` for an inbound text (the whole message is compared)."""
    key = fold(text)
    if key in opt_out:
        return OPT_OUT
    if key in opt_in:
        return OPT_IN
    return None
