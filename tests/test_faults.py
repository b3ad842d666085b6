"""Fault injection: every fault kind seen by a real client over TLS, and the code the gateway's own
HTTP client and OCPI adapter map it to; recovery, counting, seeded probability, windows, plan
validation and the admin endpoint.

One small OCPI operator (12 EVSEs, pages of 5) serves the whole module with the fault middleware;
each test starts from a cleared plan. Needs the shared borough file (skipped when absent).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.http import (
    UPSTREAM_HTTP,
    UPSTREAM_PROTOCOL,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_TIMEOUT,
    UPSTREAM_TLS,
    UPSTREAM_UNAVAILABLE,
    HttpClient,
    UpstreamError,
)
from adapters.model import Page
from adapters.ocpi import OcpiAdapter
from simulator.clock import SimClock
from simulator.control import ControlServer
from simulator.data import build_world
from simulator.faults import (
    MUTATIONS,
    FaultConfigError,
    FaultPlan,
    Faults,
    attach_faults,
    insert_malformed,
    oicp_status_body,
    record_list,
)
from simulator.ocpi_server import OcpiServer
from simulator.tls import Pki, make_pki
from simulator.tls_faults import legacy_client_context
from tests.support import shared_path

SEED = 7
START = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)
TOKEN = "admin-token-for-tests-0123456789"
module_loop = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Rig:
    pki: Pki
    server: OcpiServer
    faults: Faults

    @property
    def locations_url(self) -> str:
        return f"{self.server.base_url}/ocpi/2.2.1/locations"

    def auth(self) -> dict[str, str]:
        spec = self.server.op.spec
        token = base64.b64encode(spec.token.encode()).decode() if spec.token_encoding == "base64" else spec.token
        return {"Authorization": f"Token {token}"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    boroughs = shared_path("data", "london_boroughs_gla_wgs84.geojson")
    directory = tmp_path_factory.mktemp("pki")
    pki = make_pki(SEED, directory)
    clock = SimClock(START, speed=0.0, lag=timedelta(hours=24))
    world = build_world(SEED, 1, 12, boroughs, history_start=clock.origin - timedelta(days=1))
    op = world.operators[0]
    faults = Faults(seed=SEED, directory=directory, name=op.spec.id)
    server = OcpiServer(op, clock, pki.server_ssl_context(), page_limit=5, middlewares=[faults.middleware])
    faults.attach(server)
    await server.start()
    try:
        yield Rig(pki, server, faults)
    finally:
        await faults.close()
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def rig(module_rig: Rig) -> AsyncIterator[Rig]:
    """The module's operator, with no faults before and after the test."""
    await module_rig.faults.clear()
    yield module_rig
    await module_rig.faults.clear()


def http(rig: Rig, timeout: float = 5.0) -> HttpClient:
    return HttpClient(ca_bundle=str(rig.pki.ca_cert), timeout=timeout)


async def first_page(rig: Rig, wait: float = 5.0, client: HttpClient | None = None) -> Page:
    """The first Locations page as the gateway's OCPI adapter reads it (a fresh client unless given)."""
    own = client is None
    client = client or http(rig, wait)
    spec = rig.server.op.spec
    adapter = OcpiAdapter(
        client, versions_url=rig.server.versions_url, token=spec.token, token_encoding=spec.token_encoding, page_limit=5
    )
    pages = adapter.crawl("locations", None, FAR)
    try:
        return await anext(pages)
    finally:
        await pages.aclose()
        if own:
            await client.close()


async def upstream_error(rig: Rig, wait: float = 5.0) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await first_page(rig, wait)
    return info.value


async def apply(rig: Rig, *faults: dict[str, Any]) -> None:
    await rig.faults.apply(list(faults))


# -- baseline and request-level faults -------------------------------------------------------------


@module_loop
async def test_baseline_page(rig: Rig) -> None:
    page = await first_page(rig)
    assert len(page.records) == 5 and not page.invalid
    assert rig.faults.active()["faults"] == [] and rig.faults.active()["listener"] == "normal"


