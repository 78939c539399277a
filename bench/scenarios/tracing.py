"""``tracing``: the cost of OpenTelemetry tracing on sends and on ingest, measured side by side.

This shared 2-core machine's speed drifts by the minute: rounds of one mode run one after another differed by up
to ±20 % in CPU per item, more than the cost being measured. So each traced process runs beside an untraced
twin, loaded at the same time, and the figure is the CPU per item of the one against the other's over the same
seconds (the median of the repetitions). Which side starts first alternates from one repetition to the next (the
ingest pairs are made afresh each repetition, in alternating order: with one order throughout, the pair made second
came out 1.4–2.8 % cheaper in every control).

Sends: pairs of the ``send`` scenario's phase A (``N`` normal sends over 100 numbers at 80/s each, the fake Graph
API answering after 200 ms, a fresh ``dramatiq services.message_sender -p 1 -t 8``), one sender untraced and one
with ``ZAPQ_OTEL_ENDPOINT`` pointing at an OTLP/HTTP sink (``bench.receiver``, answering 200): every message
traced ("on"), one in ten (``ZAPQ_OTEL_SAMPLE_RATIO=0.1``) or one in a hundred (0.01, the production
recommendation); three pairs of each. Figures: sender CPU per send and the % tracing adds, sends/s of each.
"control" pairs run both sides untraced: the % they show is the method's own noise and bias.

Then ingest, side by side: two edge + ingest worker pairs (one process each, own namespaces), one with tracing
off and one with every webhook traced, loaded at the same time, each by 32 connections of signed single-message
webhooks (as the ``ingest`` scenario loads its pair), three times; then the same with one webhook in a hundred
traced. Figures: edge and worker CPU per webhook, the CPU tracing adds, each pair's accepted/s and accept p99.
(The ``send`` and ``ingest`` scenarios each carry one tracing-on variant too.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import threading
from typing import Any

import httpx

from bench import data, loadgen
from bench.harness import BenchRun, wait_until
from bench.report import TIMEOUT, Figure, ScenarioResult, Target
from bench.scenarios import ingest
from bench.scenarios.send import FAKE_ARGV, OTLP_SINK_ARGV, Sizes, _throughput_over, configure, span_rate

#: Send pairs: each traced mode beside tracing off, ``SEND_REPS`` times (modes in turn).
TRACED_MODES = ("on", "sampled", "sparse", "control")
SEND_REPS = 3
#: ``ZAPQ_OTEL_SAMPLE_RATIO`` of the sampled modes.
RATIOS = {"sampled": "0.1", "sparse": "0.01"}
#: Ingest: each traced mode's pair beside an untraced one; webhooks sent to each at once, ``INGEST_REPS`` times.
INGEST_MODES = ("on", "sparse", "control")
#: The control pairs run both sides untraced: what the method shows when nothing differs (its noise and bias).
CONTROL = "control"
INGEST_N = 8_000
INGEST_REPS = 3


def run(bench: BenchRun, result: ScenarioResult) -> None:
    """Measure and fill ``result``."""
    # Two senders share the machine: each runs at about half the rate phase A is sized for.
    sizes = Sizes.for_run(bench.quick)
    sizes = dataclasses.replace(sizes, main_timeout=4 * sizes.main_timeout)
    rounds: list[dict[str, Any]] = []
    with bench.processes() as servers:
        fake, _ = bench.start_server(servers, "fake-meta", FAKE_ARGV, "/_fake/health")
        configure(fake, record_payloads=False)
        sink, _ = bench.start_server(servers, "otlp-sink", OTLP_SINK_ARGV, "/healthz")
        with bench.connect() as conn:
            company = data.make_company(conn)
        k = 0
        for rep in range(1 if bench.quick else SEND_REPS):
            for mode in TRACED_MODES:
                bench.join_stoppers()  # the pair before has stopped
                pair: dict[str, dict[str, Any]] = {}

                def send(side: str, k: int, mode: str = mode, pair: dict[str, dict[str, Any]] = pair) -> None:
                    env = {"ZAPQ_OTEL_ENDPOINT": f"{sink}/v1/traces"} if side not in ("off", CONTROL) else {}
                    if side in RATIOS:
                        env["ZAPQ_OTEL_SAMPLE_RATIO"] = RATIOS[side]
                    prefix, offset, label = f"14{k}0", 8_000_000 + 1_000_000 * k, f"r{k}-{side}"
                    pair[side] = _throughput_over(
                        bench, fake, company, "lean", prefix, offset, sizes, label=label, extra_env=env
                    )

                order = ("off", mode) if rep % 2 == 0 else (mode, "off")  # who starts first alternates
                threads = [threading.Thread(target=send, args=(side, k + j)) for j, side in enumerate(order)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                k += 2
                if len(pair) != 2:
                    raise RuntimeError(f"a sender of the {mode} pair failed (see the log above)")
                rounds.extend({**one, "mode": side, "pair": mode, "rep": rep} for side, one in pair.items())
                result.mark(f"send pair {rep} ({mode})")
        sends = httpx.get(f"{fake}/_fake/sends", timeout=60).json()
        exports = httpx.get(f"{sink}/_bench/stats", timeout=10).json()["total"]
    for one in rounds:
        refs = {str(i) for i in one.pop("ids")}
        times = [s["received_at"] for s in sends if s["client_ref"] in refs]
        one["rate"] = span_rate(times)
        one["cpu_ms_per_send"] = round(1000 * one["cpu_s"] / max(1, len(times)), 3)
    result.details.update(rounds=rounds, otlp_exports=exports, sends_per_sender=sizes.main)
    labels = {"on": "every message traced", **{mode: f"sample ratio {ratio}" for mode, ratio in RATIOS.items()}}
    labels[CONTROL] = "control: both untraced"
    for mode, label in labels.items():
        pairs = [
            ({one["mode"]: one for one in rounds if one["pair"] == mode and one["rep"] == rep})
            for rep in sorted({one["rep"] for one in rounds if one["pair"] == mode})
        ]
        on = statistics.median(float(p[mode]["cpu_ms_per_send"]) for p in pairs)
        off = statistics.median(float(p["off"]["cpu_ms_per_send"]) for p in pairs)
        result.add(Figure(f"sender CPU per send, {label} (beside one untraced)", on, "ms", off))
        added = statistics.median(_added(p[mode]["cpu_ms_per_send"], p["off"]["cpu_ms_per_send"]) for p in pairs)
        target = Target("<=", 5) if mode != CONTROL else None
        result.add(Figure(f"sender CPU added by tracing, {label}", added, "%", target=target))
        rate_on = statistics.median(float(p[mode]["rate"] or 0) for p in pairs)
        rate_off = statistics.median(float(p["off"]["rate"] or 0) for p in pairs)
        result.add(Figure(f"sends/s side by side, {label}", rate_on, "sends/s", rate_off))
    if not all(one["done"] for one in rounds):
        unfinished = sum(not one["done"] for one in rounds)
        result.add(
            Figure("senders that did not finish within the deadline (CPU then over the deadline)", unfinished, "")
        )
    _ingest(bench, result)


def _added(on: float, off: float) -> float:
    """The % ``on`` costs above ``off``."""
    return 100 * (float(on) - float(off)) / float(off) if off else float("nan")


def _ingest(bench: BenchRun, result: ScenarioResult) -> None:
    """Edge + worker pairs side by side, tracing off beside every webhook traced, then beside 1 in 100 traced."""
    n, reps = (300, 1) if bench.quick else (INGEST_N, INGEST_REPS)
    secret = bench.settings().meta_app_secret
    ingest.make_connection(bench)
    rows: list[dict[str, Any]] = []
    first = 0
    with bench.processes() as servers:
        sink, _ = bench.start_server(servers, "otlp-sink", ingest.OTLP_SINK_ARGV, "/healthz")
        for mode in INGEST_MODES:
            traced = {"ZAPQ_OTEL_ENDPOINT": f"{sink}/v1/traces"} if mode != CONTROL else {}
            if mode in RATIOS:
                traced["ZAPQ_OTEL_SAMPLE_RATIO"] = RATIOS[mode]
            for rep in range(reps):
                bench.join_stoppers()  # the pairs before have stopped
                # Fresh pairs each repetition, made (and loaded) in alternating order: with one order for all, the
                # pair made second came out 1.4–2.8 % cheaper in every control.
                order = ("off", mode) if rep % 2 == 0 else (mode, "off")
                with contextlib.ExitStack() as stack:
                    pairs = {
                        side: stack.enter_context(
                            ingest.ingest_pair(bench, f"i-{mode}-{rep}-{side}", {} if side == "off" else traced)
                        )
                        for side in order
                    }
                    requests = {}
                    for side, pair in pairs.items():
                        ingest.warm_up(bench, secret, pair, first)
                        first += ingest.WARMUP
                        requests[side] = ingest.build_requests(pair.url, secret, first, n, bench.token)
                        first += n
                    rows.extend({**row, "pair": mode} for row in _side_by_side(bench, pairs, requests, rep))
                result.mark(f"ingest side by side {rep} ({mode})")
        exports = httpx.get(f"{sink}/_bench/stats", timeout=10).json()["total"]
    result.details.update(ingest_side_by_side=rows, ingest_otlp_exports=exports, ingest_n=n)
    if not all(row["all_processed"] and not row["timed_out"] for row in rows):
        result.add(Figure("ingest side by side: every webhook accepted and processed", TIMEOUT, ""))
        return
    labels = {"on": "every webhook traced", "sparse": f"sample ratio {RATIOS['sparse']}", CONTROL: "control"}
    for mode in INGEST_MODES:
        mine = [row for row in rows if row["pair"] == mode]

        def median(side: str, key: str, mine: list[dict[str, Any]] = mine) -> float:
            return statistics.median(float(row[key]) for row in mine if row["mode"] == side)

        label = labels[mode]
        for key, part in (("edge_cpu_ms", "edge"), ("worker_cpu_ms", "ingest worker")):
            result.add(Figure(f"{part} CPU per webhook, {label}", median(mode, key), "ms", median("off", key)))
        by_rep = [{row["mode"]: row for row in mine if row["rep"] == rep} for rep in sorted({r["rep"] for r in mine})]
        added = statistics.median(_added(pair[mode]["cpu_ms"], pair["off"]["cpu_ms"]) for pair in by_rep)
        target = Target("<=", 5) if mode != CONTROL else None
        result.add(Figure(f"ingest CPU (edge + worker) added by tracing, {label}", added, "%", target=target))
        rate = Figure(
            f"webhooks accepted/s side by side, {label}", median(mode, "rate"), "req/s", median("off", "rate")
        )
        result.add(rate)
        p99 = Figure(f"accept latency p99 side by side, {label}", median(mode, "p99_ms"), "ms", median("off", "p99_ms"))
        result.add(p99)


def _side_by_side(
    bench: BenchRun, pairs: dict[str, ingest.IngestPair], requests: dict[str, list[bytes]], rep: int
) -> list[dict[str, Any]]:
    """Both pairs loaded at once, each by ``CONCURRENCY`` connections (as the ``ingest`` scenario loads its one
    pair: the same group-commit batches); each one's CPU per webhook once all are processed."""
    before = ingest.processed_count(bench)
    cpu = {mode: pair.cpu() for mode, pair in pairs.items()}
    loads: dict[str, loadgen.LoadResult] = {}

    def load(side: str) -> None:
        loads[side] = loadgen.post_all(pairs[side].url, requests[side], concurrency=ingest.CONCURRENCY, timeout=60)

    threads = [threading.Thread(target=load, args=(side,)) for side in pairs]  # in the order the pairs were made
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = sum(result.ok for result in loads.values())
    done = wait_until(lambda: ingest.processed_count(bench) >= before + accepted, 30, interval=0.05)
    rows = []
    for mode, pair in pairs.items():
        (edge0, worker0), (edge1, worker1), ok = cpu[mode], pair.cpu(), max(1, loads[mode].ok)
        edge_ms, worker_ms = 1000 * (edge1 - edge0) / ok, 1000 * (worker1 - worker0) / ok
        rows.append(
            {
                "mode": mode,
                "rep": rep,
                "accepted": loads[mode].ok,
                "rate": loads[mode].rate,
                "timed_out": loads[mode].timed_out,
                "all_processed": done,
                "edge_cpu_ms": round(edge_ms, 4),
                "worker_cpu_ms": round(worker_ms, 4),
                "cpu_ms": round(edge_ms + worker_ms, 4),
                "p99_ms": loads[mode].percentile_ms(0.99),
            }
        )
    return rows
