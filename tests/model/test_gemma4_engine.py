"""The live Gemma 4 engine (model/gemma4_engine.py) on the tiny random checkpoint of model/gemma4_tiny.py.

Random weights write gibberish, so these tests check mechanics: the registry builds it from a directory, audio and
video interleave into captions and interpretations with media times in order, KV bytes stay flat over an endless
stream, a batched step equals each session stepped alone, a long backlog never stalls another session, and
closing a session frees its caches.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is needed for the Gemma 4 engine (pip install '.[gemma]')")

from patchstream.model.api import (  # noqa: E402
    AudioChunk, EngineChoice, EngineError, SessionControl, SessionOptions, VideoFrame,
)
from patchstream.model import gemma4_stream as gs  # noqa: E402
from patchstream.model.engines import build_engine  # noqa: E402
from patchstream.model.gemma4_engine import kv_bytes  # noqa: E402
from patchstream.model.gemma4_tiny import save_tiny_checkpoint  # noqa: E402

CHUNK = 6_400  # 0.4 s, ten audio tokens


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0, sliding_window=32)


def engine(checkpoint, **options):
    """Short answers (8 tokens): the tests check mechanics, and two CPU cores are shared."""
    return build_engine(EngineChoice("gemma4", str(checkpoint), {"caption_tokens": 8, "interpretation_tokens": 8,
                                                                 **options}))


def speech(seconds: float, seed: int = 0, pause_every_s: float = 0.0) -> np.ndarray:
    """Noise bursts standing in for speech, with a 1 s pause every `pause_every_s` seconds."""
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal(int(seconds * 16_000)) * 0.1).astype(np.float32)
    if pause_every_s:
        t = np.arange(len(audio)) / 16_000
        audio[(t % pause_every_s) > pause_every_s - 1.0] = 0.0
    return audio


def chunks(audio: np.ndarray, size: int = CHUNK):
    for start in range(0, len(audio), size):
        yield AudioChunk(audio[start:start + size], start)


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (96, 144, 3), dtype=np.uint8)


def steps(eng, state, audio: np.ndarray, frames_every: int = 0):
    """Feed chunk by chunk (a frame every `frames_every` chunks), stepping after each; every result."""
    results = []
    for i, chunk in enumerate(chunks(audio)):
        eng.feed(state, chunk)
        if frames_every and i % frames_every == 0:
            eng.feed(state, VideoFrame(frame(i), chunk.start_sample + CHUNK // 2))
        results.append(eng.step([state])[0])
    return results


def run(eng, state, audio: np.ndarray, frames_every: int = 0):
    """`steps`, then finish."""
    return steps(eng, state, audio, frames_every) + [eng.finish(state)]


def test_the_registry_needs_a_checkpoint_directory(checkpoint, tmp_path):
    with pytest.raises(EngineError, match="model-path"):
        build_engine(EngineChoice("gemma4", None))
    with pytest.raises(EngineError, match="unknown gemma4 engine options"):
        engine(checkpoint, beam_size=5)
    assert "video" in engine(checkpoint).spec.media


def test_audio_and_video_give_captions_and_interpretations_in_media_order(checkpoint):
    eng = engine(checkpoint, window_s=3.0)
    state = eng.open(SessionOptions(instruction="Describe the scene."))
    results = run(eng, state, speech(8.0, pause_every_s=4.0), frames_every=5)
    processed = [r.processed_until for r in results]
    assert processed == sorted(processed) and processed[-1] == pytest.approx(8.0)
    words = [w for r in results for w in r.captions.committed]
    assert words and sum(r.captions.segment_end for r in results) >= 2  # window and pause closes
    assert all(0.0 <= w.start <= w.end <= 8.0 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert any(r.captions.tentative for r in results[:-1])  # captions while media still arrives
    updates = [u for r in results for u in r.interpretations]
    finals = [u for u in updates if u.final]
    assert len({u.interpretation_id for u in finals}) == len(finals) >= 2
    assert any(not u.final for u in updates)  # partials after frames, before their segment closed
    assert all(0.0 <= u.start <= u.end <= 8.0 for u in updates)
    assert [u.start for u in finals] == sorted(u.start for u in finals)


def test_without_an_instruction_there_are_no_interpretations_until_one_is_set(checkpoint):
    eng = engine(checkpoint)
    state = eng.open(SessionOptions())
    assert not [u for r in run(eng, state, speech(2.0), frames_every=2) for u in r.interpretations]
    eng.control(state, SessionControl(instruction="Summarise."))
    eng.feed(state, VideoFrame(frame(1), 40_000))
    assert eng.finish(state).interpretations


def stream_kv(eng, state, minutes: float, frame_every_s: int = 2) -> list[int]:
    """KV bytes after every 2 s step of a live stream with pauses and a frame every `frame_every_s`."""
    sizes = []
    for i, chunk in enumerate(chunks(speech(minutes * 60, pause_every_s=7.0), 32_000)):
        eng.feed(state, chunk)
        if (2 * i) % frame_every_s == 0:
            eng.feed(state, VideoFrame(frame(i % 7), chunk.start_sample))
        eng.step([state])
        sizes.append(kv_bytes(state))
    return sizes


def test_kv_bytes_stay_flat_over_a_long_stream(checkpoint):
    eng = engine(checkpoint, window_s=4.0, emit_every_s=10.0, caption_tokens=2, video_fps=0.5)
    state = eng.open(SessionOptions())
    sizes = stream_kv(eng, state, minutes=3)
    assert min(sizes) == max(sizes) > 0
    assert state.stream.position < 1_024  # positions restart every segment


@pytest.mark.slow
@pytest.mark.timeout(900)  # 1,800 steps: ~40 s on an idle 2-core machine
def test_kv_bytes_stay_flat_over_a_simulated_hour(checkpoint):
    eng = engine(checkpoint, window_s=15.0, emit_every_s=30.0, caption_tokens=2, video_fps=0.05)
    state = eng.open(SessionOptions())
    sizes = stream_kv(eng, state, minutes=60, frame_every_s=20)
    assert min(sizes) == max(sizes) > 0
    assert state.stream.position < 2_048  # positions restart every segment: RoPE never sees an hour


def test_a_batched_step_equals_each_session_stepped_alone(checkpoint):
    histories = [speech(1.2, seed=1), speech(3.6, seed=2), speech(0.4, seed=3)]  # three different positions
    nxt = [speech(1.2, seed=4), speech(0.4, seed=5), speech(2.0, seed=6)]

    def sessions(eng):
        states = [eng.open(SessionOptions(instruction="Describe.")) for _ in histories]
        for state, audio in zip(states, histories):
            steps(eng, state, audio)
        return states

    def feed_next(eng, states):
        for state, audio, history in zip(states, nxt, histories):
            eng.feed(state, AudioChunk(audio, len(history)))
            eng.feed(state, VideoFrame(frame(len(history)), len(history)))

    eng = engine(checkpoint)
    together = sessions(eng)
    assert len({s.stream.position for s in together}) == 3
    feed_next(eng, together)
    batched = eng.step(together)
    alone_states = sessions(eng)
    feed_next(eng, alone_states)
    alone = [eng.step([state])[0] for state in alone_states]
    assert batched == alone
    assert any(r.captions.tentative for r in batched) and all(r.interpretations for r in batched)


def test_a_long_backlog_does_not_stall_another_sessions_caption(checkpoint):
    eng = engine(checkpoint, prefill_chunk_tokens=64, emit_every_s=0.4)
    backlog, live = eng.open(SessionOptions()), eng.open(SessionOptions())
    eng.feed(backlog, AudioChunk(speech(30.0, seed=7), 0))
    eng.feed(live, AudioChunk(speech(0.4, seed=8), 0))
    before = backlog.stream.position
    results = eng.step([backlog, live])
    assert results[1].captions.tentative and results[1].processed_until == pytest.approx(0.4)
    assert results[0].processed_until < 3.0 and backlog.stream.position - before <= 64
    assert eng.finish(backlog).processed_until == pytest.approx(30.0)


def test_closing_a_session_frees_its_caches(checkpoint):
    eng = engine(checkpoint)
    state = eng.open(SessionOptions())
    run(eng, state, speech(1.0))
    refs = [weakref.ref(cache.k) for cache in state.stream.caches]
    assert kv_bytes(state) > 0
    eng.close(state)
    gc.collect()
    assert kv_bytes(state) == 0 and all(ref() is None for ref in refs)


async def test_a_websocket_session_gets_captions_and_interpretations_in_order(checkpoint):
    """The real server on port 0, audio only, no instruction in `start`: the engine's default instruction
    (`--instruction`) interprets it."""
    import json

    from websockets.asyncio.client import connect

    from patchstream.streaming.config import SchedulerConfig, ServerConfig
    from patchstream.streaming.server import Server

    pcm = (np.clip(speech(6.0, pause_every_s=3.0), -1, 1) * 32767).astype("<i2").tobytes()
    start = {"type": "start", "audio": {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1}}
    config = ServerConfig(port=0, scheduler=SchedulerConfig(stats_interval_s=0.5), shutdown_grace_s=2.0)
    eng = engine(checkpoint, window_s=2.0, default_instruction="Summarise.")
    opened = []
    eng.open = lambda options, open_=eng.open: opened.append(open_(options)) or opened[-1]
    async with Server(config, eng) as server:
        async with connect(server.url, max_size=None) as ws:
            await ws.send(json.dumps(start))
            for offset in range(0, len(pcm), 3_200):
                await ws.send(pcm[offset:offset + 3_200])
            await ws.send(json.dumps({"type": "stop"}))
            events = [json.loads(message) async for message in ws]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "ready" and kinds[-1] == "ended"
    finals = [e for e in events if e["type"] == "caption.final"]
    interpretations = [e for e in events if e["type"].startswith("interpretation.")]
    assert finals and interpretations, kinds
    assert [f["start"] for f in finals] == sorted(f["start"] for f in finals)
    assert all(0.0 <= f["start"] <= f["end"] <= 6.0 + 0.05 for f in finals)
    assert all(0.0 <= e["start"] <= e["end"] <= 6.0 + 0.05 for e in interpretations)
    assert events[-1]["captions"] == len(finals)
    assert opened and all(kv_bytes(state) == 0 for state in opened)  # the server closed them: caches freed


def test_an_engine_far_behind_drops_the_oldest_audio_and_never_stitches_across_the_hole(checkpoint):
    eng = engine(checkpoint, max_pending_s=2.0)
    state = eng.open(SessionOptions())
    for chunk in chunks(speech(6.0, seed=9), 16_000):
        eng.feed(state, chunk)
    assert sum(len(m.samples) for m in state.pending) == 32_000 and state.pending[0].discontinuity
    result = eng.finish(state)
    assert result.processed_until == pytest.approx(6.0)
    assert all(w.start >= 4.0 for w in result.captions.committed)


async def test_the_scheduler_drives_two_sessions_of_audio_and_video_through_the_engine(checkpoint):
    """Audio + video through the server's scheduler, two sessions with their own instructions."""
    import asyncio

    from patchstream.streaming.config import SchedulerConfig
    from patchstream.streaming.scheduler import Scheduler

    scheduler = Scheduler(engine(checkpoint, window_s=2.0), SchedulerConfig())
    await scheduler.start()
    try:
        sinks, slots = [[], []], []
        for sink, instruction in zip(sinks, ("Describe the scene.", "Say what the caller wants.")):
            slots.append(await scheduler.open(SessionOptions(instruction=instruction), sink.append, pytest.fail, 30.0))
        for i, chunk in enumerate(chunks(speech(5.0, pause_every_s=2.5))):
            for slot in slots:
                scheduler.submit(slot, chunk)
                if i % 3 == 0:
                    scheduler.submit(slot, VideoFrame(frame(i), chunk.start_sample))
            await asyncio.sleep(0.01)
        finals = [await scheduler.finish(slot) for slot in slots]
    finally:
        for slot in slots:
            await scheduler.close(slot)
        await scheduler.stop()
    for sink, final in zip(sinks, finals):
        results = sink + [final]
        assert final.processed_until == pytest.approx(5.0)
        words = [w for r in results for w in r.captions.committed]
        updates = [u for r in results for u in r.interpretations]
        assert words and [w.start for w in words] == sorted(w.start for w in words)
        assert any(u.final for u in updates) and all(0.0 <= u.start <= u.end <= 5.0 for u in updates)
        assert [r.processed_until for r in results] == sorted(r.processed_until for r in results)


