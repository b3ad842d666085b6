"""The OICP adapter against a scripted Hubject on real mutual TLS: paging, delta pulls, statuses, CDRs, codes.

The scripted hub requires a client certificate signed by its CA, as Hubject does, and answers
each POST with what the test sets. Each test checks what the adapter sends (URL, query, body) and
what it makes of the answers (records, UpstreamError codes, the operator's clock).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters.http import HttpClient, UpstreamError
from adapters.model import CdrRecord, LocationRecord, Page, SessionRecord, StatusRecord
from adapters.oicp import OicpAdapter
from tests.support import shared_path

PROVIDER = "DE*8EO"
EVSE_RECORD = orjson.loads(
    shared_path("fixtures", "oicp", "code-snippets-emp", "eRoamingPullEVSEData_response.json").read_bytes()
)["content"][0]
CDR = orjson.loads(
    shared_path("fixtures", "oicp", "openapi-examples-emp", "eRoamingChargeDetailRecord.example.json").read_bytes()
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)
HUB_DATE = "Fri, 02 Jan 2026 03:04:05 GMT"
HUB_NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OK = {"Code": "000", "Description": "Success"}


# --- a throw-away PKI: CA, server certificate for 127.0.0.1, client certificates -----------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: tuple[Path, Path]
    client: tuple[Path, Path]  # signed by the CA, CN = our provider id
    stranger: tuple[Path, Path]  # self-signed: not trusted by the hub


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evgate test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _issue(
    directory: Path,
    stem: str,
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usage: x509.ObjectIdentifier | None,
) -> tuple[Path, Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `subject` signed by `issuer` (self-signed CA when None), written as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path, cert, key


def make_mtls_pki(directory: Path) -> Pki:
    """A CA, a server certificate it signs for 127.0.0.1, a client certificate it signs, and a stranger's."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, _, ca_cert, ca_key = _issue(directory, "ca", "evgate test hub CA", None, None)
    issuer = (ca_cert.subject, ca_key)
    server = _issue(directory, "server", "127.0.0.1", issuer, ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue(directory, "client", PROVIDER, issuer, ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = _issue(directory, "stranger", PROVIDER, None, None)
    return Pki(ca_path, server[:2], client[:2], stranger[:2])


# --- the scripted hub --------------------------------------------------------------------------


def answer(body: Any, *, date: str | None = HUB_DATE) -> web.Response:
    """A JSON answer; its Date header is the hub's clock (aiohttp adds the real time when None)."""
    return web.Response(
        body=orjson.dumps(body), content_type="application/json", headers={"Date": date} if date else {}
    )


def page(content: list[Any], number: int, last: bool, total: int | None = None, **extra: Any) -> dict[str, Any]:
    """A Spring-style OICP page."""
    body = {
        "content": content,
        "number": number,
        "size": len(content),
        "totalElements": total if total is not None else len(content),
        "last": last,
        "first": number == 0,
        "numberOfElements": len(content),
        "StatusCode": OK,
    }
    return body | extra


@dataclass
class Call:
    path: str
    query: dict[str, str]
    body: Any
    peer_cn: str | None


@dataclass
class Hub:
    """What the hub answers per endpoint (a function of the call and its number), and what it saw."""

    data: Callable[[Call, int], web.Response] | None = None
    status: Callable[[Call, int], web.Response] | None = None
    cdrs: Callable[[Call, int], web.Response] | None = None
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    pki: Pki | None = None


def _peer_cn(request: web.Request) -> str | None:
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


@pytest.fixture
async def hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Hub]:
    """The scripted hub; `indirect` parametrisation may cap its TLS version (default: up to 1.3)."""
    max_version = getattr(request, "param", ssl.TLSVersion.TLSv1_3)
    pki = make_mtls_pki(tmp_path / "pki")
    script = Hub(pki=pki)

    def route(name: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            call = Call(request.path, dict(request.query), await request.json(), _peer_cn(request))
            if call.peer_cn != request.match_info["provider"]:
                # Hubject matches the ProviderID to the certificate on every request.
                return answer({"StatusCode": {"Code": "017", "Description": "Unauthorized Access"}})
            script.calls.append(call)
            handler_fn = getattr(script, name)
            assert handler_fn is not None, f"no answer scripted for {name}"
            return handler_fn(call, sum(1 for c in script.calls if c.path == call.path))

        return handler

    app = web.Application()
    app.router.add_post("/api/oicp/evsepull/v23/providers/{provider}/data-records", route("data"))
    app.router.add_post("/api/oicp/evsepull/v21/providers/{provider}/status-records", route("status"))
    app.router.add_post("/api/oicp/cdrmgmt/v22/providers/{provider}/get-charge-detail-records-request", route("cdrs"))

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = max_version
    ctx.load_cert_chain(*pki.server)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no connection
    ctx.load_verify_locations(cafile=str(pki.ca))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    script.url = f"https://127.0.0.1:{port}/api/oicp"
    try:
        yield script
    finally:
        await runner.cleanup()


def client(hub: Hub, cert: tuple[Path, Path] | None = None, *, use_cert: bool = True) -> HttpClient:
    assert hub.pki is not None
    chosen = cert or hub.pki.client
    return HttpClient(
        ca_bundle=str(hub.pki.ca), timeout=5, client_cert=(str(chosen[0]), str(chosen[1])) if use_cert else None
    )


async def crawl(hub: Hub, module: Any, date_from: datetime | None = T0, *, page_size: int = 2) -> list[Page]:
    async with client(hub) as http:
        adapter = OicpAdapter(http, base_url=hub.url, provider_id=PROVIDER, page_size=page_size)
        return [p async for p in adapter.crawl(module, date_from, T1)]


def evse(i: int, pool: str = "DE*ABC*P1", **extra: Any) -> dict[str, Any]:
    return (
        EVSE_RECORD
        | {"EvseID": f"DE*ABC*E{i}", "ChargingPoolID": pool, "lastUpdate": f"2026-01-01T0{i}:00:00Z"}
        | extra
    )


# --- EVSE data ---------------------------------------------------------------------------------


async def test_evse_data_pages_until_last_with_last_call(hub: Hub) -> None:
    pages = {0: [evse(1), evse(2, "DE*ABC*P2")], 1: [evse(3), evse(4, "DE*ABC*P2")], 2: [evse(5, "DE*ABC*P3")]}
    hub.data = lambda call, n: answer(page(pages[int(call.query["page"])], int(call.query["page"]), n == 3, total=5))
    result = await crawl(hub, "locations")
    assert [c.query for c in hub.calls] == [{"page": str(i), "size": "2"} for i in range(3)]
    assert all(c.path == "/api/oicp/evsepull/v23/providers/DE*8EO/data-records" for c in hub.calls)
    assert hub.calls[0].body == {
        "ProviderID": PROVIDER,
        "GeoCoordinatesResponseFormat": "DecimalDegree",
        "LastCall": "2026-01-01T00:00:00.000Z",
    }
    assert all(c.body == hub.calls[0].body for c in hub.calls)
    assert [[(r.source_id, [e.uid for e in r.evses]) for r in p.records] for p in result] == [
        [("DE*ABC*P1", ["DE*ABC*E1"]), ("DE*ABC*P2", ["DE*ABC*E2"])],
        [("DE*ABC*P1", ["DE*ABC*E3"]), ("DE*ABC*P2", ["DE*ABC*E4"])],
        [("DE*ABC*P3", ["DE*ABC*E5"])],
    ]
    assert [p.total_count for p in result] == [5, 5, 5]
    assert all(p.server_time == HUB_NOW for p in result)
    assert {c.peer_cn for c in hub.calls} == {PROVIDER}  # our client certificate, seen by the hub


async def test_full_load_omits_last_call_and_stops_on_an_empty_page(hub: Hub) -> None:
    # A server that never says `last`: the empty page ends the crawl.
    hub.data = lambda call, n: answer(page([evse(1)] if n == 1 else [], n - 1, False))
    result = await crawl(hub, "locations", None)
    assert "LastCall" not in hub.calls[0].body
    assert len(hub.calls) == 2 and [len(p.records) for p in result] == [1, 0]


async def test_last_update_missing_falls_back_to_the_hub_clock(hub: Hub) -> None:
    record = {k: v for k, v in evse(1).items() if k != "lastUpdate"}
    hub.data = lambda call, n: answer(page([record], 0, True))
    (result,) = await crawl(hub, "locations")
    (loc,) = result.records
    assert isinstance(loc, LocationRecord) and loc.last_updated == HUB_NOW


async def test_delete_delta_gives_removed(hub: Hub) -> None:
    sparse = {"EvseID": "DE*ABC*E9", "deltaType": "delete", "lastUpdate": "2026-01-01T12:00:00+01:00"}
    hub.data = lambda call, n: answer(page([evse(1, deltaType="delete"), evse(2, deltaType="update"), sparse], 0, True))
    (result,) = await crawl(hub, "locations")
    loc, status = result.records
    assert isinstance(loc, LocationRecord)
    assert [(e.uid, e.status) for e in loc.evses] == [("DE*ABC*E1", "REMOVED"), ("DE*ABC*E2", None)]
    assert status == StatusRecord("DE*ABC*E9", "REMOVED", datetime(2026, 1, 1, 11, tzinfo=UTC))


async def test_a_bad_record_is_quarantined_and_its_page_kept(hub: Hub) -> None:
    hub.data = lambda call, n: answer(
        page([evse(1), evse(2, GeoCoordinates={"Google": {"Coordinates": "x"}})], 0, True)
    )
    (result,) = await crawl(hub, "locations")
    assert [e.uid for r in result.records for e in r.evses] == ["DE*ABC*E1"]  # type: ignore[union-attr]
    assert [(b.module, b.source_id) for b in result.invalid] == [("locations", "DE*ABC*E2")]


async def test_a_server_ignoring_the_page_parameter_is_stopped(hub: Hub) -> None:
    hub.data = lambda call, n: answer(page([evse(1)], 0, False))
    with pytest.raises(UpstreamError) as err:
        await crawl(hub, "locations")
    assert err.value.code == "UPSTREAM_PROTOCOL" and "asked for page 1, got page 0" in err.value.message
    assert len(hub.calls) == 2


# --- EVSE status -------------------------------------------------------------------------------


def statuses(*pairs: tuple[str, str]) -> dict[str, Any]:
    records = [{"EvseID": e, "EvseStatus": s} for e, s in pairs]
    return {
        "EvseStatuses": {"OperatorEvseStatus": [{"OperatorID": "DE*ABC", "EvseStatusRecord": records}]},
        "StatusCode": OK,
    }


async def test_statuses_are_one_page_stamped_with_the_hub_clock(hub: Hub) -> None:
    pairs = [
        ("DE*ABC*E1", "Available"),
        ("DE*ABC*E2", "Occupied"),
        ("DE*ABC*E3", "OutOfService"),
        ("DE*ABC*E4", "Busy"),
    ]
    hub.status = lambda call, n: answer(statuses(*pairs))
    (result,) = await crawl(hub, "statuses")
    assert hub.calls[0].body == {"ProviderID": PROVIDER} and hub.calls[0].query == {}
    assert [(r.evse_uid, r.status, r.last_updated) for r in result.records] == [  # type: ignore[union-attr]
        ("DE*ABC*E1", "AVAILABLE", HUB_NOW),
        ("DE*ABC*E2", "CHARGING", HUB_NOW),
        ("DE*ABC*E3", "OUTOFORDER", HUB_NOW),
    ]
    assert [(b.module, b.source_id) for b in result.invalid] == [("statuses", "DE*ABC*E4")]
    assert result.total_count == 4 and result.server_time == HUB_NOW


async def test_statuses_without_a_readable_date_are_stamped_with_the_window_end(hub: Hub) -> None:
    hub.status = lambda call, n: answer(statuses(("DE*ABC*E1", "Reserved")), date="not a date")
    (result,) = await crawl(hub, "statuses")
    assert result.records == [StatusRecord("DE*ABC*E1", "RESERVED", T1)]
    assert result.server_time is None


# --- CDRs --------------------------------------------------------------------------------------


def cdr(i: int) -> dict[str, Any]:
    return CDR | {"SessionID": f"{i:08d}-0000-4000-8000-000000000000", "SessionEnd": f"2026-01-01T0{i}:30:00Z"}


async def test_cdrs_send_the_window_page_and_are_deduplicated(hub: Hub) -> None:
    pages = {0: [cdr(1), cdr(2), cdr(1)], 1: [cdr(2), cdr(3)]}
    hub.cdrs = lambda call, n: answer(page(pages[n - 1], n - 1, n == 2, StatusCode=None))
    result = await crawl(hub, "cdrs", page_size=3)
    assert hub.calls[0].body == {
        "ProviderID": PROVIDER,
        "From": "2026-01-01T00:00:00.000Z",
        "To": "2026-01-02T00:00:00.000Z",
    }
    assert hub.calls[0].path == "/api/oicp/cdrmgmt/v22/providers/DE*8EO/get-charge-detail-records-request"
    assert [c.query for c in hub.calls] == [{"page": "0", "size": "3"}, {"page": "1", "size": "3"}]
    ids = [[(type(r).__name__, r.source_id[:8]) for r in p.records] for p in result]
    assert ids == [
        [
            ("CdrRecord", "00000001"),
            ("SessionRecord", "00000001"),
            ("CdrRecord", "00000002"),
            ("SessionRecord", "00000002"),
        ],
        [("CdrRecord", "00000003"), ("SessionRecord", "00000003")],
    ]
    first_cdr, first_session = result[0].records[:2]
    assert isinstance(first_cdr, CdrRecord) and isinstance(first_session, SessionRecord)
    assert first_cdr.evse_uid == first_session.evse_uid == "DE*XYZ*ETEST1" and first_session.status == "COMPLETED"
    assert first_cdr.last_updated == datetime(2026, 1, 1, 1, 30, tzinfo=UTC)


async def test_cdrs_without_a_lower_bound_start_at_the_epoch(hub: Hub) -> None:
    hub.cdrs = lambda call, n: answer(page([], 0, True))
    await crawl(hub, "cdrs", None, page_size=5000)
    assert hub.calls[0].body["From"] == "1970-01-01T00:00:00.000Z"
    assert hub.calls[0].query["size"] == "2000"  # Hubject's maximum


# --- status codes and shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"StatusCode": {"Code": "017", "Description": "Unauthorized Access"}}, "UPSTREAM_AUTH"),
        ({"Result": False, "StatusCode": {"Code": "017"}}, "UPSTREAM_AUTH"),
        ({"StatusCode": {"Code": "001", "Description": "Hubject system error"}}, "UPSTREAM_UNAVAILABLE"),
        ({"StatusCode": {"Code": "320"}}, "UPSTREAM_UNAVAILABLE"),
        ({"content": [], "StatusCode": {"Code": "021"}}, "UPSTREAM_UNAVAILABLE"),
        ({"StatusCode": {"Code": "022", "Description": "Data error"}}, "UPSTREAM_PROTOCOL"),
        ({"Result": False, "StatusCode": {"Code": "000"}}, "UPSTREAM_PROTOCOL"),
        ({"StatusCode": None}, "UPSTREAM_PROTOCOL"),
        ({"content": {"not": "a list"}, "StatusCode": OK}, "UPSTREAM_PROTOCOL"),
        ([{"EvseID": "x"}], "UPSTREAM_PROTOCOL"),
    ],
    ids=[
        "017",
        "ack-017",
        "001",
        "320",
        "021-with-content",
        "022",
        "ack-false-000",
        "null-no-content",
        "content-object",
        "bare-list",
    ],
)
async def test_status_codes_map_to_catalogue_codes(hub: Hub, body: Any, code: str) -> None:
    hub.data = lambda call, n: answer(body)
    with pytest.raises(UpstreamError) as err:
        await crawl(hub, "locations")
    assert err.value.code == code


