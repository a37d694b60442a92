// jobq dashboard (SPEC §5, §9): the job table, alerts and webhook delivery
// counts, the job page with its deliveries, the connection indicator. Plain
// ES module, no build step. Safe by construction: the DOM is built with
// createElement and textContent only (never innerHTML), and the page's CSP
// forbids inline script, so everything starts here.

const body = document.body;
const PAGE = body.dataset.page || "";
const CAN_WRITE = body.dataset.canWrite === "true";
const IS_ADMIN = body.dataset.role === "admin";
const TYPES = (body.dataset.types || "").split(" ").filter(Boolean);
const STATUSES = ["waiting", "queued", "running", "retry", "succeeded", "fatal", "cancelled"];
const TERMINAL = new Set(["succeeded", "fatal", "cancelled"]);
const PAGE_SIZE = 50;
const POLL_MS = 2500;
const FIRST_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30000;
const SILENCE_MS = 10000; // metrics come once a second: a silent socket is a dead one
const DELIVERY_STATUSES = ["failed", "pending", "delivered", "stopped"];
const ALERT_KINDS = { dlq_not_empty: "DLQ not empty", delivery_failed: "webhook failed", lease_expired: "lease expired" };

// ---- small helpers ------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name.startsWith("data-") || name.startsWith("aria-") || ["href", "title", "role", "type"].includes(name)) {
      node.setAttribute(name, String(value));
    } else node[name] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child); // strings become text nodes
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function $(id) {
  return document.getElementById(id);
}

function pretty(value) {
  if (value === null || value === undefined) return "—";
  return JSON.stringify(value, null, 2);
}

function shortTime(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}

function seconds(from, to) {
  if (!from || !to) return null;
  const ms = new Date(to).getTime() - new Date(from).getTime();
  return Number.isFinite(ms) ? ms / 1000 : null;
}

function badge(status) {
  return el("span", { class: `badge st-${status}`, text: status });
}

function showNotice(text, isError = false, id = "notice") {
  const notice = $(id);
  if (!notice) return;
  notice.textContent = text;
  notice.classList.toggle("notice-error", isError);
  notice.hidden = !text;
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, payload) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (payload !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.assign("/login");
    throw new ApiError("signed out", 401);
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    throw new ApiError((data && (data.detail || data.title)) || `HTTP ${response.status}`, response.status);
  }
  return data;
}

// ---- the live connection --------------------------------------------------

// The WebSocket while it works ("live": a snapshot arrived), `poll()` every
// POLL_MS while it does not ("polling"), reconnecting after 1 s, 2 s, 4 s …
// at most 30 s. `tenant()` names the admin's tenant filter ("" for all).
class Live {
  constructor({ onMessage, poll, tenant }) {
    this.onMessage = onMessage;
    this.poll = poll;
    this.tenant = tenant || (() => "");
    this.delay = FIRST_BACKOFF_MS;
    this.ws = null;
    this.pollTimer = null;
    this.retryTimer = null;
    this.silenceTimer = null;
    this.indicator = $("conn");
    this.setMode("connecting");
    this.connect();
  }

  setMode(mode) {
    this.mode = mode;
    if (!this.indicator) return;
    this.indicator.textContent = mode;
    this.indicator.className = `conn conn-${mode}`;
    body.dataset.conn = mode;
  }

  url() {
    const url = new URL("/ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const tenant = this.tenant();
    if (tenant) url.searchParams.set("tenant", tenant);
    return url.toString();
  }

  connect() {
    this.retryTimer = null;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.down();
      return;
    }
    this.ws = ws;
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.heard(ws);
      if (message.type === "snapshot" && this.mode !== "live") {
        this.delay = FIRST_BACKOFF_MS;
        this.stopPolling();
        this.setMode("live");
      }
      this.onMessage(message);
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.down();
    });
    this.heard(ws);
  }

  heard(ws) {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => {
      if (this.ws === ws) ws.close();
    }, SILENCE_MS);
  }

  down() {
    clearTimeout(this.silenceTimer);
    this.setMode("polling");
    this.startPolling();
    if (this.retryTimer === null) {
      this.retryTimer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, MAX_BACKOFF_MS);
    }
  }

  reconnect() {
    // A new scope (the admin's tenant filter): start over at once.
    const old = this.ws;
    this.ws = null;
    if (old) old.close();
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.delay = FIRST_BACKOFF_MS;
    this.connect();
  }

  startPolling() {
    if (this.pollTimer !== null) return;
    const tick = async () => {
      try {
        await this.poll();
      } catch (error) {
        if (!(error instanceof ApiError)) console.warn("poll failed", error);
      }
      if (this.pollTimer !== null) this.pollTimer = setTimeout(tick, POLL_MS);
    };
    this.pollTimer = setTimeout(tick, 0);
  }

  stopPolling() {
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }
}

