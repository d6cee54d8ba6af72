"""Tests for streaming/chunker.py: whole 40 ms frames whose media time never drifts.

"Streaming equals full": any split of the same audio must give the same frames at the same
times; gaps, jitter and overlaps are placed by their timestamps, never by arrival.
"""

from __future__ import annotations

import numpy as np
import pytest

from patchstream.model.api import SAMPLE_RATE, SAMPLES_PER_AUDIO_TOKEN, AudioChunk, EngineSpec
from patchstream.streaming.chunker import AudioChunker, ChunkerConfig, DecodedAudio
from patchstream.streaming.decode import AudioDecoder
from patchstream.streaming.protocol import AudioFormat

FRAME = SAMPLES_PER_AUDIO_TOKEN
CONFIG = ChunkerConfig()
JITTER = CONFIG.jitter_tolerance_samples
MAX_GAP = CONFIG.max_gap_fill_samples


def noise(channels: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (channels, n)).astype(np.float32)


def audio(samples: np.ndarray, start: int | None) -> DecodedAudio:
    return DecodedAudio(samples, start)


def run(pieces: list[DecodedAudio], config: ChunkerConfig = CONFIG) -> tuple[list[AudioChunk], AudioChunker]:
    chunker = AudioChunker(config)
    chunks = [c for p in pieces for c in chunker.push(p)] + chunker.flush()
    return chunks, chunker


def timeline(chunks: list[AudioChunk]) -> np.ndarray:
    """The chunks' mono samples laid end to end; asserts they are contiguous."""
    for a, b in zip(chunks, chunks[1:]):
        assert b.start_sample == a.end_sample and not b.discontinuity
    return np.concatenate([c.samples for c in chunks])


def split(samples: np.ndarray, seed: int, start: int = 0, max_piece: int = 1500) -> list[DecodedAudio]:
    """Random-size pieces, every piece stamped with its exact media time."""
    rng = np.random.default_rng(seed)
    pieces, i = [], 0
    while i < samples.shape[1]:
        n = int(rng.integers(1, max_piece))
        pieces.append(audio(samples[:, i : i + n], start + i))
        i += n
    return pieces


# --- framing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_odd_packet_sizes_give_the_same_frames_as_one_push(channels, seed):
    samples = noise(channels, 20_011)
    whole, _ = run([audio(samples, 0)])
    pieces, _ = run(split(samples, seed))

    assert all(len(c.samples) % FRAME == 0 for c in pieces)
    np.testing.assert_array_equal(timeline(pieces), timeline(whole))
    assert pieces[0].start_sample == 0 and pieces[-1].end_sample == whole[-1].end_sample


def test_unstamped_pieces_follow_the_previous_one():
    samples = noise(1, 5_000)
    stamped, _ = run(split(samples, seed=4, start=1_234))
    unstamped = split(samples, seed=4, start=1_234)
    unstamped = [unstamped[0]] + [audio(p.samples, None) for p in unstamped[1:]]
    chained, _ = run(unstamped)
    layout = [(c.start_sample, len(c.samples)) for c in stamped]
    assert [(c.start_sample, len(c.samples)) for c in chained] == layout
    np.testing.assert_array_equal(timeline(chained), timeline(stamped))


def test_each_push_returns_one_chunk_with_every_whole_frame():
    chunker = AudioChunker()
    assert chunker.push(audio(noise(1, 600), 0)) == []  # less than a frame: held
    (first,) = chunker.push(audio(noise(1, 2_000, 1), None))  # 2600 available: 4 frames
    assert (first.start_sample, len(first.samples)) == (0, 4 * FRAME)
    assert chunker.push(audio(noise(1, 80, 2), None)) == []  # 40 + 80 < 640: held
    (third,) = chunker.push(audio(noise(1, 2_000, 3), None))  # 2120 available: 3 frames
    assert (third.start_sample, len(third.samples)) == (4 * FRAME, 3 * FRAME)


def test_pending_audio_never_exceeds_one_frame():
    chunker = AudioChunker()
    emitted_until = 0
    for piece in split(noise(2, 30_000), seed=5):
        for chunk in chunker.push(piece):
            emitted_until = chunk.end_sample
        assert 0 <= chunker.next_sample - emitted_until < FRAME


