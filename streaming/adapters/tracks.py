"""Separate telephony tracks → one interleaved stream (sans-I/O): `TrackInterleaver`.

Twilio sends a call's two tracks (inbound: the caller; outbound: what the call sends back) as
separate 20 ms messages of 8-bit G.711, each stamped with its media time. The native session takes
one interleaved multichannel stream, so this places each track's bytes on its own timeline (time
travels with the data: a gap in a track's timestamps is filled with silence, an overlap trimmed)
and emits interleaved samples up to where every track has arrived.

Drop rule (every buffer bounded): a track may lead the slowest by at most `max_skew_samples`;
beyond it the slow track is filled with silence (a track that stopped sending is silent, not a
reason to hold the other back). A timestamp jump larger than `max_gap_samples` is not reproduced
as silence (a clock bug must not allocate hours of audio): the track just continues.
It is not: a decoder. Bytes are one sample each (μ-law or A-law) and stay encoded.
"""

from __future__ import annotations

import numpy as np


class TrackInterleaver:
    """One call's tracks; `push` each track's bytes, get interleaved bytes back."""

    def __init__(self, tracks: int, silence: int, max_skew_samples: int, max_gap_samples: int):
        self._silence = silence  # the encoding's byte for zero
        self._max_skew = max_skew_samples
        self._max_gap = max_gap_samples
        self._pending = [bytearray() for _ in range(tracks)]  # per track, samples not yet emitted
        self.emitted = 0  # samples per track emitted so far (media time of the next one)

    def _end(self, track: int) -> int:
        return self.emitted + len(self._pending[track])

    def push(self, track: int, payload: bytes, start: int | None = None) -> bytes:
        """`payload` of `track` starting at sample `start` (None: right after its last); returns
        the interleaved bytes now complete in every track (may be empty)."""
        buffer = self._pending[track]
        end = self._end(track)
        start = end if start is None else start
        if start > end:
            buffer += bytes([self._silence]) * min(start - end, self._max_gap)
        elif start < end:
            payload = payload[end - start :]  # what lies before the track's end was already placed
        buffer += payload
        lead = max(self._end(index) for index in range(len(self._pending)))
        for index, other in enumerate(self._pending):
            short = lead - self._max_skew - self._end(index)
            if short > 0:
                other += bytes([self._silence]) * short
        return self._take(min(len(other) for other in self._pending))

    def flush(self) -> bytes:
        """End of the call: every track padded with silence to the longest; all of it, interleaved."""
        longest = max(len(buffer) for buffer in self._pending)
        for buffer in self._pending:
            buffer += bytes([self._silence]) * (longest - len(buffer))
        return self._take(longest)

    def _take(self, samples: int) -> bytes:
        if samples <= 0:
            return b""
        columns = [np.frombuffer(bytes(buffer[:samples]), np.uint8) for buffer in self._pending]
        for buffer in self._pending:
            del buffer[:samples]
        self.emitted += samples
        return np.stack(columns, axis=1).tobytes()  # (samples, tracks): interleaved
