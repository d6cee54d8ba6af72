"""A session's bounded queue of events waiting to be sent to its client.

Drop rules, by event kind:
- partial captions coalesce: a queued partial is replaced by a newer one with the same caption id;
- stats coalesce: only the newest queued stats event is kept;
- finals, errors and `ended` are never dropped. If more than `max_pending` of them wait, the
  client has stopped reading: `put` raises `OutboxOverflow` and the session ends.
"""

from __future__ import annotations

import asyncio
from collections import deque

from patchstream.streaming.events import CaptionPartial, Event, Stats


class OutboxOverflow(Exception):
    """The client is not reading: too many undroppable events are queued."""


class Outbox:
    """FIFO of events with coalescing; one producer side (`put`), one consumer (`get`)."""

    def __init__(self, max_pending: int):
        self._queue: deque[Event] = deque()
        self._max_pending = max_pending
        self._pending_undroppable = 0
        self._ready = asyncio.Event()
        self.coalesced = 0  # partials and stats replaced before they were sent

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, event: Event) -> None:
        """Queue an event, replacing a queued one it supersedes."""
        if isinstance(event, (CaptionPartial, Stats)) and self._replace(event):
            return
        if not isinstance(event, (CaptionPartial, Stats)):
            if self._pending_undroppable >= self._max_pending:
                raise OutboxOverflow(f"{self._pending_undroppable} events queued for a client that is not reading")
            self._pending_undroppable += 1
        self._queue.append(event)
        self._ready.set()

    def _replace(self, event: CaptionPartial | Stats) -> bool:
        for index, queued in enumerate(self._queue):
            same_partial = (
                isinstance(event, CaptionPartial)
                and isinstance(queued, CaptionPartial)
                and queued.caption_id == event.caption_id
            )
            if same_partial or (isinstance(event, Stats) and isinstance(queued, Stats)):
                self._queue[index] = event
                self.coalesced += 1
                return True
        return False

    async def get(self) -> Event:
        """Wait for the oldest queued event and remove it."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        event = self._queue.popleft()
        if not isinstance(event, (CaptionPartial, Stats)):
            self._pending_undroppable -= 1
        return event
