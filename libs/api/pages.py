"""The two static pages the API serves: the dashboard (``/``) and the API docs (``/docs``).

The dashboard's event cards (webhook endpoints, recent events and their deliveries) are in
:mod:`libs.api.pages_events`.

Both are plain HTML + vanilla JS with no data in them: they ask for an API key (or the bootstrap token) once,
keep it in the tab's ``sessionStorage`` and send it as ``Authorization: Bearer`` on every request — no cookie,
so no cross-site request can carry it (no CSRF). The dashboard asks ``/api/me`` what the key may do: sections
it cannot read are hidden, and a key without ``ops:write`` / ``events:write`` sees no replay or control
buttons (the API refuses those requests anyway: hiding them is for the reader, not the security).
"""

from __future__ import annotations

from libs.api.pages_events import EVENTS_JS, EVENTS_SECTIONS, EVENTS_STYLE

_COMMON_JS = """
const TOKEN_KEY = "zapq-token";
function token() { return sessionStorage.getItem(TOKEN_KEY); }
let me = {scopes: []};
function can(scope) { return me.scopes.includes(scope); }
async function whoami() {
  me = await api("/api/me");
  document.body.dataset.scopes = me.scopes.join(" ");
  for (const section of document.querySelectorAll("section[data-scope]")) {
    section.hidden = !can(section.dataset.scope);
  }
}
async function api(path, options = {}) {
  const headers = Object.assign({"Authorization": "Bearer " + token()}, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, {headers}));
  if (response.status === 401) { sessionStorage.removeItem(TOKEN_KEY); showLogin("The token was refused."); }
  if (!response.ok) {
    let reason = "";
    try { reason = (await response.json()).error || ""; } catch (error) { /* not JSON */ }
    const error = new Error(`${path}: ${response.status}${reason ? " " + reason : ""}`);
    error.reason = reason;
    throw error;
  }
  return response.json();
}
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (k === "onclick") node.onclick = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}
function showLogin(message) {
  document.getElementById("login").hidden = false;
  document.getElementById("main").hidden = true;
  document.getElementById("login-error").textContent = message || "";
}
function setupLogin(start) {
  document.getElementById("login-form").onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    document.getElementById("login").hidden = true;
    document.getElementById("main").hidden = false;
    start();
  };
  if (token()) { document.getElementById("login").hidden = true; start(); } else { showLogin(); }
}
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d232a; }
header { background: #10343a; color: #fff; padding: 10px 20px; display: flex; gap: 16px; align-items: baseline; }
header h1 { font-size: 18px; margin: 0; } header span { opacity: .7; }
main, #login { padding: 16px 20px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; margin-bottom: 16px; padding: 12px; }
h2 { font-size: 15px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f2; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.msg { white-space: normal; max-width: 420px; overflow-wrap: anywhere; color: #5b6570; }
.bar { background: #e6e9ed; border-radius: 3px; height: 10px; width: 160px; display: inline-block; }
.bar > div { background: #2f9e6e; height: 10px; border-radius: 3px; }
.state-dead, .status-needs_attention { color: #b3261e; font-weight: 600; }
.state-replayed, .status-active, .job-succeeded { color: #1f7a4f; font-weight: 600; }
.status-inactive { color: #8a6d00; }
button { cursor: pointer; } .error { color: #b3261e; } .muted { color: #8a939c; }
"""

DASHBOARD_HTML = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zapq dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>"""
    + _STYLE
    + EVENTS_STYLE
    + """</style></head>
<body>
<header><h1>zapq</h1><span id="updated">not loaded</span><span id="status" class="error"></span></header>
<div id="login" hidden>
  <form id="login-form"><label>API key <input id="token" type="password" autocomplete="off"></label>
  <button id="login-button" type="submit">Open dashboard</button> <span id="login-error" class="error"></span></form>
</div>
<main id="main">
<section id="queues-section" data-scope="ops:read"><h2>Queues</h2><table id="queues"><thead><tr>
  <th>queue</th><th class="num">waiting</th><th class="num">delayed</th><th class="num">in flight</th>
  <th class="num">dead</th><th class="num">done this min</th><th class="num">failed this min</th>
  <th class="num">p95 ms</th><th class="num">oldest s</th><th>throughput, last 60 min</th></tr></thead>
  <tbody></tbody></table></section>
