"""The console page (``/messages``): find a message, read its timeline and its send job, send a failed one again.

Search by phone number (7 to 15 digits), provider id (``wamid.…``) or message id (``#123`` or a number of fewer
than 7 digits), and by company; filter by status and direction; newest first, paged back with a cursor
(``before``). A message opens as ``#message/ID`` (a link to share): its stages in the order of its life with
their times, its attempts, its earlier failures, its error under a human name (``Invalid recipient (Meta
131026)``, Meta's own title in the tooltip) and its send job's journey (``/api/jobs/{id}``). The layout works
from 360 px (rows become cards) to wide screens. Like the dashboard it holds no data: it asks for the token.
"""

from __future__ import annotations

import json

from libs.api.pages import _COMMON_JS, _STYLE

#: Meta Cloud API error codes a message may fail with, by a name an operator recognises.
ERROR_NAMES: dict[int, str] = {
    0: "Authentication failed",
    190: "Access token expired or invalid",
    131000: "Something went wrong at Meta",
    131005: "Access denied",
    131008: "Required parameter missing",
    131009: "Parameter value invalid",
    131016: "Meta service unavailable",
    131021: "Recipient is the sender",
    131026: "Invalid recipient",
    131031: "Account locked",
    131042: "Payment problem",
    131045: "Number not registered",
    131047: "Outside the 24-hour window",
    131049: "Not delivered (ecosystem engagement)",
    131051: "Unsupported message type",
    131052: "Media download failed",
    131053: "Media upload failed",
    131056: "Too many messages to this recipient",
    130429: "Rate limit hit",
    132000: "Template parameters do not match",
    132001: "Template does not exist",
    132005: "Template text too long",
    132007: "Template format policy violated",
    132012: "Template parameter format mismatch",
    132015: "Template paused",
    132016: "Template disabled",
    133010: "Number not registered with WhatsApp",
    368: "Temporarily blocked for policy violations",
}

#: The stages of a message, in the order of its life (each with its ``<stage>_at`` time).
STAGES = ("created", "queued", "sending", "sent", "delivered", "read", "failed")

CONSOLE_STYLE = """
nav a { color: #fff; margin-right: 12px; }
#search { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 8px; }
#search input, #search select { font: inherit; padding: 4px 6px; min-width: 0; }
#q { flex: 1 1 220px; }
#company { width: 110px; }
#messages td.text { white-space: normal; overflow-wrap: anywhere; max-width: 360px; color: #5b6570; }
#messages td, #messages th { white-space: nowrap; }
#messages a { color: #10343a; }
img.thumb { max-width: 160px; max-height: 120px; vertical-align: middle; }
#timeline { list-style: none; padding: 0; margin: 8px 0; }
#timeline li { padding: 3px 0 3px 14px; border-left: 3px solid #2f9e6e; margin-left: 4px; }
#timeline li.failed { border-color: #b3261e; } #timeline li.earlier { border-color: #d8a200; }
#detail dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
#detail dd { margin: 0; overflow-wrap: anywhere; }
.err { color: #b3261e; font-weight: 600; border-bottom: 1px dotted #b3261e; cursor: help; }
@media (max-width: 700px) {
  main, #login { padding: 8px; }
  header { flex-wrap: wrap; padding: 8px; }
  #messages thead { display: none; }
  #messages, #messages tbody, #messages tr, #messages td { display: block; width: auto; }
  #messages tr { border-bottom: 1px solid #dde1e6; padding: 6px 0; }
  #messages td { border: 0; padding: 1px 4px; white-space: normal; overflow-wrap: anywhere; }
  #company { width: 100%; } #q { flex-basis: 100%; }
}
"""

CONSOLE_HTML = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zapq messages</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>"""
    + _STYLE
    + CONSOLE_STYLE
    + """</style></head>
<body>
<header><h1>zapq</h1><nav><a href="/">dashboard</a><a href="/messages">messages</a><a href="/docs">API</a></nav>
<span id="status" class="error"></span></header>
<div id="login" hidden>
  <form id="login-form"><label>API token <input id="token" type="password" autocomplete="off"></label>
  <button id="login-button" type="submit">Open</button> <span id="login-error" class="error"></span></form>