@module_loop
async def test_outage_is_connection_refused_even_on_a_pooled_connection(rig: Rig) -> None:
    async with http(rig) as client:
        await first_page(rig, client=client)  # a keep-alive connection is now pooled
        await apply(rig, {"kind": "outage"})
        assert not rig.server.listener.accepting
        with pytest.raises(UpstreamError) as info:
            await first_page(rig, client=client)
        assert info.value.code == UPSTREAM_UNAVAILABLE
        assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)
        assert isinstance(info.value.__cause__.os_error, ConnectionRefusedError)
        assert rig.faults.active()["listener"] == "outage" and rig.faults.fired["outage"] >= 1
        await rig.faults.clear()
        assert len((await first_page(rig, client=client)).records) == 5  # recovery


@module_loop
async def test_outage_with_a_duration_ends_by_itself(rig: Rig) -> None:
    await apply(rig, {"kind": "outage", "duration": 0.3})
    assert (await upstream_error(rig)).code == UPSTREAM_UNAVAILABLE
    for _ in range(40):  # up to 2 s
        if rig.server.listener.accepting:
            break
        await asyncio.sleep(0.05)
    assert len((await first_page(rig)).records) == 5
    assert rig.faults.active()["faults"][0]["state"] == "expired"


@module_loop
async def test_http_5xx_burst_fires_exactly_count_times(rig: Rig) -> None:
    await apply(rig, {"kind": "http_5xx", "count": 3, "status": [500, 502, 503], "paths": ["locations"]})
    messages = []
    for _ in range(3):
        error = await upstream_error(rig)
        assert error.code == UPSTREAM_HTTP
        messages.append(error.message)
    assert [m.rsplit(" ", 1)[-1] for m in messages] == ["500", "502", "503"]
    for _ in range(2):
        assert len((await first_page(rig)).records) == 5
    active = rig.faults.active()["faults"][0]
    assert (active["fired"], active["remaining"], active["state"]) == (3, 0, "spent")


@module_loop
async def test_timeout_holds_longer_than_the_client_waits(rig: Rig) -> None:
    await apply(rig, {"kind": "timeout", "delay": 30, "paths": ["locations"]})
    t0 = time.perf_counter()
    assert (await upstream_error(rig, wait=0.5)).code == UPSTREAM_TIMEOUT
    assert time.perf_counter() - t0 < 3
    await rig.faults.clear()  # releases the held response
    assert len((await first_page(rig)).records) == 5


@module_loop
async def test_slow_answers_measurably_later(rig: Rig) -> None:
    t0 = time.perf_counter()
    await first_page(rig)
    baseline = time.perf_counter() - t0
    await apply(rig, {"kind": "slow", "delay": 0.4, "paths": ["locations"]})
    t0 = time.perf_counter()
    page = await first_page(rig)
    slow = time.perf_counter() - t0
    assert len(page.records) == 5 and not page.invalid
    assert slow >= 0.4 and slow > baseline + 0.3


@module_loop
async def test_malformed_records_are_quarantined_and_good_ones_kept(rig: Rig) -> None:
    good = [r.source_id for r in (await first_page(rig)).records]
    await apply(rig, {"kind": "malformed_records", "records": 4, "paths": ["locations"]})
    page = await first_page(rig)
    assert [r.source_id for r in page.records] == good
    reasons = sorted(i.reason for i in page.invalid)
    assert len(reasons) == 4, reasons
    assert any("id: required field missing" in r for r in reasons)
    assert any("last_updated: not an RFC 3339 date-time" in r for r in reasons)
    assert any(r.startswith("coordinates") for r in reasons)
    assert any("expected a JSON object" in r for r in reasons)
    assert rig.faults.fired["malformed_records"] == 1


@module_loop
async def test_truncated_json_is_a_protocol_error(rig: Rig) -> None:
    await apply(rig, {"kind": "truncated_json", "paths": ["locations"]})
    assert (await upstream_error(rig)).code == UPSTREAM_PROTOCOL


@module_loop
async def test_rate_limit_carries_retry_after(rig: Rig) -> None:
    await apply(rig, {"kind": "rate_limit", "retry_after": 7})
    error = await upstream_error(rig)
    assert (error.code, error.retry_after) == (UPSTREAM_RATE_LIMITED, 7.0)


