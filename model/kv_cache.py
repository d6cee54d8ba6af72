"""Per-layer KV caches for the Gemma 4 unified decoder: a ring for sliding layers, a growing buffer for full layers.

What this is: two small tensor containers that implement `model.gemma4.KVStore`. Both keep the real absolute
position of every stored entry beside it (-1 = empty slot), so masks are built from positions, never from slot
indices, and entries can be dropped or rolled back without re-rotating anything (K is cached after RoPE).
`update` is tensor ops only (write by index, return the buffers): a decode step over them can be compiled or
CUDA-graphed. Python-side bookkeeping (`commit`, `rollback`, growth, eviction) happens between steps.

Two more things every cache does, for the live engine (`model/gemma4_engine.py`):
- `snapshot` / `load`: a `CacheSnapshot` holds only the stored entries (an instruction prefix's keys, sliced to
  its length); `load` puts a cache back to exactly that context in place, without allocating a new cache;
- `begin` / `undo` / `end`: an undo log. Between `begin` and `end`, every write first saves what it overwrites
  (a copy as large as the write itself) and every counter is remembered, so `undo` returns the cache exactly to
  its state at `begin`, e.g. after a batched forward failed half-way through the layers.

What this is not: no policy. Which old full-layer context to evict in an unbounded stream is the engine's
decision; `FullKVCache.evict` / `keep_positions` are the hooks it needs. No paging and no cross-session batching
with different positions: every row of one cache is at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CacheSnapshot:
    """The stored entries of one layer's cache, oldest first (what `load` restores)."""

    k: torch.Tensor  # (B, KV, m, D) keys after RoPE, only the m stored entries
    v: torch.Tensor  # (B, KV, m, D)
    pos: torch.Tensor  # (m,) their absolute positions, increasing
    length: int  # the next position to write (tokens seen, stored or not)

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes + self.pos.nbytes


class _UndoLog:
    """The writes and counters of one cache since `begin`, so `undo` can return to that state.

    Both caches store k, v (B, KV, slots, D) and pos (slots,) and write them only through `_write` and `_set_pos`,
    which record what they overwrite while a log is open. Entries are undone newest first, so a slot written twice
    ends as it was before the first write."""

    COUNTERS: tuple[str, ...] = ()  # Python-side attributes that `undo` restores

    k: torch.Tensor
    v: torch.Tensor
    pos: torch.Tensor
    _log: list | None = None  # (slots, old k, old v, old pos) or (None, None, None, old pos array); None: closed
    _counters: dict | None = None

    def begin(self) -> None:
        """Start recording (one log at a time)."""
        if self._log is not None:
            raise RuntimeError("an undo log is already open on this cache")
        self._log, self._counters = [], {name: getattr(self, name) for name in self.COUNTERS}

    def undo(self) -> None:
        """Return to the state at `begin` (contents and counters) and close the log."""
        if self._log is None:
            raise RuntimeError("no undo log is open on this cache")
        for slots, k, v, pos in reversed(self._log):
            if slots is None:
                self.pos[: len(pos)] = pos
                self.pos[len(pos):] = -1  # slots added by a growth held nothing at `begin`
            else:
                self.k.index_copy_(2, slots, k)
                self.v.index_copy_(2, slots, v)
                self.pos.index_copy_(0, slots, pos)
        for name, value in self._counters.items():
            setattr(self, name, value)
        self._log = self._counters = None

    def end(self) -> None:
        """Keep every change since `begin` and close the log."""
        self._log = self._counters = None

    def _write(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor) -> None:
        if self._log is not None:
            self._log.append((slots, self.k.index_select(2, slots), self.v.index_select(2, slots),
                              self.pos.index_select(0, slots)))
        self.k.index_copy_(2, slots, k)
        self.v.index_copy_(2, slots, v)
        self.pos.index_copy_(0, slots, positions)

    def _set_pos(self, pos: torch.Tensor) -> None:
        """Replace the whole position array (a mask change: rollback, load); the keys stay where they are."""
        if self._log is not None:
            self._log.append((None, None, None, self.pos.clone()))
        self.pos.copy_(pos)  # in place: a captured graph may hold this buffer

    def _stored_snapshot(self, length: int) -> CacheSnapshot:
        order = (self.pos >= 0).nonzero().squeeze(1)
        order = order[self.pos[order].argsort()]
        return CacheSnapshot(self.k[:, :, order].clone(), self.v[:, :, order].clone(), self.pos[order].clone(), length)


