"""The Open Charge Map simulator, exercised with a plain aiohttp client over real TLS.

One frozen simulation (three operators, the last one OICP, plus OCM) serves the read-only tests;
the incremental sync test advances the clock of a small simulation of its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from simulator.cluster import SimOperator, Simulation, start_simulation
from tests.support import shared_path

START = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
UTC_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def boroughs_path() -> Path:
    return shared_path("data", "london_boroughs_gla_wgs84.geojson")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(boroughs_path: Path) -> AsyncIterator[Simulation]:
    simulation = await start_simulation(
        seed=17, operators=3, evses=600, start=START, oicp_operators=1, ocm=True, boroughs_geojson=boroughs_path
    )
    try:
        yield simulation
    finally:
        await simulation.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(sim: Simulation) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def get_pois(
    client: aiohttp.ClientSession, ocm: SimOperator, **params: str
) -> tuple[int, list[dict[str, Any]] | dict[str, Any]]:
    assert ocm.api_key is not None
    async with client.get(f"{ocm.url}/poi", params=params, headers={"X-API-Key": ocm.api_key}) as r:
        return r.status, await r.json()


def metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Equirectangular distance: plenty for a few hundred metres."""
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(x, math.radians(lat2 - lat1)) * 6_371_000


def operator_sites(sim: Simulation) -> dict[tuple[str, str], tuple[float, float]]:
    """(operator id, location id) -> coordinates, from each operator's own OCPI view."""
    return {
        (op.id, loc["id"]): (float(loc["coordinates"]["latitude"]), float(loc["coordinates"]["longitude"]))
        for op in sim.operators
        if op.protocol != "ocm"
        for loc in sim.truth_locations(op.id)
    }


@module_loop
async def test_api_key_is_required(sim: Simulation, client: aiohttp.ClientSession) -> None:
    ocm = sim.operator("ocm")
    assert ocm.protocol == "ocm" and ocm.url.endswith("/v3") and ocm.api_key
    for headers, params in (({}, {}), ({"X-API-Key": "wrong"}, {}), ({}, {"key": "wrong"})):
        async with client.get(f"{ocm.url}/poi", headers=headers, params=params) as r:
            assert r.status == 401 and "error" in await r.json()
    async with client.get(f"{ocm.url}/poi", params={"key": ocm.api_key, "maxresults": "3"}) as r:
        assert r.status == 200 and len(await r.json()) == 3
        assert r.headers["Date"] == (START - timedelta(hours=24)).strftime("%a, %d %b %Y %H:%M:%S GMT")


@module_loop
async def test_pois_have_the_ocm_shape(sim: Simulation, client: aiohttp.ClientSession) -> None:
    status, pois = await get_pois(client, sim.operator("ocm"))
    assert status == 200 and isinstance(pois, list) and len(pois) == 100  # the default maxresults
    ids = [p["ID"] for p in pois]
    assert ids == sorted(ids) and len(set(ids)) == 100
    for poi in pois:
        assert {"ID", "UUID", "DataProviderID", "OperatorInfo", "UsageType", "NumberOfPoints", "StatusType"} <= set(poi)
        assert set(poi["OperatorInfo"]) >= {"ID", "Title"} and poi["OperatorID"] == poi["OperatorInfo"]["ID"]
        address = poi["AddressInfo"]
        assert address["Country"]["ISOCode"] == "GB" and address["CountryID"] == address["Country"]["ID"]
        assert isinstance(address["Latitude"], float) and isinstance(address["Longitude"], float)
        assert all(address[k] for k in ("ID", "Title", "AddressLine1", "Town", "Postcode"))
        for name in ("DateLastStatusUpdate", "DateCreated", "DateLastVerified"):
            assert UTC_RE.match(poi[name]), poi[name]
        assert poi["DateCreated"] <= poi["DateLastStatusUpdate"] <= "2025-03-04T12:00:00Z"
        assert poi["StatusTypeID"] == poi["StatusType"]["ID"] in {50, 75, 100}
        assert poi["NumberOfPoints"] >= 1 and poi["Connections"]
        for conn in poi["Connections"]:
            assert conn["ConnectionTypeID"] == conn["ConnectionType"]["ID"] and conn["ConnectionType"]["Title"]
            assert conn["CurrentTypeID"] in {10, 20, 30} and conn["PowerKW"] > 0 and conn["Quantity"] >= 1
            assert {"ID", "StatusTypeID", "Amps", "Voltage"} <= set(conn)


@module_loop
async def test_compact_verbose_and_country(sim: Simulation, client: aiohttp.ClientSession) -> None:
    ocm = sim.operator("ocm")
    _, compact = await get_pois(client, ocm, compact="true", verbose="false", maxresults="20")
    assert isinstance(compact, list) and len(compact) == 20
    for poi in compact:
        assert "OperatorInfo" not in poi and "StatusType" not in poi and "OperatorID" in poi
        assert "Country" not in poi["AddressInfo"] and "ConnectionType" not in poi["Connections"][0]
        assert None not in poi.values() and None not in poi["AddressInfo"].values()
    assert (await get_pois(client, ocm, countrycode="FR"))[1] == []
    assert len((await get_pois(client, ocm, countrycode="GB,FR", maxresults="7"))[1]) == 7
    status, error = await get_pois(client, ocm, boundingbox="somewhere")
    assert status == 400 and "error" in error


