// The sam-tuner console: a static page over the JSON API (/docs). No build, no library, nothing from a CDN.
"use strict";

const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
const TOKEN_KEY = "samtuner.adminToken";  // sessionStorage: kept for this browser session only
const state = {me: null, pairPage: 0, pairSize: 50, pairTotal: 0, pairFilter: {}, job: null, jobPoints: [],
               seenPoints: new Set(), modelUser: null, awaitingUser: null, drawn: []};
window.__console = state;  // tests and the benchmark read what the page drew

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function num(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits ?? 3); }
function when(iso) { return iso ? String(iso).replace("T", " ").slice(0, 19) : "–"; }
function short(id) { return id ? String(id).slice(0, 8) : ""; }

function flash(text, isError) {
  const el = $("#flash");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { el.hidden = true; }, isError ? 9000 : 4000);
}

class ApiError extends Error {
  constructor(status, body) { super(body.detail || `HTTP ${status}`); this.status = status; this.body = body; }
}

async function api(path, options) {
  const opts = Object.assign({headers: {}}, options || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) opts.headers.Authorization = "Bearer " + token;
  if (opts.json !== undefined) {
    opts.method = opts.method || "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.json);
  }
  const r = await fetch(path, opts);
  if (opts.raw && r.ok) return r;
  let body = {};
  try { body = await r.json(); } catch (e) { body = {detail: r.statusText}; }
  if (r.status === 401) $("#token-form").hidden = false;  // reading from another host needs the token too
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

// -- access ---------------------------------------------------------------------------------------

async function refreshAccess() {
  state.me = await api("/api/v1/whoami");
  const el = $("#access-state");
  el.textContent = state.me.admin ? "admin" : (state.me.admin_configured ? "read-only" : "read-only (no admin token configured)");
  el.className = state.me.admin ? "admin" : "";
  document.body.classList.toggle("is-admin", state.me.admin);
}

function setupAccess() {
  $("#token-button").onclick = () => { $("#token-form").hidden = !$("#token-form").hidden; $("#token-input").focus(); };
  $("#token-form").onsubmit = async ev => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
    $("#token-input").value = "";
    await refreshAccess();
    if (state.me.admin) { $("#token-form").hidden = true; flash("admin token accepted for this session"); route(); }
    else { sessionStorage.removeItem(TOKEN_KEY); flash("that token was refused", true); }
  };
  $("#token-forget").onclick = async () => { sessionStorage.removeItem(TOKEN_KEY); await refreshAccess(); };
}

async function adminAction(what, fn) {
  try {
    const result = await fn();
    flash(`${what}: accepted (${(result.commands || [result.command_id]).length} command(s))`);
    return result;
  } catch (e) {
    if (e.status === 401) { $("#token-form").hidden = false; }
    flash(`${what}: ${e.message}`, true);
    throw e;
  }
}

// -- tabs -----------------------------------------------------------------------------------------

const TABS = ["pairs", "training", "models", "trace"];

function route() {
  const [tab, arg] = (location.hash.slice(1) || "pairs").split("/");
  const name = TABS.includes(tab) ? tab : "pairs";
  for (const t of TABS) $("#tab-" + t).hidden = t !== name;
  $$("#tabs a").forEach(a => a.classList.toggle("on", a.dataset.tab === name));
  if (name === "pairs") loadPairs();
  if (name === "training") { loadTraining(); if (arg) openJob(arg); }
  if (name === "models") { loadModels(); if (arg) openModel(decodeURIComponent(arg)); }
  if (name === "trace" && arg) { $("#trace-id").value = decodeURIComponent(arg); runTrace(); }
}

// -- preference data ------------------------------------------------------------------------------

function readFilter() {
  const f = {};
  for (const el of $("#pair-filter").elements) {
    if (!el.name || el.value === "") continue;
    if (el.name === "since" || el.name === "until") f[el.name] = el.value + "T00:00:00Z";
    else f[el.name] = el.value;
  }
  return f;
}

function diffHtml(ops) {
  return ops.map(([op, text]) => op === "added" ? `<ins>${esc(text)}</ins>` : op === "removed" ? `<del>${esc(text)}</del>` : esc(text)).join("");
}

