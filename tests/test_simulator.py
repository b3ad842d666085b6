"""The OCPI 2.2.1 operator simulator, exercised over real TLS on loopback.

One frozen simulation (seed 42, 3 operators, 1500 EVSEs, 3 days of history) serves the module;
a few tests start small extra ones (determinism, rogue TLS). Needs the shared reference folder
(`EVGATE_SHARED` or `../shared`) for the London borough boundaries; skipped, with the reason,
when it is absent.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import shapely
from shapely.geometry import shape
from yarl import URL

from simulator.clock import SimClock, parse_datetime
from simulator.cluster import SimOperator, Simulation, start_simulation
from simulator.data import build_world
from simulator.ocpi_views import OperatorViews
from simulator.params import CLASS_PARAMS
from simulator.tariffs import compute_cost, make_tariffs
from tests.support import shared_path

START = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)  # wall-clock start; simulated now = START - 24 h
MODULES = ("locations", "sessions", "cdrs", "tariffs")
DATETIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
LAT_RE = re.compile(r"^-?[0-9]{1,2}\.[0-9]{5,7}$")
LON_RE = re.compile(r"^-?[0-9]{1,3}\.[0-9]{5,7}$")
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def boroughs_path() -> Path:
    """The GLA borough file from the shared folder (skips, except in CI, when it is absent)."""
    return shared_path("data", "london_boroughs_gla_wgs84.geojson")


@pytest.fixture(scope="module")
def polygons(boroughs_path: Path) -> dict[str, Any]:
    """GSS code -> borough polygon, read independently of the simulator."""
    features = json.loads(boroughs_path.read_text(encoding="utf-8"))["features"]
    return {f["properties"]["GSS_CODE"]: shape(f["geometry"]) for f in features}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(boroughs_path: Path) -> AsyncIterator[Simulation]:
    simulation = await start_simulation(seed=42, start=START, boroughs_geojson=boroughs_path)
    try:
        yield simulation
    finally:
        await simulation.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(sim: Simulation) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def auth(op: SimOperator, token: str | None = None, encoding: str | None = None) -> dict[str, str]:
    """The Authorization header the operator expects (or a deliberately wrong variant)."""
    raw = op.token if token is None else token
    encoded = raw if (encoding or op.token_encoding) == "raw" else base64.b64encode(raw.encode()).decode()
    return {"Authorization": f"Token {encoded}"}


def module_url(op: SimOperator, module: str) -> str:
    return f"https://127.0.0.1:{op.port}/ocpi/2.2.1/{module}"


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


async def crawl(
    client: aiohttp.ClientSession, op: SimOperator, module: str, params: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[aiohttp.ClientResponse]]:
    """Follow Link rel=next from the first page to the last; returns records and responses."""
    url: str | None = module_url(op, module)
    query: dict[str, str] | None = params
    records: list[dict[str, Any]] = []
    responses = []
    while url is not None:
        async with client.get(url, params=query, headers=auth(op)) as response:
            body = await response.json()
            assert response.status == 200 and body["status_code"] == 1000, body
            records.extend(body["data"])
            responses.append(response)
            link = response.headers.get("Link")
        url, query = (link[link.index("<") + 1 : link.index(">")], None) if link else (None, None)
        assert len(responses) < 10_000
    return records, responses


@module_loop
async def test_versions_and_endpoints(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = sim.operators[0]
    async with client.get(op.versions_url, headers=auth(op)) as r:
        versions = (await r.json())["data"]
    assert versions == [{"version": "2.2.1", "url": f"https://127.0.0.1:{op.port}/ocpi/2.2.1"}]
    async with client.get(versions[0]["url"], headers=auth(op)) as r:
        details = (await r.json())["data"]
    endpoints = {e["identifier"]: e for e in details["endpoints"]}
    assert details["version"] == "2.2.1"
    assert set(endpoints) >= {"credentials", *MODULES}
    assert all(e["role"] == "SENDER" for e in endpoints.values())
    assert endpoints["sessions"]["url"] == module_url(op, "sessions")


@module_loop
async def test_pagination_follows_link_to_the_end(sim: Simulation, client: aiohttp.ClientSession) -> None:
    date_from = iso(START - timedelta(days=30))
    for op in sim.operators:
        for module in MODULES:
            params = {"date_from": date_from}
            records, responses = await crawl(client, op, module, params)
            totals = {int(r.headers["X-Total-Count"]) for r in responses}
            assert totals == {sim.count(op.id, module, START - timedelta(days=30))} == {len(records)}
            assert {r.headers["X-Limit"] for r in responses} == {"100"}
            assert len({rec["id"] for rec in records}) == len(records)
            stamps = [rec["last_updated"] for rec in records]
            assert stamps == sorted(stamps)
            assert records == sim.truth(op.id, module, START - timedelta(days=30))
            for response in responses[:-1]:
                link = response.headers["Link"]
                assert URL(link[link.index("<") + 1 : link.index(">")]).query["date_from"] == date_from
            assert "Link" not in responses[-1].headers
    assert sim.count("alpha", "sessions", START - timedelta(days=30)) > 500  # several pages


@module_loop
async def test_limit_is_capped_and_link_carries_filters(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = sim.operators[1]
    params = {"date_from": "2025-03-02T00:00:00Z", "date_to": "2025-03-04T00:00:00Z", "limit": "2000"}
    async with client.get(module_url(op, "sessions"), params=params, headers=auth(op)) as r:
        body = await r.json()
        link = r.headers["Link"]
        assert r.headers["X-Limit"] == "100"
    assert len(body["data"]) == 100
    next_url = link[link.index("<") + 1 : link.index(">")]
    assert link.endswith('; rel="next"')
    query = dict(URL(next_url).query)
    assert query == {
        "offset": "100",
        "limit": "100",
        "date_from": "2025-03-02T00:00:00Z",
        "date_to": "2025-03-04T00:00:00Z",
    }


@module_loop
async def test_date_windows_chain_without_gap_or_overlap(sim: Simulation, client: aiohttp.ClientSession) -> None:
    now = sim.clock.now()
    a, b, c = (
        now - timedelta(days=3),
        now - timedelta(hours=31, minutes=17, seconds=5),
        now + timedelta(seconds=1),
    )
    for op in sim.operators:
        for module in ("sessions", "cdrs", "locations"):
            assert sim.count(op.id, module, a, b) + sim.count(op.id, module, b, c) == sim.count(op.id, module, a, c)
            first, _ = await crawl(client, op, module, {"date_from": iso(a), "date_to": iso(b)})
            second, _ = await crawl(client, op, module, {"date_from": iso(b), "date_to": iso(c)})
            whole, _ = await crawl(client, op, module, {"date_from": iso(a), "date_to": iso(c)})
            ids_first, ids_second = {r["id"] for r in first}, {r["id"] for r in second}
            assert not ids_first & ids_second
            assert first + second == whole
            assert all(r["last_updated"] < iso(b) for r in first)
            assert all(r["last_updated"] >= iso(b) for r in second)
            assert first and second


@module_loop
async def test_every_borough_has_locations_inside_it(sim: Simulation, polygons: dict[str, Any]) -> None:
    assert len(polygons) == 33
    seen: Counter[str] = Counter()
    for op in sim.operators:
        for loc in sim.truth_locations(op.id):
            gss = sim.world.borough_of(op.id, loc["id"])
            lat, lon = loc["coordinates"]["latitude"], loc["coordinates"]["longitude"]
            assert LAT_RE.match(lat) and LON_RE.match(lon)
            assert shapely.contains_xy(polygons[gss], float(lon), float(lat))
            seen[gss] += 1
    assert set(seen) == set(polygons)
    assert min(seen.values()) >= 3


@module_loop
async def test_evse_total_and_connector_mix(sim: Simulation) -> None:
    evses = [e for op in sim.operators for loc in sim.truth_locations(op.id) for e in loc["evses"]]
    assert len(evses) >= 1500
    assert all(1 <= len(loc["evses"]) <= 6 for op in sim.operators for loc in sim.truth_locations(op.id))
    kinds: Counter[str] = Counter()
    for evse in evses:
        connectors = evse["connectors"]
        if connectors[0]["power_type"] == "DC":
            assert {c["standard"] for c in connectors} == {"IEC_62196_T2_COMBO", "CHADEMO"}
            assert all(c["format"] == "CABLE" for c in connectors)
            assert 50_000 <= connectors[0]["max_electric_power"] <= 150_000
            kinds["rapid_dc"] += 1
        elif connectors[0]["max_electric_power"] >= 22_000:
            assert connectors[0]["power_type"] == "AC_3_PHASE"
            kinds["fast_ac"] += 1
        else:
            assert connectors[0]["standard"] == "IEC_62196_T2" and connectors[0]["format"] == "SOCKET"
            kinds["slow_ac"] += 1
    share = {k: v / len(evses) for k, v in kinds.items()}
    assert share["slow_ac"] > 0.55
    assert 0.10 <= share["fast_ac"] <= 0.30
    assert 0.05 <= share["rapid_dc"] <= 0.20


@module_loop
async def test_same_seed_same_first_page(sim: Simulation, client: aiohttp.ClientSession, boroughs_path: Path) -> None:
    twin = await start_simulation(seed=42, start=START, boroughs_geojson=boroughs_path)
    other = await start_simulation(seed=43, start=START, boroughs_geojson=boroughs_path)
    try:
        pages: list[list[bytes]] = []
        for simulation in (sim, twin, other):
            connector = aiohttp.TCPConnector(ssl=simulation.pki.client_ssl_context())
            async with aiohttp.ClientSession(connector=connector) as session:
                bodies = []
                for module in MODULES:
                    op = simulation.operators[0]
                    params = {"date_from": "2025-03-01T00:00:00Z"}
                    async with session.get(module_url(op, module), params=params, headers=auth(op)) as r:
                        bodies.append(await r.read())
                pages.append(bodies)
        assert pages[0] == pages[1]
        assert pages[0][0] != pages[2][0] and pages[0][1] != pages[2][1]
        assert [o.token for o in sim.operators] == [o.token for o in twin.operators]
    finally:
        await twin.stop()
        await other.stop()


@module_loop
async def test_wrong_token_is_401(sim: Simulation, client: aiohttp.ClientSession) -> None:
    base64_op = next(o for o in sim.operators if o.token_encoding == "base64")
    raw_op = next(o for o in sim.operators if o.token_encoding == "raw")
    attempts = [
        (base64_op, auth(base64_op, token="not-the-token")),
        (base64_op, auth(base64_op, encoding="raw")),  # raw token where base64 is expected
        (raw_op, auth(raw_op, encoding="base64")),  # and the other way round
        (raw_op, {"Authorization": f"Bearer {raw_op.token}"}),
        (raw_op, {}),
    ]
    for op, headers in attempts:
        headers = {**headers, "X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"}
        async with client.get(module_url(op, "locations"), headers=headers) as r:
            body = await r.json()
            assert r.status == 401
            assert body["status_code"] == 2000 and "data" not in body
            assert r.headers["X-Request-ID"] == "req-1" and r.headers["X-Correlation-ID"] == "corr-1"
    for op in (base64_op, raw_op):
        async with client.get(module_url(op, "tariffs"), headers=auth(op)) as r:
            assert r.status == 200 and (await r.json())["status_code"] == 1000


@module_loop
async def test_sessions_without_date_from_is_2001(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = sim.operators[0]
    for params in ({}, {"date_to": "2025-03-04T00:00:00Z"}, {"date_from": "yesterday"}):
        async with client.get(module_url(op, "sessions"), params=params, headers=auth(op)) as r:
            body = await r.json()
            assert r.status == 200 and body["status_code"] == 2001
            assert DATETIME_RE.match(body["timestamp"])
    async with client.get(module_url(op, "cdrs"), headers=auth(op)) as r:  # optional elsewhere
        assert (await r.json())["status_code"] == 1000


@module_loop
async def test_single_location_and_unknown_id(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = sim.operators[2]
    truth = sim.truth_locations(op.id)[0]
    async with client.get(f"{module_url(op, 'locations')}/{truth['id']}", headers=auth(op)) as r:
        assert (await r.json())["data"] == truth
    evse = truth["evses"][0]
    async with client.get(f"{module_url(op, 'locations')}/{truth['id']}/{evse['uid']}", headers=auth(op)) as r:
        assert (await r.json())["data"] == evse
    async with client.get(f"{module_url(op, 'locations')}/NOPE", headers=auth(op)) as r:
        assert r.status == 404 and (await r.json())["status_code"] == 2003


@module_loop
async def test_objects_have_ocpi_shape(sim: Simulation) -> None:
    op = sim.operators[0]
    sessions = sim.truth_sessions(op.id)
    statuses = Counter(s["status"] for s in sessions)
    assert statuses["ACTIVE"] > 0 and statuses["COMPLETED"] > 0
    for s in sessions:
        assert s["country_code"] == "GB" and s["party_id"] == "ALP" and s["currency"] == "GBP"
        assert set(s["cdr_token"]) == {"country_code", "party_id", "uid", "type", "contract_id"}
        assert DATETIME_RE.match(s["start_date_time"]) and DATETIME_RE.match(s["last_updated"])
        if s["status"] == "ACTIVE":
            assert "end_date_time" not in s and s["last_updated"] == s["start_date_time"]
        else:
            assert s["last_updated"] == s["end_date_time"] and s["total_cost"]["excl_vat"] > 0
            assert math.isclose(s["total_cost"]["incl_vat"], s["total_cost"]["excl_vat"] * 1.2, abs_tol=0.011)
    cdrs = sim.truth_cdrs(op.id)
    completed = {s["id"]: s for s in sessions if s["status"] == "COMPLETED"}
    for cdr in cdrs:
        session = completed[cdr["session_id"]]
        assert cdr["total_energy"] == session["kwh"] and cdr["total_cost"] == session["total_cost"]
        assert parse_datetime(cdr["last_updated"]) == parse_datetime(cdr["end_date_time"]) + 60
        assert any(d["type"] == "ENERGY" for p in cdr["charging_periods"] for d in p["dimensions"])
        assert {"id", "evse_uid", "evse_id", "connector_id", "connector_standard", "coordinates"} <= set(
            cdr["cdr_location"]
        )
        assert cdr["tariffs"][0]["id"] in {t["id"] for t in sim.truth_tariffs(op.id)}
    tariff_ids = {t["id"] for t in sim.truth_tariffs(op.id)}
    for loc in sim.truth_locations(op.id):
        assert loc["time_zone"] == "Europe/London"
        assert loc["last_updated"] == max([loc["last_updated"], *(e["last_updated"] for e in loc["evses"])])
        for evse in loc["evses"]:
            assert set(evse["connectors"][0]["tariff_ids"]) <= tariff_ids


@module_loop
async def test_session_medians_match_params(sim: Simulation) -> None:
    durations: dict[str, list[float]] = defaultdict(list)
    energies: dict[str, list[float]] = defaultdict(list)
    for op in sim.operators:
        for s in sim.truth_sessions(op.id):
            if s["status"] != "COMPLETED":
                continue
            klass = sim.world.evse_class(op.id, s["evse_uid"])
            minutes = (parse_datetime(s["end_date_time"]) - parse_datetime(s["start_date_time"])) / 60
            durations[klass].append(minutes)
            energies[klass].append(s["kwh"])
    for klass, params in CLASS_PARAMS.items():
        assert len(durations[klass]) >= 100, klass
        expected_minutes, expected_kwh = math.exp(params.duration_min_mu), math.exp(params.kwh_mu)
        assert statistics.median(durations[klass]) == pytest.approx(expected_minutes, rel=0.3), klass
        assert statistics.median(energies[klass]) == pytest.approx(expected_kwh, rel=0.3), klass


@module_loop
async def test_rogue_certificate_is_refused(boroughs_path: Path) -> None:
    rogue = await start_simulation(operators=1, evses=40, rogue_tls=True, boroughs_geojson=boroughs_path)
    try:
        op = rogue.operators[0]
        connector = aiohttp.TCPConnector(ssl=rogue.pki.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(op.versions_url, headers=auth(op)):
                    pass
    finally:
        await rogue.stop()


def test_clock_replays_the_past_and_never_runs_ahead() -> None:
    wall = [1_000_000.0]
    clock = SimClock(datetime.fromtimestamp(1_000_000, UTC), speed=10.0, lag=timedelta(hours=1), wall=lambda: wall[0])
    assert clock.now_ts() == 1_000_000 - 3600
    wall[0] += 100
    assert clock.now_ts() == 1_000_000 - 3600 + 1000
    wall[0] += 10_000  # caught up: pinned to the wall clock from now on
    assert clock.now_ts() == wall[0]
    frozen = SimClock(datetime.fromtimestamp(1_000_000, UTC), speed=0.0, lag=timedelta(hours=24), wall=lambda: wall[0])
    assert frozen.now_ts() == 1_000_000 - 86_400
    assert SimClock.frozen(datetime.fromtimestamp(5, UTC), wall=lambda: wall[0]).now_s() == 5


def test_versions_become_visible_in_order(boroughs_path: Path) -> None:
    start = datetime(2025, 6, 1, tzinfo=UTC)
    world = build_world(5, operators=1, evses=60, boroughs_geojson=boroughs_path, history_start=start)
    op = world.operators[0]
    views = OperatorViews.of(op)
    op.ensure_until(start.timestamp() + 2 * 86_400)
    session = next(s for s in op.sessions if s.end - s.start > 600)

    def visible(now: int) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in views.sessions.select(now, None, None).items(0, 10**6)}

    def cdr_ids(now: int) -> set[str]:
        return {r["id"] for r in views.cdrs.select(now, None, None).items(0, 10**6)}

    assert session.id not in visible(session.start - 1)
    assert visible(session.start)[session.id]["status"] == "ACTIVE"
    assert visible(session.end - 1)[session.id]["status"] == "ACTIVE"
    assert visible(session.end)[session.id]["status"] == "COMPLETED"
    assert session.cdr_id not in cdr_ids(session.end + 59)
    assert session.cdr_id in cdr_ids(session.end + 60)
    evse = session.evse
    assert evse.status_at(session.start) == ("CHARGING", session.start)
    assert evse.status_at(session.end)[0] in {"AVAILABLE", "CHARGING", "OUTOFORDER", "INOPERATIVE"}


def test_cost_follows_the_tariff() -> None:
    tariffs = make_tariffs(random.Random(1), "GB", "ALP", 0)
    dc = tariffs["rapid_dc"]
    energy_price = dc.elements[0].components[0].price
    # 20 min charging then 40 min parked: the last 15 min are overstay (after 45 min), at £12/h
    cost = compute_cost(dc, duration_s=3600, charging_s=1200, kwh=15.0)
    assert cost.energy == (round(15 * energy_price, 2), round(15 * energy_price * 1.2, 2))
    assert cost.parking == (3.0, 3.6)
    assert cost.total == (round(15 * energy_price + 3.0, 2), round((15 * energy_price + 3.0) * 1.2, 2))
    assert compute_cost(dc, duration_s=2700, charging_s=1200, kwh=15.0).parking == (0.0, 0.0)
    adhoc = compute_cost(tariffs["adhoc"], duration_s=600, charging_s=600, kwh=5.0)
    assert adhoc.fixed[0] == tariffs["adhoc"].elements[0].components[0].price
    ocpi = dc.ocpi
    assert ocpi["currency"] == "GBP" and ocpi["elements"][1]["restrictions"] == {"min_duration": 2700}
    assert all(c["vat"] == 20.0 for e in ocpi["elements"] for c in e["price_components"])
