"""The poll scheduler: per operator and module, catch up from the cursor in committed windows.

A run covers [cursor, operator now) in windows of bounded length; each window is crawled page by
page and committed with its new cursor in one transaction before the next starts, so a crash
re-crawls at most one window and an outage is caught up from the cursor when the operator returns.
Modules run at their own cadence with splay; failures back off exponentially with jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from tortoise.transactions import in_transaction

from adapters.http import UpstreamError
from adapters.model import Module, Page
from gateway.cache import bump_data_version
from gateway.config import OperatorConfig
from gateway.dedupe import mark_duplicates
from gateway.errors import ErrorCode
from gateway.ingest import Ingestor, IngestResult
from gateway.lease import Lease, LeaseLost
from gateway.models import Event, SyncError, SyncState

log = logging.getLogger("evgate.scheduler")
T = TypeVar("T")

# Modules whose first run crawls everything the operator has (no lower bound): the current state
# of sites and prices matters whatever their age. Sessions and CDRs start `backfill` back.
FULL_FIRST_RUN = {"locations", "tariffs"}
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
ERRORS_KEPT = 50  # recent errors kept per operator and module for sync health


class Adapter(Protocol):
    """What the scheduler needs of a protocol adapter (OCPI, OICP, Open Charge Map)."""

    protocol: str

    async def server_now(self) -> datetime | None: ...

    def crawl(self, module: Module, date_from: datetime | None, date_to: datetime) -> AsyncIterator[Page]: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _floor_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def backoff_delay(failures: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait after `failures` consecutive failures: exponential, jittered, capped.

    An operator's `Retry-After` wins when it asks for longer.
    """
    rng = rng or random.Random()
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, failures - 1)) * rng.uniform(0.5, 1.5)
    return max(delay, retry_after or 0.0)


@dataclass
class RunResult:
    """What one catch-up run of one module did."""

    windows: int
    ingest: IngestResult
    cursor: datetime | None


async def prefetched(pages: AsyncIterator[T], depth: int = 1) -> AsyncIterator[T]:
    """Iterate `pages` while fetching up to `depth` pages ahead in the background.

    The next page downloads while the current one is written, so the operator's latency and our
    database time overlap; the bounded queue keeps memory to `depth` pages (streaming).
    """
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=depth)

    async def pump() -> None:
        try:
            async for page in pages:
                await queue.put(("page", page))
            await queue.put(("end", None))
        except Exception as exc:  # handed to the consumer, which re-raises it in its own task
            await queue.put(("error", exc))

    task = asyncio.create_task(pump())
    try:
        while True:
            kind, item = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def state_id(operator_id: str, module: str) -> str:
    """The SyncState key of an operator's module."""
    return f"{operator_id}:{module}"