async function loadPairs() {
  $("#filter-error").textContent = "";
  try {
    const page = await api("/api/v1/pairs" + query({...state.pairFilter, page: state.pairPage, size: state.pairSize}));
    state.pairTotal = page.total;
    $("#pairs-count").textContent = `${page.total} pairs match`;
    $("#pairs-count").dataset.total = page.total;
    $("#pairs-page").textContent = `page ${page.page + 1} of ${Math.max(1, Math.ceil(page.total / page.size))}`;
    $("#pairs tbody").innerHTML = page.rows.map(p => `
      <tr class="${p.is_active ? "" : "inactive"}" data-pair="${esc(p.pair_id)}">
        <td>${esc(p.user_id)}</td><td>${esc(p.feedback_type)}</td>
        <td title="similarity ${num(p.similarity, 2)}">${num(p.quality_score)}${p.near_identical ? ' <span class="badge">near-identical</span>' : ""}</td>
        <td>${num(p.confidence_score, 2)}</td><td>${num(p.training_weight, 2)}</td>
        <td><span class="badge ${p.is_active ? "active" : "inactive"}">${p.is_active ? "active" : "inactive"}</span></td>
        <td>${when(p.created_at)}</td>
        <td class="diff"><div class="prompt">${esc(p.prompt)}</div><div>${diffHtml(p.diff)}</div></td>
        <td><a href="#trace/${esc(p.feedback_event_id)}">trace</a></td>
      </tr>`).join("");
  } catch (e) {
    $("#filter-error").textContent = e.message;
  }
}

async function download(format) {
  try {
    const r = await api("/api/v1/pairs/export" + query({...state.pairFilter, format}), {raw: true});
    const blob = await r.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `pairs.${format}`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    flash(`exported ${format} (${blob.size} bytes)`);
  } catch (e) { flash("export: " + e.message, true); }
}

async function bulk(action) {
  const n = state.pairTotal;
  const weight = Number($("#bulk-weight").value);
  const what = action === "deactivate" ? `Deactivate all ${n} matching pairs` : `Set the weight of all ${n} matching pairs to ${weight}`;
  if (!confirm(what + "?")) return;
  const result = await adminAction(what, () => api("/api/v1/pairs/bulk",
    {json: {filter: state.pairFilter, action, weight: action === "reweight" ? weight : null, expect: n}}));
  // The commands become events and then rows: follow the projection until it shows them.
  const before = Date.now();
  const poll = async () => { await loadPairs(); if (Date.now() - before < 15000) setTimeout(poll, 700); };
  setTimeout(poll, 400);
  return result;
}

function setupPairs() {
  $("#pair-filter").onsubmit = ev => { ev.preventDefault(); state.pairFilter = readFilter(); state.pairPage = 0; loadPairs(); };
  $("#pair-filter").onreset = () => { state.pairFilter = {}; state.pairPage = 0; setTimeout(loadPairs, 0); };
  $("#pairs-prev").onclick = () => { if (state.pairPage > 0) { state.pairPage--; loadPairs(); } };
  $("#pairs-next").onclick = () => { if ((state.pairPage + 1) * state.pairSize < state.pairTotal) { state.pairPage++; loadPairs(); } };
  $("#export-jsonl").onclick = () => download("jsonl");
  $("#export-parquet").onclick = () => download("parquet");
  $("#bulk-deactivate").onclick = () => bulk("deactivate").catch(() => {});
  $("#bulk-reweight").onclick = () => bulk("reweight").catch(() => {});
  $$(".subtabs button").forEach(b => b.onclick = () => {
    $$(".subtabs button").forEach(o => o.classList.toggle("on", o === b));
    $$("#tab-pairs .sub").forEach(s => { s.hidden = s.id !== b.dataset.sub; });
    if (b.dataset.sub === "pairs-rejected") loadRejected();
    if (b.dataset.sub === "pairs-dead") loadDead();
  });
  $("#rejected-reason").onchange = loadRejected;
  $("#rejected-user").onchange = loadRejected;
  $("#dead-reason").onchange = loadDead;
}