@pytest.mark.parametrize(("status_code", "code"), [(2001, UPSTREAM_PROTOCOL), (3001, UPSTREAM_UNAVAILABLE)])
@module_loop
async def test_ocpi_status(rig: Rig, status_code: int, code: str) -> None:
    await apply(rig, {"kind": "ocpi_status", "status_code": status_code, "paths": ["locations"]})
    error = await upstream_error(rig)
    assert error.code == code and f"OCPI status {status_code}" in error.message
    async with http(rig) as client:
        body = (await client.get_json(rig.locations_url, rig.auth())).body
    assert set(body) == {"status_code", "status_message", "timestamp"} and body["timestamp"].startswith("2025-03-04")


@module_loop
async def test_oicp_status_replaces_the_body_and_ocpi_client_rejects_it(rig: Rig) -> None:
    await apply(rig, {"kind": "oicp_status", "status_code": "017", "paths": ["locations"]})
    async with http(rig) as client:
        resp = await client.get_json(rig.locations_url, rig.auth())
    assert resp.status == 200 and resp.body["StatusCode"]["Code"] == "017" and resp.body["Result"] is False
    assert (await upstream_error(rig)).code == UPSTREAM_PROTOCOL  # not an OCPI envelope


@module_loop
async def test_probability_is_seeded_and_replays(rig: Rig) -> None:
    plan = [{"kind": "http_5xx", "probability": 0.5, "status": 503}]
    runs = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=rig.pki.client_ssl_context())) as session:
        for _ in range(2):
            await rig.faults.apply(plan)
            statuses = []
            for _ in range(20):
                async with session.get(rig.server.versions_url, headers=rig.auth()) as r:
                    statuses.append(r.status)
            runs.append(statuses)
    assert runs[0] == runs[1] and {200, 503} == set(runs[0])


@module_loop
async def test_time_window(rig: Rig) -> None:
    await apply(rig, {"kind": "rate_limit", "start": 0.4, "duration": 0.6})
    assert len((await first_page(rig)).records) == 5  # not yet
    await asyncio.sleep(0.5)
    assert (await upstream_error(rig)).code == UPSTREAM_RATE_LIMITED
    await asyncio.sleep(0.7)
    assert len((await first_page(rig)).records) == 5  # over
    assert rig.faults.active()["faults"][0]["state"] == "expired"


# -- TLS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("tls_expired", "certificate has expired"),
        ("tls_self_signed", "self-signed certificate"),
        ("tls_wrong_host", "IP address mismatch"),
        ("tls_untrusted", "unable to get local issuer certificate"),
    ],
)
@module_loop
async def test_certificate_faults(rig: Rig, kind: str, why: str) -> None:
    async with http(rig) as client:
        await first_page(rig, client=client)  # pooled connection from before the fault
        await apply(rig, {"kind": kind})
        with pytest.raises(UpstreamError) as info:
            await first_page(rig, client=client)
        assert info.value.code == UPSTREAM_TLS and why in info.value.message, info.value.message
        assert rig.faults.active()["listener"] == kind
        await rig.faults.clear()
        assert len((await first_page(rig, client=client)).records) == 5


@module_loop
async def test_tls_legacy_speaks_only_tls_1_0_and_1_1(rig: Rig) -> None:
    await apply(rig, {"kind": "tls_legacy"})
    port = rig.server.port
    ctx = legacy_client_context(rig.pki.ca_cert)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1", "TLSv1.1")
    writer.close()
    with pytest.raises(UpstreamError):  # the gateway (TLS >= 1.2) cannot talk to it
        await first_page(rig)


@module_loop
async def test_tls_legacy_is_a_tls_error(rig: Rig) -> None:
    await apply(rig, {"kind": "tls_legacy"})
    assert (await upstream_error(rig)).code == UPSTREAM_TLS


# -- body rewriting on the other simulators' shapes -------------------------------------------------


