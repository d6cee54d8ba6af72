"""The prefix cache (model/prefix_cache.py): least recently used first out, within a count and a byte bound."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from patchstream.model.prefix_cache import PrefixCache


@dataclass(frozen=True)
class Blob:
    size: int

    def nbytes(self) -> int:
        return self.size


def test_the_least_recently_used_goes_first_beyond_the_count():
    cache = PrefixCache(max_entries=2, max_bytes=1_000)
    cache.put("a", Blob(10))
    cache.put("b", Blob(10))
    assert cache.get("a") == Blob(10)  # "a" is now the most recent
    cache.put("c", Blob(10))
    assert "a" in cache and "c" in cache and "b" not in cache and cache.nbytes == 20


def test_the_byte_bound_evicts_until_the_new_entry_fits_and_a_too_large_one_is_never_kept():
    cache = PrefixCache(max_entries=10, max_bytes=100)
    for key in "abc":
        cache.put(key, Blob(40))
    assert list(k for k in "abc" if k in cache) == ["b", "c"] and cache.nbytes == 80
    cache.put("huge", Blob(101))
    assert "huge" not in cache and len(cache) == 2
    cache.put("b", Blob(60))  # replacing a key recounts its bytes
    assert cache.nbytes == 100 and len(cache) == 2


def test_bounds_of_zero_keep_nothing_and_negative_bounds_are_refused():
    cache = PrefixCache(max_entries=0, max_bytes=100)
    cache.put("a", Blob(1))
    assert len(cache) == 0 and cache.get("a") is None
    with pytest.raises(ValueError):
        PrefixCache(max_entries=-1, max_bytes=0)
