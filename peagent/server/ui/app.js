// The dashboard of `peagent serve`: a client of the DP's read-only JSON API (/api/v1), polled every 2 s.
//
// Four views behind the URL's fragment, so the back button and bookmarks work without a server route:
//   #/machines                 every machine with its current deployment (the live table)
//   #/machine/<key>[/<id>]     one machine, its deployments and a deployment's timeline
//   #/deployment/<id>          the same, reached from a deployment id (History, Errors)
//   #/history, #/errors        deployments newest first, paged; failures grouped by code, model and DP
//
// Two rules hold throughout. Every string from the API reaches the page as text (textContent, title,
// an encoded fragment in href), never as markup: a machine may call itself anything, and its name
// must not run as script in an administrator's browser. And the machine table is updated in place:
// a row per machine is kept by key, only the text that changed is written, and rows are moved only
// when the order changes, so a poll over 1,000 machines costs a few DOM writes, not a rebuilt table.
"use strict";

const API = "api/v1/";
const POLL_MS = 2000;
const REQUEST_MS = 15000;
const HISTORY_LIMIT = 50;
const TOKEN_KEY = "peagent.adminToken";
const MIB = 1024 * 1024;
// Display order of the counts, and the rank a sort by status uses: what needs attention first.
const STATUSES = ["failed", "running", "pending", "postponed", "done", "complete", "cancelled", "idle"];
const STATUS_HINTS = {
  running: "deploying now",
  pending: "waiting for an administrator to approve",
  postponed: "held back by an administrator",
  done: "the PE finished; waiting for the new OS's first boot",
  complete: "the new OS booted and reported",
  failed: "the deployment failed",
  cancelled: "cancelled by an administrator",
  idle: "no deployment",
};
const LEVELS = ["info", "warning", "error"];

// ---------------------------------------------------------------- pure helpers: data -> text

function known(value, allowed, fallback) {
  return allowed.includes(value) ? value : fallback;
}

function percent(done, total) {
  if (typeof done !== "number" || typeof total !== "number" || total <= 0) return null;
  return Math.max(0, Math.min(100, (100 * done) / total));
}

function fmtMiB(bytes) {
  return (bytes / MIB).toFixed(1);
}

function fmtRate(rate) {
  return typeof rate === "number" && rate > 0 ? `${fmtMiB(rate)} MiB/s` : "";
}

function fmtClock(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) return "";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function fmtAgo(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

function fmtTime(epoch) {
  if (typeof epoch !== "number") return "";
  const d = new Date(epoch * 1000);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function fmtTimeOfDay(epoch) {
  return typeof epoch === "number" ? fmtTime(epoch).slice(11) : "";
}

function str(value) {
  return value === null || value === undefined ? "" : String(value);
}

function machineName(m) {
  return str(m.hostname) || str(m.key);
}

function machineModel(m) {
  return [str(m.vendor), str(m.model)].filter(Boolean).join(" ");
}

function machineStatus(m) {
  // An administrator's hold is what needs doing now, whatever an earlier deployment ended as.
  if (m.state === "pending" || m.state === "postponed") return m.state;
  const d = m.deployment;
  if (d) return known(d.status, STATUSES, "running");
  return m.state === "cancelled" ? "cancelled" : "idle";
}

function progressOf(d) {
  if (!d) return null;
  if (d.status === "done" || d.status === "complete") return 100;
  return percent(d.done, d.total);
}

function matches(haystack, terms) {
  return terms.every((t) => haystack.includes(t));
}

// ---------------------------------------------------------------- DOM helpers

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null && text !== "") node.textContent = text;
  return node;
}

function link(href, text) {
  const a = el("a", "", text);
  a.href = href;
  return a;
}

function machineHref(key, id) {
  return `#/machine/${encodeURIComponent(key)}` + (id ? `/${encodeURIComponent(id)}` : "");
}

function deploymentHref(id) {
  return `#/deployment/${encodeURIComponent(id)}`;
}

