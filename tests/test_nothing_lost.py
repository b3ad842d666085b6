"""Nothing lost: an operator down for the middle of three days is caught up exactly, OCPI and OICP.

A simulated OCPI operator and a simulated OICP operator (mutual TLS) run on a frozen clock that the
test moves on six hours at a time, polling after each step, as the scheduler would. For the whole
second day one of them refuses connections (a real outage: its listener is down). The gateway
keeps polling (and failing, with the code in sync health) and keeps serving queries. When the
operator returns, one more poll catches up from the cursor, and the gateway then holds exactly the
sessions and CDRs the operator holds for the three days: no gap, no duplicate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from adapters.http import UpstreamError
from gateway.demo import simulated_operators
from simulator.cluster import Simulation, start_simulation
from tests.conftest import TestDb
from tests.support import (
    Gateway,
    assert_holds_exactly_the_operators_records,
    new_api_key,
    shared_path,
    simulated_gateway,
)

BOROUGHS = shared_path("data", "london_boroughs_gla_wgs84.geojson")
ADMIN = new_api_key()
STEP = timedelta(hours=6)
BACKFILL = timedelta(hours=6)
OCPI, OICP = "alpha", "beta"
MODULES = {OCPI: ("locations", "sessions", "cdrs"), OICP: ("locations", "statuses", "cdrs")}

HEALTH = "query($op: String) { syncHealth(operatorId: $op) { module healthy lastError { code } cursor } }"
SITES = "query($op: String!) { locations(filter: {operatorIds: [$op]}, first: 5) { totalCount } }"


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(
        seed=11,
        operators=2,
        oicp_operators=1,
        evses=160,
        speed=0.0,
        lag=timedelta(days=3, hours=1),
        history_days=1,
        boroughs_geojson=BOROUGHS,
    )
    try:
        yield simulation
    finally:
        await simulation.stop()


@pytest.fixture
async def gateway(db: TestDb, sim: Simulation) -> AsyncIterator[Gateway]:
    operators = simulated_operators(sim, backfill=BACKFILL.total_seconds(), window=STEP.total_seconds())
    async for gw in simulated_gateway(db.url, operators, admin=ADMIN):
        yield gw


def window_end(sim: Simulation) -> datetime:
    """The end of the gateway's last window on a frozen operator clock (exclusive, whole second)."""
    return sim.clock.now().replace(microsecond=0)


async def poll(gw: Gateway, operator_id: str) -> list[str]:
    """One polling round of an operator, module by module; the error codes of the modules that failed."""
    failed = []
    for module in MODULES[operator_id]:
        try:
            await gw.runtime.pollers[operator_id].sync_module(module)  # type: ignore[arg-type]
        except UpstreamError as exc:
            failed.append(exc.code)
    return failed


@pytest.mark.parametrize("down", [OCPI, OICP])
async def test_a_day_long_outage_is_caught_up_with_no_gap_and_no_duplicate(
    gateway: Gateway, sim: Simulation, down: str
) -> None:
    up = OICP if down == OCPI else OCPI
    first_from: dict[str, datetime] = {}
    for step in range(12):  # three days, six hours at a time
        sim.clock.advance(STEP)
        if step == 4:  # the second day begins: the operator goes down
            await sim.faults[down].apply([{"kind": "outage"}])
        if step == 8:  # the third day: it is back
            await sim.faults[down].clear()
        for op in (up, down):
            first_from.setdefault(op, window_end(sim) - BACKFILL)
            failed = await poll(gateway, op)
            if op == down and 4 <= step < 8:
                assert failed == ["UPSTREAM_UNAVAILABLE"] * len(MODULES[op])
            else:
                assert failed == [], (op, step, failed)
        if 4 <= step < 8:
            # While it is down the gateway serves what it has, and sync health says what is wrong.
            sites = (await gateway.query(SITES, {"op": down}))["locations"]["totalCount"]
            assert sites > 0
            health = (await gateway.query(HEALTH, {"op": down}, ADMIN))["syncHealth"]
            assert {h["lastError"]["code"] for h in health} == {"UPSTREAM_UNAVAILABLE"}
            assert not any(h["healthy"] for h in health)
    health = (await gateway.query(HEALTH, {"op": down}, ADMIN))["syncHealth"]
    assert all(h["healthy"] for h in health) and {h["lastError"]["code"] for h in health} == {"UPSTREAM_UNAVAILABLE"}

    # The OICP operator only ever answered a client presenting the certificate configured for it.
    assert sim.oicp_server(OICP).last_client_cn == f"evgate {sim.operator(OICP).provider_id} for {OICP}"
    end = window_end(sim)
    for op in (OCPI, OICP):
        await assert_holds_exactly_the_operators_records(sim, op, first_from[op], end)
