"""Ragged batching (model/gemma4_batch.py): sessions at different positions in one forward equal each alone.

On the tiny checkpoint of model/gemma4_tiny.py: prefill rows of different lengths (text, audio, a whole video
frame) give each session's logits from `gemma4_stream.prefill`; batched greedy decoding gives each session's
`gemma4_stream.generate` tokens.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="torch is needed for the Gemma 4 model tests (pip install '.[gemma]')")

from patchstream.model import gemma4_stream as gs  # noqa: E402
from patchstream.model.gemma4 import MM_AUDIO, MM_VIDEO, Gemma4Unified  # noqa: E402
from patchstream.model.gemma4_batch import forward_rows, generate_detached, generate_rows  # noqa: E402
from patchstream.model.gemma4_tiny import save_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=1, sliding_window=16)
    return Gemma4Unified.from_pretrained(path, dtype=torch.float32)


def _row(model, n_text: int, n_audio: int, n_video: int, seed: int):
    """(n, d) embeddings and (n,) types: text, then audio soft tokens, then one video block."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    ids = [int(i) for i in torch.randint(20, 200, (n_text,), generator=g)] + [cfg.audio_token_id] * n_audio
    ids += [cfg.boi_token_id] + [cfg.video_token_id] * n_video + [cfg.eoi_token_id] if n_video else []
    kw = {"input_features": torch.randn(1, n_audio, 640, generator=g) * 0.1} if n_audio else {}
    if n_video:
        kw["pixel_values_videos"] = torch.rand(1, n_video, 6912, generator=g)
        kw["video_position_ids"] = torch.tensor([[[x, 0] for x in range(n_video)]])
    ids_t = torch.tensor([ids])
    types = torch.zeros(len(ids), dtype=torch.long)
    types[ids_t[0] == cfg.audio_token_id], types[ids_t[0] == cfg.video_token_id] = MM_AUDIO, MM_VIDEO
    return model.embed_inputs(ids_t, **kw)[0], types


def _sessions(model):
    """Three sessions at different positions (one past its sliding window), each with a next chunk."""
    states, chunks = [], []
    for i, (history, nxt) in enumerate([((5, 3, 0), (2, 0, 4)), ((30, 10, 0), (0, 7, 0)), ((3, 0, 0), (4, 2, 3))]):
        state = gs.new_state(model, rollback_slack=64, full_capacity=8)  # 8: the full caches grow during the test
        embeds, types = _row(model, *history, seed=i)
        gs.prefill(model, state, embeds[None], types[None])
        states.append(state)
        chunks.append(_row(model, *nxt, seed=10 + i))
    return states, chunks


def test_a_ragged_prefill_equals_each_session_alone(model):
    states, chunks = _sessions(model)
    alone = [gs.prefill(model, copy.deepcopy(s), e[None], t[None]) for s, (e, t) in zip(states, chunks)]
    batched = forward_rows(model, states, [e for e, _ in chunks], [t for _, t in chunks])
    for i, logits in enumerate(alone):
        torch.testing.assert_close(batched[i], logits[0], rtol=1e-4, atol=1e-4)


def test_batched_greedy_decode_gives_each_sessions_tokens(model):
    states, chunks = _sessions(model)
    alone_states = [copy.deepcopy(s) for s in states]
    alone = []
    for state, (e, t) in zip(alone_states, chunks):
        logits = gs.prefill(model, state, e[None], t[None])
        alone.append(gs.generate(model, state, logits, 12, stop_ids=(3,))[0].tolist())
    logits = forward_rows(model, states, [e for e, _ in chunks], [t for _, t in chunks])
    assert generate_rows(model, states, logits, 12, stop_ids=(3,)) == alone
    assert [s.position for s in states] == [s.position for s in alone_states]


def test_detached_decode_gives_the_same_tokens_and_leaves_the_sessions_alone(model):
    states, chunks = _sessions(model)
    rows = [copy.deepcopy(s) for s in states]
    logits = forward_rows(model, rows, [e for e, _ in chunks], [t for _, t in chunks])
    logits_again = forward_rows(model, states, [e for e, _ in chunks], [t for _, t in chunks])
    positions = [s.position for s in states]
    assert generate_detached(model, states, logits_again, 12) == generate_rows(model, rows, logits, 12)
    assert [s.position for s in states] == positions


@pytest.mark.slow
def test_the_compiled_detached_step_gives_the_eager_tokens(model):
    from patchstream.model.gemma4_batch import detached_decode_step

    states, chunks = _sessions(model)
    logits = forward_rows(model, states, [e for e, _ in chunks], [t for _, t in chunks])
    eager = generate_detached(model, states, logits, 8)
    assert generate_detached(model, states, logits, 8, step=torch.compile(detached_decode_step)) == eager