function fillReasons(select, reasons) {
  const current = select.value;
  select.innerHTML = '<option value="">any</option>' + reasons.map(r => `<option value="${esc(r.reason)}">${esc(r.reason)} (${r.count})</option>`).join("");
  select.value = current;
}

async function loadRejected() {
  const page = await api("/api/v1/rejected" + query({reason: $("#rejected-reason").value, user: $("#rejected-user").value}));
  fillReasons($("#rejected-reason"), page.reasons);
  $("#rejected-count").textContent = `${page.total} rejected`;
  $("#rejected tbody").innerHTML = page.rows.map(r => `
    <tr><td>${esc(r.user_id)}</td><td>${esc(r.feedback_type)}</td>
      <td>${r.reason_codes.map((c, i) => `<div><span class="badge">${esc(c)}</span> ${esc(r.reason_details[i] || "")}</div>`).join("")}</td>
      <td class="diff"><div class="prompt">${esc(r.prompt)}</div><div>${esc(r.chosen_response)}</div></td>
      <td>${when(r.created_at)}</td><td><a href="#trace/${esc(r.feedback_event_id)}">trace</a></td></tr>`).join("");
}

async function loadDead() {
  const page = await api("/api/v1/dead-letters" + query({reason: $("#dead-reason").value}));
  fillReasons($("#dead-reason"), page.reasons);
  $("#dead-count").textContent = `${page.total} dead letters`;
  $("#dead tbody").innerHTML = page.rows.map(d => `
    <tr><td><span class="badge">${esc(d.reason)}</span></td><td>${esc(d.stage)}</td><td>${esc(d.error)}</td>
      <td class="mono">${esc(d.source_topic)}[${d.source_partition}]@${d.source_offset}</td>
      <td class="mono">${esc(String(d.payload_preview).slice(0, 160))}</td><td>${when(d.failed_at)}</td></tr>`).join("");
}

// -- training -------------------------------------------------------------------------------------

async function loadTraining() {
  const [users, jobs] = await Promise.all([api("/api/v1/users"), api("/api/v1/jobs")]);
  $("#users tbody").innerHTML = users.rows.map(u => `
    <tr><td>${esc(u.user_id)}</td><td>${u.pairs}</td><td>${u.active_pairs}</td>
      <td><progress max="${u.threshold}" value="${Math.min(u.new_pairs, u.threshold)}"></progress> ${esc(u.progress)}</td>
      <td>${u.generation || 0}</td><td><button type="button" class="pick-user" data-user="${esc(u.user_id)}">Train…</button></td></tr>`).join("");
  $$(".pick-user").forEach(b => b.onclick = () => { $("#train-form").elements.user.value = b.dataset.user; });
  renderJobs(jobs.rows);
}

function renderJobs(rows) {
  $("#jobs tbody").innerHTML = rows.map(j => `
    <tr class="clickable ${state.job === j.request_id ? "selected" : ""}" data-job="${esc(j.request_id)}">
      <td class="mono">${short(j.request_id)}</td><td>${esc(j.user_id)}</td><td>${j.generation ?? "–"}</td>
      <td><span class="badge ${esc(j.status)}">${esc(j.status)}</span></td><td>${j.total_steps ? j.step + "/" + j.total_steps : "–"}</td>
      <td>${num(j.loss)}</td><td>${j.adapter_version ? "v" + j.adapter_version : "–"}</td><td>${when(j.updated_at)}</td></tr>`).join("");
  $$("#jobs tr[data-job]").forEach(tr => tr.onclick = () => { location.hash = "training/" + tr.dataset.job; });
}

function pointKey(p) { return `${p.attempt}:${p.step}:${p.loss === null || p.loss === undefined ? "eval" : "train"}`; }

function addPoint(p) {
  const key = pointKey(p);
  if (state.seenPoints.has(key)) return false;
  state.seenPoints.add(key);
  state.jobPoints.push(p);
  return true;
}