class OperatorPoller:
    """Polls every configured module of one operator."""

    def __init__(
        self,
        config: OperatorConfig,
        adapter: Adapter,
        ingestor: Ingestor,
        *,
        lease: Lease | None = None,
        publish: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.ingestor = ingestor
        # With a lease (several gateway processes), only its holder polls, and a window commits
        # only while it is held (`gateway.lease`). `publish` announces committed event ids (broker).
        self.lease = lease
        self.publish = publish
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random()
        self.last_delay: dict[str, float] = {}  # module -> the delay before its next run

    async def _state(self, module: str) -> SyncState:
        state, _ = await SyncState.get_or_create(
            id=state_id(self.config.id, module), defaults={"operator_id": self.config.id, "module": module}
        )
        return state

    async def _window_end(self, state: SyncState) -> datetime:
        """The operator's now (its envelope timestamp or Date header), less the safety lag; the
        offset between its clock and ours is kept for sync health."""
        asked = _utcnow()
        server = await self.adapter.server_now()
        now = server if server is not None else asked
        await SyncState.filter(id=state.id).update(clock_offset=(now - asked).total_seconds())
        return _floor_second(now - timedelta(seconds=self.config.safety_lag))

    async def sync_module(self, module: Module) -> RunResult:
        """One catch-up run of a module, from its cursor to the operator's now.

        Raises UpstreamError after recording it in the module's sync state; windows committed
        before the failure stay committed.
        """
        state = await self._state(module)
        total = IngestResult()
        windows = 0
        # The acquisition this run works under: a window commits only while it still holds.
        token = self.lease.token if self.lease is not None else None
        try:
            upper = await self._window_end(state)
            cursor = state.cursor
            if cursor is None and module not in FULL_FIRST_RUN:
                cursor = _floor_second(upper - timedelta(seconds=self.config.backfill))
            while True:
                if cursor is not None and cursor >= upper:
                    break
                end = upper if cursor is None else min(upper, cursor + timedelta(seconds=self.config.window))
                total.add(await self._ingest_window(state, module, cursor, end, lease_token=token))
                windows += 1
                cursor = end
        except UpstreamError as exc:
            self.last_delay[module] = await self.record_failure(module, exc.code, exc.message, exc.retry_after)
            log.warning("%s %s: %s", self.config.id, module, exc.code)
            raise
        await SyncState.filter(id=state.id).update(last_attempt=_utcnow(), consecutive_failures=0, next_attempt=None)
        bump_data_version()
        return RunResult(windows=windows, ingest=total, cursor=cursor)

    async def record_failure(self, module: str, code: str, message: str, retry_after: float | None = None) -> float:
        """Record a failed run in sync health: the error, the failure count and the next attempt.

        Returns the backoff delay in seconds (exponential with jitter, at least `Retry-After`).
        Windows committed before the failure keep their cursor; the next run resumes there.
        """
        now = _utcnow()
        sid = state_id(self.config.id, module)
        state = await SyncState.get(id=sid)
        failures = state.consecutive_failures + 1
        delay = backoff_delay(failures, retry_after, self._rng)
        await SyncState.filter(id=sid).update(
            last_attempt=now,
            last_error_at=now,
            last_error_code=code,
            last_error_message=message[:2000],
            consecutive_failures=failures,
            retry_after=retry_after,
            next_attempt=now + timedelta(seconds=delay),
        )
        await self._log_error(module, code, message, retry_after, now)
        bump_data_version()  # sync health changed: cached answers are stale (gateway.cache)
        return delay

    async def _log_error(
        self, module: str, code: str, message: str, retry_after: float | None, at: datetime, conn: Any = None
    ) -> None:
        """Append to the recent-errors log of this module and trim it to ERRORS_KEPT entries."""
        await SyncError.create(
            operator_id=self.config.id,
            module=module,
            code=code,
            message=message[:2000],
            retry_after=retry_after,
            at=at,
            using_db=conn,
        )
        stale = (
            await SyncError.filter(operator_id=self.config.id, module=module)
            .using_db(conn)
            .order_by("-id")
            .offset(ERRORS_KEPT)
            .values_list("id", flat=True)
        )
        if stale:
            await SyncError.filter(id__in=list(stale)).using_db(conn).delete()

    async def _ingest_window(
        self, state: SyncState, module: Module, start: datetime | None, end: datetime, lease_token: str | None = None
    ) -> IngestResult:
        """Crawl one window and commit its records with the new cursor, all or nothing.

        The first page is fetched before the transaction opens, so that on SQLite (one writer at a
        time) other operators' windows commit while this one waits for its operator.
        """
        result = IngestResult()
        started = _utcnow()
        pages = prefetched(self.adapter.crawl(module, start, end))
        try:
            first = await anext(pages, None)
            async with in_transaction() as conn:
                if conn.capabilities.dialect == "postgres":
                    # Plan each lookup with its real parameters: a generic plan cached while a table
                    # was small (first backfill) keeps scanning it whole as it grows.
                    await conn.execute_script("SET LOCAL plan_cache_mode = force_custom_plan")
                if first is not None:
                    result.add(await self.ingestor.ingest_page(first, conn))
                    async for page in pages:
                        result.add(await self.ingestor.ingest_page(page, conn))
                if module == "locations" and result.written:
                    # Sites that moved, appeared or came from an aggregator are matched again, in this
                    # transaction, so a duplicate is never visible between commit and the next run.
                    await mark_duplicates(conn, changed_since=started)
                await self._commit_cursor(state, end, result, conn)
                if self.lease is not None:
                    # Last statement before the commit: still the holder, and the lease row stays
                    # locked until the commit, so no takeover can slip in between (gateway.lease).
                    await self.lease.fence(conn, lease_token or "")
            if result.events:
                await self._announce()
            if module == "locations" and result.written:
                # Once more after commit: a window of another operator committing at the same time
                # (PostgreSQL) was invisible inside; now both are, whichever finished last.
                await mark_duplicates(changed_since=started)
            bump_data_version()  # committed: GraphQL answers cached before now are stale (gateway.cache)
        finally:
            await pages.aclose()
        return result

    async def _announce(self) -> None:
        """Tell the broker that events up to the highest id are committed (after the commit)."""
        if self.publish is None:
            return
        try:
            highest = await Event.all().order_by("-id").limit(1).values_list("id", flat=True)
            if highest:
                await self.publish(int(highest[0]))
        except Exception:  # a lost notification costs latency, never an event (gateway.broker)
            log.warning("%s: could not announce committed events", self.config.id, exc_info=True)

    async def _commit_cursor(self, state: SyncState, end: datetime, result: IngestResult, conn: Any) -> None:
        """Advance the cursor and counters on `conn`, in the window's transaction."""
        now = _utcnow()
        state.cursor = end
        state.last_success = now
        state.last_attempt = now
        state.records_ingested += result.written
        state.records_quarantined += result.quarantined
        # Only what a window changes: the row's other columns (clock offset, failures) are written
        # apart, and this object's copies of them may be stale.
        await state.save(
            using_db=conn,
            update_fields=["cursor", "last_success", "last_attempt", "records_ingested", "records_quarantined"],
        )
        if result.quarantined:
            # The window succeeded, but bad records came with it: sync health says so.
            message = f"{result.quarantined} record(s) quarantined in the window ending {end.isoformat()}"
            await self._log_error(state.module, ErrorCode.RECORD_INVALID.value, message, None, now, conn)

    def start(self) -> None:
        """Start one background loop per module (and the lease's renewal, if any)."""
        if self.lease is not None:
            self.lease.start()
        for module in self.config.modules:
            self._tasks.append(asyncio.create_task(self._loop(module), name=f"poll:{self.config.id}:{module}"))

    async def stop(self) -> None:
        """Cancel the loops and wait for them to finish."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.lease is not None:
            await self.lease.stop()  # released: another process takes over at once

    async def _loop(self, module: Module) -> None:
        cadence = self.config.cadences.get(module, 300.0)
        rng = self._rng
        # Splay: operators and modules do not all fire at once, but the first run comes soon.
        await asyncio.sleep(rng.uniform(0, min(cadence * 0.1, 5.0)))
        while True:
            if self.lease is not None and not self.lease.is_held():
                await asyncio.sleep(min(1.0, self.lease.ttl / 6))  # another process polls
                continue
            try:
                await self.sync_module(module)
                delay = cadence * rng.uniform(0.9, 1.1)
            except LeaseLost:
                log.info("%s %s: lease lost, window rolled back; another process polls", self.config.id, module)
                continue
            except UpstreamError:
                delay = self.last_delay[module]  # recorded with the failure: backoff, Retry-After
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop polling of every other module
                log.exception("%s %s: unexpected failure", self.config.id, module)
                delay = BACKOFF_CAP
                with contextlib.suppress(Exception):
                    delay = await self.record_failure(
                        module, ErrorCode.INTERNAL_SERVER_ERROR.value, f"{type(exc).__name__} in the gateway"
                    )
            await asyncio.sleep(delay)
