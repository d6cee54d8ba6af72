"""Tests for streaming/decode.py: every declared encoding, fed the way a live client sends it.

The tests make their own media: tones written as raw bytes, G.711 and Opus encoded with PyAV.
Calls that could hang if the demux thread misbehaved run under a timeout.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from patchstream.model.api import SAMPLE_RATE
from patchstream.streaming.chunker import DecodedAudio
from patchstream.streaming.decode import (
    BAD_FORMAT,
    DECODE_FAILED,
    DECODER_CLOSED,
    INPUT_TOO_LARGE,
    UNSUPPORTED_ENCODING,
    AudioDecoder,
    DecodeError,
    DecoderConfig,
)
from patchstream.streaming.protocol import AudioFormat, ProtocolError

TONE_HZ = (440.0, 1000.0)  # channel 0, channel 1: distinct so a channel mix-up shows
TONE_AMPLITUDE = (0.5, 0.25)
CALL_TIMEOUT_S = 10.0  # generous; a healthy call takes milliseconds
OPUS_RATE = 48_000
OPUS_FRAME = 960  # 20 ms at 48 kHz, what browsers send
OGG_PAGE_US = 20_000  # live Ogg writers flush a page per packet; FFmpeg's default is 1 s pages


def tone(rate: int, channels: int, seconds: float) -> np.ndarray:
    """float32 (C, n) sine tones, one frequency per channel."""
    t = np.arange(int(rate * seconds)) / rate
    rows = [TONE_AMPLITUDE[c] * np.sin(2 * np.pi * TONE_HZ[c] * t) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def raw_bytes(encoding: str, audio: np.ndarray, rate: int) -> bytes:
    interleaved = np.ascontiguousarray(audio.T).reshape(-1)  # (n * C,) L R L R ...
    if encoding == "pcm_f32le":
        return interleaved.astype("<f4").tobytes()
    s16 = np.round(interleaved * 32767).astype("<i2")
    if encoding == "pcm_s16le":
        return s16.tobytes()
    codec = av.CodecContext.create({"mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}[encoding], "w")
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    codec.sample_rate, codec.layout, codec.format = rate, layout, "s16"
    frame = av.AudioFrame.from_ndarray(s16.reshape(1, -1), format="s16", layout=layout)
    frame.sample_rate = rate
    return b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)])


def opus_stream(container: str, seconds: float, jump: tuple[float, float] | None = None) -> bytes:
    """Stereo Opus in `container`; with `jump=(at, by)` packets from `at` s on are stamped `by` s later
    (a sender that paused: a gap in media time with no audio missing from the encoder)."""
    audio = tone(OPUS_RATE, 2, seconds)
    sink = _LiveSink()
    # What live writers do: Ogg pages per packet; WebM clusters of unknown size (MediaRecorder).
    options = {"page_duration": str(OGG_PAGE_US)} if container == "ogg" else {"live": "1"}
    with av.open(sink, "w", format=container, options=options) as out:
        stream = out.add_stream("libopus", rate=OPUS_RATE, layout="stereo")
        def mux(packets):
            for packet in packets:
                if jump and packet.pts is not None and packet.pts >= jump[0] * OPUS_RATE:
                    packet.pts += int(jump[1] * OPUS_RATE)  # encoder time base is 1/OPUS_RATE
                    packet.dts += int(jump[1] * OPUS_RATE)
                out.mux(packet)

        for i in range(0, audio.shape[1], OPUS_FRAME):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio[:, i : i + OPUS_FRAME]), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts, frame.time_base = OPUS_RATE, i, Fraction(1, OPUS_RATE)
            mux(stream.encode(frame))
        mux(stream.encode(None))
    return b"".join(sink.parts)


class _LiveSink:
    """A write-only file: the muxer cannot seek back to patch sizes, as on a live connection."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)


def mono_file(container: str, codec: str, seconds: float, rate: int = 22_050) -> bytes:
    """A whole mono file (WAV, MP3, ...) as a client would upload it."""
    audio = tone(rate, 1, seconds)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame_size = stream.codec_context.frame_size or audio.shape[1]
        for i in range(0, audio.shape[1], frame_size):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio[:, i : i + frame_size]), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def within(timeout_s: float, call):
    """Run `call` on a thread; fail the test if it does not return in time."""
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = call()
        except BaseException as error:  # re-raised on the test thread
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"call did not return within {timeout_s} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