function drawJob() {
  const pts = state.jobPoints.slice().sort((a, b) => a.attempt - b.attempt || a.step - b.step);
  const series = (field, name, color, marker) => ({name, color, marker,
    points: pts.filter(p => p[field] !== null && p[field] !== undefined).map(p => [p.step, p[field]])});
  lineChart($("#chart-loss"), [series("loss", "train loss", "#2457c5"), series("eval_loss", "held-out loss", "#d92d20", "square")]);
  lineChart($("#chart-reward"), [series("reward_accuracy", "reward accuracy", "#067647"),
                                 series("reward_margin", "reward margin", "#b54708", "square")], {separate: true});
  $("#job-points").textContent = `${pts.length} points`;
  $("#job-points").dataset.count = pts.length;
  const last = pts[pts.length - 1];
  if (last && last.eta_s !== null && last.eta_s !== undefined) $("#job-eta").textContent = `ETA ${Math.round(last.eta_s)} s`;
}

async function openJob(requestId) {
  state.job = requestId;
  state.jobPoints = [];
  state.seenPoints = new Set();
  $("#job-view").hidden = false;
  $("#job-id").textContent = short(requestId);
  $("#job-eta").textContent = "";
  try {
    const [job, progress] = await Promise.all([api("/api/v1/jobs/" + requestId), api(`/api/v1/jobs/${requestId}/progress`)]);
    if (state.job !== requestId) return;
    progress.points.forEach(addPoint);
    drawJob();
    renderJobHead(job);
  } catch (e) {
    if (e.status !== 404) flash("job: " + e.message, true);
    $("#job-status").textContent = "requested";
    drawJob();
  }
}

function renderJobHead(job) {
  $("#job-status").textContent = job.status;
  $("#job-status").className = "badge " + job.status;
  $("#job-cancel").hidden = ["succeeded", "failed", "cancelled", "rejected"].includes(job.status);
  const g = job.gate || {};
  const metric = (m, k) => (m && m[k] !== undefined) ? num(m[k]) : "–";
  const keys = Array.from(new Set([...Object.keys(g.metrics || {}), ...Object.keys(g.baseline_metrics || {})])).filter(k => k.startsWith("heldout") || k.startsWith("control")).sort();
  $("#gate").innerHTML = `<h3>The gate</h3>
    <p><span class="badge ${g.published ? "succeeded" : esc(job.status)}">${g.published ? "published" : esc(job.status)}</span>
      ${g.reason ? esc(g.reason) : ""} ${(g.reasons || []).map(r => `<div>${esc(r)}</div>`).join("")}
      ${job.adapter_version ? `adapter <a href="#models/${encodeURIComponent(job.user_id)}">v${job.adapter_version}</a>` : ""}
      ${Object.keys(job.dpo_overrides || {}).length ? `overrides <code>${esc(JSON.stringify(job.dpo_overrides))}</code>` : ""}</p>
    ${keys.length ? `<table class="grid"><thead><tr><th>Held-out metric</th><th>New</th><th>Baseline${g.baseline ? " (" + esc(g.baseline) + ")" : ""}</th></tr></thead><tbody>
      ${keys.map(k => `<tr><td>${esc(k)}</td><td>${metric(g.metrics, k)}</td><td>${metric(g.baseline_metrics, k)}</td></tr>`).join("")}</tbody></table>` : ""}
    ${(g.control || []).length ? `<h3>Control answers</h3><table class="grid"><thead><tr><th>Prompt</th><th>Base</th><th>Adapter</th><th>Kept</th></tr></thead><tbody>
      ${g.control.map(c => `<tr><td>${esc(c.prompt)}</td><td>${esc(c.before)}</td><td>${esc(c.after)}</td><td>${c.kept ? "yes" : "<b>no</b>"}</td></tr>`).join("")}</tbody></table>` : ""}`;
}

function onLive(item) {
  if (item.type === "TrainingRequested" && state.awaitingUser === item.user) {
    state.awaitingUser = null;
    location.hash = "training/" + item.request_id;
  }
  if (state.job === item.request_id) {
    if (item.type === "TrainingProgressed") {
      if (addPoint(item)) {
        drawJob();
        state.drawn.push({event_id: item.event_id, step: item.step, at: Date.now()});
      }
      $("#job-status").textContent = "running";
      $("#job-status").className = "badge running";
    } else if (["TrainingSucceeded", "TrainingFailed", "TrainingCancelled", "TrainingRejected"].includes(item.type)) {
      setTimeout(() => api("/api/v1/jobs/" + item.request_id).then(renderJobHead).catch(() => {}), 1200);
    } else {
      $("#job-status").textContent = item.type.replace("Training", "").toLowerCase();
    }
  }
  if (!$("#tab-training").hidden) {
    clearTimeout(onLive.timer);
    onLive.timer = setTimeout(() => api("/api/v1/jobs").then(j => renderJobs(j.rows)).catch(() => {}), 800);
  }
}

