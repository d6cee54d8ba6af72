"""The development speech set: real recordings with references and word end times, read at run time.

It is: a loader for a directory laid out like `../shared/speech` beside the repository (see its
README.md): 16 kHz mono 16-bit WAV files, `manifest.tsv` (file, duration_s, condition, reference,
...) and `align.json` ({file: {"duration", "words", "ends"}}), returning one frozen `SpeechFile`
per manifest row; a selector for quick looks (`--files`, `--only`, `--condition`); a WAV
reader; and `synthetic_set`, eSpeak NG speech laid out the same way, as a secondary check.

It is not: a copy of the data. The set must never be packaged or committed (its README says so),
so nothing here bundles, downloads or caches it; a missing directory is an error that says where
it was looked for and how to point elsewhere.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchstream.bench.transcript_metrics import normalize_words
from patchstream.clients.speech import VoiceConfig, corpus_script
from patchstream.clients.stream_client import write_wav

SAMPLE_RATE = 16_000  # Hz; what the set ships and the engines consume
SAMPLE_WIDTH = 2  # bytes per sample: 16-bit PCM
CONDITIONS = ("read", "long", "conversational", "noisy", "telephony-sim")  # report order
MANIFEST = "manifest.tsv"
ALIGNMENT = "align.json"


class SpeechSetError(Exception):
    """The speech directory is missing or not laid out as expected; the message says what."""


@dataclass(frozen=True)
class SpeechFile:
    """One recording with what is known about it."""

    name: str  # the file name in the manifest, e.g. "ls_1272-128104-0000.wav"
    path: Path  # where the WAV is
    condition: str  # one of CONDITIONS for the shipped set ("synthetic" for eSpeak speech)
    duration_s: float  # audio length, seconds
    reference: str  # the transcript as shipped (source casing and punctuation)
    words: tuple[str, ...]  # reference words normalized as align.json does (lower case, a-z0-9')
    ends: tuple[float, ...]  # ends[i]: media seconds where words[i] ends


def default_speech_dir() -> Path:
    """`shared/speech` beside the repository checkout (where CI has it too)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "speech"


def load_speech_set(directory: Path | str | None = None) -> list[SpeechFile]:
    """Every manifest row of `directory` (default: `default_speech_dir()`), in manifest order."""
    root = Path(directory) if directory is not None else default_speech_dir()
    if not (root / MANIFEST).is_file() or not (root / ALIGNMENT).is_file():
        raise SpeechSetError(
            f"no speech set at {root} (need {MANIFEST} and {ALIGNMENT} there); "
            "put the development speech set there or pass --speech-dir DIR"
        )
    alignment = json.loads((root / ALIGNMENT).read_text(encoding="utf-8"))
    with (root / MANIFEST).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [_speech_file(root, row, alignment) for row in rows]


def _speech_file(root: Path, row: dict, alignment: dict) -> SpeechFile:
    name = row.get("file") or ""
    where = f"{root / MANIFEST}: row {name!r}"
    missing = [column for column in ("file", "duration_s", "condition", "reference") if not row.get(column)]
    if missing:
        raise SpeechSetError(f"{where} lacks {', '.join(missing)}")
    if not (root / name).is_file():
        raise SpeechSetError(f"{where}: no such file in {root}")
    timed = alignment.get(name)
    if timed is None:
        raise SpeechSetError(f"{root / ALIGNMENT} has no entry for {name!r}")
    if len(timed["words"]) != len(timed["ends"]):
        raise SpeechSetError(f"{root / ALIGNMENT}: {name!r} has {len(timed['words'])} words but {len(timed['ends'])} ends")
    return SpeechFile(
        name=name,
        path=root / name,
        condition=row["condition"],
        duration_s=float(row["duration_s"]),
        reference=row["reference"],
        words=tuple(timed["words"]),
        ends=tuple(float(end) for end in timed["ends"]),
    )


def select(
    files: list[SpeechFile], count: int | None = None, pattern: str | None = None, condition: str | None = None
) -> list[SpeechFile]:
    """Files whose name matches the glob `pattern` (or contains it) and whose condition is
    `condition`, then the first `count` of them; None means no filter."""
    picked = [
        f for f in files
        if (condition is None or f.condition == condition)
        and (pattern is None or fnmatch.fnmatch(f.name, pattern) or pattern in f.name)
    ]
    return picked if count is None else picked[:count]


def read_samples(path: Path) -> np.ndarray:
    """A 16 kHz mono 16-bit WAV as float32 in [-1, 1)."""
    with wave.open(str(path), "rb") as wav:
        layout = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
        if layout != (SAMPLE_RATE, 1, SAMPLE_WIDTH):
            raise SpeechSetError(f"{path}: rate/channels/bytes {layout}, expected {(SAMPLE_RATE, 1, SAMPLE_WIDTH)}")
        pcm = wav.readframes(wav.getnframes())
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0


def synthetic_set(count: int, sentences: int, voice: VoiceConfig = VoiceConfig()) -> list[SpeechFile]:
    """`count` eSpeak NG files of `sentences` corpus sentences each, in a fresh temporary folder,
    laid out as speech-set files (word ends from eSpeak's word events)."""
    workdir = Path(tempfile.mkdtemp(prefix="patchstream-bench-"))
    files = []
    for index in range(count):
        speech = corpus_script(sentences, first=index * sentences, config=voice)
        path = workdir / f"speech{index}.wav"
        write_wav(path, speech.samples)
        timed = [(text, w.end) for w in speech.words for text in normalize_words(w.text)]
        files.append(SpeechFile(
            name=path.name, path=path, condition="synthetic", duration_s=speech.duration,
            reference=speech.text, words=tuple(t for t, _ in timed), ends=tuple(e for _, e in timed),
        ))
    return files