def test_a_frame_larger_than_the_step_budget_is_appended_whole(checkpoint):
    eng = engine(checkpoint, prefill_chunk_tokens=16, default_instruction="Describe.")
    state = eng.open(SessionOptions())
    before = state.stream.position
    eng.feed(state, VideoFrame(frame(0), 0))
    result = eng.step([state])[0]
    assert result.interpretations and state.stream.position - before > 16


async def test_a_websocket_session_with_audio_and_video_interprets_its_frames(checkpoint):
    """The real server on port 0 with JPEG frames on the wire beside the audio, an instruction in
    `start`: interpretations name the frames they were made from, in media-time order."""
    from patchstream.streaming.server import Server
    from tests.streaming.test_server import server_config
    from tests.streaming.test_video import VIDEO_START, jpeg, solid, video_session

    start = {**VIDEO_START, "video": {"encoding": "jpeg", "fps": 1}, "instruction": "Describe the scene."}
    frames = [(float(t), jpeg(solid(60 * t))) for t in range(4)]
    eng = engine(checkpoint, window_s=2.0)
    async with Server(server_config(), eng) as server:
        events = await video_session(server.url, 4.0, frames, start=start, pace_s=0.1)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "ready" and kinds[-1] == "ended", kinds
    assert not [e for e in events if e["type"] == "error"], events
    captions = [e for e in events if e["type"] == "caption.final"]
    assert captions and [c["start"] for c in captions] == sorted(c["start"] for c in captions)
    assert all(0.0 <= c["start"] <= c["end"] <= 4.0 + 0.05 for c in captions)
    interpretations = [e for e in events if e["type"].startswith("interpretation.")]
    finals_at = {e["interpretation_id"]: i for i, e in enumerate(interpretations) if e["type"].endswith("final")}
    for i, event in enumerate(interpretations):  # every partial is followed by its final, nothing after a final
        assert finals_at[event["interpretation_id"]] >= i
    seen = sorted({t for e in interpretations for t in e["frame_times"]})
    assert seen and set(seen) <= {0.0, 1.0, 2.0, 3.0}, interpretations
    finals = [e for e in interpretations if e["type"] == "interpretation.final"]
    assert finals and [f["start"] for f in finals] == sorted(f["start"] for f in finals)
    for event in interpretations:
        assert 0.0 <= event["start"] <= event["end"] <= 4.0 + 0.05
        assert all(event["start"] - 1e-6 <= t <= event["end"] + 1e-6 for t in event["frame_times"]), event