function setupLive() {
  if (!state.me.live) return;
  const source = new EventSource("/api/v1/live/training");
  for (const type of ["TrainingRequested", "TrainingQueued", "TrainingStarted", "TrainingProgressed", "TrainingSucceeded",
                      "TrainingFailed", "TrainingCancelled", "TrainingRejected"]) {
    source.addEventListener(type, ev => onLive(JSON.parse(ev.data)));
  }
  source.onopen = () => { document.body.dataset.live = "open"; };
  source.onerror = () => { document.body.dataset.live = "retrying"; };
}

function setupTraining() {
  $("#train-form").onsubmit = async ev => {
    ev.preventDefault();
    const form = ev.target;
    $$(".field-error", form).forEach(e => { e.textContent = ""; });
    const overrides = {};
    const problems = {};
    for (const key of ["learning_rate", "num_train_epochs", "per_device_train_batch_size", "beta"]) {
      const raw = form.elements[key].value.trim();
      if (raw === "") continue;
      const v = Number(raw);
      if (Number.isNaN(v)) problems[key] = `${key}: "${raw}" is not a number`; else overrides[key] = v;
    }
    const extraKey = form.elements.extra_key.value.trim();
    if (extraKey) {
      const v = Number(form.elements.extra_value.value.trim());
      if (Number.isNaN(v)) problems.extra = "the value is not a number"; else overrides[extraKey] = v;
    }
    const show = errs => {
      for (const [k, msg] of Object.entries(errs)) {
        const slot = $(`.field-error[data-for="${k}"]`, form) || (k === extraKey ? $('.field-error[data-for="extra"]', form) : $('.field-error[data-for="_"]', form));
        slot.textContent = msg;
      }
    };
    if (Object.keys(problems).length) { show(problems); return; }
    const user = form.elements.user.value.trim();
    try {
      state.awaitingUser = user;
      await adminAction(`training for ${user}`, () => api("/api/v1/training", {json: {user, overrides}}));
    } catch (e) {
      state.awaitingUser = null;
      if (e.body && e.body.fields) show(e.body.fields);
    }
  };
  $("#job-cancel").onclick = () => adminAction("cancel", () => api(`/api/v1/jobs/${state.job}/cancel`, {method: "POST"})).catch(() => {});
}

// -- models ---------------------------------------------------------------------------------------

async function loadModels() {
  const users = await api("/api/v1/models");
  $("#model-users tbody").innerHTML = users.rows.map(u => `
    <tr class="clickable ${state.modelUser === u.user_id ? "selected" : ""}" data-user="${esc(u.user_id)}"><td>${esc(u.user_id)}</td>
      <td>v${u.latest_version}</td><td>${u.versions}</td><td>${when(u.last_published)}</td></tr>`).join("");
  $$("#model-users tr[data-user]").forEach(tr => tr.onclick = () => { location.hash = "models/" + encodeURIComponent(tr.dataset.user); });
  if (state.me.node) {
    try {
      const nodes = await api("/api/v1/nodes");
      $("#nodes").innerHTML = nodes.nodes.map(n => `<h3>${esc(n.node_id)} <small>${esc(n.where)}</small></h3>
        ${n.error ? `<p class="field-error">${esc(n.error)}</p>` : ""}
        <table class="grid"><thead><tr><th>User</th><th>Version</th><th>Bytes</th><th>In use</th><th>Active</th></tr></thead><tbody>
        ${n.adapters.map(a => `<tr><td>${esc(a.user)}</td><td>v${a.version}</td><td>${a.bytes}</td><td>${a.in_use}</td><td>${a.active ? "yes" : "no"}</td></tr>`).join("") || '<tr><td colspan="5">no adapter loaded</td></tr>'}
        </tbody></table>`).join("");
    } catch (e) { $("#nodes").textContent = e.message; }
  } else {
    $("#nodes").textContent = "no inference node in this process (set console.node_urls)";
  }
}

