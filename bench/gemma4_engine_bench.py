"""Live-stream benchmark of the Gemma 4 engine (not a test): N simulated streams against one engine.

What it measures, per number of streams N, audio only and audio + 1 fps video: every `tick_s` of media each stream
delivers its new audio (and a frame each second), and the engine steps all streams (`max_batch` per call) as the
server's scheduler would. Compute runs back to back; a simulated clock (a step starts when its media has
arrived and the previous step has ended) turns measured step times into latencies.
- rtf: compute seconds per media second; under 1 the engine keeps up with N live streams.
- latency p50/p95: from an audio chunk's arrival to the end of the step whose caption decode first saw it (the
  first emitted token that can depend on it is generated inside that step, so this bounds it from above).
- decode tok/s: generated tokens (captions and interpretations) per second of decode time, all streams.
- KV MiB/stream: a session's caches (flat for any stream length, see docs/gemma4-engine.md).
- the largest N with rtf < 1.
- batch-1 decode: ms per generated token of one session's detached decode (the engine's hot step, compiled on
  cuda), and on cuda its fraction of the HBM-bandwidth bound (decoder weights + the gathered KV, read once per
  token, at `--hbm-gbps`, by default the device's datasheet value).

    python -m patchstream.bench.gemma4_engine_bench                        # tiny checkpoint on CPU
    python -m patchstream.bench.gemma4_engine_bench --model 12b --streams 1 8 32 64   # 12B shape, random bf16, cuda
    python -m patchstream.bench.gemma4_engine_bench --model 12b --layers 2 --device cpu --streams 1 --media-s 2
                                           # a dry run of the 12B path (its real widths, 2 layers) on a CPU

What it is not: a quality measure (random weights), or the websocket path (tests/model/test_gemma4_engine.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from patchstream.bench.gemma4_bench import HBM_GBPS, decode_weight_bytes, hbm_gbps
from patchstream.model import gemma4_engine as ge
from patchstream.model import gemma4_stream as gs
from patchstream.model.api import AudioChunk, SessionOptions, VideoFrame, seconds_to_samples
from patchstream.model.gemma4 import Gemma4Unified, gemma4_12b_config
from patchstream.model.gemma4_processing import Gemma4Processor, Gemma4Tokenizer
from patchstream.model.gemma4_tiny import save_tiny_checkpoint, tiny_config_dict, tiny_tokenizer


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    streams: int  # N live streams
    video: bool  # audio + 1 fps video
    rtf: float  # compute seconds per media second
    latency_p50_s: float  # audio arrival -> end of the step whose caption decode saw it
    latency_p95_s: float
    decode_tok_s: float  # generated tokens per decode second, all streams
    kv_mib_per_stream: float  # one session's caches


class DecodeTimer:
    """Counts generated tokens and the time spent generating (wraps the engine module's `generate_detached`)."""

    def __init__(self):
        self.tokens, self.seconds = 0, 0.0
        self._inner = ge.generate_detached

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self._inner(*args, **kwargs)
        _sync()
        self.seconds += time.perf_counter() - start
        self.tokens += sum(len(t) for t in out)
        return out


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def simulate(engine: ge.Gemma4Engine, streams: int, video: bool, media_s: float, tick_s: float) -> Row:
    """N streams of noise bursts (pauses every 4 s, staggered so segments close at different times)."""
    rng = np.random.default_rng(0)
    states = [engine.open(SessionOptions(instruction="Describe the scene." if video else "")) for _ in range(streams)]
    tick = seconds_to_samples(tick_s)
    clock, compute, latencies = 0.0, 0.0, []
    waiting: list[list[tuple[float, int]]] = [[] for _ in states]  # (arrival, end sample) of audio no decode saw
    for k in range(int(media_s / tick_s)):
        arrival = (k + 1) * tick_s
        for i, state in enumerate(states):
            quiet = ((k * tick_s + i * 0.7) % 4.0) > 3.3
            audio = np.zeros(tick, np.float32) if quiet else (rng.standard_normal(tick) * 0.1).astype(np.float32)
            engine.feed(state, AudioChunk(audio, k * tick))
            if video and k % round(1 / tick_s) == 0:
                engine.feed(state, VideoFrame(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), k * tick))
            waiting[i].append((arrival, (k + 1) * tick))
        start = max(clock, arrival)
        for b in range(0, streams, engine.spec.max_batch):
            batch = states[b:b + engine.spec.max_batch]
            decodes = [state.caption_decodes for state in batch]
            t0 = time.perf_counter()
            engine.step(batch)
            _sync()
            spent = time.perf_counter() - t0
            compute += spent
            start += spent
            for i, (state, before) in enumerate(zip(batch, decodes), start=b):
                if state.caption_decodes > before:  # its caption decode saw all the audio appended so far
                    latencies += [start - t for t, end in waiting[i] if end <= state.processed_sample]
                    waiting[i] = [(t, end) for t, end in waiting[i] if end > state.processed_sample]
        clock = start
    kv = np.mean([ge.kv_bytes(s) for s in states]) / 2**20
    for state in states:
        engine.close(state)
    return Row(streams, video, compute / media_s, float(np.percentile(latencies, 50)) if latencies else float("nan"),
               float(np.percentile(latencies, 95)) if latencies else float("nan"), 0.0, kv)


