"""Deterministic A/B of Whisper engine settings: WER and commit latency in audio time.

    python -m bench.engine_probe                  # the defaults
    python -m bench.engine_probe edge_s=0.3       # any WhisperEngineConfig / StabilizerConfig knob

It is: three 10-sentence eSpeak NG files fed to the engine in steps of `min_step_samples`, as the
server's scheduler would with an idle model thread; latency is the audio position of the step that
committed a word minus the word's end, so results do not depend on machine load and two settings
can be compared exactly. It is not: the end-to-end benchmark (`bench.latency` measures at the
client, with compute time, through the server).
"""

from __future__ import annotations

import sys

import jiwer
import numpy as np

from clients import speech
from model.api import AudioChunk, SessionOptions, samples_to_seconds
from model.stabilizer import normalize_word
from model.whisper_engine import WhisperEngine, WhisperEngineConfig

FILES, SENTENCES = 3, 10
MATCH_SLACK_S = 0.3  # a committed word is a reference word if its centre is this close to it


def parse_knobs(argv: list[str]) -> dict:
    knobs = {}
    for item in argv:
        name, _, value = item.partition("=")
        knobs[name] = float(value) if "." in value else int(value)
    return knobs


def main(argv: list[str] | None = None) -> int:
    knobs = parse_knobs(sys.argv[1:] if argv is None else argv)
    engine = WhisperEngine(WhisperEngineConfig.from_options(None, knobs))
    step = engine.spec.min_step_samples
    references, hypotheses, latencies = [], [], []
    for index in range(FILES):
        script = speech.corpus_script(count=SENTENCES, first=SENTENCES * index)
        state = engine.open(SessionOptions())
        committed = []  # (word, audio seconds when committed)
        for position in range(0, len(script.samples) // 640 * 640, step):
            engine.feed(state, AudioChunk(script.samples[position : position + step], position))
            heard = samples_to_seconds(position + step)
            committed += [(word, heard) for word in engine.step([state])[0].committed]
        committed += [(word, script.duration) for word in engine.finish(state).committed]
        engine.close(state)
        references.append(speech.normalize_text(script.text))
        hypotheses.append(speech.normalize_text(" ".join(word.text for word, _ in committed)))
        for ref in script.words:
            times = [
                heard
                for word, heard in committed
                if normalize_word(word.text) == normalize_word(ref.text)
                and ref.start - MATCH_SLACK_S <= (word.start + word.end) / 2 <= ref.end + MATCH_SLACK_S
            ]
            if times:
                latencies.append(min(times) - ref.end)
    print(
        f"{knobs or 'defaults'}: WER {jiwer.wer(references, hypotheses):.3f}, commit latency in audio time "
        f"p50 {np.percentile(latencies, 50):.2f} s, p95 {np.percentile(latencies, 95):.2f} s ({len(latencies)} words)"
    )
    print("command: python -m bench.engine_probe " + " ".join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
