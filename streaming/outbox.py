"""A session's bounded queue of events waiting to be sent to its client (sans-I/O).

Drop rules, by event kind:
- partial captions coalesce: a queued partial is replaced by a newer one with the same caption id;
- partial interpretations coalesce the same way, by interpretation id;
- stats coalesce: only the newest queued stats event is kept;
- finals (captions and interpretations), errors and `ended` are never dropped. If more than
  `max_pending` of them wait, the client has stopped reading: `put` raises `OutboxOverflow` and
  the session ends.

It is a plain FIFO with those rules; waiting for events is the session's business.
"""

from __future__ import annotations

from collections import deque

from patchstream.streaming.protocol import CaptionPartial, Event, InterpretationPartial, Stats


class OutboxOverflow(Exception):
    """The client is not reading: too many undroppable events are queued."""


def _supersedes(new: Event, queued: Event) -> bool:
    """Whether `new` makes `queued` pointless to send (both droppable, same subject)."""
    if isinstance(new, Stats):
        return isinstance(queued, Stats)
    if isinstance(new, CaptionPartial):
        return isinstance(queued, CaptionPartial) and queued.caption_id == new.caption_id
    if isinstance(new, InterpretationPartial):
        return isinstance(queued, InterpretationPartial) and queued.interpretation_id == new.interpretation_id
    return False


def _droppable(event: Event) -> bool:
    return isinstance(event, (CaptionPartial, InterpretationPartial, Stats))


class Outbox:
    """FIFO of events with coalescing."""

    def __init__(self, max_pending: int):
        self._queue: deque[Event] = deque()
        self._max_pending = max_pending
        self._pending_undroppable = 0
        self.coalesced = 0  # droppable events replaced before they were sent (reported in stats)

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, event: Event) -> None:
        """Queue an event, replacing a queued one it supersedes."""
        if _droppable(event):
            for index, queued in enumerate(self._queue):
                if _supersedes(event, queued):
                    self._queue[index] = event
                    self.coalesced += 1
                    return
        else:
            if self._pending_undroppable >= self._max_pending:
                raise OutboxOverflow(f"{self._pending_undroppable} events queued for a client that is not reading")
            self._pending_undroppable += 1
        self._queue.append(event)

    def pop(self) -> Event | None:
        """The oldest queued event, removed; None when empty."""
        if not self._queue:
            return None
        event = self._queue.popleft()
        if not _droppable(event):
            self._pending_undroppable -= 1
        return event