def test_timestamps_start_at_the_first_media_time_and_stay_exact():
    start = 3 * SAMPLE_RATE + 17  # a stream that starts 3 s in, off the frame grid
    chunks, _ = run(split(noise(1, 10_000), seed=6, start=start))
    assert chunks[0].start_sample == start
    timeline(chunks)
    assert chunks[-1].end_sample == start + 16 * FRAME  # 10000 -> 15.6 frames -> 16 after flush


def test_mono_mix_is_the_channel_mean():
    samples = noise(2, 1_280)
    (chunk,) = AudioChunker().push(audio(samples, 0))
    np.testing.assert_allclose(chunk.samples, samples.mean(axis=0), atol=1e-7)
    assert chunk.samples.dtype == np.float32


def test_chunks_are_whole_multiples_of_the_engines_chunk_size():
    spec = EngineSpec(name="t", samples_per_chunk=1_280)
    chunks = AudioChunker(ChunkerConfig.for_engine(spec)).push(audio(noise(1, 4_000), 0))
    assert [len(c.samples) for c in chunks] == [3_840]


def test_flush_pads_the_tail_with_zeros_to_a_whole_frame():
    chunker = AudioChunker()
    samples = noise(1, 1_000)
    chunker.push(audio(samples, 0))
    (tail,) = chunker.flush()
    assert (tail.start_sample, len(tail.samples)) == (FRAME, FRAME)
    np.testing.assert_array_equal(tail.samples[: 1_000 - FRAME], samples[0, FRAME:])
    assert not tail.samples[1_000 - FRAME :].any()
    assert chunker.flush() == []  # nothing left
    assert chunker.stats.gap_filled_samples == 2 * FRAME - 1_000


def test_flush_of_an_empty_chunker_returns_nothing():
    assert AudioChunker().flush() == []


# --- time reconciliation ------------------------------------------------------------------------


@pytest.mark.parametrize("error", [1, JITTER, -1, -JITTER])
def test_small_timestamp_jitter_is_absorbed(error):
    a, b = noise(1, 1_000, 1), noise(1, 1_000, 2)
    jittered, chunker = run([audio(a, 0), audio(b, 1_000 + error)])
    contiguous, _ = run([audio(a, 0), audio(b, 1_000)])
    np.testing.assert_array_equal(timeline(jittered), timeline(contiguous))
    assert chunker.stats.jitter_events == 1
    assert chunker.stats.trimmed_samples == 0


