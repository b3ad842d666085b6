"""Live event streams: the event log (`gateway.models.Event`) fanned out to subscribers.

One `EventHub` per process reads the log forward from its `position` whenever the broker
announces a commit (`gateway.broker`), and on a slow safety timer, so that a lost announcement only
delays. Each new event is offered to every subscription whose filter and access scope admit it.

Ordering and exactly-once, per subscription:

- `EventHub.subscribe(stream, where, after, principal)` registers first (from then on live events
  are buffered), notes the hub's position `P` at that instant, replays the log `after < id <= P`
  in pages, then yields the buffered and later live events (all `> P`). An id is never yielded
  twice (each one is `>` the last yielded) and none is skipped (the replay ends exactly where the
  live part begins). Without `after` the stream starts live at `P`.
- Event ids come from a sequence, but on PostgreSQL two transactions can commit out of id order
  (id 10 visible before id 9). The hub never moves past a hole in the ids until the hole is filled
  or known to be permanent (a rolled-back transaction): on PostgreSQL, when no transaction of this
  database that began before the hole was seen is still open (`pg_stat_activity`), or at the latest
  after `hole_max_wait` seconds; when that check is unavailable, after `hole_grace` seconds. SQLite
  has one writer at a time, so commit order is id order and a hole is permanent at once.

Access: `sessionEvents` are USAGE data (`gateway.policy.row_scope`, agreements loaded once per
subscription); `statusChanges` are OPEN. An event the principal may not see is never offered.

Backpressure: each subscription buffers at most `queue_size` events it has not consumed yet
(default 1,000). One more and it is closed: its buffer is dropped at once, `on_overflow` is called
(the WebSocket is closed with code 4429, SSE ends with an `error` event; see `gateway.app`), and
the consumer gets `TooFarBehind` (or the stream simply ends, when `on_overflow` handled it). It
resumes with `after` = the last id it received. Dispatch never waits for a subscriber, so a slow
one slows no one else, and memory is bounded by subscriptions x `queue_size`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway import catalog
from gateway.auth import Principal
from gateway.broker import Broker
from gateway.db import connection
from gateway.errors import EvgateError
from gateway.models import Event
from gateway.policy import ALL_ROWS, DataClass, RowScope, allowed, needs_agreements, row_scope

log = logging.getLogger("evgate.streams")

SESSION_KINDS: frozenset[str] = frozenset(
    {"session.started", "session.updated", "session.completed", "session.aborted"}
)
STATUS_KINDS: frozenset[str] = frozenset({"evse.status_changed"})

# Close code of a WebSocket whose subscriber fell too far behind (4xxx: application codes).
CLOSE_TOO_FAR_BEHIND = 4429
TOO_FAR_BEHIND = "TOO_FAR_BEHIND"


class Stream(StrEnum):
    """The two event streams, by their GraphQL subscription field name."""

    SESSIONS = "sessionEvents"
    STATUS = "statusChanges"

    @property
    def kinds(self) -> frozenset[str]:
        return SESSION_KINDS if self is Stream.SESSIONS else STATUS_KINDS

    @property
    def data_class(self) -> DataClass:
        return DataClass.USAGE if self is Stream.SESSIONS else DataClass.OPEN


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One row of the event log."""

    id: int
    kind: str
    operator_id: str
    borough_code: str | None
    subject_id: str
    payload: dict[str, Any]
    created_at: datetime

    @property
    def evse_id(self) -> str | None:
        value = self.payload.get("evse")
        return value if isinstance(value, str) else None

    @classmethod
    def of(cls, row: dict[str, Any]) -> StreamEvent:
        return cls(
            id=int(row["id"]),
            kind=row["kind"],
            operator_id=row["operator_id"],
            borough_code=row["borough_code"],
            subject_id=row["subject_id"],
            payload=row["payload"] if isinstance(row["payload"], dict) else {},
            created_at=row["created_at"],
        )


COLUMNS = ("id", "kind", "operator_id", "borough_code", "subject_id", "payload", "created_at")


