"""The dashboard's charts: jobs done and failed per minute over the last hour, with axes, units and the current
value, drawn by uPlot (vendored in ``libs/api/static``: no CDN; MIT licence beside it).

The figures are :class:`libs.ops.stats.QueueStats`'s ``completed_per_minute`` / ``failed_per_minute`` summed over
the queues (``GET /api/queues``, read once per refresh by the queue table); the current value is the last *full*
minute, as everywhere else.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The files served under ``/static/`` (open: no data in them), name → content type.
STATIC_FILES: dict[str, str] = {
    "uplot-1.6.32.iife.min.js": "text/javascript",
    "uplot-1.6.32.min.css": "text/css",
    "uplot-LICENSE.txt": "text/plain",
}

CHARTS_HEAD = """<link rel="stylesheet" href="/static/uplot-1.6.32.min.css">
<script src="/static/uplot-1.6.32.iife.min.js"></script>
"""

CHARTS_STYLE = """
#throughput-now { font-variant-numeric: tabular-nums; }
#throughput-chart { width: 100%; min-height: 220px; }
"""

CHARTS_SECTION = """<section id="throughput" data-scope="ops:read"><h2>Throughput, last 60 min
  <span id="throughput-now" class="muted"></span></h2><div id="throughput-chart"></div></section>
"""

CHARTS_JS = """
let throughputChart = null;
function sumSeries(queues, key) {
  const length = Math.max(0, ...queues.map((q) => q[key].length));
  const total = new Array(length).fill(0);
  for (const q of queues) q[key].forEach((v, i) => { total[length - q[key].length + i] += v; });
  return total;
}
function drawCharts(queues) {
  if (typeof uPlot === "undefined") return;  // the chart library did not load: the tables still work
  const done = sumSeries(queues, "completed_per_minute"), failed = sumSeries(queues, "failed_per_minute");
  const minute = Math.floor(Date.now() / 60000) * 60;
  const xs = done.map((_, i) => minute - (done.length - 1 - i) * 60);
  const doneNow = queues.reduce((s, q) => s + q.done_last_minute, 0);
  const failedNow = queues.reduce((s, q) => s + q.failed_last_minute, 0);
  document.getElementById("throughput-now").textContent =
    `· last full minute: ${doneNow} done, ${failedNow} failed (jobs/min)`;
  const box = document.getElementById("throughput-chart");
  const width = Math.max(200, box.clientWidth);
  const data = [xs, done, failed];
  if (throughputChart) {
    throughputChart.setData(data);
    if (throughputChart.width !== width) throughputChart.setSize({width, height: 220});
    return;
  }
  throughputChart = new uPlot({
    width, height: 220,
    scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(5, max)]}},
    axes: [{label: "time (minutes)", size: 44}, {label: "jobs / min", size: 56}],
    series: [{}, {label: "done / min", stroke: "#2f9e6e", width: 2, fill: "rgba(47,158,110,.08)"},
             {label: "failed / min", stroke: "#b3261e", width: 2}],
  }, data, box);
  const fit = () => throughputChart.setSize({width: Math.max(200, box.clientWidth), height: 220});
  window.addEventListener("resize", fit);
}
"""
