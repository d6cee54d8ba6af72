// The WebRTC transport: the microphone (and camera) as tracks of a peer connection whose offer
// and answer travel on the session's websocket (`webrtc.offer` / `webrtc.answer`). The browser
// encodes Opus and VP8; the server decodes them with aiortc.

const GATHER_TIMEOUT_MS = 3000; // host candidates gather in milliseconds; never wait longer than this

export class WebRTCTransport {
  constructor(stream, preview, onFailure) {
    this.stream = stream;
    this.preview = preview;
    this.onFailure = onFailure;
    this.hasVideo = stream.getVideoTracks().length > 0;
  }

  async prepare() {}

  startMessage() {
    const start = { type: "start", audio: { encoding: "webrtc" } };
    if (this.hasVideo) start.video = { encoding: "webrtc" };
    return start;
  }

  async begin(ws) {
    this.pc = new RTCPeerConnection({ iceServers: [] }); // host candidates only: the server is reachable directly
    for (const track of this.stream.getTracks()) this.pc.addTransceiver(track, { direction: "sendonly" });
    this.pc.onconnectionstatechange = () => {
      if (this.pc && this.pc.connectionState === "failed") {
        this.onFailure("The WebRTC connection to the server failed (a firewall, or no route for UDP). Try the WebSocket transport.");
      }
    };
    if (this.hasVideo) {
      this.preview.srcObject = new MediaStream(this.stream.getVideoTracks());
      this.preview.hidden = false;
    }
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await gatheringComplete(this.pc);
    ws.send(JSON.stringify({ type: "webrtc.offer", sdp: this.pc.localDescription.sdp }));
  }

  // The server's answer completes the connection; media flows once ICE and DTLS are through.
  handle(event) {
    if (event.type !== "webrtc.answer") return false;
    this.pc.setRemoteDescription({ type: "answer", sdp: event.sdp }).catch((error) => {
      this.onFailure(`The server's WebRTC answer was not accepted: ${error.message}`);
    });
    return true;
  }

  async close() {
    if (this.pc) this.pc.close();
    this.pc = null;
  }
}

function gatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}