def test_the_audio_after_a_dropped_stretch_is_flagged_even_behind_a_frame(checkpoint):
    eng = engine(checkpoint, max_pending_s=1.0)
    state = eng.open(SessionOptions())
    audio = list(chunks(speech(2.0, seed=4), 16_000))
    eng.feed(state, audio[0])
    eng.feed(state, VideoFrame(np.zeros((96, 96, 3), np.uint8), 16_000))
    eng.feed(state, audio[1])  # over the bound: the first second goes, a frame is now at the head
    assert isinstance(state.pending[0], VideoFrame)
    assert next(m for m in state.pending if isinstance(m, AudioChunk)).discontinuity
    eng.close(state)


# --- the instruction prefix cache ------------------------------------------------------------------


def test_a_cached_prefix_holds_only_the_prefixs_own_entries(checkpoint):
    eng = engine(checkpoint)
    state = eng.open(SessionOptions(prompt="Patchstream"))
    prefix = eng._prefixes.get("Patchstream")
    assert prefix.position == state.stream.position > 0
    for cache in prefix.caches:  # sliced to the prefix, never the segment-sized buffers
        assert cache.pos.numel() <= prefix.position and cache.k.shape[2] == cache.pos.numel()
    assert prefix.nbytes() * 10 < kv_bytes(state)


