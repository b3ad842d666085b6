"""The poll scheduler: catch-up from the cursor in committed windows, backoff, page prefetch."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from gateway.config import GatewayConfig
from gateway.db import close_db
from gateway.demo import simulated_operators
from gateway.models import Session, SyncState
from gateway.runtime import start_runtime
from gateway.scheduler import BACKOFF_CAP, backoff_delay, prefetched
from simulator.cluster import Simulation, start_simulation
from tests.conftest import TestDb
from tests.support import SECRET_KEYS, shared_path

BOROUGHS = shared_path("data", "london_boroughs_gla_wgs84.geojson")


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(seed=21, evses=300, history_days=2, speed=0.0, boroughs_geojson=BOROUGHS)
    try:
        yield simulation
    finally:
        await simulation.stop()


async def test_catch_up_from_the_cursor_in_windows(db: TestDb, sim: Simulation) -> None:
    await close_db()
    ops = simulated_operators(sim, backfill=timedelta(days=3).total_seconds(), window=3600.0, modules=("sessions",))
    config = GatewayConfig(
        database_url=db.url, pseudonym_key="k", secret_keys=SECRET_KEYS, boroughs_geojson=str(BOROUGHS), operators=ops
    )
    runtime = await start_runtime(config, poll=False)
    try:
        op = sim.operators[0]
        poller = runtime.pollers[op.id]
        first = await poller.sync_module("sessions")
        assert first.windows == 72  # three days back, one-hour windows
        t0 = sim.clock.now().replace(microsecond=0)
        assert first.cursor == t0
        assert await Session.filter(operator_id=op.id).count() == sim.count(op.id, "sessions", date_to=t0)

        # six hours pass at the operator while the gateway is away: one run catches them up
        sim.clock.advance(timedelta(hours=6))
        second = await poller.sync_module("sessions")
        assert second.windows == 6 and second.cursor == t0 + timedelta(hours=6)
        changed = sim.count(op.id, "sessions", date_from=t0, date_to=t0 + timedelta(hours=6))
        assert changed > 0 and second.ingest.written == changed
        assert await Session.filter(operator_id=op.id).count() == sim.count(
            op.id, "sessions", date_to=t0 + timedelta(hours=6)
        )
        state = await SyncState.get(id=f"{op.id}:sessions")
        assert state.cursor == t0 + timedelta(hours=6) and state.last_error_code is None
        assert state.records_ingested == first.ingest.written + second.ingest.written
    finally:
        await runtime.stop()


def test_backoff_grows_is_jittered_capped_and_honours_retry_after() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, rng=rng) for n in range(1, 12)]
    assert delays[0] < delays[3] < delays[6]
    assert max(delays) <= BACKOFF_CAP * 1.5
    assert len({round(d, 6) for d in delays}) == len(delays)  # jitter: no two alike
    assert backoff_delay(1, retry_after=120.0, rng=rng) == 120.0


async def test_prefetch_keeps_order_and_raises_the_producers_error() -> None:
    async def pages() -> AsyncIterator[int]:
        for i in range(5):
            yield i
        raise RuntimeError("operator went away")

    seen = []
    with pytest.raises(RuntimeError, match="went away"):
        async for page in prefetched(pages()):
            seen.append(page)
    assert seen == [0, 1, 2, 3, 4]