class RingKVCache(_UndoLog):
    """Sliding-window layer cache: `window - 1 + slack` slots, position p lives in slot p % capacity.

    A query at position i needs keys i-window+1 .. i. Between calls the ring holds at least the last window-1
    positions; the extra `slack` slots let a caller roll back up to `slack` tokens (e.g. drop a prompt suffix and
    generated tokens and go on appending audio) and let chunks of up to `slack` tokens be written before attending
    without overwriting a key an earlier query of the chunk still needs. Larger chunks attend over
    [old ring, new keys] concatenated instead.
    """

    COUNTERS = ("length",)

    def __init__(self, batch: int, n_kv: int, head_dim: int, window: int, slack: int,
                 dtype: torch.dtype, device: torch.device | str):
        if slack < 1:
            raise ValueError("slack must be >= 1 so one decoded token fits beside the window")
        self.window = window
        self.capacity = window - 1 + slack
        self.k = torch.zeros(batch, n_kv, self.capacity, head_dim, dtype=dtype, device=device)  # (B, KV, C, D)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.full((self.capacity,), -1, dtype=torch.long, device=device)  # (C,) position per slot
        self.length = 0  # positions written so far (= next position), Python-side

    def update(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """k, v (B, KV, T, D) at positions (T,) -> keys/values/positions to attend over."""
        T = k.shape[2]
        if T <= self.capacity - (self.window - 1):
            # Write first, then attend over the ring: the slots overwritten held positions older than any query's
            # window (start + T - 1 - C <= start - window).
            self._write_ring(k, v, positions)
            return self.k, self.v, self.pos
        keys = torch.cat([self.k, k], dim=2)
        values = torch.cat([self.v, v], dim=2)
        key_pos = torch.cat([self.pos, positions])
        n = min(T, self.capacity)  # only the newest C entries survive in the ring
        self._write_ring(k[:, :, -n:], v[:, :, -n:], positions[-n:])
        return keys, values, key_pos

    def _write_ring(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor) -> None:
        self._write(positions % self.capacity, k, v, positions)

    def stored(self):
        """(k, v, positions) of every slot, without writing: what a query after the last commit attends over."""
        return self.k, self.v, self.pos

    def commit(self, n_new: int) -> None:
        """Record that `n_new` positions were appended by the last call (Python bookkeeping, outside any graph)."""
        self.length += n_new

    def prepare(self, n_new: int) -> None:
        """Nothing to grow: the ring is fixed-size."""

    @property
    def min_rollback_position(self) -> int:
        """The earliest position `rollback` can return to: every key its window needs must still be in the ring."""
        return max(0, self.length - (self.capacity - (self.window - 1)))

    def rollback(self, position: int) -> None:
        """Forget positions >= `position`."""
        if position < self.min_rollback_position:
            raise ValueError(f"cannot roll back to {position}: ring slack only reaches {self.min_rollback_position}")
        self._set_pos(self.pos.masked_fill(self.pos >= position, -1))
        self.length = min(self.length, position)

    def snapshot(self) -> CacheSnapshot:
        """The stored entries (at most `capacity`), oldest first."""
        return self._stored_snapshot(self.length)

    def load(self, snapshot: CacheSnapshot) -> None:
        """Hold exactly `snapshot`'s context (from a ring of the same window), in place."""
        keep = min(snapshot.pos.numel(), self.capacity)  # a longer context keeps its newest entries, as a ring would
        self._set_pos(torch.full_like(self.pos, -1))
        if keep:
            self._write_ring(snapshot.k[:, :, -keep:], snapshot.v[:, :, -keep:], snapshot.pos[-keep:])
        self.length = snapshot.length

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class FullKVCache(_UndoLog):
    """Full-attention layer cache: a preallocated buffer written by index that doubles when it fills.

    Entry index of position p is `p - evicted`, where `evicted` counts entries dropped by `evict` (positions are
    contiguous after the last eviction). In `static` mode `update` returns the whole buffer (fixed shape for
    compiled decode; empty slots are masked by position -1); otherwise only the filled prefix.
    """

    COUNTERS = ("n", "evicted")

    def __init__(self, batch: int, n_kv: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str, static: bool = False):
        self.k = torch.zeros(batch, n_kv, capacity, head_dim, dtype=dtype, device=device)  # (B, KV, N, D)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.full((capacity,), -1, dtype=torch.long, device=device)  # (N,) position per entry
        self.n = 0  # filled entries, Python-side
        self.evicted = 0  # entries removed before the current contiguous run
        self.static = static

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    @property
    def length(self) -> int:
        """Next position to write."""
        return self.n + self.evicted

    def prepare(self, n_new: int) -> None:
        """Grow (double) before a call that would overflow; a static-shape graph recompiles only then."""
        need = self.n + n_new
        if need <= self.capacity:
            return
        cap = self.capacity
        while cap < need:
            cap *= 2
        k = self.k.new_zeros(*self.k.shape[:2], cap, self.k.shape[3])
        v = torch.zeros_like(k)
        pos = self.pos.new_full((cap,), -1)
        k[:, :, : self.n] = self.k[:, :, : self.n]
        v[:, :, : self.n] = self.v[:, :, : self.n]
        pos[: self.n] = self.pos[: self.n]
        self.k, self.v, self.pos = k, v, pos

    def update(self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """k, v (B, KV, T, D) at positions (T,) -> keys/values/positions to attend over."""
        self._write(positions - self.evicted, k, v, positions)
        if self.static:
            return self.k, self.v, self.pos
        end = self.n + k.shape[2]
        return self.k[:, :, :end], self.v[:, :, :end], self.pos[:end]

    def stored(self):
        """(k, v, positions) of the filled entries, without writing."""
        return self.k[:, :, : self.n], self.v[:, :, : self.n], self.pos[: self.n]

    def commit(self, n_new: int) -> None:
        self.n += n_new

    def rollback(self, position: int) -> None:
        """Forget positions >= `position` (they are the stored tail; positions increase with the entry index)."""
        keep = int((self.pos[: self.n] < position).sum())
        pos = self.pos.clone()
        pos[keep: self.n] = -1
        self._set_pos(pos)
        self.n = keep
        self.evicted = position - keep  # positions < `position` that are not stored (evicted earlier)

    # --- eviction hooks (policy lives in the engine) ---------------------------------------------

    def keep_positions(self) -> torch.Tensor:
        """(n,) the positions currently stored, oldest first."""
        return self.pos[: self.n]

    def evict(self, drop_lo: int, drop_hi: int) -> None:
        """Drop stored positions in [drop_lo, drop_hi), e.g. old media between an attention-sink prefix and the
        recent context. Kept keys keep their real positions (RoPE is baked in), so masks stay correct; the
        dropped span can no longer be rolled back into. Not inside an undo log (it moves every entry)."""
        if self._log is not None:
            raise RuntimeError("evict between transactions, not inside one")
        keep = (self.pos[: self.n] < drop_lo) | (self.pos[: self.n] >= drop_hi)
        idx = keep.nonzero().squeeze(1)
        m = idx.numel()
        self.k[:, :, :m] = self.k[:, :, idx]
        self.v[:, :, :m] = self.v[:, :, idx]
        self.pos[:m] = self.pos[idx]
        self.pos[m: self.n] = -1
        self.evicted += self.n - m
        self.n = m

    def snapshot(self) -> CacheSnapshot:
        """The stored entries, oldest first."""
        return self._stored_snapshot(self.length)

    def load(self, snapshot: CacheSnapshot) -> None:
        """Hold exactly `snapshot`'s context, in place (growing only if it does not fit)."""
        m = snapshot.pos.numel()
        self._set_pos(torch.full_like(self.pos, -1))
        self.n, self.evicted = 0, snapshot.length - m  # a snapshot of an evicted cache keeps its positions
        self.prepare(m)
        if m:
            self._write(torch.arange(m, device=self.pos.device), snapshot.k, snapshot.v, snapshot.pos)
        self.n = m

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


def nbytes_per_token(n_kv: int, head_dim: int, dtype: torch.dtype) -> int:
    """K and V of one token in one layer."""
    return 2 * n_kv * head_dim * torch.empty((), dtype=dtype).element_size()
