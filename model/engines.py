"""The engine registry: an `EngineChoice` (from CLI flags) → a built `Engine`.

It is: the one place that maps engine names to modules, importing each lazily so that choosing
the fake engine never loads faster-whisper (and the server's tests never need a model).
An `EngineChoice` with `vision` parts gets the chosen caption engine composed with the CPU
interpretation engine (`composite_engine.py` over `vision_engine.py`); `"auto"` means scene
changes always and on-screen text when the `vision` extra (rapidocr) is installed.
It also names the bundled models (`BUNDLED_MODELS`, from the torch-free `model.whisper_models`)
that `--model` offers, and the engine options the command line may set (`ENGINE_OPTIONS`).
It is not: a plugin system; adding an engine means adding a line here.
"""

from __future__ import annotations

import importlib

from patchstream.model.api import Engine, EngineChoice, EngineError, MediaKind
from patchstream.model.whisper_models import MODELS as BUNDLED_MODELS  # name → summary; stdlib only

# name → (module, factory); the factory takes the EngineChoice.
ENGINES = {
    "whisper": ("patchstream.model.whisper_engine", "build"),
    "fake": ("patchstream.model.fake_engine", "build"),
    "gemma4": ("patchstream.model.gemma4_engine", "build"),  # needs --model-path (a checkpoint directory)
}
VISION_PARTS = ("ocr", "scenes")  # what `--vision` accepts besides "auto" and "none"
# The `EngineChoice.options` each engine takes from the command line (`patchstream serve --window-s ...`); its
# `build` checks their values. An engine not named here takes none from the command line.
ENGINE_OPTIONS = {
    "gemma4": ("window_s", "emit_every_s", "pause_s", "default_instruction", "max_batch", "dtype", "device"),
}


def build_engine(choice: EngineChoice) -> Engine:
    """Import the chosen engine's module and build it (loading weights happens here)."""
    if choice.name not in ENGINES:
        raise EngineError(f"unknown engine {choice.name!r}; choose one of {sorted(ENGINES)}")
    module_name, factory = ENGINES[choice.name]
    module = importlib.import_module(module_name)
    engine = getattr(module, factory)(choice)
    parts = resolve_vision(choice.vision)
    if not parts or ("auto" in choice.vision and MediaKind.VIDEO in engine.spec.media):
        return engine  # nothing asked for, or "auto" beside an engine that already sees video
    vision = importlib.import_module("patchstream.model.vision_engine")
    composite = importlib.import_module("patchstream.model.composite_engine")
    return composite.CompositeEngine(engine, vision.build(EngineChoice("vision", vision=parts)))


def resolve_vision(parts: tuple[str, ...]) -> tuple[str, ...]:
    """`--vision` parts with "auto" and "none" resolved: the interpretation engine's parts to build."""
    if "none" in parts:
        return ()
    if "auto" not in parts:
        return tuple(dict.fromkeys(parts))
    ocr = importlib.import_module("patchstream.model.ocr")  # numpy only until it reads
    auto = ("ocr", "scenes") if ocr.available() else ("scenes",)
    return tuple(dict.fromkeys([*(p for p in parts if p != "auto"), *auto]))


def build_text_models():
    """The CPU text models of agent assist (`model.api.TextModels`); loads in well under a second."""
    return importlib.import_module("patchstream.model.text_models").build()
