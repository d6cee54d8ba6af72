"""The layering rules of STYLE.md, checked in fresh interpreters."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, pkgutil, sys
import {package}
for info in pkgutil.walk_packages({package}.__path__, "{package}."):
    importlib.import_module(info.name)
print(sorted(m for m in ("torch", "streaming", "faster_whisper") if m in sys.modules))
"""


def imported_by(package: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(package=package)], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return eval(out)  # noqa: S307 - our own subprocess prints a list literal


def test_streaming_never_imports_torch_or_a_model_runtime():
    assert imported_by("streaming") == ["streaming"]


def test_model_never_imports_streaming():
    for path in (ROOT / "model").glob("*.py"):
        text = path.read_text()
        assert "import streaming" not in text and "from streaming" not in text, path