</div>
<main id="main">
<section id="detail" hidden><h2>Message <span id="d-id"></span> <a href="#" id="close">close</a></h2>
  <dl id="facts"></dl><h2>Timeline</h2><ol id="timeline"></ol><h2>Send job</h2><div id="job" class="muted"></div>
  <p><button id="retry" hidden>Send again</button> <span id="retry-result"></span></p></section>
<section><h2>Messages</h2>
<form id="search">
  <input id="q" placeholder="phone, wamid.… or message id (#123)" aria-label="search">
  <input id="company" placeholder="company id" inputmode="numeric" aria-label="company">
  <select id="status-filter" aria-label="status"><option value="">any status</option></select>
  <select id="direction" aria-label="direction"><option value="">both directions</option>
    <option value="out">outbound</option><option value="in">inbound</option></select>
  <button type="submit" id="search-button">Search</button>
</form>
<table id="messages"><thead><tr><th>id</th><th>time</th><th>dir</th><th>status</th><th>contact</th>
  <th>company</th><th>text</th></tr></thead><tbody></tbody></table>
<p><button id="older" hidden>Older</button> <span id="count" class="muted"></span></p>
</section>
</main>
<script>"""
    + _COMMON_JS
    + "\nconst ERROR_NAMES = "
    + json.dumps({str(code): name for code, name in ERROR_NAMES.items()})
    + ";\nconst STAGES = "
    + json.dumps(list(STAGES))
    + """;