def test_the_prefix_cache_keeps_the_most_recently_used_within_its_count_and_bytes(checkpoint):
    eng = engine(checkpoint, prefix_cache_entries=2)
    for prompt in ("a", "b", "a", "c"):
        eng.close(eng.open(SessionOptions(prompt=prompt)))
    assert "a" in eng._prefixes and "c" in eng._prefixes and "b" not in eng._prefixes
    one = eng._prefixes.get("a").nbytes()
    eng = engine(checkpoint, prefix_cache_mib=1.5 * one / 2**20)  # room for one prefix of this size
    for prompt in ("a", "b"):
        eng.close(eng.open(SessionOptions(prompt=prompt)))
    assert len(eng._prefixes) == 1 and "b" in eng._prefixes and eng._prefixes.nbytes <= 1.5 * one
    long_prompt = " ".join(["word"] * 200)  # larger than the whole budget: used, never kept
    state = eng.open(SessionOptions(prompt=long_prompt))
    assert long_prompt not in eng._prefixes and state.stream.position > 200


def test_a_segment_reset_reloads_the_prefix_into_the_sessions_own_caches(checkpoint):
    eng = engine(checkpoint)
    state = eng.open(SessionOptions(prompt="Patchstream"))
    buffers = [cache.k for cache in state.stream.caches]
    run(eng, state, speech(2.0))  # finish closes the segment: back to the prefix
    assert [cache.k for cache in state.stream.caches] == buffers  # the same tensors: no copy of a whole state
    fresh = eng.open(SessionOptions(prompt="Patchstream"))
    assert_same_context(state.stream, fresh.stream)