function badge(status) {
  const s = known(status, STATUSES, "idle");
  const span = el("span", `badge st-${s}`, str(status) || "idle");
  span.title = STATUS_HINTS[s];
  return span;
}

function progressBar(pct) {
  const bar = el("div", "bar");
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  const fill = el("div", "fill");
  bar.append(fill);
  setBar(bar, fill, pct);
  return bar;
}

function setBar(bar, fill, pct) {
  bar.classList.toggle("empty", pct === null);
  fill.style.width = pct === null ? "0" : `${pct.toFixed(1)}%`;
  if (pct === null) bar.removeAttribute("aria-valuenow");
  else bar.setAttribute("aria-valuenow", String(Math.floor(pct)));
}

function errorCell(error) {
  const td = el("td", "err");
  if (error && error.code) {
    td.append(el("code", "", error.code));
    td.title = str(error.message);
  }
  return td;
}

// ---------------------------------------------------------------- talking to the DP

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(path, options) {
  // A DP that stops answering must not stall the polling for good: give up on a request after a while.
  const response = await fetch(API + path, { cache: "no-store", signal: AbortSignal.timeout(REQUEST_MS), ...options });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const why = body && body.error ? (typeof body.error === "string" ? body.error : body.error.message) : "";
    throw new HttpError(response.status, `${path.split("?")[0]}: HTTP ${response.status}${why ? ` (${why})` : ""}`);
  }
  return body;
}

function setLive(ok, text) {
  const live = $("live");
  live.className = ok ? "live live-ok" : "live live-bad";
  live.textContent = text;
}

// ---------------------------------------------------------------- the machine table

const table = {
  rows: new Map(), // key -> row (see makeRow)
  keys: [], // the machines' keys in the DP's order
  order: [], // the keys in the order their rows stand in the tbody
  sort: { key: null, dir: 1 },
  text: [], // the filter's terms, lowercase
  status: null, // a status chosen among the counts, or null
  template: null,
};

function rowTemplate() {
  // One row built once and cloned: cloneNode is much cheaper than a createElement per cell.
  const tr = el("tr");
  const name = el("td", "name");
  name.append(el("a"), el("div", "sub"));
  const model = el("td", "model");
  model.append(el("div"), el("div", "sub"));
  const ident = el("td", "ident");
  ident.append(el("div", "mac"), el("div", "sub"));
  const phase = el("td", "phase");
  phase.append(el("span"), el("div", "sub"));
  const progress = el("td", "col-progress");
  const line = el("div", "pline");
  line.append(progressBar(null), el("span", "pct"));
  progress.append(line);
  const status = el("td", "status");
  status.append(el("span", "badge"), el("div", "sub"));
  tr.append(name, model, ident, phase, progress, el("td", "num"), el("td", "num"), status,
    el("td", "seen"));
  tr.setAttribute("role", "row"); // see index.html: the grid layout hides the table's own semantics
  for (const td of tr.cells) td.setAttribute("role", "cell");
  return tr;
}

function makeRow(key) {
  table.template ??= rowTemplate();
  const tr = table.template.cloneNode(true);
  tr.dataset.key = key;
  const c = tr.cells;
  const bar = c[4].firstChild.firstChild;
  return {
    tr,
    key,
    link: c[0].firstChild, serial: c[0].lastChild, model: c[1].firstChild, vendor: c[1].lastChild,
    mac: c[2].firstChild, uuid: c[2].lastChild,
    phase: c[3].firstChild, step: c[3].lastChild, bar, fill: bar.firstChild, pct: c[4].firstChild.lastChild,
    rate: c[5], eta: c[6], badge: c[7].firstChild, code: c[7].lastChild, seen: c[8],
    shown: {}, // what each cell shows now: writes happen only on a change
    hay: "", sortable: {}, status: "idle",
  };
}

