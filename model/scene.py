"""A cheap scene-change detector: consecutive sampled frames compared as small grey thumbnails.

It is: numpy only, a few microseconds a frame. Each frame is reduced to a 32x18 grey thumbnail
and a 32-bin luma histogram; a cut is declared when either the mean absolute thumbnail
difference or the histogram distance to the previous frame passes its threshold (the histogram
sees a change of lighting or palette wherever it happens; the thumbnail sees a change of layout
with the same palette). A new slide that only changes its text is not a cut at this size: the
on-screen text reader reports it. A finer thumbnail (`FINE_W` x `FINE_H`, compared by its largest
block change, where a changed line of text shows) tells the OCR whether a frame shows what it
already read (`same_picture`).

It is not: a shot-boundary model (fades and dissolves slower than the sampling rate read as no
cut, or as one cut at the frame where they pass the threshold) and it keeps no history beyond
the previous thumbnail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THUMB_W, THUMB_H = 32, 18  # thumbnail pixels (16:9); enough to see a layout change, too few to see noise
FINE_W, FINE_H = 128, 72  # thumbnail pixels for "same picture": a line of slide text spans a few rows
SAME_PICTURE_MAX_CHANGE = 0.08  # largest block |Δ| in [0, 1] still read as the same picture (JPEG noise)
HIST_BINS = 32  # luma histogram bins
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 weights: RGB → grey


@dataclass(frozen=True)
class SceneConfig:
    """Thresholds of the detector."""

    min_pixel_change: float = 0.12  # mean |Δ| of the thumbnail, in [0, 1] (a new layout or picture)
    min_hist_change: float = 0.3  # half the L1 distance of the normalised histograms, in [0, 1] (a new palette)


def thumbnail(pixels: np.ndarray, width: int = THUMB_W, height: int = THUMB_H) -> np.ndarray:
    """float32 (height, width) grey in [0, 1], by block means (area resampling) of an (H, W, 3) uint8 frame."""
    if pixels.shape[0] < height or pixels.shape[1] < width:  # tiny frames: repeat pixels so no block is empty
        pixels = np.repeat(np.repeat(pixels, -(-height // pixels.shape[0]), axis=0), -(-width // pixels.shape[1]), axis=1)
    rows = (np.arange(height + 1) * pixels.shape[0]) // height
    cols = (np.arange(width + 1) * pixels.shape[1]) // width
    grey = pixels.astype(np.float32) @ LUMA / 255.0  # (H, W)
    summed = np.add.reduceat(np.add.reduceat(grey, rows[:-1], axis=0), cols[:-1], axis=1)
    areas = np.outer(np.diff(rows), np.diff(cols))
    return summed / areas


def fine_thumbnail(pixels: np.ndarray) -> np.ndarray:
    """The thumbnail `same_picture` compares."""
    return thumbnail(pixels, FINE_W, FINE_H)


def same_picture(previous: np.ndarray, current: np.ndarray) -> bool:
    """Whether two fine thumbnails show the same picture: no block changed more than noise does."""
    return float(np.abs(current - previous).max()) < SAME_PICTURE_MAX_CHANGE


def _histogram(thumb: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(thumb, bins=HIST_BINS, range=(0.0, 1.0))
    return counts / counts.sum()


def change(previous: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(pixel change, histogram change) between two thumbnails, each in [0, 1]."""
    pixel = float(np.abs(current - previous).mean())
    hist = float(np.abs(_histogram(current) - _histogram(previous)).sum() / 2)
    return pixel, hist


class SceneDetector:
    """Per-session state: the previous thumbnail. `push` says whether this frame starts a new scene."""

    def __init__(self, config: SceneConfig = SceneConfig()):
        self.config = config
        self._previous: np.ndarray | None = None

    def push(self, thumb: np.ndarray) -> bool:
        previous, self._previous = self._previous, thumb
        if previous is None:
            return False  # the first frame is the first scene, not a change
        pixel, hist = change(previous, thumb)
        return pixel >= self.config.min_pixel_change or hist >= self.config.min_hist_change