def test_jitter_never_accumulates_into_drift():
    # Every packet is 1 sample late against the previous one's end: absorbed each time, because
    # each timestamp is compared with the chunker's clock, so the error never exceeds 1 sample.
    samples = noise(1, 640 * 50)
    pieces = [audio(samples[:, i : i + 640], i + (i // 640) % 2) for i in range(0, samples.shape[1], 640)]
    chunks, chunker = run(pieces)
    assert chunks[-1].end_sample == samples.shape[1]
    assert chunker.stats.gap_filled_samples == 0


def test_gap_within_bound_is_filled_with_silence():
    a, b = noise(1, 1_000, 1), noise(1, 1_000, 2)
    gap = 800
    chunks, chunker = run([audio(a, 0), audio(b, 1_000 + gap)])
    stream = timeline(chunks)
    np.testing.assert_array_equal(stream[:1_000], a[0])
    assert not stream[1_000 : 1_000 + gap].any()
    np.testing.assert_array_equal(stream[1_000 + gap : 2_000 + gap], b[0])
    assert chunker.stats.gap_filled_samples >= gap


def test_gap_beyond_bound_starts_a_flagged_chunk_at_the_new_media_time():
    a, b = noise(2, 1_000, 1), noise(2, 1_300, 2)
    new_start = 1_000 + MAX_GAP + 1
    chunker = AudioChunker()
    first = chunker.push(audio(a, 0))
    jumped = chunker.push(audio(b, new_start))
    assert [(c.start_sample, len(c.samples), c.discontinuity) for c in first + jumped] == [
        (0, FRAME, False),
        (FRAME, FRAME, False),  # the old tail, padded to a whole frame
        (new_start, 2 * FRAME, True),
    ]
    np.testing.assert_allclose(jumped[1].samples, b[:, : 2 * FRAME].mean(axis=0), atol=1e-7)
    (tail,) = chunker.flush()
    assert tail.start_sample == new_start + 2 * FRAME and not tail.discontinuity
    assert chunker.stats.discontinuities == 1


def test_overlap_is_trimmed_so_time_does_not_repeat():
    a, b = noise(1, 1_000, 1), noise(1, 500, 2)
    chunks, chunker = run([audio(a, 0), audio(b, 900)])  # b's first 100 samples are already placed
    stream = timeline(chunks)
    np.testing.assert_array_equal(stream[:1_000], a[0])
    np.testing.assert_array_equal(stream[1_000:1_400], b[0, 100:])
    assert chunker.stats.trimmed_samples == 100


def test_packet_entirely_inside_placed_audio_is_dropped():
    a = noise(1, 2_000, 1)
    chunks, chunker = run([audio(a, 0), audio(noise(1, 300, 2), 500)])
    np.testing.assert_array_equal(timeline(chunks)[:2_000], a[0])
    assert chunker.stats.trimmed_samples == 300
    assert chunks[-1].end_sample == 4 * FRAME  # 2000 samples -> 4 frames after flush


def test_timestamp_reset_backwards_is_a_discontinuity_not_a_long_trim():
    chunker = AudioChunker()
    chunker.push(audio(noise(1, 5 * SAMPLE_RATE), 0))
    (chunk,) = chunker.push(audio(noise(1, FRAME), 0))  # sender restarted its clock
    assert (chunk.start_sample, chunk.discontinuity) == (0, True)


def test_counters_track_received_emitted_filled_and_trimmed():
    pieces = [audio(noise(1, 1_000), 0), audio(noise(1, 1_000), 1_500), audio(noise(1, 100), 2_400)]
    chunks, chunker = run(pieces)
    stats = chunker.stats
    assert stats.samples_received == 2_100
    assert stats.gap_filled_samples == 500 + (4 * FRAME - 2_500)  # the gap, then flush padding
    assert stats.trimmed_samples == 100  # the third packet lay inside the second
    assert stats.samples_emitted == sum(len(c.samples) for c in chunks) == 4 * FRAME


def test_channel_count_change_is_refused():
    chunker = AudioChunker()
    chunker.push(audio(noise(2, 100), 0))
    with pytest.raises(ValueError):
        chunker.push(audio(noise(1, 100), None))


def test_config_rejects_a_gap_bound_shorter_than_a_frame():
    with pytest.raises(ValueError):
        ChunkerConfig(max_gap_fill_samples=FRAME - 1)


# --- with the decoder -----------------------------------------------------------------------------


def test_decoder_then_chunker_in_odd_pieces_equals_one_piece():
    rate, seconds = 44_100, 1.5
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 700 * t)])  # (2, n)
    pcm = (stereo.T * 16_000).astype("<i2").tobytes()  # interleaved s16
    fmt = AudioFormat("pcm_s16le", sample_rate=rate, channels=2)

    def chunks_for(sizes_seed: int | None) -> list[AudioChunk]:
        decoder, chunker = AudioDecoder(fmt), AudioChunker()
        rng = np.random.default_rng(sizes_seed)
        out, i = [], 0
        while i < len(pcm):
            n = len(pcm) if sizes_seed is None else int(rng.integers(1, 3_000))
            for decoded in decoder.decode(pcm[i : i + n]):
                out += chunker.push(decoded)
            i += n
        for decoded in decoder.flush():
            out += chunker.push(decoded)
        return out + chunker.flush()

    whole, pieces = chunks_for(None), chunks_for(11)
    frames = int(np.ceil(seconds * SAMPLE_RATE / FRAME))
    assert pieces[-1].end_sample == whole[-1].end_sample == frames * FRAME
    np.testing.assert_allclose(timeline(pieces), timeline(whole), atol=1e-6)


def test_one_huge_push_is_split_into_chunks_of_at_most_a_second():
    chunker = AudioChunker()
    audio = np.ones((1, 16_000 * 5 + 640 * 3), np.float32)
    chunks = chunker.push(DecodedAudio(audio, 0))
    assert max(len(c.samples) for c in chunks) <= 16_000
    assert [c.start_sample for c in chunks] == [sum(len(x.samples) for x in chunks[:i]) for i in range(len(chunks))]
    assert sum(len(c.samples) for c in chunks) == audio.shape[1]