def _set(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


@dataclass(frozen=True, slots=True)
class EventWhere:
    """A subscription's filter: each given set must contain the event's value (None: any)."""

    operator_ids: frozenset[str] | None = None
    borough_codes: frozenset[str] | None = None
    evse_ids: frozenset[str] | None = None
    kinds: frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        operator_ids: Iterable[str] | None = None,
        borough_codes: Iterable[str] | None = None,
        evse_ids: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> EventWhere:
        return cls(_set(operator_ids), _set(borough_codes), _set(evse_ids), _set(kinds))

    def matches(self, ev: StreamEvent) -> bool:
        if self.kinds is not None and ev.kind not in self.kinds:
            return False
        if self.operator_ids is not None and ev.operator_id not in self.operator_ids:
            return False
        if self.borough_codes is not None and ev.borough_code not in self.borough_codes:
            return False
        return self.evse_ids is None or ev.evse_id in self.evse_ids


class TooFarBehind(Exception):
    """The subscriber did not keep up: resume with `after` = the last id it received."""

    def __init__(self, last_id: int | None) -> None:
        super().__init__(f"too far behind; resume with after={last_id if last_id is not None else ''}")
        self.last_id = last_id


class Subscriber:
    """One subscription's state in the hub: its filter, scope and bounded buffer."""

    def __init__(
        self,
        stream: Stream,
        where: EventWhere,
        scope: RowScope,
        bound: int,
        on_overflow: Callable[[TooFarBehind], Awaitable[None] | None] | None,
    ) -> None:
        self.kinds = stream.kinds if where.kinds is None else stream.kinds & where.kinds
        self.where = where
        self.scope = scope
        self.bound = bound
        self.on_overflow = on_overflow
        self.buffer: deque[StreamEvent] = deque()
        self.wake = asyncio.Event()
        self.failed: TooFarBehind | None = None
        self.last_id: int | None = None  # the last id yielded to the consumer
        self.closing: asyncio.Future[None] | None = None  # what on_overflow started (closing a socket)
        self.ended = False  # the hub stopped: the stream ends normally
        self.replaying = False  # reading the log before going live
        self.replay_further = False  # live events overflowed during the replay: read the log on

    def admits(self, ev: StreamEvent) -> bool:
        return ev.kind in self.kinds and self.where.matches(ev) and self.scope.admits(ev.operator_id, ev.borough_code)

    def offer(self, ev: StreamEvent) -> bool:
        """Buffer an event; False when the buffer was full (the subscriber is then failed).

        While the subscriber is still replaying the log, a full buffer is not a failure: the
        buffered events are in the log too, so they are dropped and the replay reaches further.
        """
        if len(self.buffer) >= self.bound:
            if self.replaying:
                self.buffer.clear()
                self.replay_further = True
                return True
            self.fail()
            return False
        self.buffer.append(ev)
        self.wake.set()
        return True

    def fail(self) -> None:
        self.failed = TooFarBehind(self.last_id)
        log.warning("streams: a subscriber fell %d events behind: closed (%s)", self.bound, self.failed)
        self.buffer.clear()  # the memory goes at once, whatever the consumer is doing
        self.wake.set()
        if self.on_overflow is not None:
            try:
                result = self.on_overflow(self.failed)
                if inspect.isawaitable(result):
                    self.closing = asyncio.ensure_future(result)
            except Exception:
                log.exception("streams: overflow callback failed")


START_SCAN = 10_000  # recent ids checked for holes when the hub starts (PostgreSQL)


class EventHub:
    """Reads the event log forward and fans new events out to subscribers (see the module doc)."""

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        queue_size: int = 1000,
        page_size: int = 500,
        poll_interval: float = 2.0,
        hole_grace: float = 10.0,
        hole_max_wait: float = 60.0,
    ) -> None:
        self.broker = broker
        self.queue_size = queue_size
        self.page_size = max(1, page_size)
        self.poll_interval = poll_interval
        self.hole_grace = hole_grace
        self.hole_max_wait = hole_max_wait
        self.position = 0  # every id <= position has been dispatched (or was a permanent hole)
        self.subscribers: set[Subscriber] = set()
        self.dispatched = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._hole: tuple[int, float, Any] | None = None  # (first missing id, monotonic, db time)
        self._postgres = False
        self._lock = asyncio.Lock()

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start at the end of the log (earlier events are reached by replay) and run."""
        conn = connection()
        self._postgres = conn.capabilities.dialect == "postgres"
        last = await Event.all().order_by("-id").limit(1).values_list("id", flat=True)
        self.position = int(last[0]) if last else 0
        if self._postgres and self.position:
            # Lower ids may still be in transactions that have not committed (PostgreSQL assigns
            # ids before commit): start below the first hole among the recent ids, so that the
            # hole logic waits for them (or learns they rolled back) instead of passing them by.
            floor = max(0, self.position - START_SCAN)
            ids = await Event.filter(id__gt=floor).order_by("id").values_list("id", flat=True)
            expected = floor + 1
            for event_id in ids:
                if event_id != expected:
                    self.position = expected - 1
                    break
                expected = event_id + 1
        self._tasks.append(asyncio.create_task(self._run(), name="evgate-event-hub"))
        if self.broker is not None:
            self._tasks.append(asyncio.create_task(self._listen(self.broker), name="evgate-event-hub-listen"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for sub in list(self.subscribers):
            sub.ended = True
            sub.wake.set()
        self.subscribers.clear()

    def notify(self, event_id: int | None = None) -> None:
        """Read the log now (events up to `event_id` are committed)."""
        self._wake.set()

    async def _listen(self, broker: Broker) -> None:
        async for event_id in broker.listen():
            self.notify(event_id)

    async def _run(self) -> None:
        while True:
            interval = min(self.poll_interval, 0.2) if self._hole is not None else self.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("streams: reading the event log failed; retrying")
                await asyncio.sleep(min(self.poll_interval, 1.0))

    # -- reading the log ---------------------------------------------------------------------

    async def catch_up(self, max_pages: int = 1000) -> int:
        """Dispatch every committed event after `position` (stopping at an open hole); returns how
        many were dispatched."""
        total = 0
        async with self._lock:
            for _ in range(max_pages):
                rows = await Event.filter(id__gt=self.position).order_by("id").limit(self.page_size).values(*COLUMNS)
                events = [StreamEvent.of(r) for r in rows]
                ready = await self._contiguous(events)
                self._dispatch(ready)
                total += len(ready)
                if len(ready) < len(events) or len(rows) < self.page_size:
                    break
                await asyncio.sleep(0)  # let consumers drain between pages
        return total

    async def _contiguous(self, events: list[StreamEvent]) -> list[StreamEvent]:
        """The leading events that follow `position` without an open hole; advances `position`."""
        ready: list[StreamEvent] = []
        for ev in events:
            if ev.id != self.position + 1 and not await self._hole_is_permanent(self.position + 1):
                break
            self.position = ev.id
            self._hole = None
            ready.append(ev)
        return ready

    async def _hole_is_permanent(self, missing: int) -> bool:
        """Whether the id `missing` (and the ones up to the next visible event) will never appear."""
        if not self._postgres:
            return True  # one writer at a time: commit order is id order
        now = time.monotonic()
        if self._hole is None or self._hole[0] != missing:
            db_now = None
            with contextlib.suppress(Exception):
                rows = await connection().execute_query_dict("SELECT clock_timestamp() AS now")
                db_now = rows[0]["now"]
            self._hole = (missing, now, db_now)
        _, seen, db_seen = self._hole
        waited = now - seen
        if waited >= self.hole_max_wait:
            log.warning("streams: skipping event id %s after %.0f s (never committed)", missing, waited)
            return True
        if db_seen is None:
            return waited >= self.hole_grace
        try:
            rows = await connection().execute_query_dict(
                # Client backends only: autovacuum and other workers never hold event ids.
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND (xact_start <= $1 "
                "OR (xact_start IS NULL AND query = '<insufficient privilege>'))",
                [db_seen],
            )
        except Exception:
            return waited >= self.hole_grace
        # No transaction that could hold the id is still open: it rolled back (or never wrote).
        return int(rows[0]["n"]) == 0

    def _dispatch(self, events: list[StreamEvent]) -> None:
        if not events:
            return
        self.dispatched += len(events)
        for sub in list(self.subscribers):
            for ev in events:
                if sub.admits(ev) and not sub.offer(ev):
                    self.subscribers.discard(sub)
                    break

    # -- subscribing -------------------------------------------------------------------------

    async def scope_for(self, stream: Stream, principal: Principal) -> RowScope:
        """The events of `stream` `principal` may see; EvgateError when none at all."""
        if stream.data_class is DataClass.OPEN:
            return ALL_ROWS
        agreements = await catalog.sharing_agreements() if needs_agreements(principal, stream.data_class) else {}
        decision = allowed(principal, stream.data_class, agreements=agreements)
        if not decision:
            raise EvgateError(decision.code, f"{stream.value}: {decision.reason}")  # type: ignore[arg-type]
        return row_scope(principal, stream.data_class, agreements)

    async def subscribe(
        self,
        stream: Stream,
        where: EventWhere,
        after: int | None,
        principal: Principal,
        *,
        on_overflow: Callable[[TooFarBehind], Awaitable[None] | None] | None = None,
        scope: RowScope | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """The events of `stream` matching `where` that `principal` may see: those after `after`
        from the log, then live ones (see the module docstring). Raises EvgateError at once when
        the principal may see none, TooFarBehind when it falls behind (unless `on_overflow`)."""
        if scope is None:
            scope = await self.scope_for(stream, principal)
        sub = Subscriber(stream, where, scope, self.queue_size, on_overflow)
        return self._iterate(sub, after)

    async def _iterate(self, sub: Subscriber, after: int | None) -> AsyncIterator[StreamEvent]:
        self.subscribers.add(sub)  # from here on, live events (> start) are buffered
        start = self.position
        try:
            if after is not None and after < start and sub.kinds:
                sub.replaying = True
                cursor, until = after, start
                for _ in range(10_000):  # each round ends at the hub's position when it began
                    async for ev in self._replay(sub, cursor, until):
                        sub.last_id = ev.id
                        yield ev
                        if sub.failed is not None:
                            break
                    if not sub.replay_further or sub.failed is not None:
                        break
                    # Live events overflowed while we read: those up to the hub's position now are
                    # in the log; later ones are buffered again (dispatch follows the position).
                    sub.replay_further = False
                    cursor, until = until, self.position
                    start = until
                sub.replaying = False
            sub.last_id = max(sub.last_id or 0, after or 0, start)
            while sub.failed is None and not sub.ended:
                if not sub.buffer:
                    sub.wake.clear()
                    await sub.wake.wait()
                    continue
                ev = sub.buffer.popleft()
                if ev.id <= sub.last_id:
                    continue  # replayed already, or before the cursor
                sub.last_id = ev.id
                yield ev
            if sub.failed is None:
                return  # the hub stopped (the server is shutting down)
            if sub.on_overflow is None:
                raise sub.failed
            if sub.closing is not None:  # let the connection close before the stream ends
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(sub.closing), 10)
        finally:
            self.subscribers.discard(sub)
            sub.buffer.clear()

    async def _replay(self, sub: Subscriber, after: int, until: int) -> AsyncIterator[StreamEvent]:
        """The admitted events `after < id <= until`, from the log in pages."""
        cursor = after
        for _ in range(1_000_000):  # bounded by `until`; the count bound is a safety net
            query = Event.filter(id__gt=cursor, id__lte=until, kind__in=sorted(sub.kinds))
            if sub.where.operator_ids is not None:
                query = query.filter(operator_id__in=sorted(sub.where.operator_ids))
            if sub.scope.operator_ids is not None:
                query = query.filter(operator_id__in=sorted(sub.scope.operator_ids))
            if sub.where.borough_codes is not None:
                query = query.filter(borough_code__in=sorted(sub.where.borough_codes))
            if sub.scope.borough_codes is not None:
                query = query.filter(borough_code__in=sorted(sub.scope.borough_codes))
            rows = await query.order_by("id").limit(self.page_size).values(*COLUMNS)
            for row in rows:
                ev = StreamEvent.of(row)
                cursor = ev.id
                if sub.admits(ev):
                    yield ev
                if sub.failed is not None:
                    return
            if len(rows) < self.page_size:
                return


async def settled_position(hub: EventHub | None) -> int | None:
    """The highest id below which every event is committed (or known never to be), reading the
    log first; None without a hub (the app was built without its lifespan)."""
    if hub is None:
        return None
    await hub.catch_up()
    return hub.position