def assert_same_context(a, b):
    """Two states hold the same stored entries at the same positions."""
    assert a.position == b.position
    for x, y in zip(gs.snapshot(a).caches, gs.snapshot(b).caches):
        assert x.length == y.length and torch.equal(x.pos, y.pos)
        assert torch.equal(x.k, y.k) and torch.equal(x.v, y.v)


# --- interpretation kinds and instructions ---------------------------------------------------------


def interpretations_of(results):
    return [u for r in results for u in r.interpretations]


def test_interpretations_follow_the_kinds_a_session_asks_for(checkpoint):
    eng = engine(checkpoint)
    with pytest.raises(EngineError, match="offers no scene"):
        eng.open(SessionOptions(interpretations=frozenset({"scene"})))
    state = eng.open(SessionOptions(instruction="Describe.", interpretations=frozenset()))
    assert not interpretations_of(run(eng, state, speech(2.0), frames_every=2))
    state = eng.open(SessionOptions(instruction="Describe.", interpretations=frozenset({"interpretation"})))
    assert interpretations_of(run(eng, state, speech(2.0), frames_every=2))


def test_turning_interpretations_off_finalises_the_open_partial_and_on_starts_a_new_one(checkpoint):
    eng = engine(checkpoint, window_s=10.0)
    state = eng.open(SessionOptions(instruction="Describe."))
    first = interpretations_of(steps(eng, state, speech(0.8), frames_every=1))
    assert first and not any(u.final for u in first) and {u.interpretation_id for u in first} == {"i0"}
    with pytest.raises(EngineError):
        eng.control(state, SessionControl(interpretations=frozenset({"scene"})))  # refused: nothing changes
    eng.control(state, SessionControl(interpretations=frozenset()))
    off = interpretations_of(steps(eng, state, speech(0.8, seed=1), frames_every=1))
    assert off == [dataclasses.replace(first[-1], final=True)]  # the partial closes as it was, nothing new
    eng.control(state, SessionControl(interpretations=frozenset({"interpretation"})))
    on = interpretations_of(steps(eng, state, speech(0.8, seed=2), frames_every=1))
    assert on and {u.interpretation_id for u in on} == {"i1"}