function put(row, field, node, text) {
  if (row.shown[field] !== text) {
    row.shown[field] = text;
    node.textContent = text;
  }
}

function updateRow(row, m, now) {
  const d = m.deployment || null;
  const status = machineStatus(m);
  const name = machineName(m);
  const macs = Array.isArray(m.macs) ? m.macs.map(str) : [];
  const held = status === "pending" || status === "postponed"; // its deployment is history, not progress
  const pct = held ? null : progressOf(d);
  const running = !held && d && d.status === "running";
  let phase = d ? str(d.phase) : "";
  let step = d ? str(d.step) : "";
  if (status === "pending") [phase, step] = ["waiting", "for approval"];
  if (status === "postponed") [phase, step] = ["waiting", `postponed until ${fmtTime(m.postponed_until)}`];
  // A code shows (and filters) only while it is why the machine stands: a rerun or a hold supersedes it.
  const failed = status === "failed" && d && d.error;
  const code = failed ? str(d.error.code) : "";

  put(row, "name", row.link, name);
  if (row.shown.href === undefined) {
    row.shown.href = machineHref(row.key);
    row.link.href = row.shown.href;
  }
  put(row, "serial", row.serial, str(m.serial));
  put(row, "model", row.model, str(m.model));
  put(row, "vendor", row.vendor, str(m.vendor));
  put(row, "mac", row.mac, macs[0] || "");
  put(row, "uuid", row.uuid, str(m.uuid));
  put(row, "phase", row.phase, phase);
  put(row, "step", row.step, step);
  const pctText = pct === null ? "" : `${Math.floor(pct)}%`;
  if (row.shown.pct !== pctText) {
    setBar(row.bar, row.fill, pct);
    put(row, "pct", row.pct, pctText);
  }
  put(row, "rate", row.rate, running ? fmtRate(d.rate) : "");
  put(row, "eta", row.eta, running ? fmtClock(d.eta) : "");
  if (row.status !== status || row.shown.badge === undefined) {
    row.badge.className = `badge st-${status}`;
    row.badge.title = STATUS_HINTS[status];
    row.tr.className = `st-${status}`;
    row.status = status;
  }
  put(row, "badge", row.badge, status);
  put(row, "code", row.code, code);
  const errorText = failed ? str(d.error.message) : "";
  if (row.shown.codeTitle !== errorText) {
    row.shown.codeTitle = errorText;
    row.code.title = errorText;
  }
  const seen = typeof m.last_seen === "number" ? m.last_seen : null;
  put(row, "seen", row.seen, seen === null ? "" : fmtAgo(now - seen));
  const seenTitle = seen === null ? "" : fmtTime(seen);
  if (row.shown.seenTitle !== seenTitle) {
    row.shown.seenTitle = seenTitle;
    row.seen.title = seenTitle;
  }

  row.hay = [name, m.key, m.hostname, m.uuid, m.serial, m.vendor, m.model, ...macs, phase, step, status, code,
    d && d.rule, d && d.task, d && d.dp].map(str).join(" ").toLowerCase();
  row.sortable = {
    name: name.toLowerCase(), model: machineModel(m).toLowerCase(), ident: (macs[0] || str(m.uuid)).toLowerCase(),
    phase, progress: pct === null ? -1 : pct, rate: running && typeof d.rate === "number" ? d.rate : -1,
    eta: running && typeof d.eta === "number" ? d.eta : Infinity, status: STATUSES.indexOf(status),
    seen: seen === null ? -Infinity : seen,
  };
}

function sortedKeys(keys) {
  const { key, dir } = table.sort;
  if (!key) return keys;
  const value = (k) => table.rows.get(k).sortable[key];
  return keys
    .map((k, i) => [k, i])
    .sort(([a, i], [b, j]) => {
      const x = value(a);
      const y = value(b);
      return (x < y ? -dir : x > y ? dir : 0) || i - j; // stable: ties keep the DP's order
    })
    .map(([k]) => k);
}

