"""The layering rules of STYLE.md: imports checked in fresh interpreters run outside the source
tree, and the allowed import edges checked on the source itself."""

import ast
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
# Modules whose presence after the imports is reported: the package itself, model runtimes, and
# agent assist's text models (a server loads those at start-up, never an import).
HEAVY = ("torch", "patchstream.streaming", "faster_whisper", "wordllama", "vaderSentiment", "tokenizers", "safetensors")
print(sorted(m for m in HEAVY if m in sys.modules))
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


# --- the allowed import edges, read from the source (every import, top level or not) ----------

ALLOWED = {
    # streaming/ sees only the model's contract, its torch-free registry, and the numpy-only
    # Gemma vision grid (the frame patchifier must size frames by the model's one rule).
    "streaming": ("patchstream.streaming.", "patchstream.model.api", "patchstream.model.engines", "patchstream.model.patch_grid"),
    # clients/ see only the wire protocol (and each other).
    "clients": ("patchstream.clients.", "patchstream.streaming.protocol"),
    # model/ never sees the server or the clients.
    "model": ("patchstream.model.",),
}
# One named exception: the CLI is also the server's launcher (`serve`, the in-process server of
# `caption`/`demo`), and reaches it only through the launcher's face.
EXCEPTIONS = {("clients/cli.py", "patchstream.streaming.app")}
# The protocol module is what clients load: it may lean on nothing of the server.
PROTOCOL_ALLOWED = ("patchstream.model.api",)


def patchstream_imports(path: Path) -> set[str]:
    """Every patchstream module a file imports (`from a import b` counts a.b when b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if (ROOT / node.module.split(".", 1)[-1].replace(".", "/") / f"{alias.name}.py").exists()}
    return {name for name in found if name.startswith("patchstream.")}


def edges(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):  # subpackages too (streaming/assist/)
        for target in patchstream_imports(path):
            yield path.relative_to(ROOT).as_posix(), target


def test_import_edges_follow_the_layering():
    bad = []
    for package, allowed in ALLOWED.items():
        for source, target in edges(package):
            is_package = target in {"patchstream.streaming", "patchstream.clients", "patchstream.model"}
            if is_package and target == f"patchstream.{package}":
                continue  # `from patchstream.clients import speech`: the module is checked on its own
            if not target.startswith(allowed) and (source, target) not in EXCEPTIONS:
                bad.append(f"{source} -> {target}")
    assert not bad, "\n".join(bad)


def test_the_protocol_module_imports_no_other_server_module():
    targets = patchstream_imports(ROOT / "streaming" / "protocol.py")
    assert targets <= set(PROTOCOL_ALLOWED), targets
