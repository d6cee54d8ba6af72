"""Test-session set-up shared by every test module."""

from __future__ import annotations

import importlib
import sys

_KEEP_ALIVE: list = []  # torch.library objects whose op schemas must outlive the session


def _make_torchvision_importable() -> None:
    """Let transformers' image/video processors import torchvision next to CPU-only torch.

    PyPI's Linux torchvision wheels are CUDA builds; with the CPU torch their C ops cannot load
    and torchvision 0.28 fails at import on an unguarded fake-op registration for `nms`/`qnms`.
    That breaks every transformers import that touches images, the audio feature extractor too.
    transformers (the test-only numerical reference) needs only torchvision's pure-Python resize,
    so we declare the two op schemas and import again. Without torch or torchvision: nothing to do.
    """
    try:
        importlib.import_module("torchvision")
        return
    except ImportError:
        return
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    import torch  # noqa: PLC0415 - only when torchvision is installed, so torch is too

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    ops = torch.library.Library("torchvision", "FRAGMENT")
    ops.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    ops.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP_ALIVE.append(ops)
    importlib.import_module("torchvision")


def pytest_configure(config) -> None:
    _make_torchvision_importable()