<section id="dead-letters-section" data-scope="ops:read"><h2>Dead letters</h2><table id="dead-letters"><thead><tr>
  <th>id</th><th>queue</th><th>actor</th><th>error</th><th>message</th><th class="num">attempts</th>
  <th>state</th><th>job</th><th></th></tr></thead><tbody></tbody></table></section>
<section id="campaigns-section" data-scope="campaigns:read"><h2>Campaigns</h2><table id="campaigns"><thead><tr>
  <th>id</th><th>name</th><th>status</th><th>progress</th><th class="num">recipients</th><th class="num">sent</th>
  <th class="num">delivered</th><th class="num">failed</th></tr></thead><tbody></tbody></table></section>
<section id="connections-section" data-scope="connections:read"><h2>Connections</h2><table id="connections"><thead><tr>
  <th>id</th><th>name</th><th>provider</th><th>number / instance</th><th>status</th><th>reason</th>
  <th class="num">msg/s</th></tr></thead><tbody></tbody></table></section>"""
    + EVENTS_SECTIONS
    + """</main>
<script>"""
    + _COMMON_JS
    + EVENTS_JS
    + """
function sparkline(values) {
  const w = 180, h = 28, max = Math.max(1, ...values);
  const x = (i) => (i * w / (values.length - 1 || 1)).toFixed(1);
  const y = (v) => (h - 2 - v * (h - 4) / max).toFixed(1);
  const points = values.map((v, i) => `${x(i)},${y(v)}`);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("class", "sparkline");
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" ")); line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#2f9e6e"); line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  const title = document.createElementNS(ns, "title");
  title.textContent = `max ${max}/min, total ${values.reduce((a, b) => a + b, 0)} in 60 min`;
  svg.append(title);
  return svg;
}
function fill(tableId, rows) {
  document.querySelector(`#${tableId} tbody`).replaceChildren(...rows);
}
const num = (v) => (v === null || v === undefined) ? "–" : v;
const current = (series) => series.length ? series[series.length - 1] : 0;
async function loadQueues() {
  const queues = await api("/api/queues");
  fill("queues", queues.map((q) => el("tr", {"data-queue": q.queue},
    el("td", {class: "name"}, q.queue), el("td", {class: "num waiting"}, q.waiting),
    el("td", {class: "num delayed"}, q.delayed), el("td", {class: "num inflight"}, q.in_flight),
    el("td", {class: "num dead"}, q.dead), el("td", {class: "num completed"}, current(q.completed_per_minute)),
    el("td", {class: "num failed"}, current(q.failed_per_minute)), el("td", {class: "num p95"}, num(q.p95_ms)),
    el("td", {class: "num oldest"}, q.oldest_waiting_seconds === null ? "–" : q.oldest_waiting_seconds.toFixed(0)),
    el("td", {class: "spark"}, sparkline(q.completed_per_minute)))));
}
const jobStates = {};
async function replay(id, button) {
  button.disabled = true;
  try { const result = await api(`/api/dead-letters/${id}/replay`, {method: "POST"}); jobStates[id] = "replayed"; }
  catch (error) { document.getElementById("status").textContent = String(error); }
  await loadDeadLetters();
}
async function loadDeadLetters() {
  const rows = await api("/api/dead-letters?limit=20");
  const jobs = await Promise.all(rows.map((r) => r.state === "replayed"
    ? api(`/api/jobs/${encodeURIComponent(r.message_id)}`).then((j) => j.state).catch(() => "?") : null));
  fill("dead-letters", rows.map((r, i) => el("tr", {"data-id": r.id, "data-message-id": r.message_id},
    el("td", {}, r.id), el("td", {}, r.queue), el("td", {}, r.actor), el("td", {}, r.error_type),
    el("td", {class: "msg"}, r.error_message), el("td", {class: "num"}, r.attempts),
    el("td", {class: `state state-${r.state}`}, r.state),
    el("td", {class: `job-state job-${jobs[i] || "none"}`}, jobs[i] || ""),
    el("td", {}, r.state === "dead" && can("ops:write")
      ? el("button", {class: "replay", onclick: (e) => replay(r.id, e.target)}, "Replay") : ""))));
}
async function loadCampaigns() {
  const rows = await api("/api/campaigns?limit=10");
  fill("campaigns", rows.map((c) => el("tr", {"data-id": c.id},
    el("td", {}, c.id), el("td", {}, c.name), el("td", {class: "status"}, c.status),
    el("td", {class: "progress"}, el("span", {class: "bar", title: `${(c.progress * 100).toFixed(1)} %`},
      el("div", {style: `width: ${Math.min(100, c.progress * 100).toFixed(1)}%`})),
      " ", `${(c.progress * 100).toFixed(0)} %`),
    el("td", {class: "num"}, c.recipients_count), el("td", {class: "num"}, c.sent_count),
    el("td", {class: "num"}, c.delivered_count), el("td", {class: "num"}, c.failed_count))));
}
async function loadConnections() {
  const rows = await api("/api/connections");
  fill("connections", rows.map((c) => el("tr", {"data-id": c.id},
    el("td", {}, c.id), el("td", {}, c.name), el("td", {}, c.provider),
    el("td", {}, c.display_phone_number || c.phone_number_id || c.bridge_instance || ""),
    el("td", {class: `status status-${c.status}`}, c.status), el("td", {class: "msg"}, c.status_reason || ""),
    el("td", {class: "num"}, c.rate_per_second))));
}
let refreshing = false;
async function refresh() {
  if (refreshing) return;  // the last one is still waiting on the API
  refreshing = true;
  try {
    const loads = [[loadQueues, "ops:read"], [loadDeadLetters, "ops:read"], [loadCampaigns, "campaigns:read"],
      [loadConnections, "connections:read"], [loadEventCards, "events:read"]];
    await Promise.all(loads.filter(([, scope]) => can(scope)).map(([load]) => load()));
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.getElementById("status").textContent = "";
  } catch (error) { document.getElementById("status").textContent = String(error); }
  refreshing = false;
}
let timer = null;
setupLogin(async () => {
  await whoami();
  refresh();
  if (!timer) timer = setInterval(() => { if (token()) refresh(); }, 2000);
});
</script></body></html>
"""
)

DOCS_HTML = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zapq API</title><style>"""
    + _STYLE
    + """ pre { background: #f3f4f6; padding: 8px; overflow: auto; } .op { margin-bottom: 12px; }
.method { font-weight: 700; display: inline-block; width: 60px; }</style></head>
<body><header><h1>zapq API</h1>
<span>OpenAPI 3.1: <a style="color:#fff" href="#" id="raw">/openapi.json</a></span></header>
<div id="login" hidden><form id="login-form"><label>API key <input id="token" type="password"></label>
<button type="submit">Show the API</button> <span id="login-error" class="error"></span></form></div>
<main id="main"><section id="doc">loading…</section></main>
<script>"""
    + _COMMON_JS
    + """
async function start() {
  const spec = await api("/openapi.json");
  document.getElementById("raw").onclick = (e) => { e.preventDefault();
    document.getElementById("doc").replaceChildren(el("pre", {}, JSON.stringify(spec, null, 2))); };
  const doc = document.getElementById("doc");
  doc.replaceChildren(el("p", {}, spec.info.description));
  for (const [path, operations] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(operations)) {
      const body = op.requestBody ? Object.entries(op.requestBody.content)[0] : null;
      let schema = "";
      if (body && body[1].schema.$ref) {
        const name = body[1].schema.$ref.split("/").pop();
        schema = JSON.stringify(spec.components.schemas[name], null, 2);
      }
      doc.append(el("div", {class: "op"}, el("span", {class: "method"}, method.toUpperCase()), el("code", {}, path),
        " — ", op.summary, el("div", {class: "muted"}, op.description || ""),
        el("div", {class: "muted"}, "scope: " + ((op["x-scopes"] || []).join(", ") || "any key")),
        el("div", {class: "muted"}, "responses: " + Object.keys(op.responses).join(", ")),
        body ? el("details", {}, el("summary", {}, "body: " + body[0]), el("pre", {}, schema || "text")) : ""));
    }
  }
}
setupLogin(start);
</script></body></html>
"""
)
