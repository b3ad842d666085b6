"""OICP and Open Charge Map end to end: simulators over TLS (mutual TLS for OICP) → pollers →
database → GraphQL, compared with what the simulators hold.

The OICP operator's EVSEs and live statuses equal its PullEvseData and PullEvseStatus; every Open
Charge Map point of interest is stored, exactly those describing an operator's site are marked as
its duplicates (the simulator knows which), and lists hide them unless asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from gateway.demo import simulated_operators
from gateway.models import Evse, Location
from simulator.cluster import Simulation, start_simulation
from tests.conftest import TestDb
from tests.support import Gateway, shared_path, simulated_gateway

BOROUGHS = shared_path("data", "london_boroughs_gla_wgs84.geojson")
OICP_STATUS = {
    "Available": "AVAILABLE",
    "Occupied": "CHARGING",
    "Reserved": "RESERVED",
    "OutOfService": "OUTOFORDER",
    "Unknown": "UNKNOWN",
    "EvseNotFound": "UNKNOWN",
}
OCM_COUNT = 'query($all: Boolean) { locations(filter: {operatorIds: ["ocm"], includeDuplicates: $all}) { totalCount } }'


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(
        seed=21,
        operators=3,
        oicp_operators=1,
        ocm=True,
        evses=300,
        speed=0.0,
        history_days=1,
        boroughs_geojson=BOROUGHS,
    )
    try:
        yield simulation
    finally:
        await simulation.stop()


@pytest.fixture
async def gateway(db: TestDb, sim: Simulation) -> AsyncIterator[Gateway]:
    operators = simulated_operators(sim, backfill=timedelta(days=1).total_seconds())
    async for gw in simulated_gateway(db.url, operators):
        await gw.runtime.sync_all()
        yield gw


async def test_the_oicp_operators_evses_and_statuses_equal_its_own(gateway: Gateway, sim: Simulation) -> None:
    oicp = next(op for op in sim.operators if op.protocol == "oicp")
    truth = {r["EvseID"] for r in sim.truth_oicp_evse_data(oicp.id)}
    statuses = sim.truth_oicp_statuses(oicp.id)
    stored = dict(await Evse.filter(operator_id=oicp.id).values_list("uid", "status"))
    assert len(truth) > 50 and set(stored) == truth
    assert stored == {uid: OICP_STATUS[statuses[uid]] for uid in truth}
    # Sites are EVSEs grouped by charging pool: as many as the operator has locations.
    assert await Location.filter(operator_id=oicp.id).count() == len(sim.truth_locations(oicp.id))


async def test_open_charge_map_points_are_stored_and_duplicates_marked_exactly(
    gateway: Gateway, sim: Simulation
) -> None:
    pois = sim.truth_ocm_pois()
    duplicates = sim.ocm_duplicates()
    assert len(pois) > 100 and 0 < len(duplicates) < len(pois)
    marks = dict(await Location.filter(operator_id="ocm").values_list("source_id", "duplicate_of"))
    assert set(marks) == {str(p["ID"]) for p in pois}

    def operator_key(operator_id: str, location_id: str) -> str:
        if sim.operator(operator_id).protocol == "oicp":  # sites are keyed by their charging pool
            return next(k for k in gateway_locations[operator_id] if k.endswith(f"*P{location_id}"))
        return f"{operator_id}/{location_id}"

    gateway_locations = {
        op.id: set(await Location.filter(operator_id=op.id).values_list("id", flat=True)) for op in sim.operators
    }
    expected = {str(poi): operator_key(op, loc) for poi, (op, loc) in duplicates.items()}
    assert {poi: target for poi, target in marks.items() if target is not None} == expected

    shown = (await gateway.query(OCM_COUNT, {"all": False}))["locations"]["totalCount"]
    everything = (await gateway.query(OCM_COUNT, {"all": True}))["locations"]["totalCount"]
    assert (shown, everything) == (len(pois) - len(duplicates), len(pois))