const STATUSES = ["received", "queued", "sending", "sent", "delivered", "read", "played", "failed", "cancelled"];
for (const s of STATUSES) document.getElementById("status-filter").append(el("option", {value: s}, s));
function errorName(code, title) {
  if (code === null || code === undefined) return title ? el("span", {class: "err", title}, title) : "";
  const name = ERROR_NAMES[String(code)] || "Provider error";
  return el("span", {class: "err", title: title || name}, `${name} (Meta ${code})`);
}
function kindOf(m) {
  const content = (m.payload || {}).content;  // an inbound message's structured content: its kind
  const inner = m.type === "interactive" ? ((m.payload || {}).interactive || {}).type : null;
  return [m.type, inner || (content && content.kind !== m.type ? content.kind : null)].filter(Boolean).join(" / ");
}
function mediaOf(m) {
  const payload = m.payload || {};
  const ref = payload[m.type] || payload.content;  // outbound: the kind's content; inbound: what was parsed
  if (!ref || typeof ref !== "object" || Array.isArray(ref)) return null;
  if (typeof ref.link === "string" && /^https?:\\/\\//.test(ref.link)) {
    const link = el("a", {href: ref.link, target: "_blank", rel: "noopener noreferrer"}, ref.filename || ref.link);
    if (m.type !== "image") return link;
    const thumb = el("img", {src: ref.link, alt: "image", loading: "lazy", referrerpolicy: "no-referrer",
      class: "thumb"});
    return el("span", {}, thumb, " ", link);
  }
  if (typeof ref.id === "string") return `media id ${ref.id}${ref.mime_type ? ` (${ref.mime_type})` : ""}`;
  return null;
}
let cursor = null;
function query() {
  const q = document.getElementById("q").value.trim();
  const params = new URLSearchParams();
  const company = document.getElementById("company").value.trim();
  if (company) params.set("company_id", company);
  for (const [id, name] of [["status-filter", "status"], ["direction", "direction"]]) {
    const v = document.getElementById(id).value; if (v) params.set(name, v);
  }
  const digits = q.replace(/[^0-9]/g, "");
  if (/^#?\\d+$/.test(q) && (q.startsWith("#") || digits.length < 7)) return {id: digits};
  if (q && /[a-zA-Z]/.test(q)) params.set("external_id", q);
  else if (q) params.set("contact", digits);
  return {params};
}
function row(m) {
  return el("tr", {"data-id": m.id},
    el("td", {}, el("a", {href: `#message/${m.id}`}, `#${m.id}`)),
    el("td", {}, new Date(m.created_at).toLocaleString()), el("td", {}, m.direction),
    el("td", {class: `status status-${m.status}`}, m.status), el("td", {}, m.contact),
    el("td", {}, m.company_id), el("td", {class: "text"},
      m.type !== "text" ? `[${m.type}]${m.body ? " " + m.body : ""}` : m.body || ""));
}
async function search(more) {
  const status = document.getElementById("status");
  status.textContent = "";
  try {
    const {id, params} = query();
    const body = document.querySelector("#messages tbody");
    if (id !== undefined) {
      const m = await api(`/api/messages/${id}`);
      body.replaceChildren(row(m)); cursor = null;
    } else {
      if (more && cursor) params.set("before", cursor);
      const page = await api(`/api/messages?${params}`);
      const rows = page.messages.map(row);
      if (more) body.append(...rows); else body.replaceChildren(...rows);
      cursor = page.has_more ? page.before : null;
    }
    document.getElementById("older").hidden = !cursor;
    document.getElementById("count").textContent = `${body.children.length} shown, newest first`;
  } catch (error) { status.textContent = error.reason || String(error); }
}
async function openMessage(id) {
  const m = await api(`/api/messages/${id}`);
  document.getElementById("detail").hidden = false;
  document.getElementById("d-id").textContent = `#${m.id}`;
  const facts = [["status", el("span", {class: `status-${m.status}`}, m.status)],
    ["direction", m.direction], ["contact", m.contact], ["company", m.company_id], ["connection", m.connection_id],
    ["campaign", m.campaign_id ?? "–"], ["provider id", m.external_id || "–"], ["attempts", m.attempts],
    ["error", m.error_code || m.error_title ? errorName(m.error_code, m.error_title) : "–"],
    ["kind", kindOf(m)], ["text", m.body || m.type]];
  const media = mediaOf(m);
  if (media) facts.push(["media", media]);
  document.getElementById("facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const items = [];
  for (const earlier of m.history || []) {
    const when = earlier.failed_at ? new Date(earlier.failed_at).toLocaleString() : "";
    items.push(el("li", {class: "earlier"}, `${when} — failed (${earlier.attempts ?? 0} attempt(s)): `,
      errorName(earlier.error_code, earlier.error_title || earlier.reason)));
  }
  for (const stage of STAGES) {
    const at = m[`${stage}_at`];
    if (at) items.push(el("li", {class: stage, "data-stage": stage}, `${new Date(at).toLocaleString()} — ${stage}`,
      stage === "failed" ? el("span", {}, " ", errorName(m.error_code, m.error_title)) : ""));
  }
  document.getElementById("timeline").replaceChildren(...items);
  const job = document.getElementById("job");
  if (!m.job_id) job.textContent = "no fixed job id (inbound and campaign messages)";
  else {
    try {
      const j = await api(`/api/jobs/${m.job_id}`);
      const parts = [`job ${j.message_id}: ${j.state}`, j.queue && `queue ${j.queue}`,
        j.position && `position ${j.position}`, j.eta_seconds && `ETA ${j.eta_seconds} s`,
        j.worker && `worker ${j.worker}`, j.duration_ms && `${j.duration_ms} ms`,
        j.failures && `failures ${j.failures}`, j.last_error_type && el("span", {class: "err",
          title: j.last_error_type}, j.last_error || j.last_error_type)];
      job.replaceChildren(...parts.filter(Boolean).flatMap((part, i) => i ? [" · ", part] : [part]));
    } catch (error) { job.textContent = `job ${m.job_id}: record expired (kept 24 h)`; }
  }
  const retry = document.getElementById("retry");
  retry.hidden = m.status !== "failed";
  retry.onclick = async () => {
    retry.disabled = true;
    try {
      const again = await api(`/api/messages/${m.id}/retry`, {method: "POST"});
      document.getElementById("retry-result").textContent = `queued again, job ${again.job_id}`;
      await openMessage(m.id);
      await search(false);
    } catch (error) { document.getElementById("retry-result").textContent = error.reason || String(error); }
    retry.disabled = false;
  };
}
function route() {
  const match = location.hash.match(/^#message\\/(\\d+)$/);
  if (match) openMessage(match[1]).catch((e) => { document.getElementById("status").textContent = String(e); });
  else document.getElementById("detail").hidden = true;
}
document.getElementById("search").onsubmit = (event) => { event.preventDefault(); search(false); };
document.getElementById("older").onclick = () => search(true);
document.getElementById("close").onclick = (event) => { event.preventDefault(); location.hash = ""; };
window.onhashchange = route;
setupLogin(() => { search(false); route(); });
</script></body></html>
"""
)