def test_a_new_instruction_mid_session_is_decoded_from_the_next_step(checkpoint):
    eng = engine(checkpoint, window_s=10.0)
    asked = []
    suffix = eng.pieces.interpretation_suffix
    eng.pieces.interpretation_suffix = lambda audio_open, instruction: asked.append(instruction) or suffix(
        audio_open, instruction)
    state = eng.open(SessionOptions(instruction="Describe the scene."))
    before = interpretations_of(steps(eng, state, speech(0.4), frames_every=1))
    eng.control(state, SessionControl(instruction="Say what the caller wants."))
    after = interpretations_of(steps(eng, state, speech(0.4, seed=1), frames_every=1))
    assert asked == ["Describe the scene.", "Say what the caller wants."]
    assert [(u.interpretation_id, u.final) for u in before] == [("i0", False)]
    assert [(u.interpretation_id, u.final) for u in after] == [("i0", True), ("i1", False)]
    assert after[0].text == before[0].text
    eng.control(state, SessionControl(instruction=""))  # stops interpreting
    last = eng.finish(state).interpretations
    assert [(u.interpretation_id, u.final) for u in last] == [("i1", True)] and len(asked) == 2


def test_a_new_prompt_reprefills_the_prefix_from_the_next_segment(checkpoint):
    eng = engine(checkpoint, window_s=10.0)
    state = eng.open(SessionOptions(prompt="alpha"))
    steps(eng, state, speech(0.8))
    position = state.stream.position
    eng.control(state, SessionControl(prompt="beta gamma"))
    assert state.stream.position == position  # the open segment keeps the context it was built on
    eng.finish(state)  # the segment closes: the next one starts from the new prompt's prefix
    assert_same_context(state.stream, eng.open(SessionOptions(prompt="beta gamma")).stream)


# --- a step is a transaction -----------------------------------------------------------------------


def session_image(state):
    """Everything a session holds: its fields, its waiting media, its caches' whole buffers and counters."""
    fields = copy.deepcopy({k: v for k, v in vars(state).items() if k not in ("stream", "pending")})
    caches = [(c.k.clone(), c.v.clone(), c.pos.clone(), dict(vars(c)).get("length", None), getattr(c, "n", None))
              for c in state.stream.caches]
    return fields, list(state.pending), state.stream.position, caches


def assert_same_image(a, b):
    assert a[0] == b[0] and a[2] == b[2]
    assert len(a[1]) == len(b[1]) and all(x is y for x, y in zip(a[1], b[1]))
    for x, y in zip(a[3], b[3]):
        assert all(torch.equal(p, q) for p, q in zip(x[:3], y[:3])) and x[3:] == y[3:]


@pytest.mark.parametrize("fail_in", ["forward", "decode"])
def test_a_failed_batched_step_puts_every_session_back_as_it_was(checkpoint, monkeypatch, fail_in):
    from patchstream.model import gemma4_engine as ge

    histories = [speech(1.2, seed=1), speech(3.6, seed=2), speech(0.4, seed=3)]

    def sessions(eng):
        states = [eng.open(SessionOptions(instruction="Describe.")) for _ in histories]
        for state, audio in zip(states, histories):
            steps(eng, state, audio)
            eng.feed(state, AudioChunk(speech(1.2, seed=4), len(audio)))
            eng.feed(state, VideoFrame(frame(len(audio)), len(audio)))
        return states

    eng = engine(checkpoint)
    states, twins = sessions(eng), sessions(eng)
    before = [session_image(s) for s in states]
    if fail_in == "forward":  # the media forward dies after two layers wrote their caches
        hook = eng.model.decoder.layers[2].register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(
            RuntimeError("injected")))
    else:  # the caption decode dies after the forward committed media and suffix
        monkeypatch.setattr(ge, "generate_detached", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("injected")))
    with pytest.raises(RuntimeError, match="injected"):
        eng.step(states)
    for state, image in zip(states, before):
        assert_same_image(session_image(state), image)
    if fail_in == "forward":
        hook.remove()
    else:
        monkeypatch.undo()
    assert eng.step(states) == eng.step(twins)  # and the retry gives what a step that never failed gives
    for state, twin in zip(states, twins):
        assert_same_context(state.stream, twin.stream)


