// The Packet captures page: everything goes through the public PCAPs API with the credential the
// user signed in with (kept in sessionStorage, so it is gone when the tab closes).
"use strict";

const $ = (sel) => document.querySelector(sel);
const BASE = "/client/v4";
const KEY = "pcapd.session";
const STATUS = {
  success: ["Complete", "complete"], complete: ["Complete", "complete"], failed: ["Failure", "failure"],
  pending: ["In progress", "progress"], running: ["In progress", "progress"], unknown: ["In progress", "progress"],
  conversion_pending: ["In progress", "progress"], conversion_running: ["In progress", "progress"],
};
const LIMITS = { time_limit: [1, 300], packet_limit: [1, 10000], byte_limit: [1, 1000000000],
  source_port: [0, 65535], destination_port: [0, 65535], protocol: [0, 255] };

let session = JSON.parse(sessionStorage.getItem(KEY) || "null");
let refreshTimer = null;
let captures = [];

function headers(cred) {
  const h = { "Content-Type": "application/json" };
  if (cred.mode === "token") h["Authorization"] = "Bearer " + cred.token;
  else { h["X-Auth-Email"] = cred.email; h["X-Auth-Key"] = cred.key; }
  return h;
}

async function api(method, path, body, cred = session && session.cred) {
  let res;
  try {
    res = await fetch(BASE + path, { method, headers: headers(cred), body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { status: 0, ok: false, message: "The appliance did not answer (" + e.message + ")." };
  }
  if (res.status === 204) return { status: 204, ok: true };
  let json = null;
  try { json = await res.json(); } catch (_) { /* not JSON */ }
  const message = json && json.errors && json.errors.length ? json.errors.map((e) => e.message).join("; ") : res.statusText;
  return { status: res.status, ok: res.ok && json && json.success, result: json && json.result, message };
}

function acct() { return "/accounts/" + session.account; }

function show(el, on) { el.hidden = !on; }
function text(el, t) { el.textContent = t; show(el, !!t); }

// ---- sign in / out -------------------------------------------------------------------------
function modeChanged() {
  const mode = document.querySelector('input[name="mode"]:checked').value;
  document.querySelectorAll("[data-mode]").forEach((el) => show(el, el.dataset.mode === mode));
}

async function signIn(ev) {
  ev.preventDefault();
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const cred = mode === "token" ? { mode, token: $("#token").value.trim() }
    : { mode, email: $("#email").value.trim(), key: $("#apikey").value.trim() };
  if ((mode === "token" && !cred.token) || (mode === "key" && (!cred.email || !cred.key))) {
    text($("#signin-error"), mode === "token" ? "Enter your API token." : "Enter your email and API key.");
    return;
  }
  $("#signin-submit").disabled = true;
  const r = await api("GET", "/accounts", undefined, cred);
  $("#signin-submit").disabled = false;
  if (!r.ok) {
    text($("#signin-error"), "Sign-in failed: " + (r.status === 401 || r.status === 403
      ? "this appliance does not accept this credential (" + r.message + ")." : r.message));
    return;
  }
  if (!r.result.length) { text($("#signin-error"), "Sign-in failed: this credential has no account on this appliance."); return; }
  session = { cred, accounts: r.result, account: r.result[0].id };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  text($("#signin-error"), "");
  enterApp();
}

function signOut() {
  sessionStorage.removeItem(KEY);
  session = null;
  clearTimeout(refreshTimer);
  show($("#app-view"), false); show($("#start-view"), false); show($("#session"), false);
  show($("#signin-view"), true);
  $("#token").value = ""; $("#apikey").value = "";
  $("#token").focus();
}

function enterApp() {
  show($("#signin-view"), false); show($("#app-view"), true); show($("#session"), true);
  const sel = $("#account");
  sel.innerHTML = "";
  for (const a of session.accounts) {
    const o = document.createElement("option");
    o.value = a.id; o.textContent = (a.name ? a.name + " · " : "") + a.id;
    sel.appendChild(o);
  }
  sel.value = session.account;
  show(sel, session.accounts.length > 1);
  const only = session.accounts.find((a) => a.id === session.account);
  text($("#account-name"), session.accounts.length > 1 ? "" : (only.name ? only.name + " · " : "") + only.id);
  selectTab("captures");
  loadCaptures();
  loadBuckets();
}

// ---- tabs --------------------------------------------------------------------------------------
function selectTab(name) {
  for (const t of ["captures", "buckets"]) {
    const tab = $("#tab-" + t), on = t === name;
    tab.setAttribute("aria-selected", on); tab.tabIndex = on ? 0 : -1;
    show($("#panel-" + t), on);
  }
}

function tabKeys(ev) {
  if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
    const next = ev.target.id === "tab-captures" ? "buckets" : "captures";
    selectTab(next); $("#tab-" + next).focus();
  }
}

// ---- captures ------------------------------------------------------------------------------------
function fmtTime(s) {
  const d = new Date(s);
  if (isNaN(d)) return s || "";
  return d.toLocaleString() + " (" + d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") + ")";
}