async def test_status_answer_of_the_wrong_shape_is_a_protocol_error(hub: Hub) -> None:
    hub.status = lambda call, n: answer({"EvseStatuses": "none", "StatusCode": OK})
    with pytest.raises(UpstreamError) as err:
        await crawl(hub, "statuses")
    assert err.value.code == "UPSTREAM_PROTOCOL" and "EvseStatuses" in err.value.message


# --- the operator's clock and mutual TLS -------------------------------------------------------


async def test_server_now_is_the_date_of_a_cheap_status_pull(hub: Hub) -> None:
    # The probe asks for no EVSE; even a data error in the answer leaves the clock readable.
    hub.status = lambda call, n: answer({"StatusCode": {"Code": "022"}})
    async with client(hub) as http:
        adapter = OicpAdapter(http, base_url=hub.url, provider_id=PROVIDER)
        assert await adapter.server_now() == HUB_NOW
    assert hub.calls[0].body == {"ProviderID": PROVIDER, "EvseID": []}


async def test_server_now_raises_when_the_hub_refuses_our_provider_id(hub: Hub) -> None:
    async with client(hub) as http:
        adapter = OicpAdapter(http, base_url=hub.url, provider_id="DE*OTHER")  # not our certificate's
        with pytest.raises(UpstreamError) as err:
            await adapter.server_now()
    assert err.value.code == "UPSTREAM_AUTH" and "017" in err.value.message


