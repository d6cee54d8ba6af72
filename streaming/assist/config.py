"""What agent assist does in one session: the `assist` option of `start`, over the server's file.

It is: the frozen `AssistConfig`, its parser (the JSON object a client sends in `start`, or the
file `patchstream serve --assist-config FILE` names; both have one schema) and the rule that
combines them: the server's file is the base every session gets, a session's `assist` object
overrides it field by field, intents merge by name, and redaction kinds only add up (a client
can ask for more redaction than the server enforces, never less).

It is not: the work. Parsing raises `ValueError` with a message a client can act on; the
session turns it into `bad_start`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from patchstream.streaming.assist.redact import KINDS as REDACT_KINDS

# Calibrated on tests/streaming/assist/intent_examples.py (WordLlama l2_supercat 256): utterances
# that express an intent score 0.43–0.90 against its examples, the others 0.06–0.33 (one hard
# negative, "update my email address" → address_change, 0.67); 0.40 sits between the two.
DEFAULT_INTENT_THRESHOLD = 0.40
MAX_INTENTS = 32  # intents one session may define
MAX_EXAMPLES = 16  # example phrases per intent
MAX_KEYWORDS = 64
MAX_PHRASE_CHARS = 200  # one example phrase or keyword
SUMMARY_SENTENCES = 3  # utterances the summary keeps per channel


@dataclass(frozen=True)
class Intent:
    """One thing a caller may want, given by a few example phrases."""

    name: str  # reported in the `intent` event, e.g. "cancel"
    examples: tuple[str, ...]  # phrases that mean it, e.g. ("I want to cancel", "close my account")


@dataclass(frozen=True)
class AssistConfig:
    """Which assist events a session gets. The default does nothing."""

    redact: frozenset[str] = frozenset()  # PII kinds masked in every caption (see redact.KINDS)
    sentiment: bool = False  # a `sentiment` event per final caption
    intents: tuple[Intent, ...] = ()  # an `intent` event when a final caption matches one
    keywords: tuple[str, ...] = ()  # a `keyword` event when a final caption says one
    summary: bool = False  # a `summary` event per channel at the end of the session
    intent_threshold: float = DEFAULT_INTENT_THRESHOLD  # cosine similarity an intent needs
    summary_sentences: int = SUMMARY_SENTENCES  # utterances a channel's summary keeps

    @property
    def enabled(self) -> bool:
        return bool(self.redact or self.sentiment or self.intents or self.keywords or self.summary)

    @property
    def analyses(self) -> bool:
        """Whether final captions are analysed (off the event loop) beyond redaction."""
        return bool(self.sentiment or self.intents or self.keywords or self.summary)

    @property
    def needs_embedder(self) -> bool:
        return bool(self.intents or self.summary)


# `"assist": true`: everything that needs no configuration.
ALL_DEFAULTS = {"redact": True, "sentiment": True, "summary": True}


def _phrases(value: object, what: str, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValueError(f"{what} must be a list of non-empty strings")
    if len(value) > limit:
        raise ValueError(f"{what} has {len(value)} entries; at most {limit}")
    if any(len(item) > MAX_PHRASE_CHARS for item in value):
        raise ValueError(f"{what}: each phrase must be at most {MAX_PHRASE_CHARS} characters")
    return tuple(dict.fromkeys(item.strip() for item in value))


def _intents(value: object) -> tuple[Intent, ...]:
    if not isinstance(value, dict):
        raise ValueError('`assist.intents` must be an object of intent name → example phrases, e.g. {"cancel": ["I want to cancel"]}')
    if len(value) > MAX_INTENTS:
        raise ValueError(f"`assist.intents` has {len(value)} intents; at most {MAX_INTENTS}")
    intents = []
    for name, examples in value.items():
        if not name.strip() or len(name) > MAX_PHRASE_CHARS:
            raise ValueError("`assist.intents`: intent names must be non-empty short strings")
        phrases = _phrases(examples, f"`assist.intents.{name}`", MAX_EXAMPLES)
        if not phrases:
            raise ValueError(f"`assist.intents.{name}` needs at least one example phrase")
        intents.append(Intent(name, phrases))
    return tuple(intents)


def _redact(value: object) -> frozenset[str]:
    if isinstance(value, bool):
        return frozenset(REDACT_KINDS) if value else frozenset()
    if not isinstance(value, list) or not all(isinstance(kind, str) for kind in value):
        raise ValueError(f"`assist.redact` must be true, false or a list of kinds ({', '.join(REDACT_KINDS)})")
    unknown = sorted(set(value) - set(REDACT_KINDS))
    if unknown:
        raise ValueError(f"`assist.redact`: unknown kinds {unknown}; use any of {', '.join(REDACT_KINDS)}")
    return frozenset(value)


def _flag(raw: dict, key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"`assist.{key}` must be true or false")
    return value


FIELDS = ("redact", "sentiment", "intents", "keywords", "summary", "intent_threshold")


def parse_assist(raw: object, base: AssistConfig = AssistConfig()) -> AssistConfig:
    """The config of one session: `raw` (the `assist` of `start`: an object, true, false or None)
    over `base` (the server's). Raises ValueError on anything malformed."""
    if raw is None or raw is False:
        return base
    if raw is True:
        raw = ALL_DEFAULTS
    if not isinstance(raw, dict):
        raise ValueError("`assist` must be true, false or an object (see docs/protocol.md, agent assist)")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ValueError(f"`assist` has unknown fields {unknown}; known: {', '.join(FIELDS)}")
    config = base
    if "redact" in raw:
        config = replace(config, redact=base.redact | _redact(raw["redact"]))
    if "intents" in raw:
        merged = {intent.name: intent for intent in base.intents}
        merged.update((intent.name, intent) for intent in _intents(raw["intents"]))
        if len(merged) > MAX_INTENTS:
            raise ValueError(f"`assist.intents`: {len(merged)} intents with the server's; at most {MAX_INTENTS}")
        config = replace(config, intents=tuple(merged.values()))
    if "keywords" in raw:
        keywords = _phrases(raw["keywords"], "`assist.keywords`", MAX_KEYWORDS)
        config = replace(config, keywords=tuple(dict.fromkeys(base.keywords + keywords))[:MAX_KEYWORDS])
    if "intent_threshold" in raw:
        threshold = raw["intent_threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            raise ValueError("`assist.intent_threshold` must be a number in (0, 1]")
        config = replace(config, intent_threshold=float(threshold))
    return replace(
        config, sentiment=_flag(raw, "sentiment", config.sentiment), summary=_flag(raw, "summary", config.summary)
    )


def load_assist_file(path: str | Path) -> AssistConfig:
    """The server's base config from a JSON file of the same schema. Raises ValueError."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the assist config {path}: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"the assist config {path} must hold one JSON object")
    return parse_assist(raw)
