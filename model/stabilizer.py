"""Sans-I/O stabilisation policy: successive re-decodes of a sliding buffer → append-only words.

It is: the rule that decides which recognised words are final. A streaming recogniser re-decodes
the not-yet-committed audio every step and hands each hypothesis (words with media times) to
`Stabilizer.update`; the stabilizer returns the words it now commits (never revised, never
repeated) and the tentative tail that replaces the previous one. Words are committed when

- two hypotheses, the newer having heard at least `agree_gap_s` more audio, agree on them
  (LocalAgreement-2 on normalised text), and the word ends `edge_s` before the audio end with
  `right_context` words heard after it (a word cut by the buffer end is misheard consistently), or
- the speaker paused (the caller's VAD says so), so nothing more will change them, or
- they end more than `max_tentative_s` before the end of the audio decoded, so waiting for
  agreement would only add latency (and a stuck disagreement could never hold the buffer forever).

One update commits at most one sentence, so a caption segment closes right after its last word.
Committed words (and the tentative tail after them) lie on one forward timeline: each starts
where the committed audio ends or later and lasts at least one 20 ms alignment frame.

It is not: the recogniser, the VAD or the audio buffer. It knows only words, times and the end of
the audio each hypothesis covered; it imports nothing from the model, so it is tested with a fake.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from patchstream.model.api import SENTENCE_END, Word  # a committed word ending so closes a caption segment

MIN_WORD_S = 0.02  # one Whisper alignment frame: the shortest a committed word can be
HISTORY = 8  # hypotheses remembered for agreement (a few steps' worth)


@dataclass(frozen=True)
class StabilizerConfig:
    """Knobs of the commit policy."""

    max_tentative_s: float = 2.0  # commit a word once it ends this far before the decoded audio end
    edge_s: float = 0.2  # agreement commits only words ending this far before the audio end:
    # a word cut by the buffer end is often misheard the same way twice ("two" → "to")
    agree_gap_s: float = 0.2  # agreement is with a hypothesis that heard at least this much less audio
    right_context: int = 1  # agreement commits only words with this many words heard after them
    overlap_s: float = 0.0  # a new word centred before committed end + this repeats a committed one
    ngram_guard: int = 4  # up to this many leading words that repeat the committed tail are dropped
    min_probability: float = 0.5  # agreement commits a less confident word only once it ends
    doubtful_wait_s: float = 1.0  # this far before the audio end (more context fixes most of them)


@dataclass(frozen=True)
class StabilizerResult:
    """What one hypothesis changed."""

    committed: tuple[Word, ...]  # newly final words, in order
    tentative: tuple[Word, ...]  # the whole uncommitted tail of the latest hypothesis
    segment_end: bool  # a pause or a sentence end closed the caption


def normalize_word(text: str) -> str:
    """The comparison key of a word: lower case, letters and digits only."""
    return "".join(c for c in text.lower() if c.isalnum())


@dataclass
class Stabilizer:
    """Per-session commit state. Mutable on purpose: one instance lives inside one session."""

    config: StabilizerConfig = field(default_factory=StabilizerConfig)
    committed_end: float = 0.0  # media seconds where the last committed word ends
    _tail: list[Word] = field(default_factory=list)  # last few committed words, for the n-gram guard
    # Recent hypotheses as (audio end, words), newest last; at most HISTORY kept.
    _history: list[tuple[float, list[Word]]] = field(default_factory=list)
    _open_segment: bool = False  # words were committed since the last segment end

    def update(self, words: list[Word], audio_end: float, pause: bool = False) -> StabilizerResult:
        """Take one hypothesis over audio ending at `audio_end` (media seconds).

        `pause=True` means the speaker stopped (or the stream ends): every new word is committed.
        """
        fresh = self._drop_repeats(words)
        if pause and not fresh and self._history:
            # A last decode that hears nothing new where the one before heard words (its audio
            # ends mid-way through the last word) must not erase what was shown as a partial.
            fresh = [w for w in self._drop_repeats(self._history[-1][1]) if w.start < audio_end]
        if pause:
            agreed = len(fresh)
        else:
            confidence = self._agreement(fresh, audio_end)
            agreed = len(confidence)
            while agreed and fresh[agreed - 1].end > audio_end - self.config.edge_s:
                agreed -= 1
            for i in range(agreed):
                doubtful = confidence[i] < self.config.min_probability
                if doubtful and fresh[i].end > audio_end - self.config.doubtful_wait_s:
                    agreed = i
                    break
            agreed = max(0, min(agreed, len(fresh) - self.config.right_context))
            # Old words are final even without agreement: they will not get better, only later.
            while agreed < len(fresh) and fresh[agreed].end <= audio_end - self.config.max_tentative_s:
                agreed += 1
            # One update closes at most one sentence, so the caption breaks right after it.
            ends = [i for i in range(agreed) if fresh[i].text.endswith(SENTENCE_END)]
            if ends:
                agreed = ends[0] + 1
        committed = self._commit(fresh[:agreed])
        tentative = _on_timeline(fresh[agreed:], self.committed_end)  # partials follow the finals
        self._history = [] if pause else (self._history + [(audio_end, list(words))])[-HISTORY:]
        sentence_end = bool(committed) and committed[-1].text.endswith(SENTENCE_END)
        self._open_segment = self._open_segment or bool(committed)
        segment_end = self._open_segment and (pause or sentence_end)
        if segment_end:
            self._open_segment = False
        return StabilizerResult(
            committed=tuple(committed), tentative=tuple(tentative), segment_end=segment_end
        )

    def reset_tentative(self) -> None:
        """Forget earlier hypotheses (their audio was dropped or the stream jumped)."""
        self._history = []

    def _drop_repeats(self, words: list[Word]) -> list[Word]:
        """Remove leading words that re-recognise audio already committed."""
        limit = self.committed_end + self.config.overlap_s
        fresh = [w for w in words if (w.start + w.end) / 2 > limit]
        # A re-decode can shift times a little; also drop an exact repeat of the committed tail.
        for n in range(min(self.config.ngram_guard, len(self._tail), len(fresh)), 0, -1):
            tail = [normalize_word(w.text) for w in self._tail[-n:]]
            head = [normalize_word(w.text) for w in fresh[:n]]
            if tail == head and fresh[0].start < self.committed_end + 0.5:
                return fresh[n:]
        return fresh

    def _agreement(self, fresh: list[Word], audio_end: float) -> list[float]:
        """The common prefix of this hypothesis and the newest one that heard at least
        `agree_gap_s` less audio (two decodes of nearly the same audio agree too easily), as
        the lower probability the two gave each agreed word."""
        older = [words for end, words in self._history if end <= audio_end - self.config.agree_gap_s]
        if not older:
            return []
        confidence = []
        for new, old in zip(fresh, self._drop_repeats(older[-1])):
            if normalize_word(new.text) != normalize_word(old.text):
                break
            confidence.append(min(new.probability, old.probability))
        return confidence

    def _commit(self, words: list[Word]) -> list[Word]:
        """Make words final on the one timeline (see `_on_timeline`)."""
        timeline = _on_timeline(words, self.committed_end)
        if timeline:
            self.committed_end = timeline[-1].end
        self._tail = (self._tail + timeline)[-self.config.ngram_guard :]
        return timeline


def _on_timeline(words: list[Word], floor: float) -> list[Word]:
    """Words moved onto one forward timeline from `floor` (media seconds): each starts where the
    one before it ends or later and lasts at least one alignment frame, so captions never overlap
    or run backwards and no word is zero-length (the aligner can give a hurried word no frames)."""
    timeline = []
    for word in words:
        start = max(word.start, floor)
        floor = max(word.end, start + MIN_WORD_S)
        timeline.append(dataclasses.replace(word, start=start, end=floor))
    return timeline