# What a client the hub refuses (no certificate, or one its CA did not sign) observes depends on
# the TLS version. Under 1.2 the hub resets the connection inside the handshake: aiohttp raises a
# connector error, which HttpClient maps to UPSTREAM_TLS. Under 1.3 our side of the handshake is
# already complete when the hub checks the certificate, so its refusal arrives as a reset on the
# first read, indistinguishable from a server dropping the connection: UPSTREAM_UNAVAILABLE.
# Both observed on every run; either way a clean UpstreamError, never a crash.
REFUSAL = [
    pytest.param(ssl.TLSVersion.TLSv1_3, "UPSTREAM_UNAVAILABLE", id="tls1.3"),
    pytest.param(ssl.TLSVersion.TLSv1_2, "UPSTREAM_TLS", id="tls1.2"),
]


@pytest.mark.parametrize(("hub", "code"), REFUSAL, indirect=["hub"])
async def test_client_without_certificate_is_refused_cleanly(hub: Hub, code: str) -> None:
    hub.status = lambda call, n: answer({"StatusCode": OK})
    async with client(hub, use_cert=False) as http:
        adapter = OicpAdapter(http, base_url=hub.url, provider_id=PROVIDER)
        with pytest.raises(UpstreamError) as err:
            await adapter.server_now()
    assert err.value.code == code, err.value.message
    assert hub.url in err.value.message and err.value.retry_after is None
    assert hub.calls == []  # no request got through


@pytest.mark.parametrize(("hub", "code"), REFUSAL, indirect=["hub"])
async def test_client_with_an_untrusted_certificate_is_refused(hub: Hub, code: str) -> None:
    assert hub.pki is not None
    async with client(hub, hub.pki.stranger) as http:
        adapter = OicpAdapter(http, base_url=hub.url, provider_id=PROVIDER)
        with pytest.raises(UpstreamError) as err:
            await adapter.server_now()
    assert err.value.code == code, err.value.message
    assert hub.calls == []
