"""The dashboard's event cards: webhook endpoints (delivery figures, replay since a time, enable) and the recent
events with each one's delivery attempts (and replay of that event). Composed into the dashboard by
:mod:`libs.api.pages`; the JS uses its helpers (``api``, ``el``) and adds no data to the page: every value is
put in as text (``el``, ``textContent``), never as HTML.

The recent events come from the pull feed: ``?last=N`` once, then the page follows ``next_cursor`` (one small
read per refresh); more new events than the card shows → ``?last=N`` again instead of paging through them.
"""

from __future__ import annotations

EVENTS_STYLE = """
header { flex-wrap: wrap; }
section { overflow-x: auto; }
td.url, td.actions, td.failure, td.state { white-space: normal; }
td.url { overflow-wrap: anywhere; max-width: 320px; }
td.msg { min-width: 12em; }
.when { white-space: nowrap; }
table.attempts { width: auto; margin-top: 4px; }
.reason { font-size: 12px; }
.endpoint-enabled, .delivery-delivered, .replay-result.ok { color: #1f7a4f; font-weight: 600; }
.endpoint-disabled, .delivery-failed, .rate-low { color: #b3261e; font-weight: 600; }
.delivery-pending, .delivery-delivering { color: #8a6d00; font-weight: 600; }
.delivery-waiting { color: #5b6570; }
.since { display: inline-flex; flex-wrap: wrap; gap: 4px; align-items: center; }
input.since-custom { width: 15em; max-width: 100%; box-sizing: border-box; }
tr.event { cursor: pointer; }
tr.event:hover, tr.event:focus { background: #f1f4f6; outline: none; }
tr.event.selected { background: #e3f1ea; }
#event-detail { border-top: 1px solid #dde1e6; margin-top: 10px; padding-top: 10px; }
.detail-head { display: flex; flex-wrap: wrap; gap: 8px; align-items: baseline; overflow-wrap: anywhere; }
.delivery { margin: 10px 0; } .delivery-head { margin-bottom: 4px; overflow-wrap: anywhere; }
@media (max-width: 700px) {
  main, #login { padding: 8px; }
  table.stack thead { display: none; }
  table.stack, table.stack tbody, table.stack tr, table.stack td { display: block; }
  table.stack tr { border-bottom: 1px solid #dde1e6; padding: 6px 0; }
  table.stack td { border: 0; padding: 2px 4px; white-space: normal; overflow-wrap: anywhere; max-width: none; }
  table.stack td.num { text-align: left; }
  table.stack td[data-label]:not([data-label=""])::before { content: attr(data-label) ": "; color: #8a939c; }
  table.attempts.stack td { display: inline-block; margin-right: 8px; }
  table.stack td.blank { display: none; }
}
"""

EVENTS_SECTIONS = """
<section id="endpoints-section" data-scope="events:read"><h2>Event endpoints</h2>
<table id="endpoints" class="stack"><thead><tr>
  <th>endpoint</th><th>company</th><th>state</th><th>success, 24 h</th><th class="num">backlog</th>
  <th class="num">failed</th><th>last failure</th><th></th></tr></thead><tbody></tbody></table>
  <p id="endpoints-empty" class="muted" hidden>No webhook endpoints.</p></section>
<section id="events-section" data-scope="events:read"><h2>Recent events</h2><table id="events" class="stack"><thead><tr>
  <th>time</th><th>type</th><th>conversation</th><th>summary</th></tr></thead><tbody></tbody></table>
  <p id="events-empty" class="muted" hidden>No events yet.</p>
  <div id="event-detail" hidden></div></section>
"""

