"""Extractive call summary: the few utterances of a channel that say most of what it said.

It is: a ranking over a channel's final captions by embedding centrality (how close an
utterance is to everything else said: the call's main topic scores high, "okay" and "thank you"
low), plus a bonus for utterances that matched an intent or said a keyword, with a redundancy
penalty so that three picks say three things (maximal marginal relevance); the picks are kept in
the order they were said. Utterances under MIN_WORDS words are never picked. It is not: a
generative summary (the Gemma engine's interpretation path is the place for one), and it never
runs on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_WORDS = 4  # shorter utterances ("yes, that's right") carry no content worth summarising
INTENT_BONUS = 0.3  # an utterance that matched an intent is what the call was about
KEYWORD_BONUS = 0.15  # per keyword said, up to two
REDUNDANCY = 0.7  # weight of the similarity to an utterance already picked


@dataclass(frozen=True)
class Utterance:
    """One final caption as the summary sees it (already redacted)."""

    caption_id: str  # the caption it was
    text: str  # its redacted text
    start: float  # media seconds
    end: float  # media seconds
    embedding: np.ndarray  # (D,) unit vector of `text`
    intent: str | None = None  # the intent it matched
    keywords: tuple[str, ...] = ()  # the keywords it said
    sentiment: float | None = None  # its polarity in [-1, 1]


def centrality(embeddings: np.ndarray) -> np.ndarray:
    """(N,) mean cosine similarity of each row to the others. Through the sum of the rows, so a
    four-hour call's thousands of utterances never build an (N, N) matrix."""
    count = len(embeddings)
    if count < 2:
        return np.ones(count, np.float32)
    self_similarity = (embeddings * embeddings).sum(axis=1)  # 1 for unit rows, 0 for empty texts
    return (embeddings @ embeddings.sum(axis=0) - self_similarity) / (count - 1)


def pick(utterances: Sequence[Utterance], count: int) -> list[int]:
    """Indices of the utterances the summary keeps, in time order."""
    candidates = [i for i, u in enumerate(utterances) if len(u.text.split()) >= MIN_WORDS]
    if not candidates:
        return []
    table = np.stack([utterances[i].embedding for i in candidates])  # (N, D)
    score = centrality(table) + np.array(
        [INTENT_BONUS * (utterances[i].intent is not None) + KEYWORD_BONUS * min(2, len(utterances[i].keywords)) for i in candidates]
    )
    picked: list[int] = []
    while len(picked) < min(count, len(candidates)):
        penalty = (table @ table[picked].T).max(axis=1) if picked else np.zeros(len(candidates))
        gain = score - REDUNDANCY * penalty
        gain[picked] = -np.inf
        picked.append(int(np.argmax(gain)))
    return sorted(candidates[i] for i in picked)


def summary_text(kept: Sequence[Utterance], intents: Sequence[str]) -> str:
    """The summary as one line: the kept utterances, then the intents detected."""
    text = " ".join(u.text for u in kept)
    if intents:
        text += f" (intents: {', '.join(intents)})"
    return text
