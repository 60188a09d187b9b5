// The sidebar page: every URL is relative, because BlueOS serves it under a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
// Relative to the page, also when it is served as ".../qsensor" without a trailing slash.
const BASE = location.pathname.endsWith("/") ? "" : `${location.pathname.split("/").pop()}/`;
const chart = new RollingChart($("chart"), 120);
let status = null;
let lastSeq = -1;

function say(text, isError) {
  const el = $("message");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const answer = await fetch(BASE + path, options);
  const text = await answer.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!answer.ok) {
    let detail = data && data.detail !== undefined ? data.detail : text;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new Error(`${answer.status}: ${detail}`);
  }
  return data;
}

async function act(label, method, path, body) {
  say(`${label}…`);
  try {
    const data = await api(method, path, body);
    say(`${label}: done`);
    await refreshStatus();
    return data;
  } catch (err) {
    say(`${label} failed: ${err.message}`, true);
    return null;
  }
}

function showReading(r) {
  if (!r || r.value === undefined || r.seq === lastSeq) return;
  lastSeq = r.seq;
  $("value").textContent = r.value;
  $("temp").textContent = r.TempC ?? "–";
  $("vin").textContent = r.Vin ?? "–";
  $("stamp").textContent = r.timestamp;
  chart.add(Date.parse(r.timestamp) / 1000, parseFloat(r.value));
  chart.draw();
}

function showStatus(s) {
  status = s;
  const state = s.state;
  $("link-state").textContent = s.last_error && state === "reconnecting" ? `${state}: ${s.last_error}` : state;
  $("link-state").dataset.state = state;
  $("sensor-id").textContent = s.sensor_id ?? "–";
  $("mode").textContent = s.mode ? `${s.mode}${s.config ? `, ${s.config.averaging} avg @ ${s.config.adc_rate_hz} Hz` : ""}` : "–";
  $("port-now").textContent = s.port ?? "–";
  if (s.port && !$("port").value && document.activeElement !== $("port")) $("port").value = s.port;
  $("rows").textContent = s.rows;
  const acquiring = state === "freerun" || state === "polled";
  $("connect").disabled = s.recording;
  $("disconnect").disabled = !s.connected;
  $("acq-start").disabled = !s.connected || acquiring;
  $("acq-stop").disabled = !s.connected || state === "idle";
  $("rec-start").disabled = !s.connected || s.recording;
  $("rec-stop").disabled = !s.recording;
  const rec = $("rec-state");
  rec.dataset.state = s.recording ? "recording" : "idle";
  rec.textContent = s.recording ? "recording" : "not recording";
  $("rec-info").textContent = s.session ? `${s.session.session_id}: ${s.session.rows} rows since ${s.session.started_at}` : "";
}

async function refreshStatus() {
  try {
    showStatus(await api("GET", "status"));
    showReading(await api("GET", "latest"));
  } catch (err) {
    say(`service unreachable: ${err.message}`, true);
  }
}

function fileLink(sessionId, name) {
  const a = document.createElement("a");
  a.href = `${BASE}files/${encodeURIComponent(sessionId)}/${encodeURIComponent(name)}`;
  a.textContent = name;
  a.setAttribute("download", `${sessionId}_${name}`);
  return a;
}

async function refreshSessions() {
  let sessions;
  try { sessions = await api("GET", "record/sessions"); } catch (err) { return; }
  const body = $("session-rows");
  const rows = [];
  for (const s of sessions.slice(-8).reverse()) {
    const tr = document.createElement("tr");
    tr.dataset.session = s.session_id;
    const cells = [s.session_id + (s.mission ? ` (${s.mission})` : ""), s.state, String(s.rows)];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    const files = document.createElement("td");
    files.appendChild(fileLink(s.session_id, "manifest.json"));
    try {
      for (const c of await api("GET", `record/snapshots?session_id=${encodeURIComponent(s.session_id)}`)) {
        files.appendChild(document.createTextNode(" "));
        files.appendChild(fileLink(s.session_id, c.name));
      }
    } catch (err) { /* listed session without a readable manifest yet */ }
    tr.appendChild(files);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

async function loadPorts() {
  try {
    const ports = await api("GET", "sensor/ports");
    $("port-list").replaceChildren(...ports.map((p) => {
      const o = document.createElement("option");
      o.value = p.port;
      o.label = p.description;
      return o;
    }));
  } catch (err) { /* listing is a convenience */ }
}

let sessionsTimer = 0;
function refreshSessionsSoon() {
  // After a reconnect the service replays every chunk_sealed missed: one refresh for the burst.
  clearTimeout(sessionsTimer);
  sessionsTimer = setTimeout(refreshSessions, 250);
}

function listen() {
  const events = new EventSource(`${BASE}events`);
  events.addEventListener("reading", (e) => showReading(JSON.parse(e.data)));
  events.addEventListener("state", () => refreshStatus());
  events.addEventListener("session", refreshSessionsSoon);
  events.addEventListener("chunk_sealed", refreshSessionsSoon);
}

async function loadRecent() {
  try {
    const recent = await api("GET", "recent?seconds=120");
    for (const r of recent.rows) chart.add(Date.parse(r.timestamp) / 1000, parseFloat(r.value));
    chart.draw();
  } catch (err) { /* the chart fills from live readings */ }
}

$("api-docs").href = `${BASE}docs`;
$("connect").onclick = () => {
  const port = $("port").value.trim();
  if (!port) { say("choose a serial port first", true); return; }
  act("connect", "POST", `sensor/connect?port=${encodeURIComponent(port)}&baud=${$("baud").value}`);
};
$("disconnect").onclick = () => act("disconnect", "POST", "sensor/disconnect");
$("acq-start").onclick = () => act("start acquisition", "POST", "sensor/start");
$("acq-stop").onclick = () => act("stop acquisition", "POST", "sensor/stop");
$("rec-start").onclick = async () => {
  const body = { mission: $("mission").value.trim() || "default", roll_interval_s: Number($("roll").value) || 60 };
  if (await act("start recording", "POST", "record/start", body)) refreshSessions();
};
$("rec-stop").onclick = async () => {
  const id = status && status.session ? status.session.session_id : "current";
  if (await act("stop recording", "POST", "record/stop", { session_id: id })) refreshSessions();
};
$("refresh").onclick = () => { refreshSessions(); loadPorts(); };
window.addEventListener("resize", () => chart.draw());

loadRecent();
loadPorts();
refreshStatus();
refreshSessions();
listen();
setInterval(refreshStatus, 1000);
setInterval(refreshSessions, 15000);