function renderMachines(data) {
  const list = Array.isArray(data.machines) ? data.machines : [];
  const now = typeof data.generated === "number" ? data.generated : Date.now() / 1000; // the DP's clock
  const seen = new Set();
  const keys = [];
  for (const m of list) {
    const key = str(m.key);
    if (seen.has(key)) continue;
    seen.add(key);
    keys.push(key);
    let row = table.rows.get(key);
    if (!row) {
      row = makeRow(key);
      table.rows.set(key, row);
    }
    updateRow(row, m, now);
  }
  for (const [key, row] of table.rows) {
    if (!seen.has(key)) {
      row.tr.remove();
      table.rows.delete(key);
    }
  }
  table.keys = keys;
  arrangeRows();
}

function arrangeRows() {
  const keys = sortedKeys(table.keys);
  const same = keys.length === table.order.length && keys.every((k, i) => k === table.order[i]);
  if (!same) {
    // Appending rows that are already in the tbody moves them: one batch, one layout.
    const fragment = document.createDocumentFragment();
    for (const k of keys) fragment.append(table.rows.get(k).tr);
    $("machines").tBodies[0].append(fragment);
    table.order = keys;
  }
  applyFilter();
}

function applyFilter() {
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  let visible = 0;
  for (const key of table.order) {
    const row = table.rows.get(key);
    counts[row.status] += 1;
    const show = (table.status === null || row.status === table.status) && matches(row.hay, table.text);
    if (row.tr.hidden === show) row.tr.hidden = !show;
    if (show) visible += 1;
  }
  renderCounts(counts, table.order.length);
  $("machines-empty").hidden = table.order.length > 0;
  $("machines-none-match").hidden = table.order.length === 0 || visible > 0;
}

function renderCounts(counts, total) {
  const box = $("counts");
  const items = [["all", total], ...STATUSES.filter((s) => counts[s] > 0).map((s) => [s, counts[s]])];
  const signature = items.map(([s, n]) => `${s}=${n}`).join(",") + `|${table.status}`;
  if (box.dataset.signature === signature) return;
  box.dataset.signature = signature;
  box.replaceChildren(...items.map(([s, n]) => {
    const chosen = s === "all" ? table.status === null : table.status === s;
    const button = el("button", `count st-${s}`);
    button.type = "button";
    button.dataset.status = s;
    button.setAttribute("aria-pressed", String(chosen));
    button.title = s === "all" ? "every machine" : STATUS_HINTS[s];
    button.append(el("span", "n", String(n)), el("span", "label", s));
    return button;
  }));
}

function setupMachineTable() {
  $("filter").addEventListener("input", (event) => {
    table.text = event.target.value.toLowerCase().split(/\s+/).filter(Boolean);
    applyFilter();
  });
  $("counts").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-status]");
    if (!button) return;
    const s = button.dataset.status;
    table.status = s === "all" || s === table.status ? null : s;
    applyFilter();
  });
  const head = $("machines").tHead;
  const sortBy = (event) => {
    const th = event.target.closest("th[data-sort]");
    if (!th) return;
    const key = th.dataset.sort;
    table.sort = { key, dir: table.sort.key === key ? -table.sort.dir : 1 };
    for (const other of head.querySelectorAll("th")) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", table.sort.dir === 1 ? "ascending" : "descending");
    arrangeRows();
  };
  head.addEventListener("click", sortBy);
  head.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      sortBy(event);
    }
  });
  $("machines").tBodies[0].addEventListener("click", (event) => {
    if (event.target.closest("a")) return; // the name's own link navigates
    const tr = event.target.closest("tr[data-key]");
    if (tr) location.hash = machineHref(tr.dataset.key);
  });
}

// ---------------------------------------------------------------- one machine and a deployment's timeline

const detail = { key: null, eventsSignature: "" };