def _oicp_page() -> dict[str, Any]:
    records = [
        {
            "EvseID": f"DE*ABC*E{i}",
            "lastUpdate": "2025-03-04T10:00:00+01:00",
            "GeoCoordinates": {"DecimalDegree": {"Latitude": "52.5", "Longitude": "13.4"}},
        }
        for i in range(3)
    ]
    page = {"number": 0, "size": 20, "totalElements": 3, "last": True, "StatusCode": {"Code": "000"}}
    return {"content": records, **page}


def _statuses() -> dict[str, Any]:
    records = [{"EvseID": f"DE*ABC*E{i}", "EvseStatus": "Available"} for i in range(3)]
    return {"EvseStatuses": {"OperatorEvseStatus": [{"OperatorID": "DE*ABC", "EvseStatusRecord": records}]}}


def _ocm() -> list[dict[str, Any]]:
    stamp = "2025-03-04T10:00:00Z"
    return [{"ID": 100 + 5 * i, "UUID": f"u{i}", "DateLastStatusUpdate": stamp, "AddressInfo": {}} for i in range(3)]


@pytest.mark.parametrize("make", [_oicp_page, _statuses, _ocm])
@pytest.mark.parametrize("seed", range(5))
def test_malformed_records_on_every_shape(make: Any, seed: int) -> None:
    body = make()
    good = json.loads(json.dumps(record_list(body)))
    assert insert_malformed(body, len(MUTATIONS), random.Random(seed)) == len(MUTATIONS)
    records = record_list(body)
    assert records is not None and len(records) == len(good) + len(MUTATIONS)
    assert [r for r in records if r in good] == good  # the good records stay, in order
    bad = [r for r in records if r not in good]
    assert sum(not isinstance(r, dict) for r in bad) == 1
    key = "ID" if "ID" in good[0] else "EvseID"
    assert any(isinstance(r, dict) and key not in r for r in bad)  # one without any id
    bad_ids = [r[key] for r in bad if isinstance(r, dict) and key in r]
    assert len(set(map(str, bad_ids))) == len(bad_ids) and not set(bad_ids) & {r[key] for r in good}
    ids = [r[key] for r in records if isinstance(r, dict) and isinstance(r.get(key), int)]
    assert ids == sorted(set(ids))  # integer ids still ascend (Open Charge Map's keyset paging)


def test_oicp_status_body_keeps_the_shape() -> None:
    page = oicp_status_body(_oicp_page(), "320", None)
    assert page["content"] == [] and page["StatusCode"]["Code"] == "320" and page["last"] is True
    assert page["StatusCode"]["Description"] == "Service not available"
    statuses = oicp_status_body(_statuses(), "017", "nope")
    assert statuses == {
        "EvseStatuses": {"OperatorEvseStatus": []},
        "StatusCode": {"Code": "017", "Description": "nope", "AdditionalInfo": None},
    }


# -- plans -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "problem"),
    [
        ([{"kind": "meteor"}], "unknown kind 'meteor'"),
        ([{"kind": ["outage"]}], "unknown kind ['outage']"),
        ([{"kind": "http_5xx", "stauts": 500}], "faults[0] (http_5xx): unknown parameter(s) stauts"),
        ([{"kind": "outage", "count": 2}], "unknown parameter(s) count"),
        ([{"kind": "slow", "delay": "2"}], "delay must be a number"),
        ([{"kind": "timeout", "delay": 10_000}], "delay must be between"),
        ([{"kind": "http_5xx", "status": 404}], "status must be between 500 and 599"),
        ([{"kind": "ocpi_status", "status_code": 1000}], "status_code must be between 2000 and 4999"),
        ([{"kind": "oicp_status", "status_code": "17"}], "3-digit OICP error code"),
        ([{"kind": "rate_limit", "probability": 2}], "probability must be between 0 and 1"),
        ({"faults": [], "seed": 1}, "unknown key(s) seed"),
        ("outage", "expected a list of faults"),
    ],
)
def test_invalid_plans_name_the_problem(plan: Any, problem: str) -> None:
    with pytest.raises(FaultConfigError) as info:
        FaultPlan.from_config(plan)
    assert problem in str(info.value)


def test_plan_round_trips_and_is_json() -> None:
    raw = [{"kind": "malformed_records", "records": 2, "paths": ["sessions"], "count": 1}, {"kind": "tls_expired"}]
    plan = FaultPlan.from_config({"faults": raw})
    assert plan.to_config() == raw
    assert FaultPlan.from_config(plan.to_config()) == plan