# --- video frames, pending work -------------------------------------------------------------------


def test_a_frame_that_does_not_fit_the_segment_is_never_embedded_and_waits_for_the_next(checkpoint):
    eng = engine(checkpoint, window_s=1.0)  # room for about two frames a segment
    embedded = []
    make_frame = eng.pieces.frame
    eng.pieces.frame = lambda *a, **k: embedded.append(a[1]) or make_frame(*a, **k)
    state = eng.open(SessionOptions())
    for t in range(3):
        eng.feed(state, VideoFrame(frame(t), t * 16_000))
    first = eng.step([state])[0]
    assert embedded == [0.0, 1.0] and first.pending and len(state.pending) == 1  # the third did not fit
    second = eng.step([state])[0]  # no new media: the scheduler steps a pending session again
    assert embedded == [0.0, 1.0, 2.0] and not second.pending and not state.pending
    length = eng.pieces.frame_length((96, 144, 3), 2.0, close_audio=True)
    assert length == eng.pieces.frame(frame(0), 2.0, close_audio=True).embeds.shape[0]


def test_audio_beyond_the_step_budget_reports_pending_until_it_is_appended(checkpoint):
    eng = engine(checkpoint, prefill_chunk_tokens=51)  # `<|audio>` and 2 s of audio, then 2 s a step
    state = eng.open(SessionOptions())
    eng.feed(state, AudioChunk(speech(5.0, seed=3), 0))
    results = [eng.step([state])[0]]
    while results[-1].pending:
        results.append(eng.step([state])[0])
    assert [r.processed_until for r in results] == pytest.approx([2.0, 4.0, 5.0])


# --- command-line options -------------------------------------------------------------------------


def test_the_command_line_engine_options_reach_the_engine(checkpoint):
    from patchstream.clients.cli import _engine_choice, build_parser
    from patchstream.model.engines import ENGINE_OPTIONS
    from patchstream.model.gemma4_engine import Gemma4EngineConfig

    assert set(ENGINE_OPTIONS["gemma4"]) <= set(Gemma4EngineConfig.__dataclass_fields__)
    args = build_parser().parse_args(
        ["serve", "--engine", "gemma4", "--model-path", str(checkpoint), "--window-s", "8", "--emit-every-s", "0.5",
         "--pause-s", "0.4", "--instruction", "Describe.", "--max-batch", "3", "--dtype", "float32",
         "--device", "cpu"])
    eng = build_engine(_engine_choice(args))
    assert (eng.config.window_s, eng.config.emit_every_s, eng.config.pause_s) == (8.0, 0.5, 0.4)
    assert eng.config.default_instruction == "Describe." and eng.spec.max_batch == 3
    assert eng.model.decoder.embed_tokens.weight.dtype == torch.float32
    with pytest.raises(EngineError, match="window_s must be above 0"):
        engine(checkpoint, window_s=0)


def test_a_failing_compiled_decode_step_falls_back_to_the_eager_one(checkpoint):
    from patchstream.model.gemma4_batch import detached_decode_step

    eng, twin = engine(checkpoint), engine(checkpoint)

    def broken(*args):
        raise RuntimeError("the compiler could not lower this")

    eng._decode_step = broken
    a, b = eng.open(SessionOptions()), twin.open(SessionOptions())
    assert steps(eng, a, speech(1.2)) == steps(twin, b, speech(1.2))
    assert eng._decode_step is detached_decode_step


