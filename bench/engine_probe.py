"""Deterministic A/B of Whisper engine settings: WER, repeats and commit latency in audio time.

    python -m patchstream.bench.engine_probe                    # the real speech set, the defaults
    python -m patchstream.bench.engine_probe edge_s=0.3         # any WhisperEngineConfig / StabilizerConfig knob
    python -m patchstream.bench.engine_probe --condition noisy  # part of the set (also --only, --files)
    python -m patchstream.bench.engine_probe --voices en-us:165,en:160,en-us-nyc:180   # eSpeak NG instead

It is: each file fed to the engine in steps of `min_step_samples`, as the server's scheduler would
with an idle model thread, with no server and no clock: latency is the audio position of the step
that committed a word minus the word's end (`align.json` for the speech set, eSpeak's word events
for synthetic speech), so two settings are compared exactly and machine load changes nothing but
the engine-time column. The same model's offline whole-file WER is printed beside it, per
condition and overall. It is not: the end-to-end benchmark (`patchstream.bench.latency` measures
at the client, with compute time, through the server).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np


from patchstream.bench import speech_set
from patchstream.bench.speech_set import SpeechFile
from patchstream.bench.transcript_metrics import (
    NO_ERRORS,
    Sighting,
    WordErrors,
    normalize_words,
    percentile,
    repeated_phrases,
    timed_reference,
    word_errors,
    word_latencies,
)
from patchstream.clients import speech
from patchstream.model.api import AudioChunk, CaptionUpdate, Engine, SessionOptions, samples_to_seconds
from patchstream.model.whisper_engine import WhisperEngine, WhisperEngineConfig

CHUNK = 640  # samples per 40 ms chunk, as the server's chunker cuts them
SYNTHETIC_FILES, SYNTHETIC_SENTENCES = 3, 10  # per eSpeak voice


def parse_knobs(items: list[str]) -> dict:
    knobs = {}
    for item in items:
        name, _, value = item.partition("=")
        knobs[name] = float(value) if "." in value else int(value)
    return knobs


def parse_voices(text: str) -> list[speech.VoiceConfig]:
    """"en-us:165,en:160" → voice configs (voice name, words per minute)."""
    voices = []
    for item in text.split(","):
        name, _, rate = item.partition(":")
        voices.append(speech.VoiceConfig(voice=name, words_per_minute=int(rate or 165)))
    return voices


@dataclass(frozen=True)
class ProbeResult:
    """One file through the engine."""

    file: SpeechFile
    errors: WordErrors  # against the reference
    offline: WordErrors | None  # the same model decoding the whole file, if asked for
    repeats: int  # repeated phrases the reference does not have
    latencies: tuple[float, ...]  # commit step's audio end − word end, per correctly committed word
    engine_s: float  # wall seconds the engine spent (the only timing, machine-dependent)


def stream_updates(engine: Engine, samples: np.ndarray, steps: Sequence[int]) -> list[tuple[CaptionUpdate, float]]:
    """Feed 40 ms chunks to a fresh session, stepping after each count of chunks in `steps`
    (cycled), then finish it: every caption update with the audio seconds heard when it came."""
    state = engine.open(SessionOptions())
    updates = []
    usable = len(samples) // CHUNK * CHUNK
    position, k = 0, 0
    while position < usable:
        end = min(position + steps[k % len(steps)] * CHUNK, usable)
        engine.feed(state, AudioChunk(samples[position:end], position))
        updates.append((engine.step([state])[0].captions, samples_to_seconds(end)))
        position, k = end, k + 1
    updates.append((engine.finish(state).captions, samples_to_seconds(usable)))
    engine.close(state)
    return updates


def stream_file(engine: WhisperEngine, file: SpeechFile, with_offline: bool) -> ProbeResult:
    """Feed one file in `min_step_samples` steps, finish, and score what was committed."""
    samples = speech_set.read_samples(file.path)
    started = time.perf_counter()
    updates = stream_updates(engine, samples, [engine.spec.min_step_samples // CHUNK])
    engine_s = time.perf_counter() - started
    committed = [(word, heard) for update, heard in updates for word in update.committed]
    sightings = [Sighting(heard, text, word.start, word.end, True)
                 for word, heard in committed for text in normalize_words(word.text)]
    reference = normalize_words(file.reference)
    hypothesis = normalize_words(" ".join(word.text for word, _ in committed))
    offline = None
    if with_offline:
        whole = engine.transcribe_offline(samples)
        offline = word_errors(reference, normalize_words(" ".join(w.text for w in whole)))
    latencies = word_latencies(timed_reference(file.words, file.ends), hypothesis, sightings).final
    return ProbeResult(file, word_errors(reference, hypothesis), offline, repeated_phrases(hypothesis, reference),
                       latencies, engine_s)


def summary_row(label: str, results: list[ProbeResult]) -> str:
    errors = sum((r.errors for r in results), start=NO_ERRORS)
    offline = [r.offline for r in results if r.offline is not None]
    offline_wer = f"{sum(offline, start=NO_ERRORS).wer:.3f}" if offline else "-"
    latencies = [x for r in results for x in r.latencies]
    audio_s = sum(r.file.duration_s for r in results)
    cells = [
        label, str(len(results)), f"{audio_s:.0f}", f"{errors.wer:.3f}", offline_wer,
        str(errors.insertions), str(errors.deletions), str(errors.substitutions), str(sum(r.repeats for r in results)),
        f"{percentile(latencies, 50):.2f}", f"{percentile(latencies, 95):.2f}",
        f"{sum(r.engine_s for r in results) / audio_s:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| files | n | audio s | WER | offline WER | ins | del | sub | rep | commit p50 | commit p95 | engine s / audio s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def choose_files(args: argparse.Namespace) -> list[SpeechFile]:
    if args.voices:
        return [f for voice in parse_voices(args.voices)
                for f in speech_set.synthetic_set(SYNTHETIC_FILES, SYNTHETIC_SENTENCES, voice)]
    return speech_set.select(speech_set.load_speech_set(args.speech_dir), args.files, args.only, args.condition)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchstream.bench.engine_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("knobs", nargs="*", help="engine or stabilizer settings as NAME=VALUE")
    parser.add_argument("--speech-dir", default=None, help="a directory laid out like the speech set")
    parser.add_argument("--files", type=int, default=None, help="only the first N files")
    parser.add_argument("--only", metavar="PATTERN", help="only files whose name matches this glob or contains it")
    parser.add_argument("--condition", help="only files of this condition")
    parser.add_argument("--voices", help="eSpeak NG voice:words-per-minute list instead of the speech set")
    parser.add_argument("--model-path", default=None, help="a bundled model name (tiny.en, base) or a CTranslate2 directory")
    parser.add_argument("--no-offline", action="store_true", help="skip the offline baseline")
    parser.add_argument("--per-file", action="store_true", help="a row per file too")
    args = parser.parse_args(argv)
    knobs = parse_knobs(args.knobs)
    engine = WhisperEngine(WhisperEngineConfig.from_options(args.model_path, knobs))
    results = [stream_file(engine, f, not args.no_offline) for f in choose_files(args)]
    print(f"# engine {engine.spec.name}, knobs {knobs or 'defaults'}; commit latency in audio time, seconds")
    print(HEADER)
    if args.per_file:
        for result in results:
            print(summary_row(result.file.name.removesuffix(".wav"), [result]))
    for condition in dict.fromkeys(r.file.condition for r in results):
        print(summary_row(condition, [r for r in results if r.file.condition == condition]))
    print(summary_row("all", results))
    print("command: python -m patchstream.bench.engine_probe " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