function filterSummary(f) {
  const parts = [];
  if (f.source_address) parts.push("src " + f.source_address);
  if (f.source_port !== undefined) parts.push("sport " + f.source_port);
  if (f.destination_address) parts.push("dst " + f.destination_address);
  if (f.destination_port !== undefined) parts.push("dport " + f.destination_port);
  if (f.protocol !== undefined) parts.push("proto " + f.protocol);
  return parts.length ? parts.join(", ") : "all packets";
}

function limitsSummary(c) {
  const p = [c.time_limit + " s"];
  if (c.packet_limit !== undefined) p.push(c.packet_limit + " packets");
  if (c.byte_limit !== undefined) p.push(c.byte_limit + " bytes");
  if (c.type === "full") p.push(c.colo_name + " → " + c.destination_conf);
  return p.join(", ");
}

// Fleet mode: the nodes a full capture ran on, each with its part's state and packets.
function nodesList(nodes) {
  const ul = document.createElement("ul");
  ul.className = "nodes";
  ul.setAttribute("aria-label", "Nodes");
  for (const n of nodes) {
    const li = document.createElement("li");
    li.dataset.node = n.node;
    li.textContent = n.node + " · " + n.status + " · " + n.packets_captured + " packets";
    if (n.error_message) li.title = n.error_message;
    ul.appendChild(li);
  }
  return ul;
}

function cell(tr, label, content) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  tr.appendChild(td);
  return td;
}

function renderCaptures() {
  const body = $("#captures tbody");
  body.innerHTML = "";
  for (const c of captures) {
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    cell(tr, "Type", c.type === "full" ? "Full" : "Simple");
    const [label, cls] = STATUS[c.status] || ["In progress", "progress"];
    const badge = document.createElement("span");
    badge.className = "badge " + cls; badge.textContent = label; badge.title = "API status: " + c.status;
    badge.tabIndex = 0; badge.setAttribute("aria-label", label + " (API status: " + c.status + ")");
    cell(tr, "Status", badge);
    cell(tr, "Submitted", fmtTime(c.submitted)).classList.add("small");
    const summary = filterSummary(c.filter_v1 || {});
    cell(tr, "Filter", c.filter_expression
      ? (summary === "all packets" ? "" : summary + " and ") + "\u201c" + c.filter_expression + "\u201d"
      : summary);
    const limits = cell(tr, "Limits", limitsSummary(c));
    limits.classList.add("small");
    if (c.nodes && c.nodes.length) limits.appendChild(nodesList(c.nodes));
    cell(tr, "Packets", c.packets_captured === undefined ? "–" : String(c.packets_captured));
    const actions = document.createElement("div");
    if (c.type === "simple" && c.status === "success") {
      const b = document.createElement("button");
      b.type = "button"; b.className = "secondary"; b.textContent = "Download";
      b.setAttribute("aria-label", "Download capture " + c.id);
      b.onclick = () => download(c, b);
      actions.appendChild(b);
    }
    if (c.type === "full" && (c.status === "running" || c.status === "pending")) {
      const b = document.createElement("button");
      b.type = "button"; b.className = "danger"; b.textContent = "Stop";
      b.setAttribute("aria-label", "Stop capture " + c.id);
      b.onclick = () => stopCapture(c, b);
      actions.appendChild(b);
    }
    cell(tr, "Actions", actions);
    body.appendChild(tr);
    if (c.error_message) {
      // A failure, or (fleet mode) a note on a capture that succeeded without some node.
      const er = document.createElement("tr");
      const td = document.createElement("td");
      const failed = c.status === "failed";
      td.colSpan = 7; td.className = failed ? "error-row" : "note-row";
      td.textContent = (failed ? "Failure: " : "Note: ") + c.error_message;
      er.appendChild(td); body.appendChild(er);
    }
  }
  show($("#captures"), captures.length > 0);
  show($("#captures-empty"), captures.length === 0);
}