async function loadDetail(route, isCurrent) {
  let key = route.key;
  let id = route.id;
  let timeline = null;
  if (!key) {
    timeline = await call(`deployments/${encodeURIComponent(id)}/events`);
    key = str(timeline.deployment && timeline.deployment.machine_key);
  }
  let machine;
  try {
    machine = await call(`machines/${encodeURIComponent(key)}`);
  } catch (error) {
    if (error instanceof HttpError && error.status === 404) {
      if (isCurrent()) showMissing(`No machine ${key} on this DP.`);
      return;
    }
    throw error;
  }
  const deployments = Array.isArray(machine.deployments) ? machine.deployments : [];
  const current = machine.machine && machine.machine.deployment;
  id ??= (current && current.id) || newest(deployments);
  if (id && !timeline) timeline = await call(`deployments/${encodeURIComponent(id)}/events`);
  if (!isCurrent()) return;
  detail.key = key;
  $("machine-missing").hidden = true;
  $("machine-body").hidden = false;
  renderMachineFacts(machine.machine || {}, key);
  renderDeploymentList(deployments, key, id);
  renderTimeline(timeline);
}

function newest(deployments) {
  let best = null;
  for (const d of deployments) if (!best || (d.started || 0) > (best.started || 0)) best = d;
  return best ? best.id : null;
}

function showMissing(text) {
  $("machine-body").hidden = true;
  const missing = $("machine-missing");
  missing.textContent = text;
  missing.hidden = false;
}

function renderMachineFacts(m, key) {
  $("machine-title").textContent = machineName({ ...m, key });
  const status = machineStatus(m);
  const facts = [
    ["Status", badge(status)],
    ["Key", str(m.key || key)],
    ["Hostname", str(m.hostname)],
    ["Vendor / model", machineModel(m)],
    ["Serial", str(m.serial)],
    ["UUID", str(m.uuid)],
    ["MACs", Array.isArray(m.macs) ? m.macs.map(str).join(", ") : ""],
    ["Approval", str(m.state)],
    ["Postponed until", fmtTime(m.postponed_until)],
    ["Last seen", fmtTime(m.last_seen)],
  ];
  const nodes = [];
  for (const [label, value] of facts) {
    if (value === "") continue;
    const dd = el("dd");
    dd.append(value);
    nodes.push(el("dt", "", label), dd);
  }
  $("machine-facts").replaceChildren(...nodes);
}

function renderDeploymentList(deployments, key, selected) {
  const rows = [...deployments]
    .sort((a, b) => (b.started || 0) - (a.started || 0))
    .map((d) => {
      const tr = el("tr", d.id === selected ? "selected" : "");
      const started = el("td", "", fmtTime(d.started));
      const idCell = el("td");
      idCell.append(link(machineHref(key, str(d.id)), str(d.id)));
      const status = el("td");
      status.append(badge(d.status));
      tr.append(started, idCell, el("td", "", str(d.rule)), el("td", "", str(d.task)), status,
        el("td", "", str(d.phase)), errorCell(d.error));
      return tr;
    });
  $("machine-deployments").tBodies[0].replaceChildren(...rows);
}

function renderTimeline(timeline) {
  const d = timeline ? timeline.deployment || {} : null;
  const events = timeline && Array.isArray(timeline.events) ? timeline.events : [];
  $("timeline-id").textContent = d ? str(d.id) : "";
  $("timeline-summary").replaceChildren(...(d ? summaryOf(d) : []));
  $("timeline-empty").hidden = events.length > 0;
  // Redraw only when the events changed, so a reader's scroll position and selection survive a poll.
  const signature = `${d && d.id}|${events.length}|` + events.map((e) => `${e.source}:${e.seq}`).join(",");
  if (signature === detail.eventsSignature) return;
  detail.eventsSignature = signature;
  const start = events.length ? Math.min(...events.map((e) => (typeof e.time === "number" ? e.time : Infinity))) : 0;
  const fragment = document.createDocumentFragment();
  let retries = 0;
  for (const e of events) {
    fragment.append(eventItem(e, start, retries));
    if (typeof e.retries === "number") retries = e.retries;
  }
  $("timeline").replaceChildren(fragment);
}

