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
const PROTO_NAMES = { 1: "ICMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 58: "ICMPv6", 132: "SCTP" };
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

// ---- units and addresses -----------------------------------------------------------------------
const UNITS = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1048576, gib: 1073741824 };

function fmtBytes(n) {
  if (n === undefined || n === null) return "–";
  if (n < 1000) return n + " B";
  const u = ["kB", "MB", "GB", "TB"];
  let v = n, i = -1;
  do { v /= 1000; i++; } while (v >= 1000 && i < u.length - 1);
  return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + " " + u[i];
}

function fmtCount(n) { return n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"); }

// "10 MB", "512 KiB", "1.5GB", "1000000" → bytes; { error } when it is none of those.
function parseBytes(raw) {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?$/i.exec(raw.trim());
  if (!m) return { error: "Write a size such as 10 MB, 512 KiB or 1000000 (bytes)." };
  const n = Math.round(Number(m[1]) * UNITS[(m[2] || "b").toLowerCase()]);
  if (!Number.isSafeInteger(n) || n < 1 || n > 1000000000) return { error: "Must be from 1 byte to 1 GB (1,000,000,000 bytes)." };
  return { value: n };
}

function isIPv4(v) {
  return /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(v);
}

// The browser's own URL parser knows IPv6 literals (RFC 4291 forms, IPv4 tails included).
function isIPv6(v) {
  if (!v.includes(":") || /[^0-9a-fA-F:.]/.test(v)) return false;
  try { new URL("http://[" + v + "]/"); return true; } catch (_) { return false; }
}

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
  clearTimeout(refreshTimer); clearTimeout(statusTimer);
  detailsFor = null;
  show($("#app-view"), false); show($("#start-view"), false); show($("#session"), false);
  show($("#details-view"), false); show($("#appliance"), false);
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
  statusRing = [];
  pollStatus();
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
  if (f.protocol !== undefined) parts.push("proto " + (PROTO_NAMES[f.protocol] ? PROTO_NAMES[f.protocol] + " (" + f.protocol + ")" : f.protocol));
  return parts.length ? parts.join(", ") : "all packets";
}

