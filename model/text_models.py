"""The CPU text models of agent assist: WordLlama sentence embeddings and VADER sentiment.

It is: loading both from files their wheels ship, and the two calls the assist layer makes
(`embed`, `polarity`). WordLlama (`wordllama`, MIT) ships a 32 000 × 256 token-embedding table
distilled from Llama 2 and its tokenizer; a sentence is the mean of its tokens' rows, normalised,
exactly what `WordLlamaInference.embed` computes. We read the two files ourselves instead of
calling `WordLlama.load`: that loader looks for the tokenizer in a folder the wheel does not have
(`tokenizer/`; the wheel ships `tokenizers/`) and then downloads it from the Hugging Face hub, and
importing `wordllama.inference` calls `logging.basicConfig` on the root logger. Here nothing
downloads and nothing else is imported. VADER (`vaderSentiment`, MIT) is a lexicon and rules; its
compound score is the polarity.

It is not: thread-bound. Both are read-only after loading, so the server's assist threads share
one instance.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from patchstream.model.api import EngineError, TextModels

WORDLLAMA_WEIGHTS = "weights/l2_supercat_256.safetensors"  # inside the wordllama wheel; 256-dim rows
WORDLLAMA_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"  # Llama 2's 32 000-token vocabulary
WORDLLAMA_TENSOR = "embedding.weight"  # (32000, 256) float


def _package_dir(name: str) -> Path:
    """Where an installed package's files are, without importing it (its import has side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(f"the `{name}` package is not installed; install patchstream's `assist` extra")
    return Path(next(iter(spec.submodule_search_locations)))


class WordLlamaEmbedder:
    """Mean-pooled WordLlama token embeddings (the l2_supercat model, 256 dimensions)."""

    name = "wordllama-l2-supercat-256"

    def __init__(self, root: Path):
        from safetensors.numpy import load_file  # noqa: PLC0415 - the `assist` extra
        from tokenizers import Tokenizer  # noqa: PLC0415

        self._tokenizer = Tokenizer.from_file(str(root / WORDLLAMA_TOKENIZER))
        self._table = np.ascontiguousarray(load_file(str(root / WORDLLAMA_WEIGHTS))[WORDLLAMA_TENSOR], np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._table.shape[1]), np.float32)  # (N, D)
        if not texts:
            return out
        for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            ids = np.asarray(encoding.ids, np.int64)
            if ids.size:
                out[row] = self._table[np.clip(ids, 0, len(self._table) - 1)].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


class VaderSentiment:
    """VADER's compound score: lexicon valences with rules for negation, intensifiers and 'but'."""

    name = "vader"

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # noqa: PLC0415 - the `assist` extra

        self._analyzer = SentimentIntensityAnalyzer()

    def polarity(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"])


def build() -> TextModels:
    """Load what is installed; say what is not (a session asking for it gets `bad_start`)."""
    missing = []
    embedder = sentiment = None
    try:
        embedder = WordLlamaEmbedder(_package_dir("wordllama"))
    except (EngineError, ImportError) as error:
        missing.append(f"intents and summaries need wordllama ({error})")
    try:
        sentiment = VaderSentiment()
    except ImportError as error:
        missing.append(f"sentiment needs vaderSentiment ({error})")
    return TextModels(embedder, sentiment, "; ".join(missing))
