// The page: device pickers, start/stop, one websocket session per start, events to the panes.
// Media goes by the chosen transport (webrtc-transport.js or websocket-transport.js); captions,
// stats and errors always come back on the websocket (docs/protocol.md).

import { connectionErrorMessage, deviceErrorMessage, serverErrorMessage } from "./errors.js";
import { Transcript } from "./transcript.js";
import { WebRTCTransport } from "./webrtc-transport.js";
import { WebSocketTransport } from "./websocket-transport.js";

const STREAM_PATH = "/v1/stream";
const LAG_BEHIND_S = 1.5; // the lag indicator turns amber above this ...
const LAG_LATE_S = 4.0; // ... and red above this

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"), stop: $("stop"), mic: $("mic"), camera: $("camera"), transport: $("transport"),
  status: $("status"), lag: $("lag"), errors: $("errors"), download: $("download-vtt"), preview: $("preview"),
};
const transcript = new Transcript($("captions"), $("interpretations"));
// Read by people debugging and by the end-to-end tests: the events as they came, the state.
const page = { events: [], transcript, state: "idle" };
window.patchstream = page;

let session = null; // { ws, transport, stream, ended }

function setState(state, text = state) {
  page.state = state;
  document.body.dataset.state = state;
  ui.status.textContent = text;
  const busy = state === "connecting" || state === "streaming" || state === "stopping";
  ui.start.disabled = busy;
  ui.stop.disabled = state !== "streaming";
  ui.mic.disabled = ui.camera.disabled = ui.transport.disabled = busy;
}

function showError(message, warning = false) {
  const p = document.createElement("p");
  p.textContent = message;
  if (warning) p.className = "warning";
  ui.errors.append(p);
}

function serverUrl() {
  const query = new URLSearchParams(location.search);
  const url = new URL(query.get("server") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${STREAM_PATH}`);
  // A server with keys wants a signed token; browsers cannot set websocket headers, so the page
  // passes on the one it was opened with (`patchstream token` mints it; docs/operations.md).
  const token = query.get("access_token");
  if (token) url.searchParams.set("access_token", token);
  return url.toString();
}

function shownUrl() {
  const url = new URL(serverUrl());
  if (url.searchParams.has("access_token")) url.searchParams.set("access_token", "…");  // never on screen
  return url.toString();
}

async function listDevices() {
  if (!navigator.mediaDevices) {
    showError("This page needs a secure context (https://, or http://localhost) for the microphone.");
    return;
  }
  const devices = await navigator.mediaDevices.enumerateDevices();
  fill(ui.mic, devices.filter((d) => d.kind === "audioinput"), "microphone", false);
  fill(ui.camera, devices.filter((d) => d.kind === "videoinput"), "camera", true);
}

function fill(select, devices, noun, withNone) {
  const chosen = select.value;
  select.replaceChildren();
  if (withNone) select.append(new Option("none", ""));
  // Before permission is granted the browser hides ids ("any": whichever device it picks).
  devices.forEach((d, i) => select.append(new Option(d.label || `${noun} ${i + 1}`, d.deviceId || "any")));
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

async function start() {
  ui.errors.replaceChildren();
  transcript.clear();
  page.events = [];
  setDownload();
  setState("connecting", "opening devices…");
  let stream;
  try {
    const device = (value) => (value && value !== "any" ? { exact: value } : undefined);
    const camera = ui.camera.value;
    stream = await navigator.mediaDevices.getUserMedia({
      // Raw speech: browser voice processing is tuned for calls, not for recognition.
      audio: { deviceId: device(ui.mic.value), echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      video: camera ? { deviceId: device(camera), width: { ideal: 640 }, frameRate: { ideal: 10, max: 15 } } : false,
    });
  } catch (error) {
    showError(deviceErrorMessage(error));
    setState("idle");
    return;
  }
  listDevices(); // labels are readable once permission is granted
  const onFailure = (message) => fail(message);
  const transport = ui.transport.value === "webrtc"
    ? new WebRTCTransport(stream, ui.preview, onFailure)
    : new WebSocketTransport(stream, ui.preview);
  try {
    await transport.prepare();
  } catch (error) {
    showError(`Could not set up the ${ui.transport.value} transport: ${error.message}`);
    stream.getTracks().forEach((t) => t.stop());
    setState("idle");
    return;
  }
  setState("connecting", "connecting…");
  const ws = new WebSocket(serverUrl());
  ws.binaryType = "arraybuffer";
  session = { ws, transport, stream, ended: false };
  const current = session;
  ws.onopen = () => ws.send(JSON.stringify(transport.startMessage()));
  ws.onmessage = (message) => onEvent(current, JSON.parse(message.data));
  ws.onerror = () => {};
  ws.onclose = () => {
    if (!current.ended) {
      if (page.state === "connecting") showError(connectionErrorMessage(shownUrl(), new URLSearchParams(location.search).has("access_token")));
      else showError("The connection to the server closed before the session ended.");
      finish(current);
    }
  };
}

async function onEvent(current, event) {
  page.events.push(event);
  if (transcript.handle(event)) {
    if (event.type === "caption.final") setDownload();
    return;
  }
  if (current.transport.handle(event)) return;
  switch (event.type) {
    case "ready":
      setState("streaming", `streaming (${event.engine})`);
      try {
        await current.transport.begin(current.ws);
      } catch (error) {
        fail(`Could not start sending media: ${error.message}`);
      }
      break;
    case "stats":
      showLag(event.lag_s);
      break;
    case "error":
      showError(serverErrorMessage(event), !event.fatal);
      break;
    case "ended":
      current.ended = true;
      finish(current, event.reason);
      break;
  }
}

function showLag(lag) {
  ui.lag.textContent = `lag ${lag.toFixed(1)} s`;
  ui.lag.className = lag <= LAG_BEHIND_S ? "ok" : lag <= LAG_LATE_S ? "behind" : "late";
}

function stop() {
  if (!session || page.state !== "streaming") return;
  setState("stopping", "finishing the last captions…");
  session.ws.send(JSON.stringify({ type: "stop" }));
}

function fail(message) {
  showError(message);
  if (session && session.ws.readyState === WebSocket.OPEN) session.ws.send(JSON.stringify({ type: "stop" }));
}

async function finish(current, reason = "") {
  if (current.finished) return;
  current.finished = true;
  await current.transport.close();
  current.stream.getTracks().forEach((t) => t.stop());
  ui.preview.hidden = true;
  ui.preview.srcObject = null;
  if (current.ws.readyState === WebSocket.OPEN) current.ws.close();
  if (session === current) session = null;
  setState("ended", reason ? `ended (${reason})` : "ended");
}

function setDownload() {
  if (ui.download.href) URL.revokeObjectURL(ui.download.href);
  if (!transcript.finals.length) {
    ui.download.removeAttribute("href");
    ui.download.setAttribute("aria-disabled", "true");
    return;
  }
  ui.download.href = URL.createObjectURL(new Blob([transcript.webVTT()], { type: "text/vtt" }));
  ui.download.setAttribute("aria-disabled", "false");
}

ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
if (navigator.mediaDevices) navigator.mediaDevices.addEventListener("devicechange", listDevices);
const wanted = new URLSearchParams(location.search).get("transport");
if (wanted) ui.transport.value = wanted;
setState("idle");
listDevices();