// ---- the job table ----------------------------------------------------------

function jobKey(job) {
  return job.createdAt || "";
}

function dashboard() {
  const params = new URLSearchParams(window.location.search);
  const filters = {
    status: STATUSES.includes(params.get("status")) ? params.get("status") : "",
    type: params.get("type") || "",
    q: params.get("q") || "",
    tenant: IS_ADMIN ? params.get("tenant") || "" : "",
  };
  const rows = new Map(); // jobId -> <tr>
  const jobs = new Map(); // jobId -> job
  let cursor = null;
  let generation = 0; // a response for older filters is dropped

  const tbody = $("rows");
  const older = $("older");
  const empty = $("empty");
  const tabs = $("tabs");
  const typeSelect = $("f-type");
  const search = $("f-q");
  const tenantInput = $("f-tenant");

  // Filters.
  for (const [value, label] of [["", "all"], ...STATUSES.map((s) => [s, s === "fatal" ? "fatal (DLQ)" : s])]) {
    const tab = el("button", { type: "button", class: "tab", role: "tab", "data-status": value, text: label });
    tab.addEventListener("click", () => setFilter({ status: value }));
    tabs.append(tab);
  }
  for (const type of TYPES) typeSelect.append(el("option", { value: type, text: type }));
  if (filters.type && !TYPES.includes(filters.type)) typeSelect.append(el("option", { value: filters.type, text: filters.type }));
  typeSelect.value = filters.type;
  typeSelect.addEventListener("change", () => setFilter({ type: typeSelect.value }));
  search.value = filters.q;
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => setFilter({ q: search.value.trim() }), 250);
  });
  if (tenantInput) {
    tenantInput.value = filters.tenant;
    tenantInput.addEventListener("change", () => {
      setFilter({ tenant: tenantInput.value.trim() });
      live.reconnect();
    });
  }

  function setFilter(change) {
    Object.assign(filters, change);
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
    const qs = query.toString();
    window.history.replaceState(null, "", qs ? `/?${qs}` : "/");
    renderTabs();
    reload();
  }

  function renderTabs() {
    for (const tab of tabs.children) {
      const active = tab.dataset.status === filters.status;
      tab.classList.toggle("active", active);
      tab.setAttribute("aria-selected", String(active));
    }
    const bulkbar = $("bulkbar");
    const retryAll = $("bulk-retry");
    const cancelAll = $("bulk-cancel");
    retryAll.hidden = !(CAN_WRITE && filters.status === "fatal");
    cancelAll.hidden = !(CAN_WRITE && filters.status !== "" && !TERMINAL.has(filters.status));
    bulkbar.hidden = retryAll.hidden && cancelAll.hidden;
    $("bulk-text").textContent = IS_ADMIN && !bulkbar.hidden ? "Bulk actions apply to every tenant." : "";
  }

  function listUrl(extra = {}) {
    const query = new URLSearchParams();
    const all = { ...filters, limit: String(PAGE_SIZE), ...extra };
    for (const [name, value] of Object.entries(all)) if (value) query.set(name, value);
    return `/jobs?${query}`;
  }

  function matches(job) {
    if (filters.status && job.status !== filters.status) return false;
    if (filters.type && job.type !== filters.type) return false;
    if (filters.tenant && job.tenantId !== filters.tenant) return false;
    if (filters.q) {
      const needle = filters.q.toLowerCase();
      const hay = `${job.lastError || ""}\n${JSON.stringify(job.payload)}`.toLowerCase();
      if (!hay.includes(needle)) return false;
    }
    return true;
  }

  function actionButton(label, job, action) {
    const button = el("button", { type: "button", class: `small-btn act-${action}`, text: label, "data-action": action });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        upsert(await api("POST", `/jobs/${encodeURIComponent(job.jobId)}/${action}`));
        showNotice("");
      } catch (error) {
        showNotice(`${action} failed: ${error.message}`, true);
        button.disabled = false;
      }
    });
    return button;
  }

  function renderRow(job) {
    const tr = el("tr", { "data-job-id": job.jobId, "data-status": job.status });
    const link = el("a", { href: `/ui/jobs/${encodeURIComponent(job.jobId)}`, class: "jobid", title: job.jobId }, el("code", { text: job.jobId.slice(0, 8) }));
    const progress = job.progress === null || job.progress === undefined
      ? el("span", { class: "muted", text: "—" })
      : el("progress", { max: 1, value: job.progress, title: `${Math.round(job.progress * 100)} %` });
    const note = job.lastError || job.waitingReason || "";
    const actions = el("td", { class: "actions-col" });
    if (CAN_WRITE) {
      if (job.status === "fatal") actions.append(actionButton("Retry", job, "retry"));
      if (!TERMINAL.has(job.status)) actions.append(actionButton("Cancel", job, "cancel"));
    }
    tr.append(
      el("td", {}, link, IS_ADMIN ? el("span", { class: "muted small tenant", text: ` ${job.tenantId}` }) : null),
      el("td", { text: job.type }),
      el("td", { class: "status" }, badge(job.status)),
      el("td", { text: `${job.attempts}/${job.maxAttempts}` }),
      el("td", {}, progress),
      el("td", { class: "small", text: shortTime(job.createdAt) }),
      el("td", { class: job.lastError ? "note err" : "note", title: note, text: note }),
      actions,
    );
    return tr;
  }

  function upsert(job, { fromPage = false } = {}) {
    const known = jobs.get(job.jobId);
    if (known && job.updatedAt && known.updatedAt && job.updatedAt < known.updatedAt) return; // an older version
    const row = rows.get(job.jobId);
    if (!matches(job)) {
      if (row) {
        row.remove();
        rows.delete(job.jobId);
        jobs.delete(job.jobId);
      }
      updateEmpty();
      return;
    }
    const fresh = renderRow(job);
    jobs.set(job.jobId, job);
    if (row) {
      row.replaceWith(fresh);
      rows.set(job.jobId, fresh);
      return;
    }
    // Newest first: before the first row that is not newer than this job.
    let before = null;
    for (const other of tbody.children) {
      const otherJob = jobs.get(other.dataset.jobId);
      if (otherJob && jobKey(otherJob) <= jobKey(job)) {
        before = other;
        break;
      }
    }
    if (before === null && cursor !== null && !fromPage) {
      jobs.delete(job.jobId); // older than every loaded row: it comes with "Older"
      return;
    }
    if (fromPage) tbody.append(fresh);
    else tbody.insertBefore(fresh, before);
    rows.set(job.jobId, fresh);
    updateEmpty();
  }

  function updateEmpty() {
    empty.hidden = rows.size > 0;
    older.hidden = cursor === null;
  }

  async function reload() {
    const mine = ++generation;
    const data = await api("GET", listUrl());
    if (mine !== generation) return;
    clear(tbody);
    rows.clear();
    jobs.clear();
    cursor = data.nextCursor;
    for (const job of data.jobs) upsert(job, { fromPage: true });
    updateEmpty();
  }

  async function refreshFirstPage() {
    const mine = generation;
    const data = await api("GET", listUrl());
    if (mine !== generation) return;
    for (const job of [...data.jobs].reverse()) upsert(job);
  }

  older.addEventListener("click", async () => {
    if (cursor === null) return;
    const mine = generation;
    older.disabled = true;
    try {
      const data = await api("GET", listUrl({ cursor }));
      if (mine !== generation) return;
      cursor = data.nextCursor;
      for (const job of data.jobs) if (!rows.has(job.jobId)) upsert(job, { fromPage: true });
      updateEmpty();
    } finally {
      older.disabled = false;
    }
  });

  async function bulk(action) {
    const status = filters.status;
    const described = [`status ${status}`, filters.type && `type ${filters.type}`, filters.q && `text "${filters.q}"`]
      .filter(Boolean)
      .join(", ");
    const scope = IS_ADMIN ? " in every tenant" : "";
    if (!window.confirm(`${action === "retry" ? "Retry" : "Cancel"} every job matching ${described}${scope}?`)) return;
    const filter = { status };
    if (filters.type) filter.type = filters.type;
    if (filters.q) filter.q = filters.q;
    try {
      const result = await api("POST", "/jobs/bulk", { action, filter });
      showNotice(`${action}: ${result.changed} of ${result.matched} matching jobs changed.`);
      await reload();
    } catch (error) {
      showNotice(`${action} failed: ${error.message}`, true);
    }
  }
  $("bulk-retry").addEventListener("click", () => bulk("retry"));
  $("bulk-cancel").addEventListener("click", () => bulk("cancel"));

  // Counts and metrics.
  const countsBox = $("counts");
  const countCells = new Map();
  for (const status of STATUSES) {
    const value = el("span", { class: "count-n", text: "–" });
    const cell = el("button", { type: "button", class: `count st-${status}`, "data-status": status }, value, el("span", { class: "count-label", text: status }));
    cell.addEventListener("click", () => setFilter({ status }));
    countCells.set(status, value);
    countsBox.append(cell);
  }
  const depth = el("span", { class: "count-n", text: "–" });
  const rate = el("span", { class: "count-n", text: "–" });
  countsBox.append(
    el("div", { class: "count metric", "data-metric": "queueDepth" }, depth, el("span", { class: "count-label", text: "queue depth" })),
    el("div", { class: "count metric", "data-metric": "finished" }, rate, el("span", { class: "count-label", text: "finished / min" })),
  );

  function showCounts(counts, atLeast = false) {
    for (const status of STATUSES) {
      const n = counts[status] || 0;
      countCells.get(status).textContent = atLeast && n ? `${n}+` : String(n);
    }
  }

  // Webhook deliveries of the viewer's scope, by status; failed ones stand out.
  const deliveryCells = new Map();
  for (const status of DELIVERY_STATUSES) {
    const value = el("span", { class: "dcount-n", text: "–" });
    const cell = el("span", { class: "dcount", "data-delivery-status": status }, value, ` ${status}`);
    deliveryCells.set(status, { cell, value });
    $("dcounts").append(cell);
  }

  function showDeliveries(counts) {
    for (const [status, { cell, value }] of deliveryCells) {
      const n = counts[status] || 0;
      value.textContent = String(n);
      cell.classList.toggle("dcount-bad", status === "failed" && n > 0);
    }
  }

  // The active alerts of the viewer's scope, rebuilt only when they change.
  const alertList = $("alerts");
  let shownAlerts = "";

  function alertLink(alert) {
    if (alert.kind === "dlq_not_empty") {
      const query = new URLSearchParams({ status: "fatal" });
      if (IS_ADMIN) query.set("tenant", alert.tenantId);
      return el("a", { href: `/?${query}`, text: "open the DLQ" });
    }
    if (!alert.subject) return null;
    return el("a", { href: `/ui/jobs/${encodeURIComponent(alert.subject)}`, text: `job ${alert.subject.slice(0, 8)}` });
  }

  function showAlerts(alerts) {
    const seen = JSON.stringify(alerts.map((a) => [a.alertId, a.raisedAt, a.message]));
    if (seen === shownAlerts) return;
    shownAlerts = seen;
    clear(alertList);
    for (const alert of alerts) {
      const link = alertLink(alert);
      alertList.append(
        el("li", { class: "alert-item", "data-alert-id": alert.alertId, "data-kind": alert.kind },
          el("span", { class: "badge alert-kind", title: alert.kind, text: ALERT_KINDS[alert.kind] || alert.kind }), " ",
          el("span", { class: "alert-message", text: alert.message }),
          el("span", { class: "muted small alert-meta" },
            `since ${shortTime(alert.raisedAt)}`, IS_ADMIN ? ` · tenant ${alert.tenantId}` : null, link ? " · " : null, link)));
    }
    $("alerts-none").hidden = alerts.length > 0;
  }

  // The throughput chart (uPlot, vendored): finished per second from the
  // metrics' `finishedBySecond`, queue depth as sampled by this page.
  const chartBox = $("chart");
  const depthBySecond = new Map();
  let chart = null;

  function drawChart(message) {
    const perSecond = Array.isArray(message.finishedBySecond) ? message.finishedBySecond : [];
    if (!chartBox || !window.uPlot || perSecond.length === 0) return;
    const parsed = Date.parse(message.at);
    const at = Math.floor((Number.isFinite(parsed) ? parsed : Date.now()) / 1000);
    if (typeof message.queueDepth === "number") depthBySecond.set(at, message.queueDepth);
    for (const second of depthBySecond.keys()) if (second < at - perSecond.length) depthBySecond.delete(second);
    const xs = perSecond.map((_, i) => at - (perSecond.length - 1 - i));
    const depths = xs.map((x) => (depthBySecond.has(x) ? depthBySecond.get(x) : null));
    const data = [xs, perSecond, depths];
    if (chart === null) {
      chart = new window.uPlot(
        {
          width: Math.max(chartBox.clientWidth, 300),
          height: 180,
          scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] }, depth: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
          series: [
            {},
            { label: "finished / s", scale: "y", stroke: "#137a3a", fill: "rgba(19, 122, 58, 0.12)", width: 2 },
            { label: "queue depth", scale: "depth", stroke: "#2f5bd3", width: 2, spanGaps: true },
          ],
          axes: [{}, { scale: "y" }, { scale: "depth", side: 1, grid: { show: false } }],
        },
        data,
        chartBox,
      );
      window.addEventListener("resize", () => chart.setSize({ width: Math.max(chartBox.clientWidth, 300), height: 180 }));
    } else {
      chart.setData(data);
    }
    chartBox.dataset.points = String(xs.length);
  }

  function onMessage(message) {
    if (message.type === "snapshot") {
      showCounts(message.counts || {});
      for (const job of [...(message.jobs || [])].reverse()) upsert(job);
      refreshFirstPage().catch(() => {});
    } else if (message.type === "job" && message.job) {
      upsert(message.job);
    } else if (message.type === "metrics") {
      if (message.counts) showCounts(message.counts);
      if (typeof message.queueDepth === "number") depth.textContent = String(message.queueDepth);
      if (typeof message.finishedLastMinute === "number") rate.textContent = String(message.finishedLastMinute);
      if (message.deliveries) showDeliveries(message.deliveries);
      if (Array.isArray(message.alerts)) showAlerts(message.alerts);
      drawChart(message);
    }
  }

  let haveMetricsRoute = true;

  async function poll() {
    await refreshFirstPage();
    const query = new URLSearchParams();
    if (filters.tenant) query.set("tenant", filters.tenant);
    if (haveMetricsRoute) {
      try {
        // The same document as the socket's metrics message.
        onMessage({ ...(await api("GET", `/metrics?${query}`)), type: "metrics" });
        return;
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
        haveMetricsRoute = false;
      }
    }
    // A jobq without GET /metrics: counts from the newest 500 jobs ("n+" when there are more).
    query.set("limit", "500");
    const data = await api("GET", `/jobs?${query}`);
    const counts = {};
    for (const job of data.jobs) counts[job.status] = (counts[job.status] || 0) + 1;
    showCounts(counts, data.nextCursor !== null);
    depth.textContent = String((counts.queued || 0) + (counts.retry || 0));
    rate.textContent = "–";
  }

  renderTabs();
  reload().catch((error) => showNotice(`Could not load jobs: ${error.message}`, true));
  const live = new Live({ onMessage, poll, tenant: () => filters.tenant });
}

