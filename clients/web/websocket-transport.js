// The websocket transport: microphone PCM16 from an AudioWorklet as binary messages, and the
// camera as JPEG frames drawn on a canvas, each after a `frame` message naming its media time
// (the audio's clock: samples sent so far). The native protocol's own encodings, no WebRTC.

const BATCH_S = 0.1; // one binary message: 100 ms of audio
const FRAME_INTERVAL_S = 1.0; // camera frames per second sent (the server's engines sample ~1/s)
const MAX_FRAME_WIDTH = 640; // px; the server resizes to its patch budget anyway
const JPEG_QUALITY = 0.8;

export class WebSocketTransport {
  constructor(stream, preview) {
    this.stream = stream;
    this.preview = preview;
    this.hasVideo = stream.getVideoTracks().length > 0;
    this.sentSamples = 0;
  }

  async prepare() {
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule("pcm-worklet.js");
    await this.context.resume();
  }

  startMessage() {
    const start = {
      type: "start",
      audio: { encoding: "pcm_s16le", sample_rate: this.context.sampleRate, channels: 1 },
    };
    if (this.hasVideo) start.video = { encoding: "jpeg", fps: 1 / FRAME_INTERVAL_S };
    return start;
  }

  async begin(ws) {
    this.ws = ws;
    const source = this.context.createMediaStreamSource(new MediaStream(this.stream.getAudioTracks()));
    this.node = new AudioWorkletNode(this.context, "pcm-sender", {
      processorOptions: { batchFrames: Math.round(this.context.sampleRate * BATCH_S) },
    });
    this.node.port.onmessage = (message) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(message.data);
      this.sentSamples += message.data.byteLength / 2;
    };
    // A worklet is only run while the graph pulls it: connect it to the speakers through zero gain.
    const mute = new GainNode(this.context, { gain: 0 });
    source.connect(this.node).connect(mute).connect(this.context.destination);
    if (this.hasVideo) this.startCamera();
  }

  startCamera() {
    this.preview.srcObject = new MediaStream(this.stream.getVideoTracks());
    this.preview.hidden = false;
    this.canvas = document.createElement("canvas");
    this.timer = setInterval(() => this.sendFrame(), FRAME_INTERVAL_S * 1000);
  }

  async sendFrame() {
    const video = this.preview;
    if (!video.videoWidth || this.sentSamples === 0) return;
    const scale = Math.min(1, MAX_FRAME_WIDTH / video.videoWidth);
    this.canvas.width = Math.round(video.videoWidth * scale);
    this.canvas.height = Math.round(video.videoHeight * scale);
    this.canvas.getContext("2d").drawImage(video, 0, 0, this.canvas.width, this.canvas.height);
    const time = this.sentSamples / this.context.sampleRate; // shown now, on the audio's clock
    const blob = await new Promise((resolve) => this.canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    if (!blob || this.ws.readyState !== WebSocket.OPEN) return;
    const data = await blob.arrayBuffer();
    // Back to back, so no audio message slips between the announcement and its image.
    this.ws.send(JSON.stringify({ type: "frame", time }));
    this.ws.send(data);
  }

  handle() {
    return false;
  }

  async close() {
    clearInterval(this.timer);
    if (this.node) this.node.port.onmessage = null;
    if (this.context && this.context.state !== "closed") await this.context.close();
  }
}