function summaryOf(d) {
  const items = [];
  const add = (label, value) => {
    if (value === "" || value === null) return;
    const span = el("span", "fact");
    span.append(el("span", "label", label), typeof value === "string" ? el("span", "", value) : value);
    items.push(span);
  };
  add("status", badge(d.status));
  add("phase", [str(d.phase), str(d.step)].filter(Boolean).join(" · "));
  const pct = progressOf(d);
  if (pct !== null) {
    const box = el("span", "progress");
    box.append(progressBar(pct), el("span", "pct", `${Math.floor(pct)}%`));
    add("progress", box);
  }
  if (d.status === "running") add("rate", fmtRate(d.rate));
  if (d.status === "running") add("ETA", fmtClock(d.eta));
  add("retries", d.retries ? String(d.retries) : "");
  add("warnings", d.warnings ? String(d.warnings) : "");
  if (d.error && d.error.code) {
    const err = el("span", "err");
    err.append(el("code", "", str(d.error.code)), " ", str(d.error.message));
    add("error", err);
  }
  add("rule", str(d.rule));
  add("task", str(d.task));
  add("DP", str(d.dp));
  add("started", fmtTime(d.started));
  add("finished", fmtTime(d.finished));
  if (typeof d.started === "number") {
    const end = typeof d.finished === "number" ? d.finished : d.updated;
    add("took", typeof end === "number" ? fmtClock(end - d.started) : "");
  }
  add("events", typeof d.events === "number" ? String(d.events) : "");
  return items;
}

function eventItem(e, start, retriesBefore) {
  const level = known(e.level, LEVELS, "info");
  const li = el("li", `ev level-${level}`);
  li.dataset.source = str(e.source);
  li.dataset.seq = str(e.seq);
  const when = el("div", "when");
  const time = el("time", "", fmtTimeOfDay(e.time));
  time.title = fmtTime(e.time);
  when.append(time);
  if (typeof e.time === "number") when.append(el("span", "rel", `+${fmtClock(e.time - start)}`));
  when.append(el("span", "src", str(e.source)));
  const what = el("div", "what");
  const head = el("div", "head");
  head.append(el("span", "phase", str(e.phase)));
  if (e.step) head.append(el("span", "step", str(e.step)));
  if (level !== "info") head.append(el("span", `lvl lvl-${level}`, level));
  what.append(head, el("div", "msg", str(e.message)));
  const pct = percent(e.done, e.total);
  if (pct !== null) {
    const parts = [`${fmtMiB(e.done)}/${fmtMiB(e.total)} MiB (${Math.floor(pct)}%)`, fmtRate(e.rate)];
    if (typeof e.eta === "number") parts.push(`ETA ${fmtClock(e.eta)}`);
    what.append(el("div", "prog", parts.filter(Boolean).join(" · ")));
  }
  if (typeof e.retries === "number" && e.retries > retriesBefore) {
    what.append(el("div", "retries", `retry ${e.retries}`));
  }
  if (Array.isArray(e.warnings) && e.warnings.length) {
    const ul = el("ul", "warnings");
    for (const w of e.warnings) ul.append(el("li", "", str(w)));
    what.append(ul);
  }
  if (e.error && e.error.code) {
    const err = el("div", "err");
    err.append(el("code", "", str(e.error.code)));
    if (str(e.error.message) !== str(e.message)) err.append(" ", str(e.error.message)); // said once is enough
    what.append(err);
  }
  li.append(when, what);
  return li;
}

