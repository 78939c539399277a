"""The ingest worker's apply, measured in one process: CPU per webhook, untraced and traced, without the noise of a
loaded machine's other processes.

``python -m bench.apply_cost [GROUPS]``: stores ``GROUPS`` × 32 of the ``ingest`` scenario's signed single-message
webhooks in a database of its own, then applies them with :func:`libs.ingest.process.process_webhooks` group by
group (as a ``process_webhooks`` job does), alternating untraced groups and groups whose webhooks each keep a
sampled ``traceparent`` in their row (tracing on, spans written as OTLP JSON and dropped). Each group's figure is
this thread's CPU time (Postgres's own work is not in it) divided by 32; the medians are printed. Alternating the
two in one process puts any drift of the machine on both alike: differences of a few µs per webhook show, where
``python -m bench tracing`` (whole processes side by side) resolves a few % at best.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from bench.harness import BenchRun
from bench.scenarios import ingest
from libs import otlp, tracing
from libs.db.engine import Database
from libs.ingest import store
from libs.ingest.process import process_webhooks
from libs.runtime import tune_gc
from libs.whatsapp import meta_dedup_key

GROUP = 32


class _Dropped:
    """An exporter that writes each span's JSON, as the OTLP one does, and sends it nowhere."""

    def prepare(self, span: otlp.Span) -> str:
        return otlp.span_json(span)

    def export(self, items: Sequence[Any]) -> None:
        pass

    def shutdown(self) -> None:
        pass


def _traceparent() -> str:
    return f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01"


def measure(groups: int) -> dict[str, float]:
    """Median µs of CPU per webhook applied, untraced (``off``) and traced (``on``)."""
    with BenchRun.open(quick=False) as run:
        bench = run.scoped("apply-cost")
        ingest.make_connection(bench)
        db = Database.from_settings(bench.settings())
        n = groups * GROUP
        bodies = [ingest.webhook(i, f"wamid.COST{bench.token}{i:08d}") for i in range(n)]
        # the odd groups' webhooks as a traced request stores them: with a sampled context
        traceparents = [_traceparent() if i // GROUP % 2 else None for i in range(n)]
        params = {
            "sources": ["meta"] * n,
            "keys": [meta_dedup_key(b) for b in bodies],
            "bodies": bodies,
            "statuses": ["received"] * n,
            "traceparents": traceparents,
        }
        with psycopg.connect(bench.libpq_url) as conn:
            ids = [row[0] for row in conn.execute(store.INSERT_MANY, params)]
        costs: dict[str, list[float]] = {"off": [], "on": []}
        tune_gc()  # as a worker process does once booted
        try:
            for g in range(groups):
                group = ids[g * GROUP : (g + 1) * GROUP]
                mode = "on" if g % 2 else "off"
                if mode == "on":  # the module's recorder, as configure() makes it, with the exporter above
                    tracing._recorder = otlp.Recorder(_Dropped(), batch=False)
                started = time.thread_time()
                process_webhooks(db, group)
                spent = time.thread_time() - started
                tracing.shutdown()
                if g >= 4:  # the first groups warm the pool and the prepared statements
                    costs[mode].append(1e6 * spent / GROUP)
        finally:
            tracing.shutdown()
            db.close()
    return {mode: statistics.median(values) for mode, values in costs.items()}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.apply_cost", description=__doc__)
    parser.add_argument("groups", nargs="?", type=int, default=400, help="groups of 32 webhooks (default 400)")
    args = parser.parse_args(argv)
    figures = measure(max(args.groups, 10))
    off, on = figures["off"], figures["on"]
    print(f"apply CPU per webhook: untraced {off:.1f} µs, traced {on:.1f} µs (+{on - off:.1f} µs, {on / off - 1:+.1%})")


if __name__ == "__main__":
    main()
