"""Streaming equals full: model/gemma4_stream.py and model/kv_cache.py on a tiny random fp32 model.

Chunked prefill (audio frame by frame, vision blocks whole) gives the logits of one full forward; greedy decoding
gives transformers' greedy `generate` token for token; rollback then re-decode reproduces the tokens; the caches'
ring, growth and eviction hooks keep real positions.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch", reason="torch is needed for the Gemma 4 model tests (pip install '.[gemma]')")

from patchstream.model import gemma4_stream as gs  # noqa: E402
from patchstream.model.gemma4 import Gemma4Unified  # noqa: E402
from patchstream.model.kv_cache import FullKVCache, RingKVCache  # noqa: E402
from tests.model.test_gemma4_config import (  # noqa: E402
    AUD, BOA, EOA, EOI, import_transformers, media_inputs, prompt, rel_err, save_tiny,
)

TOL = 1e-4
MEDIA_KEYS = ("input_features", "input_features_mask", "pixel_values", "image_position_ids",
              "pixel_values_videos", "video_position_ids")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    import_transformers()
    path = tmp_path_factory.mktemp("tiny")
    hf = save_tiny(path, seed=1)
    return hf, Gemma4Unified.from_pretrained(path, dtype=torch.float32)


def _chunk_cuts(types: torch.Tensor, seed: int, max_chunk: int) -> list[int]:
    """Random chunk boundaries that never split a vision block; audio tokens go one by one."""
    rng = random.Random(seed)
    cuts, t, T = [0], 0, types.shape[0]
    while t < T:
        end = t + (1 if int(types[t]) == 3 else rng.randint(1, max_chunk))
        end = min(end, T)
        while end < T and int(types[end - 1]) in (1, 2) and types[end] == types[end - 1]:
            end += 1  # finish the image / video frame
        cuts.append(end)
        t = end
    return cuts


@pytest.mark.parametrize("kind", ["audio", "all"])
@pytest.mark.parametrize("bidir_full", [False, True], ids=["full-causal", "full-bidir"])
@pytest.mark.parametrize("slack,max_chunk", [(1, 3), (4, 12), (64, 5)])
def test_chunked_prefill_equals_full_forward(pair, kind, bidir_full, slack, max_chunk):
    """Small slack forces the concatenating path of the ring; large slack the write-then-attend path."""
    _, model = pair
    inputs = media_inputs(kind, seed=2)
    full = model.reference_forward(**inputs, vision_bidirectional_on_full_layers=bidir_full)  # (1, T, V)
    h = model.embed_inputs(inputs["input_ids"], **{k: inputs[k] for k in MEDIA_KEYS if k in inputs})
    types = inputs["mm_token_type_ids"]
    state = gs.new_state(model, rollback_slack=slack, full_capacity=4)  # full caches must grow, too
    cuts = _chunk_cuts(types[0], seed=slack, max_chunk=max_chunk)
    assert len(cuts) > 10 and h.shape[1] > 2 * model.config.text.sliding_window
    for a, b in zip(cuts[:-1], cuts[1:]):
        logits = gs.prefill(model, state, h[:, a:b], types[:, a:b], bidir_full)
        assert rel_err(full[:, b - 1], logits) < TOL, f"chunk {a}:{b}"
    assert state.position == h.shape[1]


def test_prefill_tokens_embeds_media_per_chunk(pair):
    """Audio frames arriving one at a time through prefill_tokens equal the whole clip at once."""
    _, model = pair
    frames = torch.randn(1, 6, 40, generator=torch.Generator().manual_seed(5)) * 0.3
    ids = torch.tensor([prompt([2, 105, 10, ("audio", 6), 106])])
    types = (ids == AUD).long() * 3
    full = model.reference_forward(ids, input_features=frames, mm_token_type_ids=types)
    state = gs.new_state(model)
    gs.prefill_tokens(model, state, ids[:, :4], types[:, :4])  # up to and including <|audio>
    for i in range(6):
        logits = gs.prefill_tokens(model, state, ids[:, 4 + i: 5 + i], types[:, 4 + i: 5 + i],
                                   input_features=frames[:, i: i + 1])
        assert rel_err(full[:, 4 + i], logits) < TOL
    logits = gs.prefill_tokens(model, state, ids[:, 10:], types[:, 10:])
    assert rel_err(full[:, -1], logits) < TOL


def test_splitting_a_vision_block_is_refused(pair):
    _, model = pair
    inputs = media_inputs("image")
    h = model.embed_inputs(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                           image_position_ids=inputs["image_position_ids"])
    types = inputs["mm_token_type_ids"]
    first = int((types[0] == 1).nonzero()[0])
    state = gs.new_state(model)
    gs.prefill(model, state, h[:, : first + 2], types[:, : first + 2])
    with pytest.raises(ValueError, match="split"):
        gs.prefill(model, state, h[:, first + 2:], types[:, first + 2:])


def _hf_greedy(hf, inputs: dict, n: int) -> list[int]:
    kw = {k: v for k, v in inputs.items() if k != "input_ids"}
    if "pixel_values_videos" in kw:
        kw["num_frames_per_video"] = torch.tensor([kw["pixel_values_videos"].shape[0]])
    out = hf.generate(input_ids=inputs["input_ids"], **kw, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                      suppress_tokens=[EOI, EOA], pad_token_id=0)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("kind", ["audio", "all"])
def test_greedy_decode_equals_transformers_generate(pair, kind):
    """transformers' generate prefills through its plain forward (vision blocks open on full layers too), then
    decodes with a sliding-window DynamicCache; our ring must give the same tokens well past the window."""
    hf, model = pair
    inputs = media_inputs(kind, seed=3)
    n = 24
    ref = _hf_greedy(hf, inputs, n)
    state = gs.new_state(model, rollback_slack=2)
    media = {k: inputs[k] for k in MEDIA_KEYS if k in inputs}
    logits = gs.prefill_tokens(model, state, inputs["input_ids"], inputs["mm_token_type_ids"], True, **media)
    got = gs.generate(model, state, logits, n, stop_ids=())
    assert got[0].tolist() == ref


def test_rollback_then_redecode_reproduces_tokens(pair):
    """The live-ASR pattern: prompt + audio, suffix + decode, roll back to the last audio token, append more audio,
    suffix + decode again == a fresh session fed the same tokens."""
    _, model = pair
    g = torch.Generator().manual_seed(7)
    frames = torch.randn(1, 12, 40, generator=g) * 0.3
    head = torch.tensor([[2, 105, 10, BOA]])
    suffix = torch.tensor([[EOA, 106, 105, 20]])
    audio = torch.full((1, 1), AUD)

    def feed_audio(state, lo, hi):
        for i in range(lo, hi):
            gs.prefill_tokens(model, state, audio, torch.full((1, 1), 3), input_features=frames[:, i: i + 1])

    live = gs.new_state(model, rollback_slack=32)
    gs.prefill_tokens(model, live, head)
    feed_audio(live, 0, 6)
    mark = live.position
    first = gs.generate(model, live, gs.prefill_tokens(model, live, suffix), 10, stop_ids=())
    gs.rollback(live, mark)
    again = gs.generate(model, live, gs.prefill_tokens(model, live, suffix), 10, stop_ids=())
    assert torch.equal(first, again)
    gs.rollback(live, mark)
    feed_audio(live, 6, 12)
    continued = gs.generate(model, live, gs.prefill_tokens(model, live, suffix), 10, stop_ids=())

    fresh = gs.new_state(model)
    gs.prefill_tokens(model, fresh, head)
    feed_audio(fresh, 0, 12)
    expected = gs.generate(model, fresh, gs.prefill_tokens(model, fresh, suffix), 10, stop_ids=())
    assert torch.equal(continued, expected)


def test_rollback_beyond_the_ring_slack_is_refused(pair):
    _, model = pair
    state = gs.new_state(model, rollback_slack=4)
    gs.prefill_tokens(model, state, torch.randint(3, 400, (1, 30)))
    gs.rollback(state, 26)
    with pytest.raises(ValueError, match="slack"):
        gs.rollback(state, 20)


def test_static_caches_and_batch_rows_decode_like_dynamic(pair):
    """Fixed-shape full caches (what a compiled decode step uses) and a batch of 3 give the same logits."""
    _, model = pair
    ids = torch.randint(3, 400, (3, 20), generator=torch.Generator().manual_seed(4))
    dyn, stat = gs.new_state(model, batch=3), gs.new_state(model, batch=3, static=True, full_capacity=64)
    a, b = gs.prefill_tokens(model, dyn, ids), gs.prefill_tokens(model, stat, ids)
    ta = gs.generate(model, dyn, a, 12, stop_ids=())
    tb = gs.generate(model, stat, b, 12, stop_ids=())
    assert torch.equal(ta, tb)
    single = gs.new_state(model)
    t1 = gs.generate(model, single, gs.prefill_tokens(model, single, ids[1:2]), 12, stop_ids=())
    assert torch.equal(t1[0], ta[1])


def test_sampling_is_seeded_and_never_emits_suppressed_ids(pair):
    _, model = pair
    logits = torch.zeros(2, 512)
    logits[:, [EOI, EOA]] = 100.0  # the tied head's folded end-of-media rows would win
    for seed in range(3):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        masked = gs.suppress(logits, model.config.suppress_token_ids)
        x = gs.sample(masked, generator=g1)
        assert torch.equal(x, gs.sample(masked, generator=g2))
        assert not set(x.tolist()) & {EOI, EOA}
    assert set(gs.greedy(gs.suppress(logits, (EOI, EOA))).tolist()).isdisjoint({EOI, EOA})
    peaked = torch.full((1, 512), -10.0)
    peaked[0, 7] = 10.0
    assert int(gs.sample(peaked, top_p=0.5)) == 7


# ----------------------------------------------------------------------------------------------------
# Caches alone
# ----------------------------------------------------------------------------------------------------


def _kv(t0: int, n: int) -> torch.Tensor:
    """(1, 1, n, 2) whose values are the positions, so reads are easy to check."""
    return torch.arange(t0, t0 + n, dtype=torch.float32).view(1, 1, n, 1).expand(1, 1, n, 2).contiguous()


def test_ring_keeps_real_positions_and_rolls_back_within_slack():
    ring = RingKVCache(1, 1, 2, window=4, slack=2, dtype=torch.float32, device="cpu")  # 5 slots
    for p in range(9):
        k, _, pos = ring.update(_kv(p, 1), _kv(p, 1), torch.tensor([p]))
        ring.commit(1)
    assert sorted(pos.tolist()) == [4, 5, 6, 7, 8]
    assert torch.equal(k[0, 0, :, 0].long(), pos)
    assert ring.min_rollback_position == 7
    ring.rollback(7)
    assert sorted(p for p in ring.pos.tolist() if p >= 0) == [4, 5, 6]
    k, _, pos = ring.update(_kv(7, 6), _kv(7, 6), torch.arange(7, 13))  # larger than the slack: concatenated
    assert sorted(p for p in pos.tolist() if p >= 0) == [4, 5, 6, 7, 8, 9, 10, 11, 12]
    ring.commit(6)
    assert sorted(ring.pos.tolist()) == [8, 9, 10, 11, 12]


def test_full_cache_grows_evicts_and_rolls_back_by_position():
    cache = FullKVCache(1, 1, 2, capacity=2, dtype=torch.float32, device="cpu")
    for p in range(10):
        cache.prepare(1)
        cache.update(_kv(p, 1), _kv(p, 1), torch.tensor([p]))
        cache.commit(1)
    assert cache.capacity == 16 and cache.keep_positions().tolist() == list(range(10))
    cache.evict(2, 6)  # keep a 2-token "sink" and the recent context
    assert cache.keep_positions().tolist() == [0, 1, 6, 7, 8, 9] and cache.length == 10
    cache.prepare(2)
    k, _, pos = cache.update(_kv(10, 2), _kv(10, 2), torch.tensor([10, 11]))
    cache.commit(2)
    assert pos.tolist() == [0, 1, 6, 7, 8, 9, 10, 11]
    assert torch.equal(k[0, 0, :, 0].long(), pos)
    cache.rollback(8)
    assert cache.keep_positions().tolist() == [0, 1, 6, 7] and cache.length == 8
    cache.prepare(1)
    _, _, pos = cache.update(_kv(8, 1), _kv(8, 1), torch.tensor([8]))
    assert pos.tolist() == [0, 1, 6, 7, 8]


def _append(cache, start: int, n: int) -> None:
    cache.prepare(n)
    cache.update(_kv(start, n), _kv(start, n), torch.arange(start, start + n))
    cache.commit(n)


def _contents(cache):
    return cache.k.clone(), cache.v.clone(), cache.pos.clone(), cache.length


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a[:3], b[:3])) and a[3] == b[3]


@pytest.mark.parametrize("make", [
    lambda: RingKVCache(1, 1, 2, window=4, slack=2, dtype=torch.float32, device="cpu"),
    lambda: FullKVCache(1, 1, 2, capacity=4, dtype=torch.float32, device="cpu"),
])
def test_undo_returns_a_cache_exactly_to_where_begin_found_it(make):
    cache = make()
    _append(cache, 0, 6)
    before = _contents(cache)
    cache.begin()
    _append(cache, 6, 3)  # past the ring's slack; past the full buffer's capacity (it grows)
    cache.rollback(7)
    _append(cache, 7, 8)  # wraps the whole ring
    cache.prepare(2)
    cache.update(_kv(15, 2), _kv(15, 2), torch.arange(15, 17))  # written, never committed: a failed forward
    cache.undo()
    after = _contents(cache)
    assert _same(before, after) or (after[0].shape[2] > before[0].shape[2] and torch.equal(
        after[2][: before[2].numel()], before[2]) and bool((after[2][before[2].numel():] == -1).all()))
    cache.begin()
    _append(cache, 6, 1)
    cache.end()  # kept
    assert cache.length == 7 and 6 in cache.pos.tolist()


def test_a_snapshot_holds_the_stored_entries_and_load_restores_them_in_place():
    ring = RingKVCache(1, 1, 2, window=4, slack=2, dtype=torch.float32, device="cpu")
    full = FullKVCache(1, 1, 2, capacity=32, dtype=torch.float32, device="cpu")
    for cache in (ring, full):
        _append(cache, 0, 3)
    snaps = [ring.snapshot(), full.snapshot()]
    assert [s.pos.tolist() for s in snaps] == [[0, 1, 2], [0, 1, 2]] and snaps[1].k.shape[2] == 3
    for cache, snap in zip((ring, full), snaps):
        buffer = cache.k
        _append(cache, 3, 9)
        cache.load(snap)
        assert cache.k is buffer and cache.length == 3
        assert sorted(p for p in cache.pos.tolist() if p >= 0) == [0, 1, 2]
        k, _, pos = cache.update(_kv(3, 1), _kv(3, 1), torch.tensor([3]))
        kept = pos >= 0
        assert torch.equal(k[0, 0, kept, 0].long(), pos[kept])  # the keys sit beside their positions