function setupAdmin() {
  const input = $("admin-token");
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  input.addEventListener("input", () => {
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    else sessionStorage.removeItem(TOKEN_KEY);
  });
  // Enter in the token field must not submit anything anywhere: the token stays in this tab.
  $("admin-form").addEventListener("submit", (event) => event.preventDefault());
  $("admin-forget").addEventListener("click", () => {
    input.value = "";
    sessionStorage.removeItem(TOKEN_KEY);
  });
  $("admin").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (button && detail.key) await administer(button.dataset.action, detail.key);
  });
}

async function administer(action, key) {
  const result = $("admin-result");
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    result.textContent = "Enter the DP's admin token first.";
    return;
  }
  let body = {};
  if (action === "postpone") {
    const minutes = Number($("postpone-minutes").value);
    if (!Number.isFinite(minutes) || minutes <= 0) {
      result.textContent = "Postpone by: expected a number of minutes above 0.";
      return;
    }
    body = { seconds: Math.round(minutes * 60) };
  }
  if (action === "cancel" && !confirm(`Cancel the deployment of ${key}?`)) return;
  try {
    await call(`machines/${encodeURIComponent(key)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    result.textContent = `${action}: done.`;
  } catch (error) {
    result.textContent = error instanceof HttpError && error.status === 401
      ? "The DP refused the admin token (401): check it, or ask for the DP's admin token."
      : `${action} failed: ${error.message}`;
  }
  refresh();
}

// ---------------------------------------------------------------- history

const pages = { cursors: [null], page: 0, status: "" };

async function loadHistory(isCurrent) {
  const query = new URLSearchParams({ limit: String(HISTORY_LIMIT) });
  if (pages.status) query.set("status", pages.status);
  const before = pages.cursors[pages.page];
  if (before !== null && before !== undefined) query.set("before", String(before));
  const data = await call(`deployments?${query}`);
  if (!isCurrent()) return;
  const list = Array.isArray(data.deployments) ? data.deployments : [];
  pages.cursors.length = pages.page + 1;
  if (data.next !== null && data.next !== undefined) pages.cursors.push(data.next);
  $("history-newer").disabled = pages.page === 0;
  $("history-older").disabled = pages.cursors.length <= pages.page + 1;
  $("history-page").textContent = `page ${pages.page + 1}`;
  $("history-empty").hidden = list.length > 0;
  $("history").tBodies[0].replaceChildren(...list.map(historyRow));
}

function historyRow(d) {
  const tr = el("tr");
  tr.dataset.id = str(d.id);
  const id = el("td");
  id.append(link(machineHref(str(d.machine_key), str(d.id)), str(d.id)));
  const machine = el("td");
  machine.append(link(machineHref(str(d.machine_key)), str(d.machine_key)));
  const status = el("td");
  status.append(badge(d.status));
  const end = typeof d.finished === "number" ? d.finished : d.updated;
  const took = typeof d.started === "number" && typeof end === "number" ? fmtClock(end - d.started) : "";
  tr.append(el("td", "", fmtTime(d.started)), id, machine, el("td", "", str(d.rule)), status,
    el("td", "", str(d.phase)), el("td", "num", took), errorCell(d.error));
  return tr;
}

function setupHistory() {
  $("history-status").addEventListener("change", (event) => {
    Object.assign(pages, { cursors: [null], page: 0, status: event.target.value });
    refresh();
  });
  $("history-older").addEventListener("click", () => {
    if (pages.cursors.length > pages.page + 1) {
      pages.page += 1;
      refresh();
    }
  });
  $("history-newer").addEventListener("click", () => {
    if (pages.page > 0) {
      pages.page -= 1;
      refresh();
    }
  });
}

// ---------------------------------------------------------------- errors, grouped

async function loadErrors(isCurrent) {
  const data = await call("errors");
  if (!isCurrent()) return;
  const byCount = (a, b) => (b.count || 0) - (a.count || 0);
  const byCode = (Array.isArray(data.by_code) ? data.by_code : []).slice().sort(byCount);
  const byModel = (Array.isArray(data.by_model) ? data.by_model : []).slice().sort(byCount);
  const byDp = (Array.isArray(data.by_dp) ? data.by_dp : []).slice().sort(byCount);
  $("errors-empty").hidden = byCode.length > 0;
  $("errors-code").tBodies[0].replaceChildren(...byCode.map((g) => {
    const tr = el("tr");
    tr.dataset.code = str(g.code);
    const ids = Array.isArray(g.deployments) ? g.deployments.map(str) : [];
    const cell = el("td", "ids");
    for (const id of ids.slice(0, 5)) cell.append(link(deploymentHref(id), id), " ");
    // The DP lists a few of the latest; the count says how many there are in all.
    const more = Math.max(ids.length, typeof g.count === "number" ? g.count : 0) - Math.min(ids.length, 5);
    if (more > 0) cell.append(el("span", "muted", `+${more} more`));
    tr.append(codeCell(g.code), countCell(g.count, byCode), el("td", "msg", str(g.message)), cell);
    return tr;
  }));
  const pairRow = (first, group) => (g) => {
    const tr = el("tr");
    tr.append(el("td", "", str(g[first])), codeCell(g.code), countCell(g.count, group));
    return tr;
  };
  $("errors-model").tBodies[0].replaceChildren(...byModel.map(pairRow("model", byModel)));
  $("errors-dp").tBodies[0].replaceChildren(...byDp.map(pairRow("dp", byDp)));
}

function codeCell(code) {
  const td = el("td");
  td.append(el("code", "", str(code)));
  return td;
}

function countCell(count, group) {
  const most = Math.max(1, ...group.map((g) => g.count || 0));
  const td = el("td", "num failures");
  const bar = el("span", "countbar");
  bar.style.width = `${(100 * (count || 0)) / most}%`;
  td.append(bar, el("span", "n", str(count)));
  return td;
}

// ---------------------------------------------------------------- routing and polling

const router = { route: null, generation: 0, timer: null };

function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts[0] === "machine" && parts[1]) return { view: "machine", key: parts[1], id: parts[2] || null };
  if (parts[0] === "deployment" && parts[1]) return { view: "machine", key: null, id: parts[1] };
  if (parts[0] === "history" || parts[0] === "errors") return { view: parts[0] };
  return { view: "machines" };
}

function route() {
  const next = parseRoute(location.hash);
  const previous = router.route;
  router.route = next;
  for (const section of document.querySelectorAll("main > .view")) section.hidden = section.id !== `view-${next.view}`;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === next.view || (a.dataset.nav === "machines" && next.view === "machine"));
  }
  if (next.view === "machine" && (!previous || previous.key !== next.key || previous.id !== next.id)) {
    // A different machine: clear the old one at once rather than show it under the new address.
    detail.eventsSignature = "";
    detail.key = null;
    $("machine-title").textContent = next.key || "";
    for (const id of ["machine-facts", "timeline-summary", "timeline", "admin-result"]) $(id).replaceChildren();
    $("machine-deployments").tBodies[0].replaceChildren();
  }
  refresh();
}

async function refresh() {
  clearTimeout(router.timer);
  const generation = ++router.generation;
  const isCurrent = () => generation === router.generation;
  if (!document.hidden) {
    const r = router.route;
    try {
      if (r.view === "machines") {
        const data = await call("machines");
        if (isCurrent()) renderMachines(data);
      } else if (r.view === "machine") {
        await loadDetail(r, isCurrent);
      } else if (r.view === "history") {
        await loadHistory(isCurrent);
      } else {
        await loadErrors(isCurrent);
      }
      if (isCurrent()) setLive(true, `live · ${fmtTimeOfDay(Date.now() / 1000)}`);
    } catch (error) {
      if (isCurrent()) setLive(false, `DP unreachable or refused: ${error.message} · retrying`);
    }
  }
  if (isCurrent()) router.timer = setTimeout(refresh, POLL_MS);
}

function start() {
  setupMachineTable();
  setupAdmin();
  setupHistory();
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  route();
}

start();
