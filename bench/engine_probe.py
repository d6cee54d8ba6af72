"""Deterministic A/B of Whisper engine settings: WER and commit latency in audio time.

    python -m patchstream.bench.engine_probe                  # the defaults
    python -m patchstream.bench.engine_probe edge_s=0.3       # any WhisperEngineConfig / StabilizerConfig knob
    python -m patchstream.bench.engine_probe --voices en-us:165,en:160,en-us-nyc:180   # 3× the speech

It is: the 30-sentence corpus, per voice three 10-sentence eSpeak NG files, fed to the engine in
steps of `min_step_samples`, as the server's scheduler would with an idle model thread; latency is
the audio position of the step that committed a word minus the word's end, so results do not
depend on machine load and two settings can be compared exactly. The same model's offline
whole-file WER is printed beside it. One voice is ~340 words, where one word is 0.003 WER: compare
settings on several voices before believing a difference of a few words. It is not: the end-to-end
benchmark (`patchstream.bench.latency` measures at the client, with compute time, through the server).
"""

from __future__ import annotations

import argparse
import sys
import time

import jiwer
import numpy as np

from patchstream.clients import speech
from patchstream.model.api import AudioChunk, SessionOptions, samples_to_seconds
from patchstream.model.stabilizer import normalize_word
from patchstream.model.whisper_engine import WhisperEngine, WhisperEngineConfig

FILES, SENTENCES = 3, 10
MATCH_SLACK_S = 0.3  # a committed word is a reference word if its centre is this close to it


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


def stream_file(engine: WhisperEngine, script: speech.Speech) -> tuple[list, list[float], float]:
    """Committed words of one file streamed step by step, each matched word's latency, and the
    seconds the engine spent."""
    step = engine.spec.min_step_samples
    state = engine.open(SessionOptions())
    committed = []  # (word, audio seconds when committed)
    started = time.perf_counter()
    for position in range(0, len(script.samples) // 640 * 640, step):
        engine.feed(state, AudioChunk(script.samples[position : position + step], position))
        heard = samples_to_seconds(position + step)
        committed += [(word, heard) for word in engine.step([state])[0].captions.committed]
    committed += [(word, script.duration) for word in engine.finish(state).captions.committed]
    spent = time.perf_counter() - started
    engine.close(state)
    latencies = []
    for ref in script.words:
        times = [
            heard
            for word, heard in committed
            if normalize_word(word.text) == normalize_word(ref.text)
            and ref.start - MATCH_SLACK_S <= (word.start + word.end) / 2 <= ref.end + MATCH_SLACK_S
        ]
        if times:
            latencies.append(min(times) - ref.end)
    return [word for word, _ in committed], latencies, spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchstream.bench.engine_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("knobs", nargs="*", help="engine or stabilizer settings as NAME=VALUE")
    parser.add_argument("--voices", default="en-us:165", help="eSpeak voice:words-per-minute list")
    parser.add_argument("--no-offline", action="store_true", help="skip the offline baseline")
    args = parser.parse_args(argv)
    knobs = parse_knobs(args.knobs)
    engine = WhisperEngine(WhisperEngineConfig.from_options(None, knobs))
    references, hypotheses, offline, latencies = [], [], [], []
    audio_s = spent_s = 0.0
    for voice in parse_voices(args.voices):
        for index in range(FILES):
            script = speech.corpus_script(count=SENTENCES, first=SENTENCES * index, config=voice)
            words, timed, spent = stream_file(engine, script)
            latencies += timed
            audio_s += script.duration
            spent_s += spent
            references.append(speech.normalize_text(script.text))
            hypotheses.append(speech.normalize_text(" ".join(word.text for word in words)))
            if not args.no_offline:
                whole = engine.transcribe_offline(script.samples)
                offline.append(speech.normalize_text(" ".join(word.text for word in whole)))
    wer = jiwer.wer(references, hypotheses)
    baseline = f", offline WER {jiwer.wer(references, offline):.3f}" if offline else ""
    print(
        f"{knobs or 'defaults'} on {args.voices}: WER {wer:.3f}{baseline}, commit latency in audio time "
        f"p50 {np.percentile(latencies, 50):.2f} s, p95 {np.percentile(latencies, 95):.2f} s ({len(latencies)} words), "
        f"engine time per audio second {spent_s / audio_s:.2f} (every step run; timing, not deterministic)"
    )
    print("command: python -m patchstream.bench.engine_probe " + " ".join(argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
