"""``tracing``: the cost of OpenTelemetry tracing on sends and on ingest, rounds off and on alternately.

Each round is the ``send`` scenario's phase A (``N`` normal sends over 100 numbers at 80/s, the fake Graph API
answering after 200 ms, a fresh ``dramatiq services.message_sender -p 1 -t 8``) — with ``ZAPQ_OTEL_ENDPOINT``
pointing at an OTLP/HTTP sink (``bench.receiver``, answering 200) in the "on" rounds, every message traced.
"sampled" rounds trace one message in ten (``ZAPQ_OTEL_SAMPLE_RATIO=0.1``), "sparse" rounds one in a hundred (0.01,
the production recommendation). Figures: sends/s and worker CPU per
send, the median of the three rounds of each mode against that of the three "off" rounds, and the overhead in %.

Then ingest: each round is the ``ingest`` scenario's measured load (``N`` signed single-message webhooks from 32
connections) against a fresh edge and ingest worker (one process each), tracing off or on (every webhook traced)
in alternation (five rounds each). Figures: accepted/s, and edge + worker CPU per webhook (medians).
(The ``send`` and ``ingest`` scenarios each carry one tracing-on variant too.)
"""

from __future__ import annotations

import statistics
from typing import Any

import httpx

from bench import data
from bench.harness import BenchRun
from bench.report import TIMEOUT, Figure, ScenarioResult, Target
from bench.scenarios import ingest
from bench.scenarios.send import FAKE_ARGV, OTLP_SINK_ARGV, Sizes, _throughput_over, configure, span_rate

#: Rounds: tracing off, on with every message traced, on with 1 in 10 and 1 in 100 traced; three of each (this
#: machine's noise between two rounds of one mode reaches ±10 %: a median of three resists one outlier), in an
#: order that gives each mode early and late places (rounds slow down as the run's tables grow: repeating one
#: order cost its last mode ~3 %).
ROUNDS = ("off", "on", "sampled", "sparse", "sparse", "sampled", "on", "off", "on", "off", "sparse", "sampled")
#: ``ZAPQ_OTEL_SAMPLE_RATIO`` of the sampled modes.
RATIOS = {"sampled": "0.1", "sparse": "0.01"}
#: Ingest rounds: off and on (every webhook traced), five of each, each mode first and last in turn (two rounds
#: of one mode differ by up to ±12 % here: the median of five resists two outliers).
INGEST_ROUNDS = ("off", "on", "on", "off", "off", "on", "on", "off", "off", "on")


def run(bench: BenchRun, result: ScenarioResult) -> None:
    """Measure and fill ``result``."""
    sizes = Sizes.for_run(bench.quick)
    rounds: list[dict[str, Any]] = []
    with bench.processes() as servers:
        fake, _ = bench.start_server(servers, "fake-meta", FAKE_ARGV, "/_fake/health")
        configure(fake, record_payloads=False)
        sink, _ = bench.start_server(servers, "otlp-sink", OTLP_SINK_ARGV, "/healthz")
        with bench.connect() as conn:
            company = data.make_company(conn)
        for k, mode in enumerate(ROUNDS):
            env = {"ZAPQ_OTEL_ENDPOINT": f"{sink}/v1/traces"} if mode != "off" else {}
            if mode in RATIOS:
                env["ZAPQ_OTEL_SAMPLE_RATIO"] = RATIOS[mode]
            prefix, offset = f"14{k}0", 8_000_000 + 1_000_000 * k
            label = f"r{k}-{mode}"
            one = _throughput_over(bench, fake, company, "lean", prefix, offset, sizes, label=label, extra_env=env)
            one["mode"] = mode
            rounds.append(one)
            result.mark(f"round {k} ({mode})")
        sends = httpx.get(f"{fake}/_fake/sends", timeout=60).json()
        exports = httpx.get(f"{sink}/_bench/stats", timeout=10).json()["total"]
    for one in rounds:
        refs = {str(i) for i in one.pop("ids")}
        times = [s["received_at"] for s in sends if s["client_ref"] in refs]
        one["rate"] = span_rate(times)
        one["cpu_ms_per_send"] = round(1000 * one["cpu_s"] / max(1, len(times)), 3)
    result.details.update(rounds=rounds, otlp_exports=exports, sends_per_round=sizes.main)

    def median(mode: str, key: str) -> float:
        return statistics.median(float(one[key] or 0) for one in rounds if one["mode"] == mode)

    rate_off, cpu_off = median("off", "rate"), median("off", "cpu_ms_per_send")
    labels = {"on": "every message traced", **{mode: f"sample ratio {ratio}" for mode, ratio in RATIOS.items()}}
    for mode, label in labels.items():
        rate_on, cpu_on = median(mode, "rate"), median(mode, "cpu_ms_per_send")
        result.add(Figure(f"sends/s, tracing on, {label} (median of 3 rounds)", rate_on, "sends/s", rate_off))
        result.add(Figure(f"worker CPU per send, {label}", cpu_on, "ms", cpu_off))
        overhead = 100 * (rate_off - rate_on) / rate_off if rate_off else None
        result.add(Figure(f"throughput lost to tracing, {label}", overhead, "%", target=Target("<=", 5)))
        added = 100 * (cpu_on - cpu_off) / cpu_off if cpu_off else None
        result.add(Figure(f"worker CPU added by tracing, {label}", added, "%", target=Target("<=", 5)))
    _ingest(bench, result)


