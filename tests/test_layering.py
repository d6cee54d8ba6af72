"""The layering rules of STYLE.md, checked in fresh interpreters run outside the source tree."""

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, pkgutil, sys
import {package}
for info in pkgutil.walk_packages({package}.__path__, "{package}."):
    importlib.import_module(info.name)
print(sorted(m for m in ("torch", "patchstream.streaming", "faster_whisper") if m in sys.modules))
"""


def run_outside_tree(code: str) -> subprocess.CompletedProcess:
    """Python run from an empty directory, so only the installed package can be imported."""
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=empty)


def imported_by(package: str) -> list[str]:
    result = run_outside_tree(CHECK.format(package=package))
    assert result.returncode == 0, result.stderr
    return eval(result.stdout)  # noqa: S307 - our own subprocess prints a list literal


def test_streaming_never_imports_torch_or_a_model_runtime():
    assert imported_by("patchstream.streaming") == ["patchstream.streaming"]


def test_model_never_imports_streaming():
    for path in (ROOT / "model").glob("*.py"):
        text = path.read_text()
        assert "patchstream.streaming" not in text, path


def test_the_packages_install_under_one_namespace_only():
    assert run_outside_tree("import patchstream.streaming, patchstream.model.api, patchstream.clients.cli").returncode == 0
    for bare in ("streaming", "model", "clients", "bench"):
        result = run_outside_tree(f"import {bare}")
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, bare
