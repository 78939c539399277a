"""Figures of a scenario, the printed table and ``bench/results/<scenario>.json``."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

RESULTS = Path(__file__).resolve().parent / "results"

#: A figure that did not finish within its deadline.
TIMEOUT = "timeout"

Op = Literal[">=", "<="]


@dataclass(frozen=True, slots=True)
class Target:
    """A bound a figure should meet: ``value >= bound`` or ``value <= bound``."""

    op: Op
    bound: float

    def met(self, value: float) -> bool:
        """True when ``value`` is within the bound."""
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {_number(self.bound)}"


@dataclass
class Figure:
    """One measured number, with the same-run baseline it is compared to (if any)."""

    name: str
    value: float | str | None
    unit: str = ""
    baseline: float | str | None = None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """``value / baseline`` when both are numbers."""
        if isinstance(self.value, int | float) and isinstance(self.baseline, int | float) and self.baseline:
            return self.value / self.baseline
        return None

    @property
    def verdict(self) -> str:
        """``ok`` / ``MISS`` against the target, ``-`` without one, ``timeout`` when not measured."""
        if self.value == TIMEOUT:
            return TIMEOUT
        if self.target is None or not isinstance(self.value, int | float) or math.isnan(self.value):
            return "-"
        return "ok" if self.target.met(self.value) else "MISS"

    def asdict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["target"] = str(self.target) if self.target else None
        data["ratio"] = self.ratio
        data["verdict"] = self.verdict
        return data


@dataclass
class ScenarioResult:
    """Everything one scenario produced; ``error`` is set when it crashed."""

    scenario: str
    quick: bool
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def mark(self, phase: str) -> None:
        """Record the time elapsed since the previous mark (``details["phases"]``: where the seconds went)."""
        now = time.perf_counter()
        phases = self.details.setdefault("phases", {})
        phases[phase] = round(now - self.details.get("_last_mark", now), 2)
        self.details["_last_mark"] = now

    def add(self, figure: Figure) -> Figure:
        """Append ``figure`` and return it."""
        self.figures.append(figure)
        return figure

    def write(self, directory: Path | None = None) -> Path:
        """Write ``<directory>/<scenario>.json``: ``bench/results/`` for a full run (the figures the README
        quotes, committed), ``bench/results/quick/`` for a smoke run (ignored)."""
        directory = directory or (RESULTS / "quick" if self.quick else RESULTS)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.scenario}.json"
        data = {
            "scenario": self.scenario,
            "quick": self.quick,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(self.seconds, 2),
            "host": {"cpus": _cpus(), "python": platform.python_version(), "machine": platform.machine()},
            "error": self.error,
            "figures": [f.asdict() for f in self.figures],
            "details": {k: v for k, v in self.details.items() if not k.startswith("_")},
        }
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return path


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _number(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "nan"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(results: list[ScenarioResult]) -> str:
    """The summary table of every scenario (``value`` and ``baseline`` carry their unit)."""
    header = ("scenario", "figure", "value", "baseline", "ratio", "target", "")
    rows: list[tuple[str, ...]] = []
    for result in results:
        if result.error:
            rows.append((result.scenario, "CRASHED", result.error.splitlines()[-1][:70], "", "", "", "ERROR"))
        for figure in result.figures:
            unit = f" {figure.unit}" if figure.unit else ""
            value = _number(figure.value) + (unit if isinstance(figure.value, int | float) else "")
            baseline = _number(figure.baseline) + (unit if isinstance(figure.baseline, int | float) else "")
            ratio = f"{figure.ratio:.2f}x" if figure.ratio is not None else "-"
            target = f"{figure.target}{unit}" if figure.target else "-"
            rows.append((result.scenario, figure.name, value, baseline, ratio, target, figure.verdict))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