@module_loop
async def test_bounding_box(sim: Simulation, client: aiohttp.ClientSession) -> None:
    truth = sim.truth_ocm_pois()
    top, left, bottom, right = 51.56, -0.20, 51.47, -0.05
    _, pois = await get_pois(
        client, sim.operator("ocm"), boundingbox=f"({top},{left}),({bottom},{right})", maxresults="5000"
    )
    assert isinstance(pois, list)
    expected = [
        p
        for p in truth
        if bottom <= p["AddressInfo"]["Latitude"] <= top and left <= p["AddressInfo"]["Longitude"] <= right
    ]
    assert [p["ID"] for p in pois] == [p["ID"] for p in expected] and 0 < len(pois) < len(truth)


@module_loop
async def test_keyset_paging_by_id(sim: Simulation, client: aiohttp.ClientSession) -> None:
    ids: list[int] = []
    last = 0
    while True:
        _, page = await get_pois(client, sim.operator("ocm"), sortby="id_asc", greaterthanid=str(last), maxresults="90")
        assert isinstance(page, list)
        if not page:
            break
        ids += [p["ID"] for p in page]
        last = page[-1]["ID"]
    assert ids == [p["ID"] for p in sim.truth_ocm_pois()]


@module_loop
async def test_duplicates_sit_on_operator_sites(sim: Simulation) -> None:
    sites = operator_sites(sim)
    names = {op.id: op.name for op in sim.operators}
    duplicates = sim.ocm_duplicates()
    pois = {p["ID"]: p for p in sim.truth_ocm_pois()}
    assert set(duplicates) <= set(pois)
    assert 0.75 * len(sites) < len(duplicates) < 0.95 * len(sites)
    assert {op_id for op_id, _ in duplicates.values()} == {op.id for op in sim.operators if op.protocol != "ocm"}
    for poi_id, (op_id, location_id) in duplicates.items():
        poi = pois[poi_id]
        lat, lon = sites[op_id, location_id]
        assert 1.0 < metres(lat, lon, poi["AddressInfo"]["Latitude"], poi["AddressInfo"]["Longitude"]) < 30.0
        assert poi["OperatorInfo"]["Title"] == names[op_id]
    community = [p for poi_id, p in pois.items() if poi_id not in duplicates]
    assert 0.05 * len(sites) < len(community) < 0.15 * len(sites)
    for poi in community:
        here = (poi["AddressInfo"]["Latitude"], poi["AddressInfo"]["Longitude"])
        assert min(metres(*here, *site) for site in sites.values()) > 30.0
        assert 51.28 < here[0] < 51.70 and -0.52 < here[1] < 0.34  # Greater London
        assert poi["OperatorInfo"]["Title"] not in names.values()


@pytest.mark.asyncio
async def test_incremental_sync_by_modification_date(boroughs_path: Path) -> None:
    sim = await start_simulation(seed=23, operators=2, evses=400, start=START, ocm=True, boroughs_geojson=boroughs_path)
    try:
        ocm = sim.operator("ocm")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())) as client:

            async def sync(since: str) -> tuple[dict[int, dict[str, Any]], str]:
                """modifiedsince + modified_asc paging from `since`; returns POIs by ID and the
                last modification date seen."""
                seen: dict[int, dict[str, Any]] = {}
                while True:
                    _, page = await get_pois(client, ocm, modifiedsince=since, sortby="modified_asc", maxresults="40")
                    assert isinstance(page, list)
                    stamps = [p["DateLastStatusUpdate"] for p in page]
                    assert stamps == sorted(stamps) and all(s >= since for s in stamps)
                    new = {p["ID"]: p for p in page if p["ID"] not in seen}
                    seen.update(new)
                    if len(page) < 40 or not new:
                        return seen, max(p["DateLastStatusUpdate"] for p in seen.values())
                    since = stamps[-1]

            first, mark = await sync("2000-01-01")
            assert first == {p["ID"]: p for p in sim.truth_ocm_pois()}
            before = {i: p["DateLastStatusUpdate"] for i, p in first.items()}
            sim.clock.advance(timedelta(hours=36))
            changed, _ = await sync(mark)
            after = {p["ID"]: p for p in sim.truth_ocm_pois()}
            moved = {i for i, p in after.items() if before.get(i) != p["DateLastStatusUpdate"]}
            assert moved and set(changed) >= moved
            assert set(changed) - moved <= {i for i, stamp in before.items() if stamp == mark}
            assert all(changed[i] == after[i] for i in changed)
            cutoff = sim.clock.now() - timedelta(hours=36)
            assert {p["ID"] for p in sim.truth_ocm_pois(cutoff)} == moved
    finally:
        await sim.stop()


@pytest.mark.asyncio
async def test_same_seed_same_pois(boroughs_path: Path) -> None:
    sims = [
        await start_simulation(seed=29, operators=1, evses=120, start=START, ocm=True, boroughs_geojson=boroughs_path)
        for _ in range(2)
    ]
    try:
        first, second = (s.truth_ocm_pois() for s in sims)
        assert first == second and first
        assert sims[0].ocm_duplicates() == sims[1].ocm_duplicates()
    finally:
        for s in sims:
            await s.stop()
