// What each failure means to the person at the page, in words they can act on.

const SERVER_ERRORS = {
  server_busy: "The server is busy (too many people are connected). Try again in a minute.",
  shutting_down: "The server is shutting down. Reload the page in a moment.",
  unsupported_codec: "Your browser offered no audio format the server can decode (it takes Opus). Try another browser, or the WebSocket transport.",
  bad_offer: "The server could not set up the WebRTC connection. Try the WebSocket transport.",
  peer_lost: "The WebRTC connection dropped (network trouble, or too many packets lost). Press Start to reconnect.",
  unsupported_encoding: "The server cannot take this kind of audio (WebRTC may not be installed there). Try the WebSocket transport.",
  audio_dropped: "The server fell behind and skipped some audio.",
  slow_consumer: "This page stopped reading captions fast enough; the session ended.",
  idle_timeout: "Nothing was received for a while, so the session ended.",
  start_timeout: "The session did not start in time.",
  session_limit: "This session reached its time limit.",
  engine_error: "The captioning model failed on this audio.",
  internal_error: "The server hit an internal error; this session ended.",
  decode_failed: "The server could not decode the audio.",
  bad_start: "The server refused the session's settings.",
  bad_image: "A camera frame could not be read and was skipped.",
  frame_rate_exceeded: "Camera frames came too fast; some were skipped.",
  quota_exceeded: "Your access key has reached its limit (sessions at once, or media minutes). Stop another session or ask for more.",
  unauthorized: "The server refused this page's credentials: open it again with a fresh ?access_token=.",
  forbidden_origin: "The server does not accept sessions from this page's address.",
  assist_failed: "Agent assist stopped for this session; captions go on.",
  image_too_large: "A camera frame was too large and was skipped.",
};

export function serverErrorMessage(event) {
  let known = SERVER_ERRORS[event.code];
  if (known && event.retry_after_s) known = known.replace("Try again in a minute.", `Try again in ${Math.ceil(event.retry_after_s)} s.`);
  const detail = event.message ? ` (${event.code}: ${event.message})` : ` (${event.code})`;
  return (known || "The server reported a problem.") + detail;
}

// getUserMedia and friends fail with DOMExceptions; name them for people.
export function deviceErrorMessage(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Permission denied: allow the microphone (and camera) for this page, then press Start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No such microphone or camera. Pick another device.";
    case "NotReadableError":
      return "The microphone or camera is in use by another program.";
    default:
      return `Could not open the microphone or camera: ${error && error.message ? error.message : error}`;
  }
}

export function connectionErrorMessage(url, withToken) {
  // A refused credential or origin closes the handshake with an HTTP status the page cannot read.
  const credential = withToken
    ? " If it is, its token may be wrong or expired, or this page's origin not allowed: ask for a new link."
    : " If it is and it has API keys, open this page with ?access_token=TOKEN (`patchstream token`).";
  return `Cannot reach the server at ${url}. Is \`patchstream serve\` running?${credential}`;
}
