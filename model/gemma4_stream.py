"""Streaming inference over `model.gemma4.Gemma4Unified`: per-session state, prefill, decode one token, rollback.

What this is: gpt-fast style functions over an explicit `StreamState` (one per session; rows of a batch advance
together). `prefill` appends any number of new tokens -- text, audio frames one by one or in blocks, a whole
image or video-frame block -- and returns the last token's logits; `decode_step` is the separate hot step (the
only thing worth compiling; `decode_one_token` wraps its bookkeeping); `rollback` returns the session to an earlier position, e.g. to drop a prompt
suffix and generated text and go on appending audio. Logits equal one full forward over the same tokens.
`snapshot` / `load_snapshot` keep a context (an instruction prefix) and put a state back to it in place;
`begin` / `undo` / `end` make any sequence of calls on a state transactional (`model/kv_cache.py`'s undo log).

What this is not: no scheduling or eviction policy (`model/gemma4_engine.py`), no batching of sessions at
different positions (`model/gemma4_batch.py`), and no pre-processing (`model/gemma4_processing.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from patchstream.model.gemma4 import FULL, MM_IMAGE, MM_VIDEO, AttentionContext, Gemma4Unified
from patchstream.model.kv_cache import CacheSnapshot, FullKVCache, RingKVCache

DEFAULT_ROLLBACK_SLACK = 256  # tokens a session can roll back on sliding layers (a caption suffix + its decode)
DEFAULT_FULL_CAPACITY = 4096  # initial full-layer slots per session; doubles when filled


@dataclass
class StreamState:
    """One session's decoder state. Pass it explicitly; never share it between sessions."""

    caches: list[RingKVCache | FullKVCache]  # one per layer: a ring on sliding layers, a growing buffer on full
    position: int = 0  # absolute position of the next token (the same for every row)
    last_types: torch.Tensor | None = None  # (B,) mm type of each row's last token, to refuse split vision blocks
    saved: tuple | None = None  # (position, last_types) at `begin`, while an undo log is open


def new_state(model: Gemma4Unified, batch: int = 1, rollback_slack: int = DEFAULT_ROLLBACK_SLACK,
              full_capacity: int = DEFAULT_FULL_CAPACITY, static: bool = False) -> StreamState:
    """Allocate the caches in the model's dtype and device. `static=True` makes full-layer attention span the whole
    preallocated buffer (fixed shapes for a compiled / CUDA-graphed decode step)."""
    cfg = model.config.text
    w = model.decoder.embed_tokens.weight
    caches = []
    for i, t in enumerate(cfg.layer_types):
        shape = (batch, cfg.layer_kv_heads[i], cfg.layer_head_dim[i])
        if t == FULL:
            caches.append(FullKVCache(*shape, full_capacity, w.dtype, w.device, static=static))
        else:
            caches.append(RingKVCache(*shape, cfg.sliding_window, rollback_slack, w.dtype, w.device))
    return StreamState(caches=caches)


def _check_blocks(state: StreamState, mm_token_type_ids: torch.Tensor | None) -> None:
    """A vision block (one image / one video frame) must arrive in one call: its queries see each other."""
    if mm_token_type_ids is None:
        state.last_types = None
        return
    if state.last_types is not None:
        prev, first = state.last_types, mm_token_type_ids[:, 0]
        continues = ((prev == MM_IMAGE) | (prev == MM_VIDEO)) & (first == prev)
        if bool(continues.any()):
            raise ValueError("a vision block was split across prefill calls; send each image / video frame whole")
    state.last_types = mm_token_type_ids[:, -1]


@torch.no_grad()
def prefill(model: Gemma4Unified, state: StreamState, inputs_embeds: torch.Tensor,
            mm_token_type_ids: torch.Tensor | None = None,
            vision_bidirectional_on_full_layers: bool = False) -> torch.Tensor:
    """Append inputs_embeds (B, T, d) (text embeddings with soft tokens already in place, see
    `Gemma4Unified.embed_inputs`); mm_token_type_ids (B, T) marks vision blocks. -> last-token logits (B, vocab)."""
    _check_blocks(state, mm_token_type_ids)
    T = inputs_embeds.shape[1]
    for c in state.caches:
        c.prepare(T)
    ctx = model.make_context(mm_token_type_ids, state.position, T, inputs_embeds.device,
                             vision_bidirectional_on_full_layers)
    h = model.forward_embeddings(inputs_embeds, ctx, state.caches)  # (B, T, d)
    for c in state.caches:
        c.commit(T)
    state.position += T
    return model.decoder.logits(h[:, -1]).float()  # only the last position needs the 262k-wide head


@torch.no_grad()
def prefill_tokens(model: Gemma4Unified, state: StreamState, input_ids: torch.Tensor,
                   mm_token_type_ids: torch.Tensor | None = None,
                   vision_bidirectional_on_full_layers: bool = False, **media) -> torch.Tensor:
    """Like `prefill`, from input_ids (B, T) with placeholders plus the processor's media tensors for exactly the
    placeholders in this chunk (`input_features`, `pixel_values`, ... as `Gemma4Unified.embed_inputs` takes)."""
    h = model.embed_inputs(input_ids, **media)
    return prefill(model, state, h, mm_token_type_ids, vision_bidirectional_on_full_layers)