function pairLinks(ids, label) {
  if (!ids.length) return "";
  return `<details><summary>${ids.length} ${label}</summary>${ids.map(id => `<a class="mono" href="#trace/${esc(id)}">${short(id)}</a>`).join(" ")}</details>`;
}

async function openModel(user) {
  state.modelUser = user;
  $("#model-detail").hidden = false;
  $("#model-user").textContent = user;
  $("#compare").innerHTML = "";
  let d;
  try { d = await api(`/api/v1/models/${encodeURIComponent(user)}/detail`); } catch (e) { flash(e.message, true); return; }
  const st = d.state && d.state.state;
  $("#model-state").innerHTML = st ? `Registry: <span class="badge ${st.active ? "active" : "inactive"}">${st.active ? "active" : "deactivated"}</span>
    latest v${st.latest ? st.latest.version : "–"}, previous ${st.previous ? "v" + st.previous.version : "–"},
    ${st.pinned_version ? `pinned to v${st.pinned_version}` : "not pinned"}, A/B share of latest ${st.new_share ?? "default"}
    ${st.revoked ? '<span class="badge inactive">revoked</span>' : ""}` : "Registry state: not known here";
  $("#model-state").dataset.pinned = st && st.pinned_version ? st.pinned_version : "";
  $("#versions tbody").innerHTML = d.versions.map(v => `
    <tr><td>v${v.version}${v.revoked ? ' <span class="badge inactive">revoked</span>' : ""}</td><td>${when(v.published_at)}</td>
      <td>${num(v.metrics.heldout_policy_accuracy ?? v.metrics.heldout_pref_accuracy)}</td>
      <td>${num(v.baseline_metrics.heldout_policy_accuracy ?? v.baseline_metrics.heldout_pref_accuracy)}</td>
      <td class="mono">job <a href="#training/${esc(v.request_id)}">${short(v.request_id)}</a> · dataset ${esc(String(v.dataset_sha256).slice(0, 12))}
        · config ${esc(String(v.config_sha256).slice(0, 12))}${v.parent_version ? " · parent v" + v.parent_version : ""}</td>
      <td>${pairLinks(v.train_pair_ids, "trained")}${pairLinks(v.heldout_pair_ids, "held out")}</td></tr>`).join("");
  $("#rates tbody").innerHTML = d.correction_rates.map(r => `<tr><td>${esc(r.arm)}</td><td>${r.adapter_version ? "v" + r.adapter_version : "base"}</td>
    <td>${r.answers}</td><td>${r.corrected}</td><td>${num(r.correction_rate)}</td></tr>`).join("") || '<tr><td colspan="5">no answers logged yet</td></tr>';
}

function setupModels() {
  const act = (what, path, body) => adminAction(what, () => api(`/api/v1/models/${encodeURIComponent(state.modelUser)}/${path}`, {json: body || {}}))
    .then(() => setTimeout(() => openModel(state.modelUser), 1500)).catch(() => {});
  $("#model-activate").onclick = () => act("activate", "activate");
  $("#model-rollback").onclick = () => act("roll back", "rollback");
  $("#model-deactivate").onclick = () => act("deactivate", "deactivate");
  $("#model-share-set").onclick = () => act("A/B share", "activate", {new_share: Number($("#model-share").value)});
  $("#compare-form").onsubmit = async ev => {
    ev.preventDefault();
    $("#compare").innerHTML = "<div>answering…</div>";
    try {
      const c = await api("/api/v1/compare", {json: {user: state.modelUser, prompt: $("#compare-prompt").value}});
      const cell = (title, a) => `<div data-arm="${title}"><h4>${title}${a && a.version ? " (v" + a.version + ")" : ""}</h4>
        ${a === null ? "<em>none</em>" : a.error ? `<span class="field-error">${esc(a.error)}</span>` : `<p class="answer">${esc(a.text)}</p><small>${num(a.latency_ms, 0)} ms</small>`}</div>`;
      $("#compare").innerHTML = cell("base", c.base) + cell("previous", c.previous) + cell("current", c.current);
    } catch (e) { $("#compare").innerHTML = `<div class="field-error">${esc(e.message)}</div>`; }
  };
}