async def test_start_and_control_choose_the_interpretations_over_the_wire(checkpoint):
    """`interpretations: []` in start: captions only; a `control` with a new instruction mid-session: the next
    decodes use it."""
    from patchstream.streaming.server import Server
    from tests.streaming.test_server import server_config
    from tests.streaming.test_video import VIDEO_START, jpeg, solid, video_session

    frames = [(float(t), jpeg(solid(60 * t))) for t in range(4)]
    eng = engine(checkpoint, window_s=10.0)
    asked = []
    suffix = eng.pieces.interpretation_suffix
    eng.pieces.interpretation_suffix = lambda audio_open, instruction: asked.append(instruction) or suffix(
        audio_open, instruction)
    video = {**VIDEO_START, "video": {"encoding": "jpeg", "fps": 1}}
    change = json.dumps({"type": "control", "instruction": "Say what the caller wants."})
    async with Server(server_config(), eng) as server:
        quiet = await video_session(server.url, 2.0, frames[:2], start={**video, "instruction": "Describe.",
                                                                          "interpretations": []}, pace_s=0.1)
        assert not asked and not [e for e in quiet if e["type"].startswith("interpretation.")]
        assert [e for e in quiet if e["type"] == "caption.final"] and quiet[-1]["type"] == "ended"
        events = await video_session(server.url, 4.0, frames, start={**video, "instruction": "Describe."},
                                     middle=[change], pace_s=0.1)
    assert not [e for e in events if e["type"] == "error"], events
    assert asked[0] == "Describe." and asked[-1] == "Say what the caller wants."
    finals = [e for e in events if e["type"] == "interpretation.final"]
    assert len(finals) >= 2  # the partial of the old instruction was closed, the new one has its own id


async def test_a_client_that_disconnects_frees_its_sessions_caches(checkpoint):
    import asyncio

    from websockets.asyncio.client import connect

    from patchstream.streaming.server import Server
    from tests.streaming.test_server import PCM_START, server_config, tone_pcm

    eng = engine(checkpoint)
    opened = []
    eng.open = lambda options, open_=eng.open: opened.append(open_(options)) or opened[-1]
    async with Server(server_config(), eng) as server:
        ws = await connect(server.url)
        await ws.send(json.dumps(PCM_START))
        await ws.recv()  # ready: the session and its caches exist (opened[0] was the server's warm-up)
        session = opened[-1]
        await ws.send(tone_pcm(1.5))
        refs = [weakref.ref(cache.k) for cache in session.stream.caches]
        ws.transport.abort()  # no stop, no close frame
        for _ in range(200):
            if server.active_sessions == 0 and session.stream is None:
                break
            await asyncio.sleep(0.05)
        assert server.active_sessions == 0
    gc.collect()
    assert kv_bytes(session) == 0 and all(ref() is None for ref in refs)


@pytest.mark.parametrize("options, message", [
    ({"device": "tpu9"}, "bad gemma4 engine device"),
    ({"dtype": "float16"}, "dtype must be one of"),
    ({"max_batch": 0}, "max_batch must be above 0"),
])
def test_bad_engine_options_are_engine_errors(checkpoint, options, message):
    with pytest.raises(EngineError, match=message):
        engine(checkpoint, **options)


def test_a_session_whose_frame_breaks_a_batched_step_fails_alone(checkpoint):
    """The scheduler's rule (`api.step_each`): the batch raises, is undone, and is stepped session by session."""
    from patchstream.model.api import step_each

    eng = engine(checkpoint)
    good, bad, other = (eng.open(SessionOptions()) for _ in range(3))
    twins = [eng.open(SessionOptions()) for _ in range(2)]
    for state, seed in zip((good, bad, other, *twins), (0, 1, 2, 0, 2)):  # the twins hear what good and other hear
        eng.feed(state, AudioChunk(speech(1.2, seed=seed), 0))
    eng.feed(bad, VideoFrame(np.zeros((0, 0, 3), np.uint8), 8_000))  # cannot be sized into patches
    results = step_each(eng, [good, bad, other])
    assert isinstance(results[1], Exception) and not isinstance(results[0], Exception)
    assert [results[0], results[2]] == eng.step(twins)
