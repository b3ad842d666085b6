"""End to end: simulated OCPI operators over TLS -> poller -> database -> GraphQL over real HTTP.

Every count and every borough is compared with the simulator's own ground truth, for every operator,
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from adapters.http import UpstreamError
from gateway.demo import simulated_operators
from gateway.models import (
    Cdr,
    Connector,
    Event,
    Evse,
    Location,
    QuarantinedRecord,
    Session,
    StatusObservation,
    SyncState,
    Tariff,
)
from simulator.cluster import Simulation, start_simulation
from tests.conftest import TestDb
from tests.support import (
    Gateway,
    new_api_key,
    shared_path,
    simulated_gateway,
)

BOROUGHS = shared_path("data", "london_boroughs_gla_wgs84.geojson")
ADMIN = new_api_key()
EVER = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(seed=5, evses=1500, history_days=2, speed=0.0, boroughs_geojson=BOROUGHS)
    try:
        yield simulation
    finally:
        await simulation.stop()


async def _gateway(db: TestDb, sim: Simulation) -> AsyncIterator[Gateway]:
    operators = simulated_operators(sim, backfill=timedelta(days=4).total_seconds())
    async for gw in simulated_gateway(db.url, operators, admin=ADMIN):
        yield gw


@pytest.fixture
async def gateway(db: TestDb, sim: Simulation) -> AsyncIterator[Gateway]:
    async for gw in _gateway(db, sim):
        yield gw


LOCATIONS_PAGE = """
query($filter: LocationFilter, $after: String) {
  locations(filter: $filter, first: 100, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node {
      id name address coordinates { latitude longitude } borough { code }
      provenance { operatorId protocol sourceId fetchedAt lastUpdated }
      evses { id uid status connectors { id standard maxPowerKw } }
    } }
  }
}"""


async def all_locations(gw: Gateway, flt: dict[str, Any]) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    for _ in range(100):
        page = (await gw.query(LOCATIONS_PAGE, {"filter": flt, "after": after}))["locations"]
        nodes.extend(e["node"] for e in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            assert len(nodes) == page["totalCount"]
            return nodes
        after = page["pageInfo"]["endCursor"]
    raise AssertionError("pagination did not end")


def window_end(sim: Simulation) -> datetime:
    """Where the gateway's windows end on a frozen operator clock: its current whole second, exclusive.

    A record stamped in that very second is the next run's; the truth is compared up to there.
    """
    return sim.clock.now().replace(microsecond=0)


async def test_counts_equal_the_simulators_for_every_operator(gateway: Gateway, sim: Simulation) -> None:
    await gateway.runtime.sync_all()
    end = window_end(sim)
    for op in sim.operators:
        truth = sim.truth_locations(op.id, date_to=end)
        nodes = await all_locations(gateway, {"operatorIds": [op.id]})
        assert {n["provenance"]["sourceId"] for n in nodes} == {loc["id"] for loc in truth}
        assert sum(len(n["evses"]) for n in nodes) == sum(len(loc["evses"]) for loc in truth)
        assert sum(len(e["connectors"]) for n in nodes for e in n["evses"]) == sum(
            len(e["connectors"]) for loc in truth for e in loc["evses"]
        )
        # content, not only counts: live status of every EVSE and provenance of every location
        truth_status = {(loc["id"], e["uid"]): e["status"] for loc in truth for e in loc["evses"]}
        got_status = {(n["provenance"]["sourceId"], e["uid"]): e["status"] for n in nodes for e in n["evses"]}
        assert got_status == truth_status
        assert {n["provenance"]["operatorId"] for n in nodes} == {op.id}
        assert {n["provenance"]["protocol"] for n in nodes} == {"ocpi"}

        filt = {"operatorIds": [op.id]}
        counts = await gateway.query(
            """query($from: DateTime!, $to: DateTime!, $filter: RecordFilter, $op: String!) {
                 sessions(from: $from, to: $to, filter: $filter, first: 1) { totalCount }
                 cdrs(from: $from, to: $to, filter: $filter, first: 1) { totalCount }
                 tariffs(operatorId: $op, first: 1) { totalCount } }""",
            {**EVER, "filter": filt, "op": op.id},
            token=ADMIN,
        )
        assert counts["sessions"]["totalCount"] == sim.count(op.id, "sessions", date_to=end) > 100
        assert counts["cdrs"]["totalCount"] == sim.count(op.id, "cdrs", date_to=end) > 100
        assert counts["tariffs"]["totalCount"] == sim.count(op.id, "tariffs", date_to=end) > 0

    # the cursor of every module is the operator's clock, and a second run finds nothing new
    cursors = {s.id: s.cursor for s in await SyncState.all()}
    assert len(cursors) == 4 * len(sim.operators) and set(cursors.values()) == {end}
    again = await gateway.runtime.sync_all()
    assert sum(r.ingest.written + r.ingest.events for r in again.values()) == 0


async def test_borough_query_returns_exactly_the_simulators_locations(gateway: Gateway, sim: Simulation) -> None:
    await gateway.runtime.sync_all(("locations",))
    expected: dict[str, set[str]] = {}
    for op in sim.operators:
        for loc in sim.truth_locations(op.id, date_to=window_end(sim)):
            expected.setdefault(sim.world.borough_of(op.id, loc["id"]), set()).add(f"{op.id}/{loc['id']}")
    assert len(expected) == 33
    for gss, ids in sorted(expected.items()):
        nodes = await all_locations(gateway, {"boroughCodes": [gss]})
        assert {n["id"] for n in nodes} == ids, gss
        assert {n["borough"]["code"] for n in nodes} == {gss}


async def _snapshot() -> dict[str, list[tuple]]:
    """Every row of every data table, in key order (sync state excluded: it records attempts)."""
    snap = {}
    for model in (Location, Evse, Connector, Tariff, Session, Cdr, StatusObservation, Event, QuarantinedRecord):
        rows = await model.all().order_by("id").values()
        snap[model.__name__] = [tuple(sorted(r.items())) for r in rows]
    return snap


async def test_reingesting_the_same_windows_changes_nothing(gateway: Gateway, sim: Simulation) -> None:
    await gateway.runtime.sync_all()
    before = await _snapshot()
    assert len(before["Session"]) > 300 and len(before["Event"]) > len(before["Session"])
    # forget every cursor: the next run re-crawls every window from the start
    await SyncState.all().update(cursor=None)
    results = await gateway.runtime.sync_all()
    assert all(r.windows >= 1 for r in results.values())
    assert sum(r.ingest.written for r in results.values()) == 0
    assert await _snapshot() == before


async def test_tokens_are_stored_only_as_pseudonyms(gateway: Gateway, sim: Simulation) -> None:
    await gateway.runtime.sync_all(("sessions",))
    op = sim.operators[0]
    raw_uids = {s["cdr_token"]["uid"] for s in sim.truth_sessions(op.id)}
    stored = await Session.filter(operator_id=op.id).values_list("token_pseudonym", flat=True)
    assert stored and all(p and len(p) == 64 for p in stored)
    assert not raw_uids & set(stored)
    dump = str(await Session.all().values())
    assert not any(uid in dump for uid in raw_uids)


@pytest.fixture
async def rogue_sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(seed=6, evses=60, history_days=1, rogue_tls=True, boroughs_geojson=BOROUGHS)
    try:
        yield simulation
    finally:
        await simulation.stop()


async def test_untrusted_certificate_is_refused_and_nothing_ingested(db: TestDb, rogue_sim: Simulation) -> None:
    async for gw in _gateway(db, rogue_sim):
        for op in rogue_sim.operators:
            with pytest.raises(UpstreamError) as err:
                await gw.runtime.pollers[op.id].sync_module("locations")
            assert err.value.code == "UPSTREAM_TLS"
            assert "certificate" in err.value.message
            state = await SyncState.get(id=f"{op.id}:locations")
            assert state.last_error_code == "UPSTREAM_TLS" and state.cursor is None
        assert await Location.all().count() == 0
        assert await Evse.all().count() == 0
        # the gateway keeps serving while its operators are unreachable
        assert (await gw.query("{ locations(first: 5) { totalCount } }"))["locations"]["totalCount"] == 0
