"""Finals from the channels of one multichannel session, released in media-time order (sans-I/O).

Each channel of a multichannel session (`start.channels`: agent and customer, say) is its own
engine session with its own caption policy, stepped whenever it has audio, so its finals come out
when its words commit — not in step with the other channels. `FinalsMerge` holds each final until
no other channel can still produce a final that starts earlier, then releases the held finals in
order of their start time. A channel's *watermark* is the session's promise about it: no final of
that channel will start before it (the first word of its open caption, or, with nothing open, the
media time its engine has processed less `ORDER_SLACK_S` for words still being recognised). A
channel that has finished promises everything.

It is not: a buffer that can grow without bound or hold a final forever. It holds at most the
finals of the time one channel's engine trails another's, and a watermark only moves forward, so
every final is released once the other channels progress past its start (at the latest at the end
of the stream). A final that arrives after a later one was already released (a word recognised
late, beyond the slack) is released at once: finals are never dropped, so order then yields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from patchstream.streaming.protocol import CaptionFinal

ORDER_SLACK_S = 1.0  # words still being recognised may start this long before the processed audio's end


@dataclass(frozen=True)
class _Held:
    final: CaptionFinal  # waiting for the other channels
    channel: int  # index of the channel it came from
    arrival: int  # tie-break: arrival order, so equal starts keep the order they came in


class FinalsMerge:
    """Per-session merge of the finals of `channels` channels."""

    def __init__(self, channels: int):
        self._watermarks = [0.0] * channels  # media seconds, per channel; only ever grows
        self._held: list[_Held] = []  # sorted by (start, arrival)
        self._arrivals = 0

    @property
    def held(self) -> int:
        return len(self._held)

    def add(self, channel: int, finals: list[CaptionFinal], watermark: float) -> list[CaptionFinal]:
        """Finals of `channel` (in its order) and its new watermark; returns the finals now due."""
        self._watermarks[channel] = max(self._watermarks[channel], watermark)
        for final in finals:
            self._held.append(_Held(final, channel, self._arrivals))
            self._arrivals += 1
        self._held.sort(key=lambda held: (held.final.start, held.arrival))
        return self._release()

    def finish(self, channel: int) -> list[CaptionFinal]:
        """`channel` has ended: it promises no more finals."""
        return self.add(channel, [], math.inf)

    def flush(self) -> list[CaptionFinal]:
        """Everything held, in order (the session is ending)."""
        held, self._held = self._held, []
        return [item.final for item in held]

    def _release(self) -> list[CaptionFinal]:
        due = 0
        for item in self._held:
            others = (mark for index, mark in enumerate(self._watermarks) if index != item.channel)
            if not all(mark >= item.final.start for mark in others):
                break  # the rest start no earlier: they wait too, so order holds
            due += 1
        released, self._held = self._held[:due], self._held[due:]
        return [item.final for item in released]
