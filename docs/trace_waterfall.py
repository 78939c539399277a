"""Render one trace as an SVG waterfall (the pictures in operations.md, "Tracing a message").

The spans come from the trace test's in-memory exporter:

    ZAPQ_TRACE_DUMP=/tmp/traces pytest -p no:randomly -n 0 tests/sending/test_tracing.py -k "outbound or inbound"
    python docs/trace_waterfall.py /tmp/traces/outbound.json docs/trace-outbound.svg
    python docs/trace_waterfall.py /tmp/traces/inbound.json docs/trace-inbound.svg

Each JSON file is a list of spans (``name``, ``trace_id``, ``span_id``, ``parent_id``, ``start``/``end`` in ns,
``attributes``, ``events``); the trace drawn is the one of the first root span. Standard library only.
"""

from __future__ import annotations

import json
import sys
from html import escape
from typing import Any

ROW, LEFT, WIDTH, TOP = 26, 330, 640, 40
SHOWN = (
    "zapq.type",
    "zapq.status",
    "zapq.event.type",
    "http.response.status_code",
    "zapq.throttle.ms",
    "zapq.provider.ms",
    "zapq.attempt",
)
#: How an attribute is labelled: its last dotted part, unless named here.
LABELS = {"zapq.provider.ms": "provider_ms", "zapq.throttle.ms": "throttle_ms"}


def tree(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """The spans of the first root's trace, depth first, children by start time: (depth, span)."""
    root = min((s for s in spans if s["parent_id"] is None), key=lambda s: s["start"])
    mine = [s for s in spans if s["trace_id"] == root["trace_id"]]
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in sorted(mine, key=lambda s: s["start"]):
        children.setdefault(span["parent_id"], []).append(span)
    out: list[tuple[int, dict[str, Any]]] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        out.append((depth, span))
        for child in children.get(span["span_id"], []):
            walk(child, depth + 1)

    walk(root, 0)
    return out


def render(spans: list[dict[str, Any]]) -> str:
    """The SVG of the waterfall."""
    rows = tree(spans)
    t0 = min(s["start"] for _, s in rows)
    t1 = max(s["end"] for _, s in rows)
    scale = WIDTH / max(1, t1 - t0)
    height = TOP + ROW * len(rows) + 20
    total_ms = (t1 - t0) / 1e6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + WIDTH + 20}" height="{height}" '
        'font-family="monospace" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="20" font-weight="bold">trace {rows[0][1]["trace_id"][:16]}… — {len(rows)} spans, '
        f"{total_ms:.1f} ms</text>",
    ]
    for tick in range(5):
        x = LEFT + WIDTH * tick / 4
        parts.append(f'<line x1="{x}" y1="{TOP - 8}" x2="{x}" y2="{height - 16}" stroke="#ddd"/>')
        parts.append(f'<text x="{x + 2}" y="{TOP - 10}" fill="#888">{total_ms * tick / 4:.0f} ms</text>')
    for i, (depth, span) in enumerate(rows):
        y = TOP + i * ROW
        x = LEFT + (span["start"] - t0) * scale
        w = max(2.0, (span["end"] - span["start"]) * scale)
        failed = span.get("error")
        colour = "#d9534f" if failed else ("#5b8def" if depth < 2 else "#7cc68d")
        shown = [k for k in SHOWN if k in span["attributes"]]
        extras = ", ".join(f"{LABELS.get(k, k.split('.')[-1])}={span['attributes'][k]}" for k in shown)
        label = ("  " * depth) + span["name"]
        parts.append(f'<text x="10" y="{y + 15}">{escape(label)}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="14" rx="2" fill="{colour}"/>')
        duration = (span["end"] - span["start"]) / 1e6
        note = f"{duration:.2f} ms" + (f"  {extras}" if extras else "")
        anchor_x = min(x + w + 4, LEFT + WIDTH - 200)
        parts.append(f'<text x="{anchor_x:.1f}" y="{y + 15}" fill="#333">{escape(note)}</text>')
        for event in span.get("events", []):
            ex = LEFT + (event["time"] - t0) * scale
            diamond = f'<path d="M{ex:.1f} {y + 2} l5 9 l-5 9 l-5 -9 z" fill="#f0ad4e">'
            parts.append(f"{diamond}<title>{escape(event['name'])}</title></path>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> None:
    """``trace_waterfall.py <spans.json> <out.svg>``."""
    source, target = argv
    with open(source) as f:
        spans = json.load(f)
    with open(target, "w") as f:
        f.write(render(spans))


if __name__ == "__main__":
    main(sys.argv[1:])