async function loadCaptures(quiet) {
  clearTimeout(refreshTimer);
  if (!session) return;
  if (!quiet) text($("#captures-status"), "Loading captures…");
  const r = await api("GET", acct() + "/pcaps");
  if (!r.ok) {
    text($("#captures-error"), "Could not load the captures: " + r.message);
    text($("#captures-status"), "");
    refreshTimer = setTimeout(() => loadCaptures(true), 5000);
    return;
  }
  text($("#captures-error"), "");
  captures = r.result;
  renderCaptures();
  const busy = captures.some((c) => (STATUS[c.status] || [, "progress"])[1] === "progress");
  text($("#captures-status"), busy ? "Refreshing while captures are in progress…" : "");
  if (busy) refreshTimer = setTimeout(() => loadCaptures(true), 1500);
}

async function download(c, button) {
  button.disabled = true;
  try {
    const res = await fetch(BASE + acct() + "/pcaps/" + c.id + "/download", { headers: headers(session.cred) });
    if (!res.ok) {
      let m = res.statusText;
      try { const j = await res.json(); m = j.errors.map((e) => e.message).join("; "); } catch (_) { /* keep */ }
      text($("#captures-error"), "Download failed: " + m);
      return;
    }
    const blob = await res.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = "pcap_" + c.id + ".pcap";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } finally {
    button.disabled = false;
  }
}

async function stopCapture(c, button) {
  if (!confirm("Stop capture " + c.id + "? The packets captured so far are uploaded to " + c.destination_conf + ".")) return;
  button.disabled = true;
  const r = await api("PUT", acct() + "/pcaps/" + c.id + "/stop");
  if (!r.ok) text($("#captures-error"), "Stop failed: " + r.message);
  loadCaptures(true);
}

// ---- start a capture ------------------------------------------------------------------------------
function captureType() { return document.querySelector('input[name="type"]:checked').value; }

function openStart() {
  show($("#app-view"), false); show($("#start-view"), true);
  show($("#step-1"), true); show($("#step-2"), false);
  clearErrors();
  document.querySelector('input[name="type"]:checked').focus();
}

function closeStart() {
  show($("#start-view"), false); show($("#app-view"), true);
  $("#start-capture").focus();
}

function toStep2() {
  const full = captureType() === "full";
  document.querySelectorAll(".full-only").forEach((el) => show(el, full));
  document.querySelectorAll(".simple-only").forEach((el) => show(el, !full));
  $("#step-2-title").textContent = "Step 2 of 2: fill out the fields of a " + (full ? "full" : "simple") + " capture";
  $("#tl-max").textContent = full ? "300, or the appliance's maximum" : "300";
  fieldInput("time_limit").max = full ? "86400" : "300";
  show($("#step-1"), false); show($("#step-2"), true);
  $("#f-time_limit").focus();
}

function fieldInput(name) { return $("#f-" + name); }

function setFieldError(name, message) {
  const input = fieldInput(name);
  if (!input) return false;
  const p = input.parentElement.querySelector(".field-error");
  p.id = "err-" + name;
  text(p, message);
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", p.id);
  return true;
}

function clearErrors() {
  document.querySelectorAll("#start-form .field-error").forEach((p) => text(p, ""));
  document.querySelectorAll("#start-form input").forEach((i) => { i.removeAttribute("aria-invalid"); i.removeAttribute("aria-describedby"); });
  text($("#start-error"), "");
}

