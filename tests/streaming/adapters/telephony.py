"""Test media for the call-center protocols, made at test time from the real speech set:
G.711 at 8 kHz (PyAV's encoders) and two-party calls with the parties on separate channels."""

from __future__ import annotations

import av
import numpy as np

from patchstream.bench.transcript_metrics import normalize_words, word_errors

RATE = 16_000


def g711(samples: np.ndarray, codec: str = "pcm_mulaw", rate: int = 8_000) -> bytes:
    """16 kHz float mono → 8 kHz G.711 bytes (`pcm_mulaw` or `pcm_alaw`), as a phone line carries it."""
    frame = av.AudioFrame.from_ndarray(np.asarray(samples, np.float32).reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = RATE
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    encoder = av.CodecContext.create(codec, "w")
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16"
    out = bytearray()
    for piece in [*resampler.resample(frame), *resampler.resample(None)]:
        for packet in encoder.encode(piece):
            out += bytes(packet)
    for packet in encoder.encode(None):
        out += bytes(packet)
    return bytes(out)


def pcm24k(samples: np.ndarray) -> bytes:
    """16 kHz float mono → 24 kHz 16-bit PCM, the OpenAI Realtime default format."""
    frame = av.AudioFrame.from_ndarray(np.asarray(samples, np.float32).reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = RATE
    resampler = av.AudioResampler(format="s16", layout="mono", rate=24_000)
    return b"".join(piece.to_ndarray().tobytes() for piece in [*resampler.resample(frame), *resampler.resample(None)])


def call(turns: list[tuple[int, np.ndarray]], channels: int = 2, gap_s: float = 1.5) -> np.ndarray:
    """A call: each (channel, speech) turn in order, the other channels silent meanwhile, `gap_s`
    of silence between turns. Returns float32 (channels, n) at 16 kHz."""
    gap = np.zeros(int(gap_s * RATE), np.float32)
    pieces = []
    for channel, speech in turns:
        block = np.zeros((channels, len(speech) + len(gap)), np.float32)
        block[channel, : len(speech)] = speech
        pieces.append(block)
    return np.concatenate([np.zeros((channels, len(gap)), np.float32), *pieces], axis=1)


def turn_spans(turns: list[tuple[int, np.ndarray]], gap_s: float = 1.5) -> list[tuple[int, float, float]]:
    """(channel, start s, end s) of each turn of `call(turns)`."""
    spans, at = [], gap_s
    for channel, speech in turns:
        spans.append((channel, at, at + len(speech) / RATE))
        at += len(speech) / RATE + gap_s
    return spans


def wer(reference: str, hypothesis: str) -> float:
    return word_errors(normalize_words(reference), normalize_words(hypothesis)).wer
