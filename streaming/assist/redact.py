"""Sans-I/O PII redaction of caption words: card numbers, phone numbers, emails, SSNs, long ids.

It is: the one rule that decides which words of a caption are personal data, and the rewrite
that replaces each such run of words by one placeholder word (`[card]`, `[phone]`, `[email]`,
`[ssn]`, `[number]`) spanning their media time. It reads digits as Whisper writes them: digit
groups ("4111 1111 1111 1111", "555-123-4567", "(555) 123-4567"), spoken digits ("four one one
one", "oh", "double five"), spoken emails ("john dot smith at example dot com"). A `Redactor`
is per caption stream (per channel): a digit run still open at the end of a final (the caption
closed on a pause or its length, not a sentence end) is remembered, so a card number split over
two captions is judged whole and its second half is caught too.

Ordinary numbers stay: times (3:30), dates (12/25/2024), amounts ($1,250, 1,250.00, 12.5), years
and short counts. Tentative text is judged strictly: a digit run that may still grow (the end of
a partial) is masked from 6 digits on (a card's issuer prefix), so no partial shows a number
that its final would hide.

It is not: a guarantee for every format on earth (street addresses and names are not found),
and it sees only text; it never logs what it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

from patchstream.streaming.protocol import WordTiming

KINDS = ("card", "phone", "email", "ssn", "number")  # what `redact` may name; each masks as "[kind]"

OPEN_RUN_DIGITS = 6  # an unfinished digit run this long is masked: a card's issuer prefix (PCI shows ≤ 6)
LONG_ID_DIGITS = 8  # a finished run this long that is nothing else is an account/order/policy number
MAX_CARRY_DIGITS = 19  # the longest card number; more digits carried over can only be `number`
RUN_BREAKS = (".", "?", "!", ";", ":")  # a word ending so closes a digit run (commas do not: "4111, 1111")

_SPOKEN_DIGITS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "niner": "9",
}
_ZERO_LETTERS = ("oh", "o")  # zero only inside a run: "oh" alone is an interjection
_REPEATS = {"double": 2, "triple": 3}  # "double five" = 55, as people read numbers aloud
_DASHES = ("dash", "hyphen")  # spoken separators inside a digit run
_SSN_CUES = ("social", "security", "ssn", "ss")
# Words that announce a personal number: six digits or more after one are masked.
_NUMBER_CUES = frozenset({*_SSN_CUES, "number", "phone", "card", "account", "pin", "code", "id", "passcode", "password", "member", "policy"})
_EMAIL_CUES = frozenset({"email", "e-mail", "mail", "address"})
_MAIL_PROVIDERS = frozenset({"gmail", "googlemail", "yahoo", "hotmail", "outlook", "icloud", "aol", "proton", "protonmail"})
_CUE_WINDOW = 5  # words before a digit run searched for a cue
# A written digit group: digits with -, ., ( ) or a leading + between them, nothing else. Times
# (3:30), dates (1/2), amounts ($5, 1,250) and decimals (12.50) are not groups.
# Whisper also splits a number's separators onto the next word ("555 -123 -4 ,567"): a leading
# dash, comma or dot is a separator too.
_GROUP = re.compile(r"^[\-,.]?\+?\(?\d[\d\-.()]*$")
_DECIMAL = re.compile(r"^\d+\.\d{1,2}$")
_EMAIL = re.compile(r"^[\w.+\-]+@[\w\-]+(\.[\w\-]+)+$")
_DOMAIN = re.compile(r"^[a-z0-9\-]+(\.[a-z0-9\-]+)+$")
_TLDS = frozenset(
    "com net org edu gov mil io co us uk ca au de fr info biz me ai app dev email mail".split()
)
# Words before "at" that make "... at example.com" a place or a website, not an address.
_NOT_LOCAL_PARTS = frozenset(
    "i me us you him her them it we is are was be am here there this that online site website look"
    " visit find reach available email mail".split()
)
_TRAILING = ",.;:?!\"')"


def luhn_valid(digits: str) -> bool:
    """The card-number check digit (ISO/IEC 7812): every second digit from the right doubled."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _split_punct(text: str) -> tuple[str, str]:
    """A word's core and its trailing punctuation ("1111." → "1111", ".")."""
    core = text.rstrip(_TRAILING)
    return core, text[len(core):]


@dataclass(frozen=True)
class _Token:
    """One caption word as the rules read it."""

    core: str  # the word without trailing punctuation, lower case
    trailing: str  # its trailing punctuation
    groups: tuple[str, ...] | None  # the digit groups it adds to a run (None: not part of one)
    connector: bool  # a spoken separator ("dash") that may sit inside a run
    spoken: bool = False  # a digit said as a word ("four"), not written