def build_engine(model_name: str, options: dict, layers: int = 0) -> ge.Gemma4Engine:
    """The tiny checkpoint (written to a temporary directory) or the 12B shape with random bf16 weights
    (`layers` > 0 keeps only the last `layers` decoder layers: a dry run of the same code on a small machine)."""
    config = ge.Gemma4EngineConfig(**options)
    if model_name == "tiny":
        path = save_tiny_checkpoint(tempfile.mkdtemp(prefix="gemma4-tiny-"))
        return ge.build_from_directory(path, config)
    # 12B shape: random weights, media token ids of the byte tokenizer (the real ids need the real tokenizer.json).
    ids = {k: v for k, v in tiny_config_dict().items() if k.endswith(("_id", "_index"))}
    cfg = dataclasses.replace(gemma4_12b_config(), eos_token_ids=tuple(tiny_config_dict()["eos_token_ids"]), **ids)
    if layers:
        t = cfg.text  # the last layers: the 5:1 pattern ends with a full layer, so both kinds stay
        cfg = dataclasses.replace(cfg, text=dataclasses.replace(
            t, num_hidden_layers=layers, layer_types=t.layer_types[-layers:],
            layer_head_dim=t.layer_head_dim[-layers:], layer_kv_heads=t.layer_kv_heads[-layers:]))
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = Gemma4Unified.random(cfg, torch.bfloat16, device)
    return ge.Gemma4Engine(model, Gemma4Processor(Gemma4Tokenizer(tiny_tokenizer())), config)


@dataclass(frozen=True)
class DecodeBound:
    """Batch-1 detached decode against the memory-bandwidth bound."""

    ms_per_token: float  # one session, one generated token
    bound_ms: float | None  # (decoder weights + gathered KV) / bandwidth; None without a known bandwidth

    @property
    def fraction(self) -> float | None:
        return None if self.bound_ms is None else self.bound_ms / self.ms_per_token


