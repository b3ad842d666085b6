"""One poller per operator across gateway processes (`gateway.lease`), on SQLite and PostgreSQL:
of two contenders one wins; an expired lease is taken over; a stale holder's window does not
commit, nor one of an earlier acquisition; a released lease is free at once; a dead holder of this
machine is replaced at once."""

from __future__ import annotations

import asyncio
import contextvars
from datetime import UTC, datetime, timedelta

import pytest
from tortoise.transactions import in_transaction

from gateway.lease import Lease, LeaseLost, holder_is_dead, process_identity
from gateway.models import PollerLease, SyncState
from tests.conftest import TestDb


async def _expire(operator_id: str) -> None:
    """The holder stalled past its lease (no waiting for a real ttl)."""
    await PollerLease.filter(operator_id=operator_id).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))


async def test_of_two_contenders_exactly_one_wins(db: TestDb) -> None:
    for round_ in range(5):
        a, b = Lease(f"op{round_}", "host:1:a:", 30), Lease(f"op{round_}", "host:2:b:", 30)
        won = await asyncio.gather(a.try_acquire(), b.try_acquire())
        assert sorted(won) == [False, True]
        assert a.is_held() != b.is_held()
        winner = a if won[0] else b
        assert await PollerLease.get(operator_id=f"op{round_}").values_list("holder", flat=True) == winner.holder
        # Renewing keeps it; the other still cannot take it.
        assert await winner.try_acquire()
        assert not await (b if winner is a else a).try_acquire()


async def test_an_expired_lease_is_taken_over_and_the_old_holder_knows(db: TestDb) -> None:
    a, b = Lease("alpha", "host:1:a:", 30), Lease("alpha", "host:2:b:", 30)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    await _expire("alpha")
    assert await b.try_acquire()
    assert not await a.try_acquire()  # renewing fails: it was taken over
    assert not a.is_held() and b.is_held()


async def test_a_stale_holders_window_does_not_commit(db: TestDb) -> None:
    a, b = Lease("alpha", "host:1:a:", 30), Lease("alpha", "host:2:b:", 30)
    assert await a.try_acquire()
    cursor = datetime(2026, 1, 1, tzinfo=UTC)

    async def window(lease: Lease, at: datetime) -> None:
        async with in_transaction() as conn:
            await SyncState.filter(id="alpha:sessions").using_db(conn).update(cursor=at)
            await lease.fence(conn)

    await SyncState.create(id="alpha:sessions", operator_id="alpha", module="sessions")
    await window(a, cursor)  # held: commits
    assert (await SyncState.get(id="alpha:sessions")).cursor == cursor
    # a stalls past its lease; b takes over and commits a window of its own.
    await _expire("alpha")
    assert await b.try_acquire()
    await window(b, cursor + timedelta(hours=2))
    # a wakes up with its window still open: the fence rolls it back, cursor and all.
    with pytest.raises(LeaseLost):
        await window(a, cursor + timedelta(hours=1))
    assert (await SyncState.get(id="alpha:sessions")).cursor == cursor + timedelta(hours=2)
    assert not a.is_held()
    # Expired but not taken over: nobody else can have written, so a long window still commits.
    await _expire("alpha")
    await window(b, cursor + timedelta(hours=3))
    assert (await SyncState.get(id="alpha:sessions")).cursor == cursor + timedelta(hours=3)


async def test_a_window_of_an_earlier_acquisition_does_not_commit_under_a_later_one(db: TestDb) -> None:
    """Lost and won back while a window was open: the window's run held the old acquisition."""
    a, b = Lease("alpha", "host:1:a:", 30), Lease("alpha", "host:2:b:", 30)
    assert await a.try_acquire()
    started_under = a.token
    await _expire("alpha")
    assert await b.try_acquire()  # b took over (and may have committed windows) ...
    await _expire("alpha")
    assert await a.try_acquire()  # ... then a won it back
    assert a.token != started_under
    async with in_transaction() as conn:
        with pytest.raises(LeaseLost):
            await a.fence(conn, started_under)
    async with in_transaction() as conn:
        await a.fence(conn)  # a window of the current acquisition commits


async def test_a_takeover_waits_for_a_window_past_its_fence(db: TestDb) -> None:
    """Between the fence and the commit the lease row is locked: a takeover cannot slip in."""
    if db.kind == "sqlite":
        pytest.skip("SQLite has one writer: the takeover cannot even start before the commit")
    a, b = Lease("alpha", "host:1:a:", 1), Lease("alpha", "host:2:b:", 1)
    assert await a.try_acquire()
    async with in_transaction() as conn:
        await a.fence(conn)  # renews to now + 1 s and locks the row until commit
        await asyncio.sleep(1.5)  # stalled past the lease, fence passed: b waits for our commit
        # Another process: its own connection (a task copying our context would share our transaction).
        taking = asyncio.create_task(b.try_acquire(), context=contextvars.Context())
        await asyncio.sleep(0.3)
        assert not taking.done()
    assert await taking  # expired by now, after our commit: taken over
    assert not await a.try_acquire()


async def test_release_frees_the_lease_at_once(db: TestDb) -> None:
    a, b = Lease("alpha", "host:1:a:", 30), Lease("alpha", "host:2:b:", 30)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    await a.release()
    assert not a.is_held()
    assert await b.try_acquire()


async def test_a_dead_holder_of_this_machine_is_replaced_at_once(db: TestDb) -> None:
    me = process_identity()
    host, _pid, rand, scope = me.split(":")
    dead = f"{host}:4194303:{rand}:{scope}"  # above any real pid
    assert holder_is_dead(dead) and not holder_is_dead(me)
    assert not holder_is_dead(f"{host}:4194303:{rand}:")  # unknown scope: never presumed dead
    ghost = Lease("alpha", dead, 30)
    assert await ghost.try_acquire()
    assert await Lease("alpha", me, 30).try_acquire()


async def test_renewal_keeps_the_lease_and_stop_releases_it(db: TestDb) -> None:
    a, b = Lease("alpha", "host:1:a:", 1.5), Lease("alpha", "host:2:b:", 1.5)
    a.start()
    try:
        await asyncio.wait_for(a.held.wait(), 5)
        await asyncio.sleep(2.5)  # beyond the lifetime: renewed meanwhile
        assert a.is_held()
        assert not await b.try_acquire()
    finally:
        await a.stop()
    assert await b.try_acquire()
