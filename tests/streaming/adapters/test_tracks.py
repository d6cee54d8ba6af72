"""TrackInterleaver: separate telephony tracks placed by time and interleaved, bounded."""

from __future__ import annotations

from patchstream.streaming.adapters.tracks import TrackInterleaver

SILENCE = 0xFF


def test_tracks_interleave_once_both_have_arrived():
    tracks = TrackInterleaver(2, SILENCE, max_skew_samples=100, max_gap_samples=100)
    assert tracks.push(0, b"abc", 0) == b""
    assert tracks.push(1, b"xy", 0) == b"axby"
    assert tracks.push(1, b"z", None) == b"cz"
    assert tracks.emitted == 3


def test_a_gap_in_one_track_is_filled_with_silence_and_an_overlap_trimmed():
    tracks = TrackInterleaver(1, SILENCE, max_skew_samples=100, max_gap_samples=100)
    assert tracks.push(0, b"ab", 0) == b"ab"
    assert tracks.push(0, b"cd", 4) == bytes([SILENCE, SILENCE]) + b"cd"
    assert tracks.push(0, b"dEF", 5) == b"EF"  # its first byte was already placed


def test_a_silent_track_never_holds_the_other_back_beyond_the_skew():
    tracks = TrackInterleaver(2, SILENCE, max_skew_samples=2, max_gap_samples=100)
    out = tracks.push(0, b"abcdef", 0)
    assert out == bytes([ord("a"), SILENCE, ord("b"), SILENCE, ord("c"), SILENCE, ord("d"), SILENCE])


def test_a_huge_timestamp_jump_allocates_at_most_the_gap_bound():
    tracks = TrackInterleaver(1, SILENCE, max_skew_samples=10, max_gap_samples=5)
    assert tracks.push(0, b"a", 10**9) == bytes([SILENCE]) * 5 + b"a"


def test_flush_pads_every_track_to_the_longest():
    tracks = TrackInterleaver(2, SILENCE, max_skew_samples=100, max_gap_samples=100)
    tracks.push(0, b"ab", 0)
    assert tracks.flush() == bytes([ord("a"), SILENCE, ord("b"), SILENCE])
