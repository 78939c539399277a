"""zapq's Lua scripts: ``libs/lua/<name>.lua`` (package data), each read from disk once per process.

A script spells no Redis key: it gets whole keys in ``KEYS``, or — when it builds keys from data only known
inside Redis (a queue name in an ack, a worker id, a minute) — the prefixes, suffixes and separators of
:mod:`libs.keys` in ``ARGV``. Each script's header comment says what its ``KEYS`` and ``ARGV`` hold.

A caller that owns its client registers the script with it (``client.register_script(source(name))``:
``EVALSHA``, loaded into Redis on first use); one handed clients per call, or queuing the script in a ``MULTI`` or
pipeline, sends it with ``EVAL`` (Redis compiles it once and caches it by its SHA either way; redis-py's pipelined
``EVALSHA`` would cost an extra ``SCRIPT EXISTS`` round trip per pipeline).
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def source(name: str) -> str:
    """The text of ``libs/lua/<name>.lua`` (read once)."""
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def names() -> list[str]:
    """Every script shipped in this package."""
    return sorted(
        entry.name.removesuffix(".lua") for entry in resources.files(__name__).iterdir() if entry.name.endswith(".lua")
    )