def _tokens(texts: Sequence[str]) -> list[_Token]:
    tokens: list[_Token] = []
    repeat = 1
    for index, text in enumerate(texts):
        core, trailing = _split_punct(text)
        lower = core.lower()
        groups: tuple[str, ...] | None = None
        spoken = lower in _SPOKEN_DIGITS or lower in _ZERO_LETTERS
        if lower in _SPOKEN_DIGITS:
            groups = (_SPOKEN_DIGITS[lower] * repeat,)
        elif lower in _ZERO_LETTERS and tokens and tokens[-1].groups and not tokens[-1].trailing.strip(","):
            groups = ("0" * repeat,)
        elif _GROUP.match(core) and not _DECIMAL.match(core):
            groups = tuple(group for group in re.split(r"\D+", core) if group) or None
        elif lower in _REPEATS and index + 1 < len(texts):
            tokens.append(_Token(lower, trailing, (), False))  # joins the run; the next word repeats
            repeat = _REPEATS[lower]
            continue
        repeat = 1
        tokens.append(_Token(lower, trailing, groups, lower in _DASHES, spoken))
    return tokens


@dataclass(frozen=True)
class _Span:
    """Words [first, last] to mask as one placeholder."""

    first: int
    last: int
    kind: str


def _digit_runs(tokens: list[_Token]) -> list[tuple[int, int, list[str]]]:
    """Maximal runs of digit words: (first, last, the digit groups in order)."""
    runs = []
    index = 0
    while index < len(tokens):
        if tokens[index].groups is None:
            index += 1
            continue
        first, groups = index, []
        while index < len(tokens):
            token = tokens[index]
            if token.groups is not None:
                groups += token.groups
            elif not (token.connector and index + 1 < len(tokens) and tokens[index + 1].groups):
                break
            index += 1
            if any(mark in token.trailing for mark in RUN_BREAKS):
                break  # "4111." ends the run; "4111," does not
            if "," in token.trailing and not token.spoken and sum(map(len, token.groups or ())) <= 2:
                break  # "December 25, 2024": a day before a comma is not a digit group
        last = index - 1
        while last > first and tokens[last].groups is None:
            last -= 1
        runs.append((first, last, groups))
    return runs


def _classify(digits: str, groups: list[str], plus: bool, cue: frozenset[str], spoken: bool) -> str | None:
    """What a finished run of digits is, or None for an ordinary number. `spoken`: read out digit
    by digit. `cue`: the words just before that announce a number ("social", "account", ...)."""
    count = len(digits)
    if 13 <= count <= 19 and luhn_valid(digits):
        return "card"
    if count == 9 and ([len(g) for g in groups] == [3, 2, 4] or cue & set(_SSN_CUES)):
        return "ssn"
    if plus and 8 <= count <= 15:
        return "phone"
    if count == 10 or (count == 11 and digits[0] == "1") or (count == 7 and (spoken or len(groups) > 1)):
        return "phone"  # seven digits read in groups are a local number ("-123 -4 ,567" too)
    if count >= LONG_ID_DIGITS or (cue and count >= OPEN_RUN_DIGITS):
        return "number"
    return None


def _split_domain_end(tokens: list[_Token], index: int) -> int | None:
    """The last of the words from `index` on that start with a dot and end in a top-level domain
    (".com", ".gmail .com": Whisper puts a heard "dot com" on a word of its own), or None."""
    end = index
    while end < len(tokens) and tokens[end].core.startswith(".") and len(tokens[end].core) > 1:
        end += 1
    return end - 1 if end > index and tokens[end - 1].core.rsplit(".", 1)[-1] in _TLDS else None


def _email_spans(tokens: list[_Token], open_end: bool) -> list[_Span]:
    spans = []
    for index, token in enumerate(tokens):
        if _EMAIL.match(token.core):
            spans.append(_Span(index, index, "email"))
        elif _EMAIL_CUES & {t.core for t in tokens[max(0, index - _CUE_WINDOW):index]}:
            # After "my email is": "jainnetgmail .com", "jane .gmail .com", "jane.gmail.com" (the "@" lost).
            end = _split_domain_end(tokens, index + 1)
            if end is not None and token.core.replace(".", "").isalnum():
                spans.append(_Span(index, end, "email"))
            elif _DOMAIN.match(token.core) and token.core.rsplit(".", 1)[-1] in _TLDS:
                spans.append(_Span(index, index, "email"))
    for at, token in enumerate(tokens):
        if token.core != "at" or at == 0 or token.trailing:
            continue
        cued = _EMAIL_CUES & {t.core for t in tokens[max(0, at - 1 - _CUE_WINDOW):at - 1]}
        if at + 1 >= len(tokens):
            if not cued:
                continue
            # "my email is jane at": the domain is not said yet (a partial, or a final the next
            # caption continues); the local part is personal already.
            end = at
        else:
            end = _spoken_domain_end(tokens, at + 1, open_end)
        if end is None and (cued or tokens[at + 1].core in _MAIL_PROVIDERS):
            end = at + 1  # "my email is jane at gmail": the ".com" is lost, or not said yet
        if end is None:
            continue
        first = at - 1
        while first >= 2 and tokens[first - 1].core in ("dot", "underscore") and not tokens[first - 2].trailing:
            first -= 2  # "john dot smith at ..."
        local = tokens[first].core
        if local.replace(".", "").replace("_", "").isalnum() and local not in _NOT_LOCAL_PARTS:
            spans.append(_Span(first, end, "email"))
    return spans


