"""Throughput benchmark for the from-scratch Gemma 4 unified model (not a test).

What it measures, per config and batch size (1/8/32 by default): prefill tokens/s (a chunk of audio soft tokens
appended to a session, as live ASR does), decode tokens/s (greedy, one token per step through the streaming
state), and the KV bytes one stream holds per minute of audio (25 tokens/s). Configs: the tiny test config on CPU,
and the 12B shape with random bf16 weights on a GPU (cuda when available). For the 12B it reports decode at batch 1
as a fraction of the HBM-bandwidth bound: (bytes of weights one step reads) / bandwidth / measured step time.

What it is not: no accuracy check (tests/model/ holds those), no real weights, no multi-GPU.

    python -m patchstream.bench.gemma4_bench                       # tiny on CPU, plus the 12B when cuda is available
    python -m patchstream.bench.gemma4_bench --configs 12b --hbm-gbps 3350   # compiled decode is the cuda default
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch

from patchstream.model import gemma4_stream as gs
from patchstream.model.gemma4 import FULL, Gemma4Config, Gemma4Unified, gemma4_12b_config
from patchstream.model.kv_cache import nbytes_per_token

AUDIO_TOKENS_PER_S = 25  # one token per 40 ms frame
HBM_GBPS = {"H200": 4800.0, "H100 PCIe": 2000.0, "H100 NVL": 3900.0, "H100": 3350.0, "A100": 2039.0}  # datasheets


def tiny_config() -> Gemma4Config:
    """The shape of the tests' tiny model: 4 layers, width 64, vocab 512, sliding window 8."""
    text = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 32,
            "num_global_key_value_heads": 1, "attention_k_eq_v": True, "sliding_window": 8,
            "final_logit_softcapping": 30.0, "layer_types": ["sliding_attention", "full_attention"] * 2}
    return Gemma4Config.from_dict({
        "text_config": text, "audio_config": {"audio_embed_dim": 40},
        "vision_config": {"patch_size": 2, "pooling_kernel_size": 3, "mm_embed_dim": 48, "mm_posemb_size": 16,
                          "output_proj_dims": 48},
        "boi_token_id": 500, "eoi_token_id": 501, "image_token_id": 502, "video_token_id": 503,
        "boa_token_id": 504, "eoa_token_index": 505, "audio_token_id": 506,
    })


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    config: str  # "tiny" or "12b"
    device: str  # what ran it
    step: str  # "eager" or "compiled" decode step
    batch: int  # streams advanced together
    prefill_tok_s: float  # appended tokens per second, all streams together
    decode_tok_s: float  # generated tokens per second, all streams together
    decode_ms: float  # one decode step
    kv_mib_per_audio_min: float  # one stream, after one minute of audio, as allocated (ring incl. rollback slack)
    kv_live_mib_per_audio_min: float  # the part attention needs (window - 1 on sliding layers)
    bound_fraction: float | None  # batch-1 decode vs the HBM bound; None off-GPU


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hbm_gbps(device: torch.device, override: float | None) -> float | None:
    """GB/s of the device's memory: the flag, else the datasheet value by device name, else None."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in HBM_GBPS.items() if k in name), None)


def decode_weight_bytes(model: Gemma4Unified) -> int:
    """Bytes one decode step must read: every decoder weight plus the tied embedding/head (the 262k x d matrix is
    read whole by the head). The vision and audio embedders are not touched."""
    return sum(p.numel() * p.element_size() for p in model.decoder.parameters())


def kv_bytes_per_audio_minute(model: Gemma4Unified, rollback_slack: int) -> int:
    """One stream after 60 s of audio: full layers hold every token, sliding rings hold window-1+slack slots
    (slack 0: what attention actually needs)."""
    cfg, dtype = model.config.text, model.decoder.embed_tokens.weight.dtype
    tokens = 60 * AUDIO_TOKENS_PER_S
    total = 0
    for i, t in enumerate(cfg.layer_types):
        per_tok = nbytes_per_token(cfg.layer_kv_heads[i], cfg.layer_head_dim[i], dtype)
        total += per_tok * (tokens if t == FULL else min(tokens, cfg.sliding_window - 1 + rollback_slack))
    return total


def time_prefill(model: Gemma4Unified, batch: int, context: int, chunk: int, slack: int,
                 device) -> tuple[float, gs.StreamState]:
    """Append `context` audio soft tokens in chunks of `chunk`; returns (tokens/s, the state)."""
    d_audio = model.config.audio.audio_embed_dim
    state = gs.new_state(model, batch=batch, rollback_slack=max(slack, chunk), full_capacity=context + 512,
                         static=True)
    frames = torch.randn(batch, context, d_audio, device=device) * 0.1
    with torch.no_grad():
        h = model.embed_audio(frames)  # (B, context, d), soft tokens need no placeholder ids here
    types = torch.full((batch, chunk), 3, device=device)
    warm = gs.new_state(model, batch=batch, rollback_slack=max(slack, chunk), full_capacity=chunk, static=True)
    gs.prefill(model, warm, h[:, :chunk], types)  # first-call overheads out of the timing
    del warm
    sync(device)
    t0 = time.perf_counter()
    for a in range(0, context, chunk):
        gs.prefill(model, state, h[:, a: a + chunk], types[:, : h[:, a: a + chunk].shape[1]])
    sync(device)
    return batch * context / (time.perf_counter() - t0), state


def time_decode(model: Gemma4Unified, state: gs.StreamState, steps: int, step, device) -> float:
    """Seconds per greedy decode step (after 3 warm-up steps, which also trigger compilation)."""
    token = torch.full((state.caches[0].k.shape[0],), 10, dtype=torch.long, device=device)
    for _ in range(3):
        token = gs.greedy(gs.decode_one_token(model, state, token, step))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        token = gs.greedy(gs.decode_one_token(model, state, token, step))
    sync(device)
    return (time.perf_counter() - t0) / steps


def make_step(use_compile: bool | None, device: torch.device):
    """The decode step, compiled when asked (CUDA graphs on GPU via reduce-overhead); eager if compile fails."""
    if use_compile is None:
        use_compile = device.type == "cuda"
    if not use_compile:
        return gs.decode_step
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    return torch.compile(gs.decode_step, mode=mode, dynamic=False)


def mark_static(state: gs.StreamState) -> None:
    """Cache tensors keep their addresses across steps: tell dynamo so CUDA graphs may mutate them in place."""
    for c in state.caches:
        for t in (c.k, c.v, c.pos):
            torch._dynamo.mark_static_address(t)


def bench_config(name: str, model: Gemma4Unified, device: torch.device, args) -> list[Row]:
    rows = []
    weights = decode_weight_bytes(model)
    gbps = hbm_gbps(device, args.hbm_gbps)
    kv = kv_bytes_per_audio_minute(model, args.rollback_slack) / 2**20
    kv_live = kv_bytes_per_audio_minute(model, 0) / 2**20
    for batch in args.batches:
        step = make_step(args.compile, device)
        step_kind = "eager" if step is gs.decode_step else "compiled"
        prefill_tps, state = time_prefill(model, batch, args.context, args.chunk, args.rollback_slack, device)
        mark_static(state)
        try:
            step_s = time_decode(model, state, args.steps, step, device)
        except Exception as err:  # compile is optional: report and fall back to eager
            print(f"# compiled decode failed ({type(err).__name__}: {err}); timing eager", file=sys.stderr)
            _, state = time_prefill(model, batch, args.context, args.chunk, args.rollback_slack, device)
            step_s = time_decode(model, state, args.steps, gs.decode_step, device)
            step_kind = "eager"
        bound = None
        if batch == 1 and gbps:
            bound = (weights / (gbps * 1e9)) / step_s
        rows.append(Row(name, device_name(device), step_kind, batch, prefill_tps, batch / step_s, step_s * 1e3,
                        kv, kv_live, bound))
        del state
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu x{torch.get_num_threads()}"


def print_table(rows: list[Row]) -> None:
    head = (f"{'config':6} {'device':24} {'step':8} {'batch':>5} {'prefill tok/s':>14} {'decode tok/s':>13} "
            f"{'step ms':>9} {'KV MiB/stream/audio-min':>24} {'(live)':>8} {'b1 decode / HBM bound':>22}")
    print(head)
    print("-" * len(head))
    for r in rows:
        frac = f"{100 * r.bound_fraction:.1f} %" if r.bound_fraction is not None else "-"
        print(f"{r.config:6} {r.device[:24]:24} {r.step:8} {r.batch:>5} {r.prefill_tok_s:>14,.0f} {r.decode_tok_s:>13,.1f} "
              f"{r.decode_ms:>9.2f} {r.kv_mib_per_audio_min:>24.1f} {r.kv_live_mib_per_audio_min:>8.1f} {frac:>22}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=None, help="comma list of tiny,12b (default: tiny, plus 12b on cuda)")
    p.add_argument("--batches", default="1,8,32", help="comma list of batch sizes")
    p.add_argument("--context", type=int, default=None, help="prefilled tokens per stream (default 256 tiny, 1024 12B)")
    p.add_argument("--chunk", type=int, default=None, help="prefill chunk (default 64 tiny, 256 12B)")
    p.add_argument("--steps", type=int, default=32, help="timed decode steps")
    p.add_argument("--rollback-slack", type=int, default=gs.DEFAULT_ROLLBACK_SLACK, help="ring slack, tokens")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the decode step, CUDA graphs on GPU (default: on for cuda, off on CPU)")
    p.add_argument("--hbm-gbps", type=float, default=None, help="memory bandwidth, GB/s (default: by device name)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (1: the tiny model gains nothing from more; OpenMP spin-waits on a busy machine)")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    configs = args.configs.split(",") if args.configs else (["tiny", "12b"] if cuda else ["tiny"])
    print("# command: python -m patchstream.bench.gemma4_bench " + " ".join(sys.argv[1:] if argv is None else argv))
    rows: list[Row] = []
    for name in configs:
        if name == "tiny":
            device = torch.device("cpu")
            torch.manual_seed(0)
            model = Gemma4Unified.random(tiny_config(), torch.float32, device)
            ctx, chunk = args.context or 256, args.chunk or 64
        elif name == "12b":
            if not cuda:
                # Sizes need no weights: the meta-device model in bf16 gives them exactly.
                meta = Gemma4Unified.on_meta(gemma4_12b_config()).to(torch.bfloat16)
                print(f"# 12b timings skipped: no cuda device (they need ~24 GB of bf16 weights on a GPU); "
                      f"decode reads {decode_weight_bytes(meta) / 1e9:.2f} GB of weights per step; "
                      f"KV per stream per audio minute: {kv_bytes_per_audio_minute(meta, 0) / 2**20:.0f} MiB live, "
                      f"{kv_bytes_per_audio_minute(meta, args.rollback_slack) / 2**20:.0f} MiB allocated")
                continue
            device = torch.device("cuda")
            model = Gemma4Unified.random(gemma4_12b_config(), torch.bfloat16, device)
            ctx, chunk = args.context or 1024, args.chunk or 256
            print(f"# 12b decode reads {decode_weight_bytes(model) / 1e9:.2f} GB of weights per step")
        else:
            raise SystemExit(f"unknown config {name!r}")
        sub = argparse.Namespace(**{**vars(args), "context": ctx, "chunk": chunk})
        rows += bench_config(name, model, device, sub)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(rows)


if __name__ == "__main__":
    main()