def batch1_decode(engine: ge.Gemma4Engine, tokens: int, gbps: float | None) -> DecodeBound:
    """One session with 2 s of audio in context: time `tokens` greedy steps of the engine's decode step (after one
    untimed run, which also compiles it), never stopping early; the session is rolled back afterwards."""
    state = engine.open(SessionOptions())
    engine.feed(state, AudioChunk(np.zeros(seconds_to_samples(2.0), np.float32), 0))
    engine.step([state])
    mark = state.stream.position
    suffix = engine.pieces.caption_suffix(state.audio_open).embeds
    logits = ge.forward_rows(engine.model, [state.stream], [suffix], [None])
    run = lambda: ge.generate_detached(engine.model, [state.stream], logits, tokens, stop_ids=(),  # noqa: E731
                                       step=engine._decode_step)
    run()
    _sync()
    start = time.perf_counter()
    run()
    _sync()
    ms = (time.perf_counter() - start) * 1e3 / tokens
    kv = sum(c.k.nbytes + c.v.nbytes for c in state.stream.caches)  # what each step's attention reads, about
    gs.rollback(state.stream, mark)
    engine.close(state)
    bound = None if not gbps else (decode_weight_bytes(engine.model) + kv) / (gbps * 1e9) * 1e3
    return DecodeBound(ms, bound)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "12b"), default="tiny")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--media-s", type=float, default=12.0, help="media seconds each stream sends")
    parser.add_argument("--tick-s", type=float, default=0.2, help="media delivered per scheduler round")
    parser.add_argument("--max-batch", type=int, default=None, help="sessions per step (default 8 tiny, 64 12b)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    parser.add_argument("--layers", type=int, default=0, help="12b only: keep the last N decoder layers (a dry run)")
    parser.add_argument("--compile-decode", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile (CUDA graphs) the decode step (auto: on cuda only)")
    parser.add_argument("--decode-tokens", type=int, default=64, help="tokens timed for the batch-1 decode line")
    parser.add_argument("--hbm-gbps", type=float, default=None,
                        help=f"memory bandwidth for the decode bound, GB/s (default by device name: {HBM_GBPS})")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--emit-every-s", type=float, default=ge.Gemma4EngineConfig.emit_every_s,
                        help="new audio between two caption decodes (the emission policy's cadence)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # a shared CPU: oversubscribed threads spin and distort the timings
    if args.model == "12b" and not args.layers and not torch.cuda.is_available():
        parser.error("the whole 12B shape needs cuda (24 GB of bf16 weights); --layers N runs a dry run")
    max_batch = args.max_batch or (64 if args.model == "12b" else 8)
    engine = build_engine(args.model, {"max_batch": max_batch, "emit_every_s": args.emit_every_s,
                                       "device": args.device, "compile_decode": args.compile_decode}, args.layers)
    device = next(engine.model.parameters()).device
    layers = engine.model.config.text.num_hidden_layers
    print(f"# {args.model} ({layers} layers) on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, {args.media_s:g} s per stream, tick {args.tick_s:g} s, max_batch {max_batch}, "
          f"emit every {args.emit_every_s:g} s, {torch.get_num_threads()} threads", flush=True)
    b1 = batch1_decode(engine, args.decode_tokens, hbm_gbps(device, args.hbm_gbps))
    bound = "" if b1.fraction is None else f"; HBM bound {b1.bound_ms:.2f} ms: {100 * b1.fraction:.0f} % of it"
    print(f"# batch-1 decode: {b1.ms_per_token:.2f} ms/token ({1e3 / b1.ms_per_token:.0f} tok/s){bound}", flush=True)
    print("| streams | media | rtf | latency p50 s | latency p95 s | decode tok/s | KV MiB/stream |")
    print("|---|---|---|---|---|---|---|")
    largest = {False: 0, True: 0}
    for video in (False, True):
        for n in args.streams:
            timer = DecodeTimer()
            ge.generate_detached = timer
            try:
                row = simulate(engine, n, video, args.media_s, args.tick_s)
            finally:
                ge.generate_detached = timer._inner
            row = dataclasses.replace(row, decode_tok_s=timer.tokens / max(timer.seconds, 1e-9))
            largest[video] = n if row.rtf < 1.0 else largest[video]
            print(f"| {n} | {'audio+1fps video' if video else 'audio'} | {row.rtf:.3f} | {row.latency_p50_s:.3f} | "
                  f"{row.latency_p95_s:.3f} | {row.decode_tok_s:.0f} | {row.kv_mib_per_stream:.2f} |", flush=True)
    print(f"\nlargest N in real time (of those tried): audio {largest[False]}, audio + 1 fps video {largest[True]}")


if __name__ == "__main__":
    main()