def _ingest(bench: BenchRun, result: ScenarioResult) -> None:
    n = 300 if bench.quick else 8_000
    secret = bench.settings().meta_app_secret
    ingest.make_connection(bench)
    rounds: list[dict[str, Any]] = []
    with bench.processes() as servers:
        sink, _ = bench.start_server(servers, "otlp-sink", ingest.OTLP_SINK_ARGV, "/healthz")
        for k, mode in enumerate(INGEST_ROUNDS):
            env = {"ZAPQ_OTEL_ENDPOINT": f"{sink}/v1/traces"} if mode == "on" else {}
            first = k * (ingest.WARMUP + n)
            bench.join_stoppers()  # the previous round's processes have stopped
            one = ingest.measure_round(bench, secret, label=f"i{k}-{mode}", env=env, first=first, n=n, load_deadline=30)
            one.update(mode=mode, cpu_ms=one["edge_cpu_ms"] + one["worker_cpu_ms"])
            rounds.append(one)
            result.mark(f"ingest round {k} ({mode})")
        exports = httpx.get(f"{sink}/_bench/stats", timeout=10).json()["total"]
    result.details.update(ingest_rounds=rounds, ingest_otlp_exports=exports, webhooks_per_round=n)
    if any(one["rate"] == TIMEOUT or not one["all_processed"] for one in rounds):
        result.add(Figure("ingest rounds: every webhook accepted and processed", TIMEOUT, ""))
        return

    def median(mode: str, key: str) -> float:
        return statistics.median(float(one[key]) for one in rounds if one["mode"] == mode)

    rate_off, rate_on = median("off", "rate"), median("on", "rate")
    result.add(Figure("webhooks accepted/s, tracing on, every webhook traced (median)", rate_on, "req/s", rate_off))
    lost = 100 * (rate_off - rate_on) / rate_off
    result.add(Figure("ingest throughput lost to tracing", lost, "%", target=Target("<=", 5)))
    for key, label in (("edge_cpu_ms", "edge"), ("worker_cpu_ms", "ingest worker"), ("cpu_ms", "edge + worker")):
        off, on = median("off", key), median("on", key)
        result.add(Figure(f"{label} CPU per webhook, tracing on", on, "ms", off))
    cpu_off, cpu_on = median("off", "cpu_ms"), median("on", "cpu_ms")
    added = 100 * (cpu_on - cpu_off) / cpu_off
    result.add(Figure("ingest CPU (edge + worker) added by tracing", added, "%", target=Target("<=", 5)))