// ---- the job page -----------------------------------------------------------

function jobPage() {
  const jobId = body.dataset.jobId;
  const deliveriesUrl = `/jobs/${encodeURIComponent(jobId)}/deliveries`;
  let current = null;
  let pending = null;
  let deliveries = [];

  function fact(name, value) {
    if (value === null || value === undefined || value === "" || (Array.isArray(value) && value.length === 0)) return [];
    return [el("dt", { text: name }), el("dd", { text: Array.isArray(value) ? value.join(", ") : String(value) })];
  }

  function render(job) {
    current = job;
    const status = $("j-status");
    status.textContent = job.status;
    status.className = `badge st-${job.status}`;
    body.dataset.jobStatus = job.status;
    const facts = $("j-facts");
    clear(facts);
    facts.append(
      ...fact("Type", job.type),
      ...fact("Tenant", job.tenantId),
      ...fact("Attempts", `${job.attempts} of ${job.maxAttempts}`),
      ...fact("Priority", job.priority),
      ...fact("Waiting because", job.waitingReason),
      ...fact("Created", shortTime(job.createdAt)),
      ...fact("Started", job.startedAt && shortTime(job.startedAt)),
      ...fact("Finished", job.finishedAt && shortTime(job.finishedAt)),
      ...fact("Next run", job.nextRunAt && shortTime(job.nextRunAt)),
      ...fact("Expires", job.expiresAt && shortTime(job.expiresAt)),
      ...fact("Timeout", `${job.timeoutSeconds} s`),
      ...fact("Depends on", job.dependsOn),
      ...fact("Webhook", job.webhookUrl),
      ...fact("Idempotency key", job.idempotencyKey),
    );
    const hasProgress = job.progress !== null && job.progress !== undefined;
    $("j-progress").value = hasProgress ? job.progress : job.status === "succeeded" ? 1 : 0;
    $("j-progress-text").textContent = hasProgress
      ? `${Math.round(job.progress * 100)} %${job.progressMessage ? ` · ${job.progressMessage}` : ""}`
      : job.status === "succeeded" ? "done" : "no progress reported";
    $("j-payload").textContent = pretty(job.payload);
    $("j-result").textContent = pretty(job.result);
    $("j-error").textContent = job.lastError || "—";

    const attempts = $("j-attempts");
    clear(attempts);
    for (const attempt of job.attemptHistory || []) {
      const took = seconds(attempt.startedAt, attempt.finishedAt);
      attempts.append(
        el("li", { class: `attempt st-${attempt.status}`, "data-attempt": attempt.attempt },
          el("div", { class: "attempt-head" },
            el("strong", { text: `#${attempt.attempt}` }), " ", badge(attempt.status), " ",
            el("span", { class: "muted small", text: `${shortTime(attempt.startedAt)}${took === null ? "" : ` · ${took.toFixed(2)} s`}${attempt.workerId ? ` · ${attempt.workerId}` : ""}` })),
          attempt.error ? el("pre", { class: "attempt-error", text: attempt.error }) : null));
    }
    $("j-attempts-empty").hidden = attempts.children.length > 0;

    const actions = $("j-actions");
    clear(actions);
    for (const action of job.operatorActions || []) {
      actions.append(el("li", { "data-action": action.action }, el("strong", { text: action.action }), ` by ${action.actor} at ${shortTime(action.at)}`));
    }
    $("j-actions-empty").hidden = actions.children.length > 0;

    $("j-retry").hidden = !(CAN_WRITE && job.status === "fatal");
    $("j-cancel").hidden = !(CAN_WRITE && !TERMINAL.has(job.status));
    showRedeliver();
  }

  function showRedeliver() {
    // As the server decides: an ended job with a webhook (it then has a delivery).
    const can = current !== null && TERMINAL.has(current.status) && Boolean(current.webhookUrl) && deliveries.length > 0;
    $("j-redeliver").hidden = !(CAN_WRITE && can);
  }

  function attemptRow(attempt) {
    const answer = attempt.statusCode === null || attempt.statusCode === undefined ? "no answer" : String(attempt.statusCode);
    return el("tr", { "data-attempt": attempt.attempt, "data-status": attempt.status },
      el("td", { text: `#${attempt.attempt}` }),
      el("td", { class: "small", text: shortTime(attempt.at) }),
      el("td", { class: "code", text: answer }),
      el("td", { class: "small", text: typeof attempt.durationMs === "number" ? `${attempt.durationMs} ms` : "—" }),
      el("td", {}, badge(attempt.status), attempt.redelivery ? el("span", { class: "muted small", text: " redelivery" }) : null),
      el("td", { class: attempt.error ? "note err" : "note", title: attempt.error || "", text: attempt.error || "—" }));
  }

  function renderDeliveries(list) {
    deliveries = list;
    const box = $("j-deliveries");
    clear(box);
    for (const delivery of list) {
      const tries = delivery.attempts.length;
      const due = delivery.status === "pending"
        ? el("p", { class: "muted small delivery-due", text: `${delivery.redelivery ? "Redelivery" : "Next attempt"} due ${shortTime(delivery.nextAttemptAt)}` })
        : null;
      const attempts = tries === 0 ? null : el("table", { class: "delivery-attempts" },
        el("thead", {}, el("tr", {}, ...["Attempt", "At", "Answer", "Took", "Result", "Error"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...delivery.attempts.map(attemptRow)));
      box.append(
        el("li", { class: "delivery", "data-delivery": delivery.deliveryId, "data-status": delivery.status },
          el("div", {},
            el("strong", { text: delivery.event }), " ", badge(delivery.status), " ",
            el("span", { class: "muted small", text: `${delivery.url} · ${tries} attempt${tries === 1 ? "" : "s"} · id ${delivery.deliveryId}` })),
          due, attempts));
    }
    $("j-deliveries-empty").hidden = box.children.length > 0;
    showRedeliver();
  }

  async function load() {
    const [job, found] = await Promise.all([api("GET", `/jobs/${encodeURIComponent(jobId)}`), api("GET", deliveriesUrl)]);
    renderDeliveries(found.deliveries);
    render(job);
  }

  function onDelivery(delivery) {
    // A delivery message (made, attempted, redelivered) carries the whole delivery.
    if (delivery.jobId !== jobId) return;
    const known = deliveries.some((d) => d.deliveryId === delivery.deliveryId);
    renderDeliveries(known ? deliveries.map((d) => (d.deliveryId === delivery.deliveryId ? delivery : d)) : [...deliveries, delivery]);
  }

  function soon() {
    // Job messages carry no attempt history: fetch the whole job, at most once at a time.
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      load().catch((error) => showNotice(error.message, true));
    }, 100);
  }

  for (const action of ["retry", "cancel"]) {
    const button = $(`j-${action}`);
    button.addEventListener("click", async () => {
      if (action === "cancel" && !window.confirm("Cancel this job?")) return;
      button.disabled = true;
      try {
        render(await api("POST", `/jobs/${encodeURIComponent(jobId)}/${action}`));
        showNotice("");
      } catch (error) {
        showNotice(`${action} failed: ${error.message}`, true);
      } finally {
        button.disabled = false;
      }
    });
  }

  const redeliver = $("j-redeliver");
  redeliver.addEventListener("click", async () => {
    redeliver.disabled = true;
    try {
      const delivery = await api("POST", `${deliveriesUrl}/redeliver`);
      showNotice(`Redelivery of ${delivery.deliveryId} queued (the same webhook-id).`, false, "j-deliveries-notice");
    } catch (error) {
      // A 409 says why (no webhook, or the job has not ended): its detail is the message.
      showNotice(`Redeliver refused: ${error.message}`, true, "j-deliveries-notice");
    } finally {
      redeliver.disabled = false;
    }
    await load().catch((error) => showNotice(error.message, true));
  });

  load().catch((error) => showNotice(`Could not load the job: ${error.message}`, true));
  new Live({
    onMessage(message) {
      if (message.type === "job" && message.job && message.job.jobId === jobId) soon();
      else if (message.type === "snapshot" && current) soon();
      else if (message.type === "delivery" && message.delivery) onDelivery(message.delivery);
    },
    poll: load,
    tenant: () => (IS_ADMIN && current ? current.tenantId : ""),
  });
}

if (PAGE === "dashboard") dashboard();
else if (PAGE === "job") jobPage();
else if (PAGE) new Live({ onMessage() {}, async poll() {} });
