"""The OICP 2.3 operator simulator, exercised with a plain aiohttp client over real mutual TLS.

One frozen summer simulation (two operators, the second one OICP) serves most tests, so both
`+01:00` (recent) and `+00:00` (last winter) offsets occur; tests that change the world (clock
advance, EVSE removal) start a small one of their own.
"""

from __future__ import annotations

import math
import os
import re
import ssl
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulator.clock import parse_datetime
from simulator.cluster import SimOperator, Simulation, start_simulation
from simulator.oicp_server import OicpServer
from simulator.oicp_views import SESSION_NAMESPACE
from simulator.tls import make_client_cert, make_pki, make_rogue_pki
from tests.support import shared_path

START = datetime(2025, 7, 5, 12, 0, tzinfo=UTC)  # wall-clock start; simulated now = START - 24 h
LONDON = ZoneInfo("Europe/London")
EVSE_ID_RE = re.compile(r"^(([A-Z]{2}\*?[A-Z0-9]{3}\*?E[A-Z0-9\*]{1,30})|(\+?[0-9]{1,3}\*[0-9]{3}\*[0-9\*]{1,32}))$")
OPERATOR_ID_RE = re.compile(r"^(([A-Za-z]{2}\*?[A-Za-z0-9]{3})|(\+?[0-9]{1,3}\*[0-9]{3}))$")
LOCAL_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
MANDATORY = {
    "EvseID", "ChargingStationNames", "Address", "GeoCoordinates", "Plugs", "ChargingFacilities", "RenewableEnergy",
    "CalibrationLawDataAvailability", "AuthenticationModes", "PaymentOptions", "ValueAddedServices", "Accessibility",
    "HotlinePhoneNumber", "IsOpen24Hours", "IsHubjectCompatible", "DynamicInfoAvailable", "OperatorID", "OperatorName",
}  # fmt: skip
PAGE_KEYS = {"content", "number", "size", "totalElements", "totalPages", "first", "last", "numberOfElements"}
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def boroughs_path() -> Path:
    return shared_path("data", "london_boroughs_gla_wgs84.geojson")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(boroughs_path: Path) -> AsyncIterator[Simulation]:
    simulation = await start_simulation(
        seed=11, operators=2, evses=300, start=START, oicp_operators=1, boroughs_geojson=boroughs_path
    )
    try:
        yield simulation
    finally:
        await simulation.stop()


def oicp_of(sim: Simulation) -> SimOperator:
    return next(o for o in sim.operators if o.protocol == "oicp")


def client_context(sim: Simulation, op: SimOperator) -> ssl.SSLContext:
    """Trusts the simulation CA and presents the operator's client certificate."""
    ctx = sim.pki.client_ssl_context()
    assert op.client_cert is not None and op.client_key is not None
    ctx.load_cert_chain(op.client_cert, op.client_key)
    return ctx


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(sim: Simulation) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=client_context(sim, oicp_of(sim)))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def url(op: SimOperator, service: str, query: str = "") -> str:
    path = {
        "data": "evsepull/v23/providers/{p}/data-records",
        "status": "evsepull/v21/providers/{p}/status-records",
        "cdrs": "cdrmgmt/v22/providers/{p}/get-charge-detail-records-request",
    }[service].format(p=op.provider_id)
    return f"{op.url}/{path}{query}"