function buildRequest() {
  const full = captureType() === "full";
  const errors = {};
  const body = { system: "magic-transit", type: full ? "full" : "simple" };
  const filter = {};
  const num = (name, required) => {
    const raw = fieldInput(name).value.trim();
    if (raw === "") { if (required) errors[name] = "Required."; return undefined; }
    const n = Number(raw);
    // A full capture's time limit is the appliance's to check (its maximum is configurable).
    const [lo, hi] = name === "time_limit" && full ? [1, 86400] : LIMITS[name];
    if (!Number.isInteger(n) || n < lo || n > hi) { errors[name] = "Must be a whole number from " + lo + " to " + hi + "."; return undefined; }
    return n;
  };
  body.time_limit = num("time_limit", true);
  const pl = num("packet_limit", !full);
  if (pl !== undefined) body.packet_limit = pl;
  if (full) {
    const bl = num("byte_limit", false);
    if (bl !== undefined) body.byte_limit = bl;
    for (const n of ["colo_name", "destination_conf"]) {
      const v = fieldInput(n).value.trim();
      if (!v) errors[n] = "Required."; else body[n] = v;
    }
  } else {
    const t = fieldInput("offset_time").value;
    if (t) {
      const d = new Date(t);
      if (isNaN(d)) errors.offset_time = "Not a valid time.";
      else body.offset_time = d.toISOString();
    }
  }
  for (const n of ["source_address", "destination_address"]) {
    const v = fieldInput(n).value.trim();
    if (v) filter[n] = v;
  }
  for (const n of ["source_port", "destination_port", "protocol"]) {
    const v = num(n, false);
    if (v !== undefined) filter[n] = v;
  }
  if (Object.keys(filter).length) body.filter_v1 = filter;
  const expression = fieldInput("filter_expression").value.trim();
  if (expression) body.filter_expression = expression;
  return { body, errors };
}

async function submitStart(ev) {
  ev.preventDefault();
  clearErrors();
  const { body, errors } = buildRequest();
  const names = Object.keys(errors);
  if (names.length) {
    for (const n of names) setFieldError(n, errors[n]);
    fieldInput(names[0]).focus();
    return;
  }
  $("#start-submit").disabled = true;
  const r = await api("POST", acct() + "/pcaps", body);
  $("#start-submit").disabled = false;
  if (!r.ok) {
    // Server errors name their field ("filter_v1.source_port: ..."): show them beside it.
    const m = /^(?:filter_v1\.)?([a-z_]+): (.*)$/.exec(r.message || "");
    if (m && setFieldError(m[1], m[2])) fieldInput(m[1]).focus();
    else text($("#start-error"), "The capture was not started: " + r.message);
    return;
  }
  closeStart();
  selectTab("captures");
  loadCaptures();
}

// ---- buckets --------------------------------------------------------------------------------------
async function loadBuckets() {
  if (!session) return;
  text($("#buckets-status"), "Loading buckets…");
  const r = await api("GET", acct() + "/pcaps/ownership");
  text($("#buckets-status"), "");
  if (!r.ok) { text($("#buckets-error"), "Could not load the buckets: " + r.message); return; }
  text($("#buckets-error"), "");
  renderBuckets(r.result);
}

