"""The broker of several gateway processes: Redis pub/sub on one channel (`broker = "redis"`).

`publish` sends the id to every process through Redis (and remembers the highest id under
`<channel>:last`, so that a process that reconnects after a gap wakes its listeners with it);
one reader task per process subscribes to the channel and hands what arrives to the local
listeners, coalescing as the in-process broker does. Redis going away costs latency, never an
event: the event log in the database is the truth and listeners read it from their own cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import redis.asyncio as aioredis

from gateway.broker import InProcessBroker

log = logging.getLogger("evgate.broker")

RECONNECT_BASE = 0.2
RECONNECT_CAP = 10.0

# Remember the highest id (never lowering it), then publish it: one round trip, atomic.
_PUBLISH = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > last then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('PUBLISH', KEYS[2], ARGV[1])
"""


class RedisBroker(InProcessBroker):
    """Commit notifications across processes through Redis pub/sub."""

    def __init__(self, url: str, channel: str) -> None:
        super().__init__()
        self.url = url
        self.channel = channel
        self._redis: aioredis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # set while the reader is subscribed (tests wait on it)

    async def start(self) -> None:
        """Connect and start the reader (which reconnects by itself with bounded backoff)."""
        self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=5, health_check_interval=30)
        self._reader = asyncio.create_task(self._read(), name="broker:redis")

    async def stop(self) -> None:
        """Stop reading, end the local listeners, close the connection."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await super().stop()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def publish(self, event_id: int) -> None:
        """Announce to every process (this one included, through its reader); a failure is
        logged, not raised: the next announcement, or a reconnect, carries a higher id."""
        if self._redis is None:
            raise RuntimeError("RedisBroker.publish before start")
        try:
            await self._redis.eval(_PUBLISH, 2, f"{self.channel}:last", self.channel, str(event_id))
        except Exception as exc:
            log.warning("broker: could not publish event id %d to Redis: %s", event_id, exc)

    async def _read(self) -> None:
        assert self._redis is not None
        failures = 0
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                failures = 0
                # Announcements may have been missed while not subscribed: wake with the latest.
                last = await self._redis.get(f"{self.channel}:last")
                if last is not None:
                    await super().publish(int(last))
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is not None and message.get("type") == "message":
                        with contextlib.suppress(ValueError):
                            await super().publish(int(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                failures += 1
                delay = min(RECONNECT_CAP, RECONNECT_BASE * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
                log.warning("broker: Redis subscription lost (%s); reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
