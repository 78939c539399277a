"""``python -m bench [SCENARIO…] [--quick]``: run the scenarios, print the table, write ``bench/results/``.

Exits non-zero only when a scenario crashes (or the run is interrupted), never because of a timing.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
import time
import traceback
from types import FrameType

from bench.harness import BenchRun
from bench.report import RESULTS, ScenarioResult, render_table
from bench.scenarios import ON_REQUEST, SCENARIOS


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run_one(bench: BenchRun, result: ScenarioResult) -> None:
    """Run one scenario in its own namespace; a crash is recorded in ``result``, never raised."""
    started = time.perf_counter()
    try:
        SCENARIOS[result.scenario](bench.scoped(result.scenario), result)
    except Exception:
        result.error = traceback.format_exc()
        print(f"bench: scenario {result.scenario} crashed:\n{result.error}", file=sys.stderr, flush=True)
    except BaseException:
        result.error = "interrupted"
        raise
    finally:
        result.seconds = time.perf_counter() - started
        result.write()
    print(f"bench: {result.scenario} finished in {result.seconds:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small N, scenarios side by side (CI smoke, ≤ 30 s in total)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the children's logs (kept anyway on a crash)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    selected = args.scenarios or [name for name in SCENARIOS if name not in ON_REQUEST]
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background, where SIGINT is ignored

    results = [ScenarioResult(name, quick=args.quick) for name in selected]
    started = time.perf_counter()
    interrupted = False
    try:
        with BenchRun.open(quick=args.quick) as bench:
            print(
                f"bench: database {bench.database_url.rsplit('/', 1)[-1]}, namespaces {bench.namespace}-*, "
                f"logs {bench.log_dir}",
                flush=True,
            )
            if args.quick and len(results) > 1:
                # Smoke test: the scenarios run side by side (their figures are not meaningful then).
                threads = [
                    threading.Thread(target=_run_one, args=(bench, result), name=result.scenario, daemon=True)
                    for result in results
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    while thread.is_alive():
                        thread.join(timeout=0.5)
            else:
                for result in results:
                    bench.join_stoppers()  # the previous scenario's processes must not share the CPU with this one
                    _run_one(bench, result)
            if not args.keep_logs and not any(r.error for r in results):
                shutil.rmtree(bench.log_dir, ignore_errors=True)
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted; everything it started was stopped and cleaned up", file=sys.stderr)
    print()
    print(render_table(results))
    where = RESULTS / "quick" if args.quick else RESULTS
    print(f"\n{'quick' if args.quick else 'full'} run: {time.perf_counter() - started:.1f} s; results in {where}/")
    if interrupted:
        return 130
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