def feed(decoder: AudioDecoder, data: bytes, seed: int, max_piece: int) -> tuple[list[DecodedAudio], int]:
    """Feed `data` in random-size pieces, then flush. Returns outputs and how many came before flush."""
    rng = np.random.default_rng(seed)
    outputs: list[DecodedAudio] = []
    i = 0
    while i < len(data):
        n = int(rng.integers(1, max_piece + 1))
        piece = data[i : i + n]
        # Raw decoding is synchronous; only the container path has a thread that could hang.
        outputs += decoder.decode(piece) if decoder.format.is_raw else within(
            CALL_TIMEOUT_S, lambda: decoder.decode(piece)
        )
        i += n
    before_flush = sum(o.num_samples for o in outputs)
    outputs += within(CALL_TIMEOUT_S, decoder.flush)
    decoder.close()
    return outputs, before_flush


def joined(outputs: list[DecodedAudio]) -> np.ndarray:
    return np.concatenate([o.samples for o in outputs], axis=1)


def peak_hz(signal: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def assert_contiguous(outputs: list[DecodedAudio], first: int = 0, tolerance: int = 0) -> None:
    expected = first
    for o in outputs:
        assert o.start_sample is not None
        assert abs(o.start_sample - expected) <= tolerance, (o.start_sample, expected)
        expected = o.start_sample + o.num_samples


def demux_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "patchstream-demux" and t.is_alive()]


# --- raw PCM and G.711 ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_f32le", "mulaw", "alaw"])
@pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
@pytest.mark.parametrize("channels", [1, 2])
def test_raw_round_trip_in_odd_pieces_keeps_tone_length_and_channels(encoding, rate, channels):
    seconds = 1.0
    audio = tone(rate, channels, seconds)
    data = raw_bytes(encoding, audio, rate)
    decoder = AudioDecoder(AudioFormat(encoding, sample_rate=rate, channels=channels))

    outputs, _ = feed(decoder, data, seed=rate + channels, max_piece=997)  # 997: splits samples

    decoded = joined(outputs)
    assert decoded.dtype == np.float32
    assert decoded.shape == (channels, int(seconds * SAMPLE_RATE))
    assert_contiguous(outputs)
    body = decoded[:, 800:-800]  # skip the resampler's edges
    for c in range(channels):
        assert peak_hz(body[c]) == pytest.approx(TONE_HZ[c], abs=2.0)
        rms = float(np.sqrt(np.mean(body[c] ** 2)))
        assert rms == pytest.approx(TONE_AMPLITUDE[c] / np.sqrt(2), rel=0.03)


def test_raw_stereo_channels_stay_separate():
    audio = tone(48_000, 2, 0.5)
    audio[1] = 0.0  # silent right channel must stay silent: nothing was mixed across
    decoder = AudioDecoder(AudioFormat("pcm_s16le", sample_rate=48_000, channels=2))
    outputs, _ = feed(decoder, raw_bytes("pcm_s16le", audio, 48_000), seed=1, max_piece=333)
    decoded = joined(outputs)
    assert np.sqrt(np.mean(decoded[0] ** 2)) > 0.3
    assert np.max(np.abs(decoded[1])) < 1e-4


def test_raw_output_arrives_while_streaming_not_only_at_flush():
    decoder = AudioDecoder(AudioFormat("pcm_s16le", sample_rate=16_000, channels=1))
    outputs, before_flush = feed(decoder, raw_bytes("pcm_s16le", tone(16_000, 1, 1.0), 16_000), 2, 641)
    assert before_flush >= SAMPLE_RATE - 64  # only the resampler's delay waits for flush
    assert sum(o.num_samples for o in outputs) == SAMPLE_RATE


def test_raw_incomplete_sample_at_flush_is_dropped_not_decoded():
    decoder = AudioDecoder(AudioFormat("pcm_s16le", sample_rate=16_000, channels=2))
    outputs = decoder.decode(bytes(4 * 100 + 3)) + decoder.flush()  # 100 sample frames + 3 bytes
    assert sum(o.num_samples for o in outputs) == 100


