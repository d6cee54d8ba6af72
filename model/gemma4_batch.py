"""Ragged batching over sessions at different positions: one decoder forward for many `StreamState`s.

What this is: `forward_rows` runs one forward for B sessions, each appending its own number of tokens (a prefill
chunk, a prompt suffix, or one decoded token) at its own position. Rows are padded to the longest; every row
writes only its real tokens into its own caches (`RowCaches`), reads its own keys back, and the keys of all rows
are padded into one (B, KV, S, D) tensor with position -1 in the holes, so the per-row masks of `RaggedContext`
hide them. `generate_rows` decodes greedy tokens for many sessions together, writing them into their caches.
`generate_detached` gives the same tokens for an answer that will be rolled back anyway: it gathers the rows'
keys once into a static buffer and decodes there with `detached_decode_step`, the fixed-shape step to compile
and CUDA-graph. A row's tokens equal the same session run alone (`gemma4_stream.prefill` / `generate`).

What this is not: paged attention. `forward_rows` gathers the rows' keys per call (a copy of the live KV); on a
GPU the next step is a paged kernel (flash-attn varlen / FlashInfer) over one pool of caches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from patchstream.model.gemma4 import SLIDING, Gemma4Unified, vision_block_ids
from patchstream.model.gemma4_stream import StreamState, _check_blocks, greedy, suppress


@dataclass
class RaggedContext:
    """The masks of one ragged call: per-row query positions, -1 on padding queries."""

    q_pos: torch.Tensor  # (B, T) absolute positions of the new tokens, -1 past a row's length
    q_blk: torch.Tensor | None  # (B, T) vision block ids (-1 outside a block), or None without vision tokens
    start: torch.Tensor  # (B,) absolute position of each row's first new token
    sliding_window: int  # keys per query including itself
    bidir_full: bool = False  # transformers' plain-forward mask semantics (see `AttentionContext`)
    _cache: dict = field(default_factory=dict)

    def mask(self, layer_type: str, k_pos: torch.Tensor) -> torch.Tensor:
        """k_pos (B, S) -> bool (B, 1, T, S). All layers of one type share a key layout within a call."""
        key = (layer_type, k_pos.shape[-1])
        if key not in self._cache:
            self._cache[key] = self._build(layer_type, k_pos)
        return self._cache[key]

    def _build(self, layer_type: str, k_pos: torch.Tensor) -> torch.Tensor:
        qp, kp = self.q_pos[:, :, None], k_pos[:, None, :]  # (B, T, 1), (B, 1, S)
        valid = kp >= 0
        causal = (kp <= qp) & valid
        window = kp > qp - self.sliding_window
        same = self._same_block(k_pos) & valid
        if layer_type == SLIDING:
            allowed = ((window & causal) | same) if self.bidir_full else (window & (causal | same))
        else:
            allowed = (causal | same) if self.bidir_full else causal
        # A padding query sees every valid key: its output is dropped, but an all-False row would make NaNs.
        allowed = torch.where(qp < 0, valid, allowed)
        return allowed[:, None]  # (B, 1, T, S)

    def _same_block(self, k_pos: torch.Tensor) -> torch.Tensor:
        if self.q_blk is None:
            return torch.zeros(1, 1, 1, dtype=torch.bool, device=k_pos.device)
        T = self.q_blk.shape[1]
        rel = k_pos - self.start[:, None]  # (B, S) index of a key among its row's new tokens
        is_new = (rel >= 0) & (rel < T)
        k_blk = torch.gather(self.q_blk, 1, rel.clamp(0, T - 1))
        k_blk = torch.where(is_new, k_blk, torch.full_like(k_blk, -1))
        return (self.q_blk[:, :, None] == k_blk[:, None, :]) & (self.q_blk[:, :, None] >= 0)


class RowCaches:
    """One layer's caches of B sessions as one `KVStore`: each row writes its real tokens into its own cache."""

    def __init__(self, caches: Sequence, lengths: Sequence[int]):
        self.caches = caches  # one per row, each a batch-1 RingKVCache / FullKVCache of this layer
        self.lengths = lengths  # real new tokens per row

    def update(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """k, v (B, KV, T, D), positions (B, T) -> keys, values (B, KV, S, D) and key positions (B, S), padded."""
        rows = [cache.update(k[i:i + 1, :, :n], v[i:i + 1, :, :n], positions[i, :n])
                for i, (cache, n) in enumerate(zip(self.caches, self.lengths))]
        S = max(keys.shape[2] for keys, _, _ in rows)
        B, KV, _, D = k.shape
        keys, values = k.new_zeros(B, KV, S, D), v.new_zeros(B, KV, S, D)
        key_pos = positions.new_full((B, S), -1)
        for i, (row_k, row_v, row_pos) in enumerate(rows):
            n = row_k.shape[2]
            keys[i, :, :n], values[i, :, :n], key_pos[i, :n] = row_k[0], row_v[0], row_pos
        return keys, values, key_pos


def _pad_rows(embeds: Sequence[torch.Tensor], types: Sequence[torch.Tensor | None], states: Sequence[StreamState]):
    """Per-row (n_i, d) embeddings -> padded h (B, T, d), q_pos (B, T), mm types (B, T) or None."""
    lengths = [e.shape[0] for e in embeds]
    B, T, d = len(embeds), max(lengths), embeds[0].shape[-1]
    device = embeds[0].device
    h = embeds[0].new_zeros(B, T, d)
    q_pos = torch.full((B, T), -1, dtype=torch.long, device=device)
    mm = torch.zeros(B, T, dtype=torch.long, device=device) if any(t is not None for t in types) else None
    for i, (e, t, state) in enumerate(zip(embeds, types, states)):
        n = lengths[i]
        h[i, :n] = e
        q_pos[i, :n] = torch.arange(state.position, state.position + n, device=device)
        if t is not None:
            mm[i, :n] = t.to(device)
    return h, q_pos, mm, lengths


@torch.no_grad()
def forward_rows(model: Gemma4Unified, states: Sequence[StreamState], embeds: Sequence[torch.Tensor],
                 types: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Append embeds[i] (n_i, d) with mm types[i] (n_i,) (or None) to states[i] -> last-token logits (B, vocab).
    A vision block must come whole in one row, as for `gemma4_stream.prefill`."""
    h, q_pos, mm, lengths = _pad_rows(embeds, types, states)
    for state, t, n in zip(states, types, lengths):
        _check_blocks(state, None if t is None else t[None])
        for cache in state.caches:
            cache.prepare(n)
    blk = vision_block_ids(mm) if mm is not None else None
    ctx = RaggedContext(q_pos=q_pos, q_blk=blk if blk is not None and bool((blk >= 0).any()) else None,
                        start=q_pos[:, 0].clone(), sliding_window=model.config.text.sliding_window)
    layers = [RowCaches([state.caches[i] for state in states], lengths) for i in range(len(states[0].caches))]
    out = model.forward_embeddings(h, ctx, layers)  # (B, T, d)
    for state, n in zip(states, lengths):
        for cache in state.caches:
            cache.commit(n)
        state.position += n
    last = out[torch.arange(len(states)), torch.tensor(lengths) - 1]  # (B, d)
    return model.decoder.logits(last).float()


@torch.no_grad()
def generate_rows(model: Gemma4Unified, states: Sequence[StreamState], logits: torch.Tensor, max_new_tokens: int,
                  stop_ids: tuple[int, ...] | None = None) -> list[list[int]]:
    """Greedy tokens for every row from the logits (B, vocab) its prefill returned; a row stops at a stop id
    (kept) or after `max_new_tokens`, and stops costing compute then. The same tokens as `gemma4_stream.generate`
    per session."""
    stop = set(model.config.eos_token_ids if stop_ids is None else stop_ids)
    out: list[list[int]] = [[] for _ in states]
    live = list(range(len(states)))
    for step in range(max_new_tokens):
        tokens = greedy(suppress(logits, model.config.suppress_token_ids)).tolist()
        for row, token in zip(live, tokens):
            out[row].append(token)
        keep = [j for j, (row, token) in enumerate(zip(live, tokens)) if token not in stop]
        if not keep or step == max_new_tokens - 1:
            break
        live = [live[j] for j in keep]
        ids = torch.tensor([[tokens[j]] for j in keep], device=logits.device)
        embeds = model.decoder.embed(ids)  # (b, 1, d)
        logits = forward_rows(model, [states[r] for r in live], list(embeds), [None] * len(live))
    return out


# ----------------------------------------------------------------------------------------------------
# Detached decode: a static-shape copy of the rows' caches for an answer that will be rolled back anyway
# ----------------------------------------------------------------------------------------------------

DECODE_BUCKET = 256  # gathered key lengths round up to this: few distinct shapes for compiled / CUDA-graphed steps


def gather_rows(caches: Sequence, room: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """One layer's stored keys of B rows -> k, v (B, KV, S + room, D), positions (B, S + room), S: the rows'
    keys padded (position -1) to a multiple of `DECODE_BUCKET`, then `room` empty slots for decoded tokens."""
    rows = [cache.stored() for cache in caches]
    S = -(-max(k.shape[2] for k, _, _ in rows) // DECODE_BUCKET) * DECODE_BUCKET
    k0 = rows[0][0]
    k = k0.new_zeros(len(rows), k0.shape[1], S + room, k0.shape[3])
    v = torch.zeros_like(k)
    pos = torch.full((len(rows), S + room), -1, dtype=torch.long, device=k0.device)
    for i, (row_k, row_v, row_pos) in enumerate(rows):
        n = row_k.shape[2]
        k[i, :, :n], v[i, :, :n], pos[i, :n] = row_k[0], row_v[0], row_pos
    return k, v, pos, S


class _SlotKV:
    """A gathered layer as a `KVStore`: every row writes its next token into the same slot (fixed shapes).
    Sliding-window expiry needs no ring here: the mask reads positions."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, slot: torch.Tensor):
        self.k, self.v, self.pos, self.slot = k, v, pos, slot

    def update(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """k, v (B, KV, 1, D), positions (B, 1) -> the whole buffers."""
        self.k.index_copy_(2, self.slot, k)
        self.v.index_copy_(2, self.slot, v)
        self.pos.index_copy_(1, self.slot, positions)
        return self.k, self.v, self.pos


def detached_decode_step(model: Gemma4Unified, keys: list[torch.Tensor], values: list[torch.Tensor],
                         key_pos: list[torch.Tensor], slots: list[torch.Tensor], token: torch.Tensor,
                         position: torch.Tensor) -> torch.Tensor:
    """token (B,), position (B,) -> logits (B, vocab), writing into the gathered buffers at `slots` (one (1,)
    tensor per layer). Tensor arguments only, no Python state: the function to `torch.compile` (CUDA graphs)."""
    h = model.decoder.embed(token[:, None])  # (B, 1, d)
    ctx = RaggedContext(q_pos=position[:, None], q_blk=None, start=position,
                        sliding_window=model.config.text.sliding_window)
    layers = [_SlotKV(*layer) for layer in zip(keys, values, key_pos, slots)]
    return model.decoder.logits(model.forward_embeddings(h, ctx, layers)[:, -1]).float()


@torch.no_grad()
def generate_detached(model: Gemma4Unified, states: Sequence[StreamState], logits: torch.Tensor,
                      max_new_tokens: int, stop_ids: tuple[int, ...] | None = None,
                      step=detached_decode_step) -> list[list[int]]:
    """`generate_rows`' tokens without touching the sessions' caches: all rows decode on a gathered static copy
    (rows that stopped keep decoding there, their tokens dropped), so the step has one shape per (rows, bucket).
    `step` may be a compiled `detached_decode_step`. The sessions stay where their prefill left them."""
    stop = set(model.config.eos_token_ids if stop_ids is None else stop_ids)
    gathered = [gather_rows([state.caches[i] for state in states], max_new_tokens)
                for i in range(len(states[0].caches))]
    keys, values, key_pos = ([g[j] for g in gathered] for j in range(3))
    slots = [torch.full((1,), g[3], dtype=torch.long, device=logits.device) for g in gathered]
    position = torch.tensor([state.position for state in states], device=logits.device)
    out: list[list[int]] = [[] for _ in states]
    done = [False] * len(states)
    for t in range(max_new_tokens):
        token = greedy(suppress(logits, model.config.suppress_token_ids))
        for row, value in enumerate(token.tolist()):
            if not done[row]:
                out[row].append(value)
                done[row] = value in stop
        if all(done) or t == max_new_tokens - 1:
            break
        logits = step(model, keys, values, key_pos, slots, token, position)
        position = position + 1
        for slot in slots:
            slot += 1
    return out