def _spoken_domain_end(tokens: list[_Token], index: int, open_end: bool) -> int | None:
    """The last word of a domain starting at `index` ("example dot com", "example.com"), or None.
    `open_end`: the text may still grow, so a domain cut short at the end counts ("gmail dot")."""
    if index >= len(tokens):
        return None
    if _DOMAIN.match(tokens[index].core) and tokens[index].core.rsplit(".", 1)[-1] in _TLDS:
        return index
    end, last = index, None
    while end + 2 < len(tokens) and tokens[end + 1].core == "dot" and not tokens[end].trailing:
        end += 2
        if tokens[end].core in _TLDS:
            last = end
    if last is None:
        last = _split_domain_end(tokens, end + 1)  # "example .com": Whisper's way of writing a dot it heard
    if last is None and open_end and tokens[-1].core == "dot" and len(tokens) - 1 == end + 1:
        return len(tokens) - 1  # "john at gmail dot" while the partial is still growing
    if last is None and open_end and end > index and end == len(tokens) - 1:
        return end
    return last


class Redactor:
    """PII redaction of one caption stream (one channel). Feed it every partial and final in order."""

    def __init__(self, kinds: frozenset[str] = frozenset(KINDS)):
        unknown = sorted(kinds - set(KINDS))
        if unknown:
            raise ValueError(f"unknown redaction kinds {unknown}; use any of {', '.join(KINDS)}")
        self.kinds = kinds
        self._carry = ""  # digits of a run left open at the end of the last final

    def words(self, words: Sequence[WordTiming], final: bool) -> tuple[WordTiming, ...]:
        """The caption's words with every PII run replaced by one placeholder word."""
        texts = [word.text for word in words]
        spans, carry = self._spans(texts, open_end=not final or not _ends_sentence(texts))
        if final:
            self._carry = carry
        return tuple(_apply(words, spans))

    def text(self, text: str, final: bool = True) -> str:
        """Redact free text (split on whitespace): what a caption without word timings needs."""
        words = [WordTiming(word, 0.0, 0.0, True) for word in text.split()]
        return " ".join(word.text for word in self.words(words, final))

    def _spans(self, texts: list[str], open_end: bool) -> tuple[list[_Span], str]:
        tokens = _tokens(texts)
        spans: list[_Span] = []
        carry = ""
        for first, last, groups in _digit_runs(tokens):
            digits = "".join(groups)
            touches_end = last == len(tokens) - 1 and open_end
            prefix = self._carry if first == 0 else ""
            plus = texts[first].lstrip("(").startswith("+") or (first > 0 and tokens[first - 1].core == "plus")
            cue = _NUMBER_CUES & {t.core for t in tokens[max(0, first - _CUE_WINDOW):first]}
            spoken = any(t.spoken for t in tokens[first:last + 1])
            kind = _classify(prefix + digits, groups, plus, cue, spoken) if prefix else None
            kind = kind or _classify(digits, groups, plus, cue, spoken)
            if touches_end:
                carry = (prefix + digits)[-MAX_CARRY_DIGITS:]
                if kind is None and len(prefix + digits) >= OPEN_RUN_DIGITS:
                    kind = "number"  # may still become a card: hide it until it is judged whole
            if kind is not None and self._wanted(kind):
                spans.append(_Span(first, last, kind))
        if "email" in self.kinds:
            spans += _email_spans(tokens, open_end)
        return _disjoint(spans), carry

    def _wanted(self, kind: str) -> bool:
        # A run that is "number" only because it is unfinished or long is masked when any digit
        # kind is asked for: it may be the card or phone number being read out.
        return kind in self.kinds or (kind == "number" and bool(self.kinds & {"card", "phone", "ssn"}))


def _ends_sentence(texts: list[str]) -> bool:
    return bool(texts) and texts[-1].rstrip("\"')").endswith((".", "?", "!"))


def _disjoint(spans: list[_Span]) -> list[_Span]:
    """Spans in order, an overlapping later one merged into the earlier."""
    merged: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.first, -s.last)):
        if merged and span.first <= merged[-1].last:
            if span.last > merged[-1].last:
                merged[-1] = replace(merged[-1], last=span.last)
            continue
        merged.append(span)
    return merged


def _apply(words: Sequence[WordTiming], spans: list[_Span]) -> list[WordTiming]:
    out: list[WordTiming] = []
    index = 0
    for span in spans:
        out += words[index:span.first]
        covered = words[span.first:span.last + 1]
        _, trailing = _split_punct(covered[-1].text)
        out.append(
            WordTiming(
                text=f"[{span.kind}]{trailing}",
                start=covered[0].start,
                end=covered[-1].end,
                stable=all(word.stable for word in covered),
                confidence=min(word.confidence for word in covered),
            )
        )
        index = span.last + 1
    return out + list(words[index:])