// -- trace ----------------------------------------------------------------------------------------

const TRACE_FIELDS = {
  feedback: ["feedback_event_id", "user_id", "feedback_type", "at"],
  pair: ["pair_id", "quality_score", "confidence_score", "is_active", "training_weight", "near_identical", "created_at"],
  rejected: ["feedback_event_id", "quality_score", "created_at"],
  threshold: ["request_id", "generation", "trigger", "triggered_at", "dataset_rows", "note"],
  job: ["request_id", "status", "attempt", "loss", "cause", "adapter_version", "updated_at"],
  adapter: ["version", "uri", "published_at", "trained_on", "held_out", "train_pairs", "heldout_pairs"],
  answer: ["answer_id", "user_id", "node_id", "arm", "adapter_version", "fallback_reason", "latency_ms", "served_at"],
  answer_feedback: ["feedback_event_id", "feedback_type", "received_at", "outcome"],
  dead_letter: ["reason", "stage", "error", "source_topic", "source_offset", "payload_preview"],
};

function kv(step) {
  const keys = TRACE_FIELDS[step.step] || Object.keys(step);
  return `<dl class="kv">${keys.filter(k => step[k] !== undefined && step[k] !== null && step[k] !== "")
    .map(k => `<dt>${esc(k)}</dt><dd>${k.endsWith("request_id") && step.step !== "threshold" ? `<a href="#training/${esc(step[k])}">${esc(step[k])}</a>` : esc(typeof step[k] === "object" ? JSON.stringify(step[k]) : step[k])}</dd>`).join("")}</dl>`;
}

function traceStep(s) {
  let extra = "";
  if (s.step === "pair") extra = `<div class="diff"><div class="prompt">${esc(s.prompt)}</div><div>${diffHtml(s.diff)}</div></div>`;
  if (s.step === "rejected") extra = s.reasons.map(r => `<div><span class="badge">${esc(r.code)}</span> ${esc(r.detail)}</div>`).join("");
  if (s.step === "answers") extra = `<p>${s.total} answers served with v${s.adapter_version}</p>` + s.rows.map(a =>
    `<div class="mono"><a href="#trace/${esc(a.answer_id)}">${short(a.answer_id)}</a> ${esc(a.arm)} on ${esc(a.node_id)} at ${when(a.served_at)}</div>`).join("");
  if (s.step === "answer_feedback") extra = `<a href="#trace/${esc(s.feedback_event_id)}">trace this feedback</a>`;
  if (s.step === "adapter") extra = `<a href="#models/${encodeURIComponent(s.user_id || "")}">models tab</a>`;
  const cls = s.pending ? "pending" : s.step;
  return `<li class="${esc(cls)}" data-step="${esc(s.step)}"><h4>${esc(s.step.replace("_", " "))}</h4>${s.step === "answers" ? "" : kv(s)}${extra}</li>`;
}

async function runTrace() {
  $("#trace-error").textContent = "";
  $("#trace").innerHTML = "";
  try {
    const t = await api(`/api/v1/trace/${encodeURIComponent($("#trace-id").value.trim())}` + query({user: $("#trace-user").value.trim()}));
    $("#trace").dataset.kind = t.kind;
    $("#trace").innerHTML = t.steps.map(traceStep).join("");
  } catch (e) { $("#trace-error").textContent = e.message; }
}

function setupTrace() {
  $("#trace-form").onsubmit = ev => {
    ev.preventDefault();
    const target = "trace/" + encodeURIComponent($("#trace-id").value.trim());
    if (location.hash.slice(1) === target) runTrace(); else location.hash = target;
  };
}

// -- start ----------------------------------------------------------------------------------------

(async function start() {
  setupAccess();
  setupPairs();
  setupTraining();
  setupModels();
  setupTrace();
  try { await refreshAccess(); } catch (e) { flash("the console API cannot be reached: " + e.message, true); return; }
  setupLive();
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "true";
})();
