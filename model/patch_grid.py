"""The Gemma 4 vision grid: how big an image becomes under a soft-token budget, and where its
48 px patches sit.

It is: the one implementation of the resize-size rule (`fit_to_budget`, transformers'
`get_aspect_ratio_preserving_size`) and of patch positions (`patch_positions`), shared by the
Gemma pre-processing (`gemma4_processing.py`, which resizes with torch for bit parity) and the
server's frame patchifier (`streaming/frames.py`, which resizes with PyAV and must not import
torch). It imports only `math`, numpy and `model/api.py`.

It is not: a resizer or a patch cutter (pixels are the callers' business), and it knows nothing
of prompts or tokens.
"""

from __future__ import annotations

import math

import numpy as np

from patchstream.model.api import PATCH_PX

TEACHER_PATCH_PX = 16  # transformers sizes images in 16 px "teacher" patches, merged 3x3 into one 48 px patch
SOFT_TOKEN_BUDGETS = (70, 140, 280, 560, 1120)  # the only vision budgets (soft tokens per image/frame) allowed


def check_budget(max_soft_tokens: int) -> None:
    """ValueError unless `max_soft_tokens` is one of the budgets Gemma 4 was trained with."""
    if max_soft_tokens not in SOFT_TOKEN_BUDGETS:
        raise ValueError(f"max_soft_tokens must be one of {SOFT_TOKEN_BUDGETS}, got {max_soft_tokens}")


def fit_to_budget(height: int, width: int, max_soft_tokens: int) -> tuple[int, int]:
    """(height, width) in pixels, multiples of 48, that keep the aspect ratio and fill the budget.

    transformers' `get_aspect_ratio_preserving_size`, same float operations: the target area is
    budget x 9 teacher patches of 16x16 px, each side is floored to a multiple of 48, and a side
    that floors to 0 becomes 48 with the other capped at budget x 48. Small images are upscaled.
    """
    check_budget(max_soft_tokens)
    pooling = PATCH_PX // TEACHER_PATCH_PX
    target_px = max_soft_tokens * pooling**2 * TEACHER_PATCH_PX**2
    factor = math.sqrt(target_px / (height * width))
    new_h = int(math.floor(factor * height / PATCH_PX)) * PATCH_PX
    new_w = int(math.floor(factor * width / PATCH_PX)) * PATCH_PX
    if new_h == 0 and new_w == 0:
        raise ValueError(f"cannot fit a {height}x{width} image into whole {PATCH_PX} px patches")
    longest_side = max_soft_tokens * PATCH_PX
    if new_h == 0:
        new_h, new_w = PATCH_PX, min(int(math.floor(width / height)) * PATCH_PX, longest_side)
    elif new_w == 0:
        new_h, new_w = min(int(math.floor(height / width)) * PATCH_PX, longest_side), PATCH_PX
    if new_h * new_w > target_px:
        raise ValueError(f"{height}x{width} resized to {new_h}x{new_w} exceeds {max_soft_tokens} soft tokens")
    return new_h, new_w


def patch_positions(height: int, width: int) -> np.ndarray:
    """int64 (rows * cols, 2): the (x = column, y = row) of each 48 px patch, in row-major order.

    `height` and `width` are the resized image's pixels (multiples of 48).
    """
    if height % PATCH_PX or width % PATCH_PX:
        raise ValueError(f"{height}x{width} is not a whole number of {PATCH_PX} px patches")
    ys, xs = np.meshgrid(np.arange(height // PATCH_PX), np.arange(width // PATCH_PX), indexing="ij")
    return np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.int64)
