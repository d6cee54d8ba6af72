"""A least-recently-used cache of computed prompt prefixes, bounded by entry count and by bytes.

What this is: the live Gemma 4 engine's store of instruction prefixes (`gemma4_stream.StateSnapshot`s, keyed by
the bias prompt that is part of the prefix). Clients choose prompts, so the store must stay bounded however many
distinct prompts arrive: at most `max_entries` entries and `max_bytes` bytes, the least recently used going first.
A value larger than `max_bytes` on its own is not kept (the caller uses it once and it is freed).

What this is not: a cache of anything mutable. Values are never changed after `put`; callers copy out of them
(`gemma4_stream.load_snapshot`). It imports nothing from torch: values only need an `nbytes()`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Protocol


class Sized(Protocol):
    def nbytes(self) -> int: ...


class PrefixCache:
    """key -> value with `nbytes()`, LRU within `max_entries` and `max_bytes`."""

    def __init__(self, max_entries: int, max_bytes: int):
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("prefix cache bounds must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, Sized] = OrderedDict()  # least recently used first
        self.nbytes = 0  # sum of the kept values' nbytes()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> Sized | None:
        """The value, now the most recently used; None when absent."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Sized) -> None:
        """Keep `value` as the most recently used, evicting the least recently used beyond the bounds."""
        size = value.nbytes()
        if key in self._entries:
            self.nbytes -= self._entries.pop(key).nbytes()
        if size > self.max_bytes or self.max_entries == 0:
            return
        self._entries[key] = value
        self.nbytes += size
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes()
