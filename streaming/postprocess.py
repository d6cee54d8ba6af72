"""The hook every caption passes through before it leaves the session: `CaptionPostProcessor`.

It is: the one place where something beside the engine may read and rewrite a session's captions
— agent assist adds interpretations (sentiment, intents) of each final, redacts personal data from
partials and finals (so nothing unredacted is queued, sent or logged), and sums the call up at its
end. The session protocol (`session_protocol.py`) calls a processor with every caption event, after
multichannel finals are put in media-time order and before the event reaches the outbox; whatever
it returns is what the client gets. A server has one `PostProcessorFactory` (default: none, captions
pass unchanged); each session gets its own processor from it, so per-session state lives there.

It is not: I/O and not asynchronous. A processor runs on the event loop, so it must be quick
(microseconds to a millisecond per caption); heavier work belongs off the loop, its results
delivered as later events. It never sees audio and never talks to the engine.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from patchstream.streaming.protocol import CaptionFinal, CaptionPartial, Event, StartMessage


class CaptionPostProcessor(Protocol):
    """One session's caption post-processor. Every caption event passes through it once, in order."""

    def partial(self, caption: CaptionPartial) -> CaptionPartial:
        """The partial to send instead of `caption` (text may be rewritten, e.g. redacted)."""
        ...

    def final(self, caption: CaptionFinal) -> Sequence[Event]:
        """The events to send for a final: the final itself (possibly rewritten) first, then any
        interpretations of it (`InterpretationFinal` with the caption's `channel`, `start`, `end`)."""
        ...

    def end(self) -> Sequence[Event]:
        """The stream ended cleanly (`stop`): last events, e.g. a call summary, sent before `ended`."""
        ...


# Builds a session's processor from its id and accepted `start` (whose `assist` holds its options).
# Raising `CodedError` (e.g. `bad_start` for malformed `assist` options) refuses the session.
PostProcessorFactory = Callable[[str, StartMessage], CaptionPostProcessor]


class NoPostProcessing:
    """The default: captions pass unchanged, nothing is added."""

    def partial(self, caption: CaptionPartial) -> CaptionPartial:
        return caption

    def final(self, caption: CaptionFinal) -> Sequence[Event]:
        return (caption,)

    def end(self) -> Sequence[Event]:
        return ()


def no_post_processing(session_id: str, start: StartMessage) -> CaptionPostProcessor:
    """The default `PostProcessorFactory`."""
    return NoPostProcessing()