@module_loop
async def test_invalid_plan_leaves_the_active_one(rig: Rig) -> None:
    await apply(rig, {"kind": "rate_limit"})
    with pytest.raises(FaultConfigError):
        await rig.faults.apply([{"kind": "rate_limit", "retry_after": -1}])
    assert (await upstream_error(rig)).code == UPSTREAM_RATE_LIMITED
    json.dumps(rig.faults.active())


# -- the admin endpoint ----------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def control(rig: Rig) -> AsyncIterator[tuple[ControlServer, aiohttp.ClientSession, str]]:
    server = ControlServer({"OP1": rig.faults}, TOKEN)
    await server.start()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            yield server, session, f"{server.url}/admin/faults"
    finally:
        await server.stop()


@module_loop
async def test_control_put_get_delete(rig: Rig, control: tuple[ControlServer, aiohttp.ClientSession, str]) -> None:
    server, session, base = control
    assert server.url.startswith("http://127.0.0.1:")
    async with session.put(f"{base}/OP1", json=[{"kind": "outage"}, {"kind": "http_5xx", "count": 2}]) as r:
        assert r.status == 200, await r.text()
        assert [f["kind"] for f in (await r.json())["faults"]] == ["outage", "http_5xx"]
    assert (await upstream_error(rig)).code == UPSTREAM_UNAVAILABLE
    async with session.get(base) as r:  # still served while the operator is down
        state = (await r.json())["operators"]["OP1"]
    assert state["listener"] == "outage" and state["fired"]["outage"] >= 1
    async with session.delete(f"{base}/OP1") as r:
        assert r.status == 200 and (await r.json())["faults"] == []
    assert len((await first_page(rig)).records) == 5
    async with session.get(f"{base}/OP1") as r:
        assert (await r.json())["listener"] == "normal"


@module_loop
async def test_control_rejects(rig: Rig, control: tuple[ControlServer, aiohttp.ClientSession, str]) -> None:
    _, session, base = control
    async with aiohttp.ClientSession() as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Token {TOKEN}"}):
            async with anonymous.get(base, headers=headers) as r:
                assert r.status == 401 and "error" in await r.json()
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with anonymous.put(f"{base}/OP1", json=[{"kind": "outage"}], headers=headers) as r:
                assert r.status == 401
    assert rig.faults.active()["listener"] == "normal"
    async with session.put(f"{base}/OP1", json=[{"kind": "slow", "delay": -1}]) as r:
        assert r.status == 400 and "faults[0] (slow): delay" in (await r.json())["error"]
    async with session.put(f"{base}/OP1", data=b"{not json") as r:
        assert r.status == 400 and "not JSON" in (await r.json())["error"]
    async with session.put(f"{base}/OP1", json=None) as r:
        assert r.status == 400
    async with session.put(f"{base}/NOPE", json=[]) as r:
        assert r.status == 404 and "NOPE" in (await r.json())["error"]
    async with session.post(f"{base}/OP1", json=[]) as r:
        assert r.status == 405


@module_loop
async def test_attach_faults_to_a_server_built_without_them(rig: Rig, tmp_path: Path) -> None:
    plain = OcpiServer(rig.server.op, rig.server.clock, rig.pki.server_ssl_context(), page_limit=5)
    faults = attach_faults(plain, SEED, tmp_path, name="plain")
    assert plain.app.middlewares[1] == faults.middleware and len(plain.app.middlewares) == 4
    await plain.start()
    try:
        await faults.apply([{"kind": "rate_limit", "retry_after": 3}, {"kind": "tls_self_signed", "start": 5}])
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=rig.pki.client_ssl_context())) as s:
            async with s.get(plain.versions_url, headers=rig.auth()) as r:
                assert (r.status, r.headers["Retry-After"]) == (429, "3")
        assert [f["state"] for f in faults.active()["faults"]] == ["active", "pending"]
    finally:
        await faults.close()
        await plain.stop()
    with pytest.raises(RuntimeError):
        attach_faults(plain, SEED, tmp_path)
