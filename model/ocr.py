"""On-screen text reading with RapidOCR (PP-OCR detection + recognition on onnxruntime), offline.

It is: a thin wrapper that builds RapidOCR from the model files inside its own wheel — named
explicitly, so nothing is ever looked up or downloaded (the `rapidocr` wheel, the `vision` extra,
bundles PP-OCRv6 small detection and recognition; the recogniser's character list is embedded in
its ONNX file) — and returns the lines it reads, in reading order, with their confidences.
Text-angle classification is off: screens and slides are upright, and it costs a third model.
Detection runs with the frame's longer side at most `DET_MAX_SIDE` px (RapidOCR's default scales
the *shorter* side up to 736, which makes a 1056x576 frame cost 1.8 s instead of 0.4 s on one core).
onnxruntime runs on the threads given (one by default, so a caption engine keeps a core).

It is not: a policy (what counts as new text lives in `vision_engine.py`) and not thread-safe:
one `OcrReader` per worker thread.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchstream.model.api import EngineError

DET_MODEL = "PP-OCRv6_det_small.onnx"  # text detection, inside the rapidocr wheel's models/
REC_MODEL = "PP-OCRv6_rec_small.onnx"  # text recognition (Chinese + Latin), same place
DET_MAX_SIDE = 736  # px; slide text of 20+ px at 720p stays legible to the detector


@dataclass(frozen=True)
class OcrLine:
    """One line of text read from a frame."""

    text: str  # as recognised
    score: float  # recogniser confidence in [0, 1]
    top: float  # y of the line's box top, pixels (reading order)
    left: float  # x of the line's box left, pixels


def available() -> bool:
    """Whether the `vision` extra (rapidocr + onnxruntime) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("rapidocr", "onnxruntime"))


def _bundled_models() -> Path:
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or spec.origin is None:
        raise EngineError("on-screen text needs the `vision` extra: pip install -e '.[vision]'")
    models = Path(spec.origin).parent / "models"
    for name in (DET_MODEL, REC_MODEL):
        if not (models / name).is_file():
            raise EngineError(f"the rapidocr wheel has no bundled {name} in {models}; reinstall the `vision` extra")
    return models


class OcrReader:
    """RapidOCR over the bundled models, on `threads` onnxruntime threads."""

    def __init__(self, threads: int = 1, min_score: float = 0.6):
        models = _bundled_models()
        from rapidocr import RapidOCR  # noqa: PLC0415 - optional extra, imported only when used

        self.min_score = min_score  # lines read with less confidence are ignored
        self._ocr = RapidOCR(
            params={
                "Global.use_cls": False,
                "Global.log_level": "error",  # "no text found" is an answer, not a warning
                "Det.model_path": str(models / DET_MODEL),
                "Rec.model_path": str(models / REC_MODEL),
                "Det.limit_type": "max",
                "Det.limit_side_len": DET_MAX_SIDE,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)  # "no text found" is an answer, not a warning

    def read(self, pixels: np.ndarray) -> list[OcrLine]:
        """The lines of text in a uint8 (H, W, 3) RGB frame, top to bottom, left to right."""
        result = self._ocr(np.ascontiguousarray(pixels[:, :, ::-1]))  # RapidOCR reads OpenCV's BGR
        if result.txts is None:
            return []
        lines = [
            OcrLine(text.strip(), float(score), float(box[:, 1].min()), float(box[:, 0].min()))
            for text, score, box in zip(result.txts, result.scores, np.asarray(result.boxes))
            if score >= self.min_score and text.strip()
        ]
        return sorted(lines, key=lambda line: (round(line.top / 16), line.left))