def decode_step(model: Gemma4Unified, caches: list, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """token (B,), position (1,) -> logits (B, vocab). Tensor ops only (no Python state changes, no syncs), so this
    is the function to `torch.compile`; with `static=True` caches every shape is fixed and it can be CUDA-graphed.
    Decode never carries vision blocks, so the context's `start` is irrelevant here."""
    h = model.decoder.embed(token[:, None])  # (B, 1, d)
    ctx = AttentionContext(q_pos=position, q_blk=None, start=0, sliding_window=model.config.text.sliding_window,
                           bidir_full=False)
    return model.decoder.logits(model.forward_embeddings(h, ctx, caches)[:, -1]).float()


@torch.no_grad()
def decode_one_token(model: Gemma4Unified, state: StreamState, token: torch.Tensor,
                     step: Callable = decode_step) -> torch.Tensor:
    """token (B,) -> logits (B, vocab) of the next position. `step` may be a compiled `decode_step`."""
    for c in state.caches:
        c.prepare(1)
    position = torch.full((1,), state.position, dtype=torch.long, device=token.device)
    logits = step(model, state.caches, token, position)
    for c in state.caches:
        c.commit(1)
    state.position += 1
    state.last_types = None
    return logits


@dataclass(frozen=True)
class StateSnapshot:
    """A session's context as stored entries only (sliced to its length): what `load_snapshot` restores."""

    caches: tuple[CacheSnapshot, ...]  # one per layer
    position: int  # the next position

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self.caches)


def snapshot(state: StreamState) -> StateSnapshot:
    """A copy of what `state` holds now (never its empty slots)."""
    return StateSnapshot(tuple(c.snapshot() for c in state.caches), state.position)


def load_snapshot(state: StreamState, snap: StateSnapshot) -> None:
    """Put `state` back to exactly `snap`'s context, in place (its buffers are reused, nothing is copied whole).
    The snapshot must come from a state of the same model and ring slack."""
    for cache, saved in zip(state.caches, snap.caches, strict=True):
        cache.load(saved)
    state.position = snap.position
    state.last_types = None


def begin(state: StreamState) -> None:
    """Open an undo log on every layer: until `end`, `undo` returns the state exactly to now."""
    for c in state.caches:
        c.begin()
    state.saved = (state.position, state.last_types)


def undo(state: StreamState) -> None:
    """Undo every change since `begin` (cache contents, counters, position) and close the log."""
    for c in state.caches:
        c.undo()
    state.position, state.last_types = state.saved
    state.saved = None


def end(state: StreamState) -> None:
    """Keep every change since `begin` and close the log."""
    for c in state.caches:
        c.end()
    state.saved = None


def rollback(state: StreamState, position: int) -> None:
    """Return the session to `position` (tokens at >= position are forgotten on every layer)."""
    if not 0 <= position <= state.position:
        raise ValueError(f"cannot roll back to {position} from {state.position}")
    reach = max((c.min_rollback_position for c in state.caches if isinstance(c, RingKVCache)), default=0)
    if position < reach:  # checked before touching any layer, so a refused rollback changes nothing
        raise ValueError(f"cannot roll back to {position}: the sliding rings' slack only reaches {reach}")
    for c in state.caches:
        c.rollback(position)
    state.position = position
    state.last_types = None


# ----------------------------------------------------------------------------------------------------
# Choosing tokens
# ----------------------------------------------------------------------------------------------------


def suppress(logits: torch.Tensor, token_ids: tuple[int, ...]) -> torch.Tensor:
    """Set the given ids to -inf: `<audio|>` / `<image|>` rows of the tied head must never be emitted."""
    if token_ids:
        logits = logits.clone()
        logits[..., list(token_ids)] = float("-inf")
    return logits


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """(B, vocab) -> (B,)"""
    return logits.argmax(dim=-1)


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 64, top_p: float = 0.95,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, vocab) -> (B,) with the checkpoint's generation config defaults (T 1.0, top-k 64, top-p 0.95)."""
    logits = logits.float() / max(temperature, 1e-5)
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(model: Gemma4Unified, state: StreamState, logits: torch.Tensor, max_new_tokens: int,
             choose: Callable[[torch.Tensor], torch.Tensor] = greedy,
             stop_ids: tuple[int, ...] | None = None, step: Callable = decode_step) -> torch.Tensor:
    """Decode from the logits (B, vocab) a prefill returned -> tokens (B, n). Stops when every row has emitted a
    stop id (default: the config's eos ids). Suppressed ids are masked before `choose`."""
    stop = torch.tensor(model.config.eos_token_ids if stop_ids is None else stop_ids, device=logits.device)
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    out = []
    for i in range(max_new_tokens):
        token = choose(suppress(logits, model.config.suppress_token_ids))
        out.append(token)
        done |= torch.isin(token, stop)
        if bool(done.all()) or i == max_new_tokens - 1:
            break
        logits = decode_one_token(model, state, token, step)
    return torch.stack(out, dim=1)
