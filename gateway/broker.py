"""Commit notifications for live streams: "events up to id N are committed".

The event log (`gateway.models.Event`) is the truth; a broker only says when to read it again, so a
lost or coalesced notification costs latency, never an event. In one process the broker is this
in-process fan-out; with several gateway processes it is Redis pub/sub (`gateway.broker_redis`),
so that events ingested by the polling process reach every process's subscribers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol


class Broker(Protocol):
    """Publishes and delivers commit notifications (the highest committed event id)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, event_id: int) -> None:
        """Announce that events up to `event_id` are committed (called after the commit)."""
        ...

    def listen(self) -> AsyncIterator[int]:
        """Every announcement from now on (consecutive ones may be coalesced into the latest)."""
        ...


class InProcessBroker:
    """The broker of a single process: every listener gets the latest announced id."""

    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[int]] = set()

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Wake every listener for the last time (they end)."""
        for queue in self._listeners:
            _offer(queue, -1)

    async def publish(self, event_id: int) -> None:
        """Hand the id to every listener, replacing one it has not taken yet (coalescing)."""
        for queue in self._listeners:
            _offer(queue, event_id)

    async def listen(self) -> AsyncIterator[int]:
        """Announced ids, until the broker stops; memory is one id per listener."""
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        self._listeners.add(queue)
        try:
            while (event_id := await queue.get()) >= 0:
                yield event_id
        finally:
            self._listeners.discard(queue)


def _offer(queue: asyncio.Queue[int], event_id: int) -> None:
    """Put an id, dropping an older one still waiting: only the highest matters."""
    if queue.full():
        stale = queue.get_nowait()
        if stale < 0:  # a stop stays a stop
            event_id = stale
    queue.put_nowait(event_id)