# --- containers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["ogg", "webm"])
def test_opus_stream_in_random_pieces_decodes_live_with_media_time(container):
    seconds = 3.0
    data = opus_stream(container, seconds)
    decoder = AudioDecoder(AudioFormat("container", container=container))

    outputs, before_flush = feed(decoder, data, seed=7, max_piece=1500)

    total = sum(o.num_samples for o in outputs)
    assert total == pytest.approx(seconds * SAMPLE_RATE, abs=320)  # within one 20 ms Opus frame
    assert before_flush >= total - 0.1 * SAMPLE_RATE  # decoded as bytes arrived, not at the end
    assert outputs[0].start_sample == 0
    assert_contiguous(outputs, tolerance=16)  # WebM stores milliseconds: 1 ms of rounding
    decoded = joined(outputs)[:, SAMPLE_RATE // 10 : -SAMPLE_RATE // 10]
    assert decoded.shape[0] == 2
    for c in range(2):
        assert peak_hz(decoded[c]) == pytest.approx(TONE_HZ[c], abs=2.0)


@pytest.mark.parametrize("container", ["ogg", "webm"])
def test_container_gap_in_timestamps_is_reported_as_media_time(container):
    seconds, gap_s = 2.0, 1.5
    data = opus_stream(container, seconds, jump=(1.0, gap_s))
    decoder = AudioDecoder(AudioFormat("container", container=container))
    outputs, _ = feed(decoder, data, seed=3, max_piece=2000)

    assert outputs[0].start_sample == 0
    jumps = [
        b.start_sample - (a.start_sample + a.num_samples) for a, b in zip(outputs, outputs[1:])
    ]
    assert [j for j in jumps if abs(j) > 16] == [pytest.approx(gap_s * SAMPLE_RATE, abs=16)]
    assert sum(o.num_samples for o in outputs) == pytest.approx(seconds * SAMPLE_RATE, abs=320)


@pytest.mark.parametrize("container, codec", [("wav", "pcm_s16le"), ("mp3", "libmp3lame")])
def test_container_format_is_probed_when_not_named(container, codec):
    decoder = AudioDecoder(AudioFormat("container"))
    outputs, _ = feed(decoder, mono_file(container, codec, 1.0), seed=4, max_piece=4000)
    # MP3 carries its encoder delay as a start time of tens of ms: media time, reported as such.
    codec_delay = int(0.1 * SAMPLE_RATE)
    assert 0 <= outputs[0].start_sample <= codec_delay
    assert_contiguous(outputs, first=outputs[0].start_sample)
    assert sum(o.num_samples for o in outputs) == pytest.approx(SAMPLE_RATE, abs=codec_delay)
    assert peak_hz(joined(outputs)[0, 800:-800]) == pytest.approx(TONE_HZ[0], abs=2.0)


def test_whole_file_in_one_frame_is_not_mistaken_for_a_missing_header():
    data = opus_stream("webm", 2.0)
    decoder = AudioDecoder(AudioFormat("container", container="webm"), DecoderConfig(max_header_bytes=4_096))
    outputs = within(CALL_TIMEOUT_S, lambda: decoder.decode(data)) + within(CALL_TIMEOUT_S, decoder.flush)
    decoder.close()
    assert sum(o.num_samples for o in outputs) == pytest.approx(2 * SAMPLE_RATE, abs=320)


def test_container_with_no_bytes_flushes_to_nothing():
    decoder = AudioDecoder(AudioFormat("container", container="ogg"))
    assert within(CALL_TIMEOUT_S, decoder.flush) == []
    decoder.close()


@pytest.mark.parametrize("size", [10_000, 300_000])
def test_garbage_declared_as_ogg_opus_fails_clearly_without_hanging(size):
    garbage = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    decoder = AudioDecoder(AudioFormat("container", container="ogg"))
    with pytest.raises(DecodeError) as caught:
        for i in range(0, size, 4096):  # at the latest on flush
            within(CALL_TIMEOUT_S, lambda: decoder.decode(garbage[i : i + 4096]))
        within(CALL_TIMEOUT_S, decoder.flush)
    assert caught.value.code == DECODE_FAILED
    assert "ogg" in caught.value.message
    with pytest.raises(DecodeError):  # dead decoders stay dead
        decoder.decode(b"OggS")
    decoder.close()
    assert not demux_threads()


def test_large_garbage_fails_within_the_header_bound_not_at_flush():
    decoder = AudioDecoder(AudioFormat("container", container="ogg"), DecoderConfig(max_header_bytes=100_000))
    garbage = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    with pytest.raises(DecodeError) as caught:
        for i in range(0, len(garbage), 50_000):
            within(CALL_TIMEOUT_S, lambda: decoder.decode(garbage[i : i + 50_000]))
    assert caught.value.code == DECODE_FAILED
    decoder.close()


def test_close_mid_stream_releases_the_demux_thread():
    data = opus_stream("webm", 1.0)
    decoders = [AudioDecoder(AudioFormat("container", container="webm")) for _ in range(3)]
    for decoder in decoders:
        within(CALL_TIMEOUT_S, lambda: decoder.decode(data[: len(data) // 2]))
    for decoder in decoders:
        decoder.close()
        decoder.close()  # idempotent
    assert not demux_threads()


def test_close_from_another_thread_ends_the_decoder():
    decoder = AudioDecoder(AudioFormat("container", container="ogg"))
    within(CALL_TIMEOUT_S, lambda: decoder.decode(opus_stream("ogg", 0.5)[:200]))
    closer = threading.Timer(0.05, decoder.close)
    closer.start()
    closer.join()
    with pytest.raises(DecodeError) as caught:
        decoder.decode(b"more")
    assert caught.value.code == DECODER_CLOSED
    assert not demux_threads()


# --- bounds and declarations --------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["pcm_s16le", "container"])
def test_frame_over_the_byte_bound_is_refused(encoding):
    raw = encoding != "container"
    fmt = AudioFormat(encoding, sample_rate=16_000, channels=1) if raw else AudioFormat(encoding)
    decoder = AudioDecoder(fmt, DecoderConfig(max_pending_bytes=1_000))
    with pytest.raises(DecodeError) as caught:
        decoder.decode(bytes(2_000))
    assert caught.value.code == INPUT_TOO_LARGE
    decoder.close()


def test_decode_after_flush_is_refused():
    decoder = AudioDecoder(AudioFormat("mulaw", sample_rate=8_000, channels=1))
    decoder.flush()
    with pytest.raises(DecodeError) as caught:
        decoder.decode(b"\xff" * 10)
    assert caught.value.code == DECODER_CLOSED


@pytest.mark.parametrize(
    "kwargs, code",
    [
        (dict(encoding="flac_raw", sample_rate=16_000, channels=1), UNSUPPORTED_ENCODING),
        (dict(encoding="pcm_s16le", channels=1), BAD_FORMAT),  # raw needs a rate
        (dict(encoding="pcm_s16le", sample_rate=16_000), BAD_FORMAT),  # raw needs channels
        (dict(encoding="pcm_s16le", sample_rate=16_000, channels=0), BAD_FORMAT),
        (dict(encoding="pcm_s16le", sample_rate=16_000, channels=9), BAD_FORMAT),
        (dict(encoding="pcm_s16le", sample_rate=True, channels=1), BAD_FORMAT),
        (dict(encoding="mulaw", sample_rate="8000", channels=1), BAD_FORMAT),
        (dict(encoding="alaw", sample_rate=1_000_000, channels=1), BAD_FORMAT),
        (dict(encoding="pcm_f32le", sample_rate=16_000, channels=1, container="wav"), BAD_FORMAT),
        (dict(encoding="container", container="no-such-demuxer"), BAD_FORMAT),
    ],
)
def test_invalid_declarations_raise_clear_codes(kwargs, code):
    with pytest.raises(ProtocolError) as caught:
        AudioFormat(**kwargs)
    assert caught.value.code == code
    assert caught.value.message  # a sentence for humans, not just the code


def test_streaming_package_never_imports_torch():
    probe = "import sys, patchstream.streaming.decode, patchstream.streaming.chunker; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], timeout=60).returncode == 0


def test_eight_channels_decode_in_a_subprocess_without_crashing():
    # PyAV 18.1 segfaults on 8-plane planar frames; a crash would take the whole server down.
    code = (
        "import numpy as np\n"
        "from patchstream.streaming.decode import AudioDecoder\n"
        "from patchstream.streaming.protocol import AudioFormat\n"
        "d = AudioDecoder(AudioFormat('pcm_s16le', sample_rate=16000, channels=8))\n"
        "x = (np.arange(8)[None, :] * 1000 + np.zeros((3200, 1))).astype('<i2')\n"
        "out = d.decode(x.tobytes()) + d.flush()\n"
        "s = np.concatenate([o.samples for o in out], axis=1)\n"
        "assert s.shape[0] == 8, s.shape\n"
        "levels = np.round(s[:, 1000:2000].mean(axis=1) * 32768 / 1000).astype(int).tolist()\n"
        "assert levels == list(range(8)), levels\n"
        "d.close()\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("hint", ["concat", "hls", "image2", "tcp"])
def test_demuxers_that_open_other_files_are_refused(hint):
    with pytest.raises(ProtocolError) as error:
        AudioFormat("container", container=hint)
    assert error.value.code == "bad_format"


def test_concat_playlist_without_a_hint_is_not_followed(tmp_path):
    decoder = AudioDecoder(AudioFormat("container"))
    playlist = f"ffconcat version 1.0\nfile '{tmp_path / 'x.wav'}'\n".encode()
    with pytest.raises(DecodeError) as error:
        decoder.decode(playlist)
        decoder.flush()
    assert error.value.code == "decode_failed"
    decoder.close()