function fmtDuration(secs) {
  if (secs < 60) return secs + " s";
  const m = Math.floor(secs / 60), r = secs % 60;
  if (m < 60) return m + " min " + (r ? r + " s" : "");
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

function limitsSummary(c) {
  const p = [c.time_limit + " s"];
  if (c.packet_limit !== undefined) p.push(c.packet_limit + " packets");
  if (c.byte_limit !== undefined) p.push(fmtBytes(c.byte_limit));
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
    const st = cell(tr, "Status", badge);
    if (c.status === "running" || c.status === "pending") {
      const left = Math.max(0, Math.round((new Date(c.submitted).getTime() + c.time_limit * 1000 - Date.now()) / 1000));
      const p = document.createElement("div"); p.className = "small muted time-left";
      p.textContent = fmtDuration(left) + " left";
      st.appendChild(p);
    }
    if (c.stop_requested) {
      const p = document.createElement("div"); p.className = "small stop-requested";
      p.textContent = "stop requested"; p.title = "Stop requested " + fmtTime(c.stop_requested);
      st.appendChild(p);
    }
    cell(tr, "Submitted", fmtTime(c.submitted)).classList.add("small");
    const summary = filterSummary(c.filter_v1 || {});
    cell(tr, "Filter", c.filter_expression
      ? (summary === "all packets" ? "" : summary + " and ") + "\u201c" + c.filter_expression + "\u201d"
      : summary);
    const limits = cell(tr, "Limits", limitsSummary(c));
    limits.classList.add("small");
    if (c.nodes && c.nodes.length) limits.appendChild(nodesList(c.nodes));
    cell(tr, "Packets", c.packets_captured === undefined ? "–" : fmtCount(c.packets_captured)).classList.add("packets-captured");
    const actions = document.createElement("div");
    actions.className = "row-actions";
    const det = document.createElement("button");
    det.type = "button"; det.className = "secondary"; det.textContent = "Details";
    det.setAttribute("aria-label", "Details of capture " + c.id);
    det.onclick = () => openDetails(c);
    actions.appendChild(det);
    tr.classList.add("clickable");
    tr.addEventListener("click", (ev) => { if (!ev.target.closest("button")) openDetails(c); });
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
  // At least every second while anything runs: packets captured and time left move.
  if (busy && !detailsFor) refreshTimer = setTimeout(() => loadCaptures(true), 1000);
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
const BYTE_HINT = "Units: B, KB, MB, GB (1000s) or KiB, MiB, GiB (1024s).";

function byteHint() {
  const raw = $("#f-byte_limit").value.trim();
  const b = raw ? parseBytes(raw) : null;
  $("#byte-limit-hint").textContent = !b ? BYTE_HINT : b.error ? BYTE_HINT : "= " + fmtCount(b.value) + " bytes (" + fmtBytes(b.value) + ")";
}

// The colos full captures may name here: this appliance's, or the fleet's.
async function loadColos() {
  const sel = $("#f-colo_name");
  const r = await api("GET", "/pcapd/colos");
  const keep = sel.value;
  sel.innerHTML = "";
  const list = r.ok ? r.result : [];
  if (!list.length) {
    const o = document.createElement("option");
    o.value = ""; o.textContent = r.ok ? "No colo is served here ([node] colos)" : "Colos unavailable: " + r.message;
    sel.appendChild(o);
  }
  for (const c of list) {
    const o = document.createElement("option");
    o.value = c.colo;
    o.textContent = c.colo + (c.nodes && c.nodes.length ? " (" + c.nodes.join(", ") + ")" : "");
    sel.appendChild(o);
  }
  if (keep && list.some((c) => c.colo === keep)) sel.value = keep;
}

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
  if (full) loadColos();
  byteHint();
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
  document.querySelectorAll("#start-form input, #start-form select").forEach((i) => { i.removeAttribute("aria-invalid"); i.removeAttribute("aria-describedby"); });
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
    const rawBl = fieldInput("byte_limit").value.trim();
    if (rawBl) {
      const b = parseBytes(rawBl);
      if (b.error) errors.byte_limit = b.error; else body.byte_limit = b.value;
    }
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
    if (!v) continue;
    if (isIPv4(v) || isIPv6(v)) filter[n] = v;
    else errors[n] = v + " is not an IPv4 or IPv6 address (e.g. 192.0.2.1 or 2001:db8::1).";
  }
  for (const n of ["source_port", "destination_port"]) {
    const v = num(n, false);
    if (v !== undefined) filter[n] = v;
  }
  const proto = fieldInput("protocol").value;
  if (proto === "other") {
    const raw = fieldInput("protocol_number").value.trim();
    const n = Number(raw);
    if (raw === "" || !Number.isInteger(n) || n < 0 || n > 255) errors.protocol_number = "Must be a whole number from 0 to 255.";
    else filter.protocol = n;
  } else if (proto !== "") filter.protocol = Number(proto);
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
    const field = m && m[1] === "protocol" && fieldInput("protocol").value === "other" ? "protocol_number" : m && m[1];
    if (m && setFieldError(field, m[2])) fieldInput(field).focus();
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

// ---- one capture: details, summary, files ----------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
let detailsFor = null;

function svgEl(name, attrs) {
  const e = document.createElementNS(SVG, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

function rows(tbody, list, cols) {
  tbody.innerHTML = "";
  for (const item of list) {
    const tr = document.createElement("tr");
    for (const [label, value, title] of cols(item)) {
      const td = cell(tr, label, value);
      if (title) td.title = title;
    }
    tbody.appendChild(tr);
  }
}

function openDetails(c) {
  detailsFor = c.id;
  clearTimeout(refreshTimer);
  show($("#app-view"), false); show($("#details-view"), true);
  $("#details-title").textContent = (c.type === "full" ? "Full" : "Simple") + " capture " + c.id;
  const [label] = STATUS[c.status] || ["In progress"];
  $("#details-meta").textContent = label + " (" + c.status + ") · submitted " + fmtTime(c.submitted) + " · " +
    filterSummary(c.filter_v1 || {}) + (c.filter_expression ? " and \u201c" + c.filter_expression + "\u201d" : "") + " · " + limitsSummary(c);
  text($("#details-error"), "");
  show($("#summary"), false); show($("#files-section"), false);
  $("#details-back").focus();
  if (c.type === "full") loadFiles(c);
  if (!["success", "complete", "failed"].includes(c.status)) {
    text($("#details-status"), "This capture is in progress: what it holds is shown once it has finished.");
    return;
  }
  loadSummary(c);
}

function closeDetails() {
  detailsFor = null;
  show($("#details-view"), false); show($("#app-view"), true);
  loadCaptures(true);
  $("#start-capture").focus();
}

async function loadFiles(c) {
  const r = await api("GET", acct() + "/pcaps/" + c.id + "/files");
  // Not on this appliance yet (404), or no files: nothing to show, and no error.
  if (detailsFor !== c.id || !r.ok || !Array.isArray(r.result)) return;
  rows($("#files tbody"), r.result, (f) => [
    ["Node", f.node], ["Key", f.key], ["Size", fmtBytes(f.bytes), fmtCount(f.bytes) + " bytes"],
    ["Packets", fmtCount(f.packets)], ["State", f.state]]);
  show($("#files-section"), r.result.length > 0);
}

async function loadSummary(c) {
  text($("#details-status"), "Reading the capture…");
  const r = await api("GET", acct() + "/pcaps/" + c.id + "/summary");
  if (detailsFor !== c.id) return;
  text($("#details-status"), "");
  if (!r.ok) {
    // A failed capture has no file to summarize (409): a state, not an error.
    if (r.status === 409) text($("#details-status"), r.message);
    else text($("#details-error"), "Could not read the capture: " + r.message);
    return;
  }
  renderSummary(r.result);
}

function renderSummary(s) {
  const secs = s.first && s.last ? (Number(s.last.split(".")[0]) - Number(s.first.split(".")[0])) : 0;
  $("#summary-totals").textContent = fmtCount(s.packets) + " packets, " + fmtBytes(s.bytes) + " on the wire (" +
    fmtBytes(s.captured_bytes) + " captured)" + (s.first ? ", from " + new Date(Number(s.first) * 1000).toLocaleString() + " over about " + fmtDuration(secs) : "") +
    (s.malformed ? "; " + fmtCount(s.malformed) + " malformed" : "") + (s.notes.length ? ". " + s.notes.join(" ") : "");
  renderChart(s.histogram);
  rows($("#protocols tbody"), s.protocols, (p) => [["Protocol", p.protocol], ["Packets", fmtCount(p.packets)], ["Bytes", fmtBytes(p.bytes), fmtCount(p.bytes) + " bytes"]]);
  const approx = (t) => (t.error ? " (at most; ±" + fmtCount(t.error) + ")" : "");
  rows($("#talkers-bytes tbody"), s.talkers.by_bytes, (t) => [["Source", t.address], ["Bytes", fmtBytes(t.bytes) + approx(t), fmtCount(t.bytes) + " bytes"], ["Packets", fmtCount(t.packets)]]);
  rows($("#talkers-packets tbody"), s.talkers.by_packets, (t) => [["Source", t.address], ["Packets", fmtCount(t.packets) + approx(t)], ["Bytes", fmtBytes(t.bytes), fmtCount(t.bytes) + " bytes"]]);
  rows($("#packets tbody"), s.decoded, (p) => [
    ["No.", String(p.number)], ["Time (s)", p.relative, new Date(Number(p.time) * 1000).toISOString() + " (" + p.time + ")"],
    ["Source", p.src || "–"], ["Destination", p.dst || "–"], ["Protocol", p.protocol],
    ["Length", String(p.length), p.captured < p.length ? p.captured + " bytes captured" : ""], ["Info", p.info]]);
  $("#packets-title").textContent = s.packets > s.decoded.length
    ? "First " + s.decoded.length + " of " + fmtCount(s.packets) + " packets" : "Packets";
  show($("#summary"), true);
}

function renderChart(h) {
  const svg = $("#chart");
  svg.innerHTML = "";
  if (!h || !h.packets.length) { $("#chart-axis").textContent = "No packets."; return; }
  const W = 600, H = 160, n = h.packets.length, max = Math.max(...h.packets);
  const bw = W / n;
  h.packets.forEach((p, i) => {
    const bh = max ? (p / max) * (H - 4) : 0;
    const r = svgEl("rect", { x: (i * bw + 0.5).toFixed(2), y: (H - bh).toFixed(2), width: Math.max(bw - 1, 0.5).toFixed(2), height: bh.toFixed(2), class: "bar" });
    const t = svgEl("title", {});
    t.textContent = fmtCount(p) + " packets, " + fmtBytes(h.bytes[i]) + " at +" + ((i * h.bucket_ns) / 1e9).toFixed(3) + " s";
    r.appendChild(t);
    svg.appendChild(r);
  });
  svg.setAttribute("aria-label", "Packets over time: " + n + " bars of " + fmtSpan(h.bucket_ns) + ", at most " + fmtCount(max) + " packets in one");
  $("#chart-axis").textContent = "From " + new Date(h.start_ms).toLocaleString() + "; each bar is " + fmtSpan(h.bucket_ns) + " (highest: " + fmtCount(max) + " packets).";
}

function fmtSpan(ns) {
  if (ns < 1e3) return ns + " ns";
  if (ns < 1e6) return (ns / 1e3).toPrecision(3) + " µs";
  if (ns < 1e9) return (ns / 1e6).toPrecision(3) + " ms";
  return (ns / 1e9).toPrecision(3) + " s";
}

// ---- the appliance at a glance (page header) ---------------------------------------------------------
const STATUS_EVERY_MS = 3000, STATUS_KEEP = 120; // six minutes of samples
let statusTimer = null;
let statusRing = [];

async function pollStatus() {
  clearTimeout(statusTimer);
  if (!session) return;
  const r = await api("GET", "/pcapd/status");
  if (!session) return;
  statusTimer = setTimeout(pollStatus, STATUS_EVERY_MS);
  if (!r.ok) { text($("#appliance-text"), "Appliance status unavailable: " + r.message); show($("#appliance"), true); return; }
  const s = r.result, prev = statusRing[statusRing.length - 1];
  const sample = { t: s.time_ms, rx: s.rx_packets || 0, drops: s.drops || 0, pps: null };
  if (prev && sample.t > prev.t && sample.rx >= prev.rx) sample.pps = ((sample.rx - prev.rx) * 1000) / (sample.t - prev.t);
  statusRing.push(sample);
  if (statusRing.length > STATUS_KEEP) statusRing.shift();
  const parts = ["RX " + (sample.pps === null ? "–" : fmtCount(Math.round(sample.pps))) + " pkt/s",
    "drops " + fmtCount(sample.drops)];
  if (s.disk) parts.push("disk headroom " + fmtBytes(s.disk.headroom_bytes));
  if (s.captures_running) parts.push(s.captures_running + " running");
  $("#appliance-text").textContent = parts.join(" · ");
  $("#appliance").title = "Since start: " + fmtCount(sample.rx) + " packets received, " + fmtCount(sample.drops) +
    " dropped by the NICs" + (s.disk ? "; " + fmtBytes(s.disk.free_bytes) + " free on the data disk, " + fmtBytes(s.disk.keep_free_bytes) + " kept free" : "");
  drawSpark();
  show($("#appliance"), true);
}

function drawSpark() {
  const svg = $("#appliance-chart");
  svg.innerHTML = "";
  const pts = statusRing.filter((x) => x.pps !== null);
  if (pts.length < 2) return;
  const max = Math.max(1, ...pts.map((x) => x.pps)), W = 120, H = 28;
  const step = W / (STATUS_KEEP - 1), x0 = W - (pts.length - 1) * step;
  const d = pts.map((p, i) => (x0 + i * step).toFixed(1) + "," + (H - 1 - (p.pps / max) * (H - 2)).toFixed(1)).join(" ");
  svg.appendChild(svgEl("polyline", { points: d, class: "spark-line" }));
  const dropped = pts.some((p, i) => i > 0 && p.drops > pts[i - 1].drops);
  svg.setAttribute("aria-label", "RX packets per second over the last " + Math.round((pts.length * STATUS_EVERY_MS) / 60000 * 10) / 10 +
    " minutes, at most " + fmtCount(Math.round(max)) + (dropped ? "; drops rose" : ""));
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
// Errors of one type of capture mean nothing for the other.
document.querySelectorAll('input[name="type"]').forEach((r) => r.addEventListener("change", clearErrors));
$("#f-protocol").addEventListener("change", () => {
  show($("#protocol-other-field"), $("#f-protocol").value === "other");
  if ($("#f-protocol").value === "other") $("#f-protocol_number").focus();
});
$("#f-byte_limit").addEventListener("input", byteHint);
$("#details-back").addEventListener("click", closeDetails);
$("#bucket-form").addEventListener("submit", registerBucket);
if (session) enterApp(); else $("#token").focus();
