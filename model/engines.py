"""The engine registry: an `EngineChoice` (from CLI flags) → a built `Engine`.

It is: the one place that maps engine names to modules, importing each lazily so that choosing
the fake engine never loads faster-whisper (and the server's tests never need a model).
It also names the bundled models (`BUNDLED_MODELS`, from the torch-free `model.whisper_models`)
that `--model` offers. It is not: a plugin system; adding an engine means adding a line here.
"""

from __future__ import annotations

import importlib

from patchstream.model.api import Engine, EngineChoice, EngineError
from patchstream.model.whisper_models import MODELS as BUNDLED_MODELS  # name → summary; stdlib only

# name → (module, factory); the factory takes the EngineChoice.
ENGINES = {
    "whisper": ("patchstream.model.whisper_engine", "build"),
    "fake": ("patchstream.model.fake_engine", "build"),
    "gemma4": ("patchstream.model.gemma4_engine", "build"),  # needs --model-path (a checkpoint directory)
}


def build_engine(choice: EngineChoice) -> Engine:
    """Import the chosen engine's module and build it (loading weights happens here)."""
    if choice.name not in ENGINES:
        raise EngineError(f"unknown engine {choice.name!r}; choose one of {sorted(ENGINES)}")
    module_name, factory = ENGINES[choice.name]
    module = importlib.import_module(module_name)
    return getattr(module, factory)(choice)