EVENTS_JS = """
const RECENT_EVENTS = 20;
const JSON_HEADERS = {"content-type": "application/json"};
const companyNames = {};
let endpointsById = {};
let feedCursor = null;
let recentEvents = [];
let openEventId = null;
const replayResults = {};
function put(node, ...children) {
  node.replaceChildren(...children.map((c) => c instanceof Node ? c : String(c ?? "")));
}
function shortUrl(url) {
  try { const u = new URL(url); return u.host + u.pathname; } catch (error) { return "(unreadable URL)"; }
}
function when(value) {
  if (!value) return "–";
  const date = new Date(value);
  return isNaN(date) ? String(value) : date.toISOString().slice(0, 19).replace("T", " ") + "Z";
}
function clip(text, size = 140) {
  const flat = String(text ?? "").split(/\\s+/).join(" ").trim();
  return flat.length <= size ? flat : flat.slice(0, size - 1) + "…";
}
function showResult(node, text, isError) {
  node.textContent = text; node.classList.toggle("error", !!isError); node.classList.toggle("ok", !isError);
}
const reasonOf = (error) => error.reason || error.message || String(error);
async function learnCompanies(ids) {
  const missing = [...new Set(ids)].filter((id) => !(id in companyNames));
  await Promise.all(missing.map((id) => api(`/api/companies/${id}`)
    .then((c) => { companyNames[id] = c.name; }).catch(() => { companyNames[id] = null; })));
}
const companyLabel = (id) => companyNames[id] ? `${companyNames[id]} (${id})` : `company ${id}`;
/* Rows keyed by id, updated in place: a select or input being used survives the 2-s refresh. */
function keyed(tbody, items, key, build, update) {
  const old = new Map([...tbody.children].map((row) => [row.dataset.key, row]));
  const rows = items.map((item) => {
    let row = old.get(String(key(item)));
    if (!row) { row = build(item); row.dataset.key = String(key(item)); }
    update(row, item);
    return row;
  });
  if (rows.length !== tbody.children.length || rows.some((row, i) => tbody.children[i] !== row)) {
    tbody.replaceChildren(...rows);
  }
}
const ENDPOINT_COLUMNS = [["url", "endpoint"], ["company", "company"], ["state", "state"],
  ["rate", "success, 24 h"], ["backlog num", "backlog"], ["failed num", "failed"], ["failure", "last failure"],
  ["actions", ""]];
function buildEndpointRow(endpoint) {
  const row = el("tr", {"data-id": endpoint.id},
    ...ENDPOINT_COLUMNS.map(([name, label]) => el("td", {class: name, "data-label": label})));
  put(row.querySelector("td.actions"), el("span", {class: "enable-slot"}),
    can("events:write") ? replaySince(endpoint.id) : "");
  return row;
}
function updateEndpointRow(row, ep) {
  const cell = (name) => row.querySelector(`td.${name}`);
  put(cell("url"), el("span", {class: "url-text"}, shortUrl(ep.url)),
    ep.description ? el("div", {class: "muted reason"}, ep.description) : "");
  put(cell("company"), companyLabel(ep.company_id));
  if (ep.enabled) put(cell("state"), el("span", {class: "endpoint-enabled"}, "enabled"));
  else put(cell("state"), el("span", {class: "endpoint-disabled", title: ep.disabled_reason || ""}, "disabled"),
    el("div", {class: "msg reason disabled-reason"}, ep.disabled_reason || ""));
  if (ep.success_rate_24h === null || ep.success_rate_24h === undefined) {
    put(cell("rate"), el("span", {class: "muted"}, "no attempts"));
  } else {
    const pct = ep.success_rate_24h * 100;
    put(cell("rate"), el("span", {class: pct < 90 ? "rate-low" : ""}, `${pct.toFixed(1)} %`),
      el("span", {class: "muted"}, ` of ${ep.attempts_24h}`));
  }
  put(cell("backlog"), ep.backlog);
  put(cell("failed"), ep.failed_deliveries);
  if (ep.last_failure_at) put(cell("failure"), el("span", {class: "when"}, when(ep.last_failure_at)),
    el("div", {class: "msg reason failure-reason"}, ep.last_failure_reason || ""));
  else put(cell("failure"), el("span", {class: "muted"}, "none"));
  const slot = row.querySelector("span.enable-slot");
  if (ep.enabled) put(slot);
  else if (!slot.firstChild && can("events:write")) {
    put(slot, el("button", {class: "enable", onclick: (e) => enable(ep.id, e.target)}, "Enable"));
  }
}
function replaySince(endpointId) {
  const choice = el("select", {class: "since-choice", "aria-label": "replay since"},
    el("option", {value: "1"}, "last hour"), el("option", {value: "24"}, "last 24 h"),
    el("option", {value: "custom"}, "since (ISO time)…"));
  const custom = el("input", {class: "since-custom", type: "text", placeholder: "2030-01-31T09:00:00Z",
    "aria-label": "replay since, ISO 8601 time", hidden: ""});
  const result = el("span", {class: "replay-result", role: "status"});
  choice.onchange = () => { custom.hidden = choice.value !== "custom"; if (!custom.hidden) custom.focus(); };
  const button = el("button", {class: "replay-since"}, "Replay since");
  button.onclick = async () => {
    const since = choice.value === "custom" ? custom.value.trim()
      : new Date(Date.now() - Number(choice.value) * 3600_000).toISOString();
    if (!since) { showResult(result, "give a time", true); return; }
    button.disabled = true;
    try {
      const answer = await api(`/api/webhook-endpoints/${endpointId}/replay`,
        {method: "POST", headers: JSON_HEADERS, body: JSON.stringify({since})});
      showResult(result, `queued ${answer.queued}`, false);
    } catch (error) { showResult(result, reasonOf(error), true); }
    button.disabled = false;
    await loadEndpoints().catch(() => {});
  };
  return el("span", {class: "since"}, choice, custom, button, result);
}
async function enable(endpointId, button) {
  button.disabled = true;
  try {
    await api(`/api/webhook-endpoints/${endpointId}`,
      {method: "PATCH", headers: JSON_HEADERS, body: JSON.stringify({enabled: true})});
  } catch (error) { document.getElementById("status").textContent = reasonOf(error); button.disabled = false; }
  await loadEndpoints().catch(() => {});
}
async function loadEndpoints() {
  const endpoints = await api("/api/webhook-endpoints");
  await learnCompanies(endpoints.map((e) => e.company_id));
  endpointsById = Object.fromEntries(endpoints.map((e) => [e.id, e]));
  keyed(document.querySelector("#endpoints tbody"), endpoints, (e) => e.id, buildEndpointRow, updateEndpointRow);
  document.getElementById("endpoints-empty").hidden = endpoints.length > 0;
}
const SUMMARIES = {
  "message.received": (d) => `message ${d.message_id} from ${d.contact.name || d.contact.wa_id}: ${d.type}`
    + (d.text ? ` "${d.text}"` : ""),
  "message.status": (d) => {
    const error = d.error || {};
    const details = [error.code, error.title].filter((v) => v !== undefined && v !== null).join(" ");
    return `message ${d.message_id} ${d.previous_status} → ${d.status}` + (details ? ` (${details})` : "");
  },
  "message.created": (d) => `message ${d.message_id} to ${d.contact.wa_id}: ${(d.template || {}).name || d.type}`
    + (d.text ? ` "${d.text}"` : "") + `, ${d.priority}` + (d.campaign_id ? ` (campaign ${d.campaign_id})` : ""),
  "campaign.status": (d) => `campaign ${d.campaign_id} "${d.name}" ${d.status}: `
    + `sent ${d.counters.sent}/${d.counters.recipients}`,
  "connection.status": (d) => `connection ${d.connection_id} (${d.provider}) ${d.previous_status} → ${d.status}`
    + (d.reason ? `: ${d.reason}` : ""),
};
function summary(event) {
  const render = SUMMARIES[event.type];
  if (render) { try { return clip(render(event.data || {})); } catch (error) { /* a field this page does not know */ } }
  return clip(JSON.stringify(event.data));
}
function buildEventRow(event) {
  const row = el("tr", {class: "event", "data-id": event.id, tabindex: "0", title: "show its deliveries"},
    el("td", {class: "when", "data-label": "time"}, when(event.occurred_at)),
    el("td", {class: "type", "data-label": "type"}, event.type),
    el("td", {class: "conversation", "data-label": "conversation"}, event.conversation || ""),
    el("td", {class: "summary msg", "data-label": "summary"}, summary(event)));
  row.onclick = () => openEvent(event.id);
  row.onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openEvent(event.id); } };
  return row;
}
function markOpen(row) { row.classList.toggle("selected", row.dataset.id === openEventId); }
async function loadEvents() {
  let page = feedCursor === null ? null
    : await api(`/api/events?after=${encodeURIComponent(feedCursor)}&limit=${RECENT_EVENTS}`);
  if (page === null || page.has_more) {  // first look, or more new events than the card shows: the newest only
    page = await api(`/api/events?last=${RECENT_EVENTS}`);
    recentEvents = [];
  }
  const seen = new Set(recentEvents.map((e) => e.id));
  recentEvents = recentEvents.concat(page.events.filter((e) => !seen.has(e.id))).slice(-RECENT_EVENTS);
  feedCursor = page.next_cursor;
  keyed(document.querySelector("#events tbody"), [...recentEvents].reverse(), (e) => e.id, buildEventRow,
    markOpen);
  document.getElementById("events-empty").hidden = recentEvents.length > 0;
}
async function openEvent(id) {
  openEventId = id;
  document.querySelectorAll("#events tr.event").forEach(markOpen);
  await loadEventDetail().catch((error) => { document.getElementById("status").textContent = reasonOf(error); });
}
function closeEvent() {
  openEventId = null;
  document.querySelectorAll("#events tr.event").forEach(markOpen);
  document.getElementById("event-detail").hidden = true;
}
async function loadEventDetail() {
  const box = document.getElementById("event-detail");
  const id = openEventId;
  if (id === null) { box.hidden = true; return; }
  const event = await api(`/api/events/${encodeURIComponent(id)}`);
  if (id !== openEventId) return;  // another one was opened meanwhile
  put(box, renderEvent(event));
  box.hidden = false;
}
function renderEvent(event) {
  const deliveries = event.deliveries.map((d) => renderDelivery(event, d));
  return el("div", {"data-id": event.id},
    el("div", {class: "detail-head"}, el("strong", {}, event.id), el("span", {}, event.type),
      el("button", {class: "close", onclick: closeEvent}, "Close")),
    el("div", {class: "muted"}, `${companyLabel(event.company_id)} · ${event.conversation || "no conversation"} · `
      + `occurred ${when(event.occurred_at)}`),
    el("div", {class: "msg"}, summary(event)),
    ...(deliveries.length ? deliveries : [el("p", {class: "muted no-deliveries"},
      "No endpoint takes this event (none of its company's endpoints was enabled for its type when it happened).")]));
}
const ATTEMPT_COLUMNS = [["#", "num"], ["at", ""], ["status", "num"], ["error", ""], ["latency ms", "num"],
  ["response", ""]];
function renderDelivery(event, d) {
  const endpoint = endpointsById[d.endpoint_id];
  const key = `${event.id}/${d.endpoint_id}`;
  const result = el("span", {class: "replay-result", role: "status"});
  if (replayResults[key]) showResult(result, replayResults[key].text, replayResults[key].error);
  const timing = d.state === "delivered" ? ` · delivered ${when(d.delivered_at)}`
    : d.next_attempt_at ? ` · next attempt ${when(d.next_attempt_at)}` : "";
  // newest first by time: a replay numbers its attempts from 1 again
  const log = [...d.log].sort((a, b) => new Date(b.attempted_at) - new Date(a.attempted_at));
  const attempts = log.map((a) => el("tr", {class: "attempt"},
    el("td", {class: "num", "data-label": "attempt"}, a.attempt),
    el("td", {class: "when", "data-label": "at"}, when(a.attempted_at)),
    el("td", {class: "status-code num", "data-label": "status"}, a.status_code ?? "–"),
    el("td", {class: "attempt-error msg" + (a.error ? "" : " blank"), "data-label": "error"}, a.error || ""),
    el("td", {class: "num", "data-label": "latency ms"}, a.latency_ms ?? "–"),
    el("td", {class: "msg" + (a.response_excerpt ? "" : " blank"), "data-label": "response"},
      clip(a.response_excerpt || "", 200))));
  return el("div", {class: "delivery", "data-endpoint-id": d.endpoint_id},
    el("div", {class: "delivery-head"},
      el("span", {class: "url-text"}, endpoint ? shortUrl(endpoint.url) : `endpoint ${d.endpoint_id}`), " ",
      el("span", {class: `delivery-state delivery-${d.state}`}, d.state), " ",
      el("span", {class: "muted"}, `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}${timing}`), " ",
      can("events:write") ? el("button", {class: "replay-event",
        onclick: (e) => replayEvent(event.id, d.endpoint_id, e.target)}, "Replay") : "", " ", result),
    attempts.length ? el("table", {class: "attempts stack"},
      el("thead", {}, el("tr", {}, ...ATTEMPT_COLUMNS.map(([h, c]) => el("th", {class: c}, h)))),
      el("tbody", {}, ...attempts)) : el("div", {class: "muted"}, "not attempted yet"));
}
async function replayEvent(eventId, endpointId, button) {
  button.disabled = true;
  const key = `${eventId}/${endpointId}`;
  try {
    const answer = await api(`/api/webhook-endpoints/${endpointId}/replay`,
      {method: "POST", headers: JSON_HEADERS, body: JSON.stringify({event_id: eventId})});
    replayResults[key] = {text: `queued ${answer.queued}`, error: false};
  } catch (error) { replayResults[key] = {text: reasonOf(error), error: true}; }
  await Promise.all([loadEventDetail(), loadEndpoints()]).catch(() => {});
}
async function loadEventCards() {
  await Promise.all([loadEndpoints(), loadEvents()]);
  await loadEventDetail();
}
"""
