// AudioWorklet: the microphone's float samples → 16-bit PCM (mono mix), posted to the page in
// batches of `batchFrames` (100 ms at the context's rate) for the websocket transport.

class PcmSender extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.batchFrames = options.processorOptions.batchFrames;
    this.buffer = new Int16Array(this.batchFrames);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // no input connected (yet)
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      const v = Math.max(-1, Math.min(1, sum / channels.length));
      this.buffer[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
      if (this.filled === this.batchFrames) {
        this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]); // transferred, not copied
        this.buffer = new Int16Array(this.batchFrames);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-sender", PcmSender);
