"""Synthesized English speech for demos, tests and benchmarks, made locally with eSpeak NG.

It is: a small wrapper over the eSpeak NG C library (the copy bundled by the PyPI package
`espeakng-loader`, driven through ctypes) with a fallback to the `espeak-ng` command, returning
16 kHz mono float32 audio resampled by PyAV, plus word timings taken from eSpeak's own word events,
a fixed corpus of plain English sentences, and a builder for multi-sentence scripts with pauses and
their reference text.

It is not: a general TTS front end, nor a source of natural speech. eSpeak's robotic voice is what we
may generate without downloading anything or carrying other people's recordings; recognisers do
somewhat worse on it than on human speech.
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass

import av
import numpy as np

from patchstream.streaming.protocol import samples_to_seconds, seconds_to_samples

SAMPLE_RATE = 16_000  # Hz; what every patchstream engine consumes
SILENCE_RMS = 1e-3  # float RMS below which a 10 ms slice counts as silence when trimming word ends
TRIM_HOP = 160  # 10 ms at 16 kHz: granularity of the word-end trim

# eSpeak NG C API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # synth runs inside espeak_Synth and hands audio to our callback
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_RATE_PARAMETER = 1  # espeakRATE, words per minute

# A fixed corpus of plain English sentences (written for this project) so demos, tests and
# benchmarks hear the same words run after run.
CORPUS: tuple[str, ...] = (
    "The morning train was late again, so most of the office started work at ten.",
    "Please bring two blue folders and a pencil to the meeting on Thursday.",
    "A small dog ran across the park and chased the red ball into the pond.",
    "We need to check the budget before we order any new chairs for the library.",
    "The weather will be cold and windy tomorrow with a little rain in the evening.",
    "She opened the window to let some fresh air into the kitchen.",
    "Our team finished the project two days before the deadline.",
    "The farmer planted corn in the north field and beans near the river.",
    "Could you send me the report by the end of the day?",
    "He learned to play the piano when he was seven years old.",
    "The museum is closed on Mondays but open late on Fridays.",
    "Turn left at the second light and the bakery is on your right.",
    "The children built a tall tower out of wooden blocks.",
    "Our new phone system will be installed next week.",
    "The doctor said that walking every day is good for your heart.",
    "A strong wind blew the leaves off the old oak tree.",
    "Remember to lock the door and switch off the lights when you leave.",
    "The bus to the airport leaves every twenty minutes.",
    "My sister makes the best apple pie in the whole town.",
    "The students read a short story and wrote a summary of it.",
    "We watched the sun go down behind the mountains.",
    "The store will open at nine and close at six on weekdays.",
    "Water boils at one hundred degrees at sea level.",
    "The pilot told us that the flight would land early.",
    "Please speak clearly so that everyone in the room can hear you.",
    "The old bridge was painted green last summer.",
    "They found a quiet table near the back of the restaurant.",
    "The printer on the third floor is out of paper again.",
    "Birds began to sing as soon as the rain stopped.",
    "The company hired five new engineers this month.",
)


@dataclass(frozen=True)
class TimedWord:
    """One spoken word of synthesized audio with its media times."""

    text: str  # the word as written in the input text
    start: float  # seconds from the start of the audio where eSpeak began the word
    end: float  # seconds where the word's sound ends (trailing silence trimmed)


@dataclass(frozen=True)
class Speech:
    """Synthesized audio with the text that produced it."""

    samples: np.ndarray  # float32 (n,), mono, 16 kHz
    text: str  # reference text, sentences joined by single spaces
    words: tuple[TimedWord, ...]  # every word with its times; empty when the engine gave no events

    @property
    def duration(self) -> float:
        return samples_to_seconds(len(self.samples), SAMPLE_RATE)


@dataclass(frozen=True)
class VoiceConfig:
    """How eSpeak speaks."""

    voice: str = "en-us"  # eSpeak voice name
    words_per_minute: int = 165  # eSpeak's default is 175; slightly slower reads more like a talk


class _Event(ctypes.Structure):
    # espeak_EVENT from speak_lib.h; only the fields up to `sample` are read.
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _LibEspeak:
    """The eSpeak NG shared library, initialised once, used under a lock.

    The C library keeps one global synthesizer per process, so there must be one of these per
    process too (see `_library`); the lock makes repeated and concurrent calls safe.
    """

    def __init__(self, library_path: str, data_path: str) -> None:
        self._lib = ctypes.CDLL(library_path)
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        # Older builds want the folder holding `espeak-ng-data`, newer accept the folder itself.
        rate = -1
        for path in (data_path, os.path.dirname(data_path)):
            rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path.encode(), 0)
            if rate > 0:
                break
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data at {data_path}")
        self.sample_rate = rate
        self._lock = threading.Lock()
        self._pcm: list[np.ndarray] = []
        self._word_events: list[tuple[int, int]] = []  # (text byte offset, audio sample)
        # Keep a reference: ctypes callbacks are freed when their Python object is.
        self._callback = _CALLBACK(self._on_audio)
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._pcm.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                self._word_events.append((events[i].text_position, events[i].sample))
            i += 1
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, config: VoiceConfig) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """int16 PCM at `self.sample_rate` and (1-based byte offset, sample) per word."""
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            self._pcm, self._word_events = [], []
            if self._lib.espeak_SetVoiceByName(config.voice.encode()) != 0:
                raise RuntimeError(f"eSpeak has no voice {config.voice!r}")
            self._lib.espeak_SetParameter(_RATE_PARAMETER, config.words_per_minute, 0)
            status = self._lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status}")
            self._lib.espeak_Synchronize()
            pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.int16)
            return pcm, list(self._word_events)


@functools.lru_cache(maxsize=1)
def _library() -> _LibEspeak | None:
    # Cached on purpose: eSpeak NG is process-global C state that must be initialised once.
    try:
        import espeakng_loader
    except ImportError:
        return None
    try:
        return _LibEspeak(espeakng_loader.get_library_path(), espeakng_loader.get_data_path())
    except (OSError, RuntimeError):
        return None


def espeak_available() -> bool:
    """Whether speech can be synthesized here (library or command)."""
    return _library() is not None or shutil.which("espeak-ng") is not None


def _resample(pcm: np.ndarray, rate: int) -> np.ndarray:
    """int16 mono at `rate` → float32 mono at 16 kHz via PyAV's resampler."""
    if len(pcm) == 0:
        return np.zeros(0, np.float32)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]  # flush its tail
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def _synthesize_with_command(text: str, config: VoiceConfig) -> tuple[np.ndarray, int]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("eSpeak NG is not available: install espeakng-loader or espeak-ng")
    wav = subprocess.run(
        [exe, "-v", config.voice, "-s", str(config.words_per_minute), "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    with av.open(io.BytesIO(wav), format="wav") as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        pcm = np.concatenate(
            [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        ).astype(np.int16)
    return pcm, rate


def _word_spans(text: str) -> list[tuple[int, str]]:
    """(1-based byte offset, word) for each whitespace-separated word, as eSpeak numbers them."""
    spans, offset = [], 0
    for token in text.split(" "):
        if token:
            spans.append((len(text[:offset].encode("utf-8")) + 1, token))
        offset += len(token) + 1
    return spans


def _timed_words(
    text: str, events: list[tuple[int, int]], rate: int, audio: np.ndarray
) -> tuple[TimedWord, ...]:
    """Match eSpeak's word events to the text's words; end each word where its sound stops.

    eSpeak voices some word pairs as one unit ("of the") and reports one event for both, so a
    word without its own event gets a start interpolated by character count between neighbours.
    """
    spans = _word_spans(text)
    if not spans or not events:
        return ()
    bounds = [pos for pos, _ in spans[1:]] + [len(text.encode("utf-8")) + 2]
    starts: list[float | None] = []
    for (pos, _), bound in zip(spans, bounds):
        hits = [sample for p, sample in events if pos <= p < bound]
        starts.append(samples_to_seconds(min(hits), rate) if hits else None)
    total = samples_to_seconds(len(audio), SAMPLE_RATE)
    if starts[0] is None:
        starts[0] = 0.0
    for i, start in enumerate(starts):
        if start is not None:
            continue
        j = next((k for k in range(i + 1, len(starts)) if starts[k] is not None), None)
        before, after = starts[i - 1], starts[j] if j is not None else total
        left = bounds[i - 1] - spans[i - 1][0]  # characters of the word before, spaces included
        right = (bounds[j - 1] if j is not None else bounds[-1]) - spans[i][0]
        starts[i] = before + (after - before) * left / (left + right)
    words = []
    for i, ((_, word), start) in enumerate(zip(spans, starts)):
        limit = starts[i + 1] if i + 1 < len(starts) else total
        words.append(TimedWord(word, start, _sound_end(audio, start, limit)))
    return tuple(words)


def _sound_end(audio: np.ndarray, start: float, limit: float) -> float:
    """The last time before `limit` where audio after `start` is still louder than silence."""
    lo, hi = seconds_to_samples(start, SAMPLE_RATE), seconds_to_samples(limit, SAMPLE_RATE)
    end = hi
    while end - TRIM_HOP > lo:
        piece = audio[end - TRIM_HOP : end]
        if np.sqrt(np.mean(piece * piece)) > SILENCE_RMS:
            break
        end -= TRIM_HOP
    return samples_to_seconds(end, SAMPLE_RATE)


def synthesize(text: str, config: VoiceConfig = VoiceConfig()) -> Speech:
    """Speak `text` with eSpeak NG; 16 kHz mono float32 plus per-word times where available."""
    text = " ".join(text.split())
    lib = _library()
    if lib is not None:
        pcm, events = lib.synthesize(text, config)
        audio = _resample(pcm, lib.sample_rate)
        words = _timed_words(text, events, lib.sample_rate, audio)
    else:
        pcm, rate = _synthesize_with_command(text, config)
        audio, words = _resample(pcm, rate), ()
    return Speech(samples=audio, text=text, words=words)


def build_script(
    sentences: tuple[str, ...] | list[str],
    pause_s: float = 0.6,
    lead_s: float = 0.3,
    config: VoiceConfig = VoiceConfig(),
) -> Speech:
    """Speak sentences one by one with `pause_s` of silence between them and `lead_s` before.

    Word times are shifted to the script's timeline, so they are media times of the result.
    """
    pause = np.zeros(seconds_to_samples(pause_s, SAMPLE_RATE), np.float32)
    pieces = [np.zeros(seconds_to_samples(lead_s, SAMPLE_RATE), np.float32)]
    words: list[TimedWord] = []
    offset = len(pieces[0])
    for i, sentence in enumerate(sentences):
        speech = synthesize(sentence, config)
        shift = samples_to_seconds(offset, SAMPLE_RATE)
        words += [TimedWord(w.text, w.start + shift, w.end + shift) for w in speech.words]
        pieces.append(speech.samples)
        offset += len(speech.samples)
        if i + 1 < len(sentences):
            pieces.append(pause)
            offset += len(pause)
    pieces.append(pause)  # trailing silence lets streaming engines see the last pause
    text = " ".join(" ".join(s.split()) for s in sentences)
    return Speech(samples=np.concatenate(pieces), text=text, words=tuple(words))


def corpus_script(
    count: int = len(CORPUS), first: int = 0, pause_s: float = 0.6,
    config: VoiceConfig = VoiceConfig(),
) -> Speech:
    """`count` corpus sentences starting at `first` (wrapping around), spoken as one script."""
    picked = [CORPUS[(first + i) % len(CORPUS)] for i in range(count)]
    return build_script(picked, pause_s=pause_s, config=config)


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0 ≤ n < 1,000,000 spelled out ("one hundred twenty"), the way the references are written."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    rest = n % 1000
    return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))


def normalize_text(text: str) -> str:
    """Lower-case words without punctuation, numbers spelled out: the form WER is computed on.

    Whisper writes "at 10" where the reference says "at ten"; like Whisper's own English
    normaliser, we count that as the same word, for streaming and offline alike.
    """
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,200 → 1200
    kept = "".join(c.lower() if c.isalnum() or c in " '" else " " for c in text)
    words = [number_words(int(w)) if w.isdigit() and len(w) <= 6 else w for w in kept.split()]
    return " ".join(" ".join(words).split())
