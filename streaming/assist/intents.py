"""Intent matching by embedding similarity, and keyword spotting.

It is: `IntentMatcher`, which embeds every intent's example phrases once and scores an utterance
by its best cosine similarity to them (the utterance whole and each of its clauses, so "Hi,
thanks. I'd like to cancel my plan" still matches "cancel"), and `KeywordSpotter`, whole-word
case-insensitive matching of configured words and phrases (a plural `s` allowed). It is not:
the embedding model (`model.api.TextEmbedder`, passed in) and never runs on the event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from patchstream.model.api import TextEmbedder
from patchstream.streaming.assist.config import Intent

_CLAUSE = re.compile(r"(?<=[,.;:?!])\s+")  # clause boundaries Whisper punctuates
MIN_CLAUSE_WORDS = 2  # shorter clauses ("Hi,") match anything a little


@dataclass(frozen=True)
class IntentMatch:
    """The intent an utterance expresses."""

    name: str  # the intent's name
    score: float  # cosine similarity in [-1, 1] to its closest example
    example: str  # that example phrase


def clauses(text: str) -> list[str]:
    """The utterance and its clauses of at least MIN_CLAUSE_WORDS words."""
    parts = [part for part in _CLAUSE.split(text) if len(part.split()) >= MIN_CLAUSE_WORDS]
    return [text, *parts] if len(parts) > 1 else [text]


class IntentMatcher:
    """Scores utterances against a fixed set of intents."""

    def __init__(self, intents: Sequence[Intent], embedder: TextEmbedder, threshold: float):
        self._names = [intent.name for intent in intents for _ in intent.examples]
        self._examples = [example for intent in intents for example in intent.examples]
        self._table = embedder.embed(self._examples)  # (E, D), unit rows
        self._embedder = embedder
        self.threshold = threshold

    def scores(self, text: str) -> dict[str, tuple[float, str]]:
        """Every intent's best similarity to `text` and the example that gave it."""
        if not self._examples:
            return {}
        similarity = self._embedder.embed(clauses(text)) @ self._table.T  # (C, E)
        best = similarity.max(axis=0)  # (E,)
        scores: dict[str, tuple[float, str]] = {}
        for name, example, score in zip(self._names, self._examples, best.tolist()):
            if name not in scores or score > scores[name][0]:
                scores[name] = (score, example)
        return scores

    def match(self, text: str) -> IntentMatch | None:
        """The best intent at or above the threshold, if any."""
        scores = self.scores(text)
        if not scores:
            return None
        name = max(scores, key=lambda key: scores[key][0])
        score, example = scores[name]
        return IntentMatch(name, round(score, 3), example) if score >= self.threshold else None


class KeywordSpotter:
    """Finds configured words and phrases in an utterance."""

    def __init__(self, keywords: Sequence[str]):
        self._patterns = [
            (keyword, re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, keyword.split())) + r"(?:s|es)?(?!\w)", re.IGNORECASE))
            for keyword in keywords
        ]

    def find(self, text: str) -> list[str]:
        """The keywords said in `text`, in configuration order."""
        return [keyword for keyword, pattern in self._patterns if pattern.search(text)]