function renderBuckets(list) {
  const ul = $("#buckets");
  ul.innerHTML = "";
  const dl = $("#validated-buckets");
  dl.innerHTML = "";
  for (const o of list) {
    if (o.status === "success") { const opt = document.createElement("option"); opt.value = o.destination_conf; dl.appendChild(opt); }
    const li = document.createElement("li");
    li.dataset.id = o.id;
    const h = document.createElement("div");
    const strong = document.createElement("strong"); strong.textContent = o.destination_conf;
    const badge = document.createElement("span");
    const [label, cls] = o.status === "success" ? ["Validated", "complete"] : o.status === "failed" ? ["Failure", "failure"] : ["Pending validation", "progress"];
    badge.className = "badge " + cls; badge.textContent = label; badge.title = "API status: " + o.status;
    h.append(strong, " ", badge);
    li.appendChild(h);
    const meta = document.createElement("p");
    meta.className = "small muted";
    meta.textContent = "Registered " + fmtTime(o.submitted) + (o.validated ? "; validated " + fmtTime(o.validated) : "");
    li.appendChild(meta);
    if (o.status !== "success") {
      const how = document.createElement("p");
      how.innerHTML = "The appliance wrote <code></code> into this destination's directory. Open it in your bucket and paste its contents here:";
      how.querySelector("code").textContent = o.filename;
      li.appendChild(how);
      const form = document.createElement("form");
      form.noValidate = true;
      const id = "challenge-" + o.id;
      form.innerHTML = '<div class="field"><label></label><input spellcheck="false" autocomplete="off"><p class="field-error" hidden></p></div><button type="submit">Validate</button>';
      form.querySelector("label").htmlFor = id; form.querySelector("label").textContent = "Contents of " + o.filename;
      form.querySelector("input").id = id;
      form.onsubmit = (ev) => validateBucket(ev, o, form);
      li.appendChild(form);
    }
    const del = document.createElement("button");
    del.type = "button"; del.className = "danger"; del.textContent = "Delete";
    del.setAttribute("aria-label", "Delete bucket " + o.destination_conf);
    del.onclick = () => deleteBucket(o);
    const actions = document.createElement("div"); actions.className = "actions"; actions.appendChild(del);
    li.appendChild(actions);
    ul.appendChild(li);
  }
  show($("#buckets-empty"), list.length === 0);
}

async function registerBucket(ev) {
  ev.preventDefault();
  const input = $("#bucket-dest"), err = $("#bucket-dest-error");
  const v = input.value.trim();
  if (!v) { text(err, "Enter a destination such as s3://my-bucket/pcaps?region=us-east-1."); input.focus(); return; }
  const r = await api("POST", acct() + "/pcaps/ownership", { destination_conf: v });
  if (!r.ok) { text(err, r.message.replace(/^destination_conf: /, "")); input.setAttribute("aria-invalid", "true"); input.focus(); return; }
  text(err, ""); input.removeAttribute("aria-invalid"); input.value = "";
  loadBuckets();
}

async function validateBucket(ev, o, form) {
  ev.preventDefault();
  const input = form.querySelector("input"), err = form.querySelector(".field-error");
  const r = await api("POST", acct() + "/pcaps/ownership/validate", { destination_conf: o.destination_conf, ownership_challenge: input.value.trim() });
  if (!r.ok) { text(err, r.message.replace(/^ownership_challenge: /, "")); input.setAttribute("aria-invalid", "true"); input.focus(); return; }
  loadBuckets();
}

async function deleteBucket(o) {
  if (!confirm("Delete " + o.destination_conf + "? Full captures to it will need a new validation.")) return;
  const r = await api("DELETE", acct() + "/pcaps/ownership/" + o.id);
  if (!r.ok) text($("#buckets-error"), "Delete failed: " + r.message);
  loadBuckets();
}

// ---- wiring ---------------------------------------------------------------------------------------
document.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", modeChanged));
$("#signin-form").addEventListener("submit", signIn);
$("#sign-out").addEventListener("click", signOut);
$("#account").addEventListener("change", (ev) => {
  session.account = ev.target.value;
  sessionStorage.setItem(KEY, JSON.stringify(session));
  loadCaptures(); loadBuckets();
});
$("#tab-captures").addEventListener("click", () => selectTab("captures"));
$("#tab-buckets").addEventListener("click", () => selectTab("buckets"));
document.querySelectorAll('[role="tab"]').forEach((t) => t.addEventListener("keydown", tabKeys));
$("#start-capture").addEventListener("click", openStart);
document.querySelectorAll('[data-action="start"]').forEach((b) => b.addEventListener("click", openStart));
document.querySelectorAll('[data-action="cancel"]').forEach((b) => b.addEventListener("click", closeStart));
$("#to-step-2").addEventListener("click", toStep2);
$("#to-step-1").addEventListener("click", () => { show($("#step-2"), false); show($("#step-1"), true); });
$("#start-form").addEventListener("submit", submitStart);
$("#bucket-form").addEventListener("submit", registerBucket);
if (session) enterApp(); else $("#token").focus();