async def post(client: aiohttp.ClientSession, target: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with client.post(target, json=body) as response:
        return response.status, await response.json()


async def pull_all(
    client: aiohttp.ClientSession, op: SimOperator, service: str, body: dict[str, Any], size: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page of a paginated pull, until `last`; returns (records, page bodies)."""
    records: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    page = 0
    while True:
        status, body_out = await post(client, url(op, service, f"?page={page}&size={size}"), body)
        assert status == 200 and body_out["StatusCode"]["Code"] == "000", body_out
        pages.append(body_out)
        records.extend(body_out["content"])
        if body_out["last"]:
            return records, pages
        page += 1
        assert page < 1000


def data_body(op: SimOperator, **extra: Any) -> dict[str, Any]:
    return {"ProviderID": op.provider_id, "GeoCoordinatesResponseFormat": "Google", **extra}


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def assert_london_time(text: str) -> str:
    """The text is local London time with the offset in force at that instant; returns the offset."""
    assert LOCAL_TIME_RE.match(text), text
    instant = datetime.fromisoformat(text)
    assert instant.astimezone(LONDON).isoformat() == text
    return text[-6:]


@module_loop
async def test_full_pull_pages_to_the_end(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = oicp_of(sim)
    records, pages = await pull_all(client, op, "data", data_body(op), size=70)
    evses = sim.world.operator(op.id).evses
    assert len(records) == len(evses) == 150
    assert [p["totalElements"] for p in pages] == [150] * len(pages)
    assert [p["totalPages"] for p in pages] == [math.ceil(150 / 70)] * len(pages) == [len(pages)] * len(pages)
    assert [p["last"] for p in pages] == [False] * (len(pages) - 1) + [True]
    assert [p["first"] for p in pages] == [True] + [False] * (len(pages) - 1)
    assert [p["number"] for p in pages] == list(range(len(pages)))
    assert all(PAGE_KEYS <= set(p) and p["numberOfElements"] == len(p["content"]) for p in pages)
    ids = [r["EvseID"] for r in records]
    assert ids == sorted(set(ids))
    assert records == sim.truth_oicp_evse_data(op.id)
    status, default = await post(client, url(op, "data"), data_body(op))
    assert status == 200 and default["size"] == 20 and len(default["content"]) == 20
    status, big = await post(client, url(op, "data", "?size=5000"), data_body(op))
    assert big["size"] == 2000 and big["totalPages"] == 1 and big["last"] and len(big["content"]) == 150


@module_loop
async def test_records_carry_the_mandatory_fields(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = oicp_of(sim)
    server = sim.server(op.id)
    assert isinstance(server, OicpServer)
    status, body = await post(
        client, url(op, "data", "?size=2000"), data_body(op, GeoCoordinatesResponseFormat="DecimalDegree")
    )
    assert status == 200 and body["totalElements"] == len(body["content"]) == 150
    locations = {loc["id"]: loc for loc in sim.truth_locations(op.id)}
    for record in body["content"]:
        assert MANDATORY <= set(record), MANDATORY - set(record)
        assert "deltaType" not in record
        assert EVSE_ID_RE.match(record["EvseID"]) and OPERATOR_ID_RE.match(record["OperatorID"])
        assert record["OperatorID"] == f"GB*{sim.world.operator(op.id).spec.party_id}"
        location = locations[record["ChargingStationID"]]
        uid = server.views.uid_of(record["EvseID"])
        evse = next(e for e in location["evses"] if e["uid"] == uid)
        assert evse["evse_id"] == record["EvseID"]
        assert parse_datetime(record["lastUpdate"]) == parse_datetime(evse["last_updated"])
        geo = record["GeoCoordinates"]["DecimalDegree"]
        assert (geo["Latitude"], geo["Longitude"]) == (
            location["coordinates"]["latitude"],
            location["coordinates"]["longitude"],
        )
        address = record["Address"]
        assert address["Country"] == "GBR" and address["City"] == "London"
        assert 2 <= len(address["Street"]) <= 100 and 0 < len(address["PostalCode"]) <= 10
        assert re.match(r"^\+[0-9]{5,15}$", record["HotlinePhoneNumber"])
        for facility in record["ChargingFacilities"]:
            assert isinstance(facility["Power"], int) and facility["PowerType"] in {"AC_1_PHASE", "AC_3_PHASE", "DC"}


@module_loop
async def test_times_carry_the_london_offset(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = oicp_of(sim)
    records = sim.truth_oicp_evse_data(op.id)
    offsets = {assert_london_time(r["lastUpdate"]) for r in records}
    cdrs = sim.truth_oicp_cdrs(op.id, START - timedelta(days=10), START)
    assert cdrs
    for cdr in cdrs:
        for name in ("SessionStart", "SessionEnd", "ChargingStart", "ChargingEnd"):
            offsets.add(assert_london_time(cdr[name]))
    assert offsets == {"+00:00", "+01:00"}  # last winter's base times and this summer's sessions


@module_loop
async def test_cdr_windows_match_the_truth(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = oicp_of(sim)
    now = sim.clock.now().replace(microsecond=0)
    start = now - timedelta(days=4)
    seen: list[str] = []
    edge = start
    while edge < now:
        window_end = min(edge + timedelta(hours=7), now)
        body = {"ProviderID": op.provider_id, "From": iso(edge), "To": iso(window_end)}
        records, pages = await pull_all(client, op, "cdrs", body, size=25)
        assert records == sim.truth_oicp_cdrs(op.id, edge, window_end)
        assert len(sim.truth_cdrs(op.id, edge, window_end)) == len(records)
        assert all({"pageable", "empty"} <= set(p) for p in pages)
        seen += [r["SessionID"] for r in records]
        edge = window_end
    assert len(seen) == len(set(seen)) == len(sim.truth_oicp_cdrs(op.id, start, now)) > 0
    ocpi = {c["session_id"]: c for c in sim.truth_cdrs(op.id, start, now)}
    for record in sim.truth_oicp_cdrs(op.id, start, now):
        session_id = record["CPOPartnerSessionID"]
        assert record["SessionID"] == str(uuid.uuid5(SESSION_NAMESPACE, f"{op.id}:{session_id}"))
        cdr = ocpi[session_id]
        assert record["EvseID"] == cdr["cdr_location"]["evse_id"]
        assert record["Identification"] == {"RFIDMifareFamilyIdentification": {"UID": cdr["cdr_token"]["uid"]}}
        assert record["ConsumedEnergy"] == cdr["total_energy"]
        assert record["MeterValueEnd"] == pytest.approx(record["MeterValueStart"] + record["ConsumedEnergy"])
        assert parse_datetime(record["SessionStart"]) == parse_datetime(cdr["start_date_time"])
        assert parse_datetime(record["SessionEnd"]) == parse_datetime(cdr["end_date_time"])
        assert parse_datetime(record["ChargingStart"]) <= parse_datetime(record["ChargingEnd"])
        assert parse_datetime(record["ChargingEnd"]) <= parse_datetime(record["SessionEnd"])
        assert "total_cost" not in record and "Currency" not in record
    body = {"ProviderID": op.provider_id, "From": iso(start), "To": iso(now)}
    status, big = await post(client, url(op, "cdrs", "?size=100000"), body)
    assert status == 200 and big["size"] == 2000


@module_loop
async def test_status_pull_maps_the_ocpi_statuses(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = oicp_of(sim)
    ocpi = {e["evse_id"]: e["status"] for loc in sim.truth_locations(op.id) for e in loc["evses"]}
    expected = {
        "AVAILABLE": "Available",
        "CHARGING": "Occupied",
        "OUTOFORDER": "OutOfService",
        "INOPERATIVE": "OutOfService",
    }
    status, body = await post(client, url(op, "status"), {"ProviderID": op.provider_id})
    assert status == 200 and body["StatusCode"]["Code"] == "000"
    (operator,) = body["EvseStatuses"]["OperatorEvseStatus"]
    assert operator["OperatorID"] == f"GB*{sim.world.operator(op.id).spec.party_id}"
    got = {r["EvseID"]: r["EvseStatus"] for r in operator["EvseStatusRecord"]}
    assert got == {evse_id: expected[s] for evse_id, s in ocpi.items()} == sim.truth_oicp_statuses(op.id)
    assert "Occupied" in got.values()
    some = sorted(got)[:3]
    status, by_id = await post(
        client, url(op, "status"), {"ProviderID": op.provider_id, "EvseID": [*some, "GB*XXX*E1"]}
    )
    assert by_id["EVSEStatusRecords"]["EvseStatusRecord"] == [
        *({"EvseID": i, "EvseStatus": got[i]} for i in some),
        {"EvseID": "GB*XXX*E1", "EvseStatus": "EvseNotFound"},
    ]
    status, other = await post(client, url(op, "status"), {"ProviderID": op.provider_id, "OperatorID": ["GB*XXX"]})
    assert other["EvseStatuses"]["OperatorEvseStatus"] == []
    status, occupied = await post(client, url(op, "status"), {"ProviderID": op.provider_id, "EvseStatus": "Occupied"})
    records = occupied["EvseStatuses"]["OperatorEvseStatus"][0]["EvseStatusRecord"]
    assert {r["EvseID"] for r in records} == {i for i, s in got.items() if s == "Occupied"}
    status, too_many = await post(client, url(op, "status"), {"ProviderID": op.provider_id, "EvseID": ["x"] * 101})
    assert status == 400 and too_many["StatusCode"]["Code"] == "022"


@module_loop
async def test_errors_are_acknowledgements(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = oicp_of(sim)
    wrong_path = url(op, "data").replace(f"/providers/{op.provider_id}/", "/providers/DE-XXX/")
    status, body = await post(client, wrong_path, data_body(op))
    assert (status, body["Result"], body["StatusCode"]["Code"]) == (403, False, "017")
    status, body = await post(client, url(op, "data"), data_body(op, ProviderID="DE-XXX"))
    assert (status, body["StatusCode"]["Code"]) == (403, "017")
    async with client.post(url(op, "cdrs"), data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert (r.status, (await r.json())["StatusCode"]["Code"]) == (400, "022")
    for target, bad in (
        (url(op, "cdrs"), {"ProviderID": op.provider_id, "From": iso(START)}),  # To is mandatory
        (url(op, "cdrs"), {"ProviderID": op.provider_id, "From": "yesterday", "To": iso(START)}),
        (url(op, "data"), {"ProviderID": op.provider_id}),  # GeoCoordinatesResponseFormat is mandatory
        (url(op, "data", "?page=-1"), data_body(op)),
        (url(op, "data"), data_body(op, LastCall=iso(START), OperatorIds=["GB*ALP"])),
        (url(op, "data"), [data_body(op)]),
    ):
        status, body = await post(client, target, bad)
        assert (status, body["Result"], body["StatusCode"]["Code"]) == (400, False, "022"), bad


@module_loop
async def test_date_header_is_the_simulated_clock(sim: Simulation, client: aiohttp.ClientSession) -> None:
    op = oicp_of(sim)
    async with client.post(url(op, "status"), json={"ProviderID": op.provider_id}) as r:
        assert r.headers["Date"] == (START - timedelta(hours=24)).strftime("%a, %d %b %Y %H:%M:%S GMT")


@module_loop
async def test_mutual_tls(sim: Simulation, tmp_path: Path) -> None:
    op = oicp_of(sim)
    server = sim.server(op.id)
    assert isinstance(server, OicpServer)
    body = {"ProviderID": op.provider_id}
    rogue = make_rogue_pki(11, tmp_path / "rogue")
    rogue_ctx = sim.pki.client_ssl_context()
    rogue_ctx.load_cert_chain(*make_client_cert(rogue, 11, "impostor"))
    server.last_client_cn = None
    for ctx in (sim.pki.client_ssl_context(), rogue_ctx):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.post(url(op, "status"), json=body) as r:
                    await r.read()
    assert server.last_client_cn is None
    assert op.client_cert is not None
    expected_cn = (
        x509.load_pem_x509_certificate(op.client_cert.read_bytes())
        .subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
        .value
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(sim, op))) as session:
        async with session.post(url(op, "status"), json=body) as r:
            assert r.status == 200
    assert server.last_client_cn == expected_cn == f"evgate {op.provider_id} for {op.id}"


def test_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(3, tmp_path)
    cert_path, key_path = make_client_cert(pki, 3, "emp client")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "emp client"
    again = x509.load_pem_x509_certificate(make_client_cert(pki, 3, "emp client")[0].read_bytes())
    assert again.public_key() == cert.public_key()  # the key is derived from the seed
    with pytest.raises(ValueError):
        make_client_cert(pki, 4, "emp client")  # another seed cannot sign for this CA
    context = pki.mutual_tls_server_context()
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.asyncio
async def test_delta_pulls_and_removal(boroughs_path: Path) -> None:
    sim = await start_simulation(
        seed=5, operators=1, evses=60, start=START, oicp_operators=1, boroughs_geojson=boroughs_path
    )
    try:
        op = sim.operators[0]
        server = sim.server(op.id)
        assert isinstance(server, OicpServer)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(sim, op))) as client:
            old, _ = await pull_all(client, op, "data", data_body(op, LastCall="2020-01-01T00:00:00+00:00"), 25)
            assert len(old) == 60 and {r["deltaType"] for r in old} == {"insert"}  # all created since 2020
            t0 = sim.clock.now().replace(microsecond=0)
            sim.clock.advance(timedelta(hours=3))
            removed = old[7]["EvseID"]
            server.remove_evse(removed)
            sim.clock.advance(timedelta(minutes=5))
            delta, pages = await pull_all(client, op, "data", data_body(op, LastCall=iso(t0)), 10)
            assert delta == sim.truth_oicp_evse_data(op.id, t0)
            assert pages[0]["totalElements"] == len(delta) > 1
            kinds = {r["EvseID"]: r["deltaType"] for r in delta}
            assert kinds.pop(removed) == "delete"
            assert set(kinds.values()) == {"update"}
            assert all(parse_datetime(r["lastUpdate"]) >= t0.timestamp() for r in delta)
            full, _ = await pull_all(client, op, "data", data_body(op), 20)
            assert len(full) == 59 and removed not in {r["EvseID"] for r in full}
            status, body = await post(client, url(op, "status"), {"ProviderID": op.provider_id, "EvseID": [removed]})
            assert status == 200
            assert body["EVSEStatusRecords"]["EvseStatusRecord"] == [{"EvseID": removed, "EvseStatus": "EvseNotFound"}]
            later, _ = await pull_all(client, op, "data", data_body(op, LastCall=iso(sim.clock.now())), 10)
            assert removed not in {r["EvseID"] for r in later}
            assert all(r["deltaType"] == "update" for r in later)
    finally:
        await sim.stop()
