"""The Open Charge Map adapter: POIs to locations, and keyset paging against a scripted OCM on real TLS.

The scripted server filters and sorts as OCM's own code does (`modifiedsince` inclusive on
DateLastStatusUpdate, `sortby=modified_asc` on that timestamp alone, `id_asc`, `greaterthanid`),
and shuffles POIs that share a timestamp on every request, since OCM's order among them is not
stable either. Each test checks which POIs the adapter yields and what it asked for.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from adapters.http import HttpClient, UpstreamError
from adapters.model import Page
from adapters.ocm import OcmAdapter
from adapters.ocm_parse import parse_poi
from adapters.ocpi_parse import RecordError
from tests.support import serve_tls, shared_path

FIXTURE = orjson.loads(shared_path("fixtures", "other", "ocm_poi_v3_example.json").read_bytes())
API_KEY = "ocm-test-key-123"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def poi(poi_id: int, updated: datetime | None, **extra: Any) -> dict[str, Any]:
    """A minimal valid POI as `/poi?compact=false&verbose=false` returns it."""
    body: dict[str, Any] = {
        "ID": poi_id,
        "StatusTypeID": 50,
        "OperatorInfo": {"ID": 3, "Title": "POD Point (UK)"},
        "AddressInfo": {
            "ID": poi_id,
            "Title": f"Site {poi_id}",
            "AddressLine1": f"{poi_id} High Street",
            "Town": "London",
            "Postcode": "WC2N 5DN",
            "CountryID": 1,
            "Country": {"ID": 1, "ISOCode": "GB", "Title": "United Kingdom"},
            "Latitude": 51.5 + poi_id / 10_000,
            "Longitude": -0.12,
        },
        "Connections": [
            {"ID": poi_id * 10, "ConnectionTypeID": 25, "StatusTypeID": 50, "PowerKW": 22, "CurrentTypeID": 20}
        ],
        "DateCreated": "2019-01-01T00:00:00Z",
        **extra,
    }
    if updated is not None:
        body["DateLastStatusUpdate"] = iso(updated)
    return body


@dataclass
class Ocm:
    """The scripted server's data and what it was asked."""

    pois: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    ignore_sort: bool = False
    before_answer: Callable[[Ocm], None] | None = None


def answer(ocm: Ocm, query: dict[str, str]) -> list[dict[str, Any]]:
    """What OCM's POI query does with the parameters the adapter uses."""
    items = list(ocm.pois)
    if "modifiedsince" in query:
        since = datetime.fromisoformat(query["modifiedsince"].replace("Z", "+00:00"))
        items = [p for p in items if "DateLastStatusUpdate" in p and updated_of(p) >= since]
    if "greaterthanid" in query:
        items = [p for p in items if p["ID"] > int(query["greaterthanid"])]
    ocm.rng.shuffle(items)  # no stable order among equal sort keys
    if ocm.ignore_sort:
        items.sort(key=lambda p: -p["ID"])
    elif query.get("sortby") == "modified_asc":
        items.sort(key=lambda p: updated_of(p) if "DateLastStatusUpdate" in p else datetime.min.replace(tzinfo=UTC))
    elif query.get("sortby") == "id_asc":
        items.sort(key=lambda p: p["ID"])
    return items[: int(query.get("maxresults", "100"))]


def updated_of(p: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(p["DateLastStatusUpdate"].replace("Z", "+00:00"))


@pytest.fixture
async def ocm(tmp_path: Path) -> AsyncIterator[tuple[Ocm, str, str]]:
    state = Ocm()
    app = web.Application()

    async def pois(request: web.Request) -> web.Response:
        state.keys.append(request.headers.get("X-API-Key"))
        state.urls.append(request.path_qs)
        if request.headers.get("X-API-Key") != API_KEY:
            return web.Response(status=401, text="invalid key")
        query = dict(request.query)
        state.requests.append(query)
        if state.before_answer is not None:
            state.before_answer(state)
        headers = {"Date": "Fri, 02 Jan 2026 03:04:05 GMT"}
        return web.Response(body=orjson.dumps(answer(state, query)), content_type="application/json", headers=headers)

    app.router.add_get("/v3/poi", pois)
    async for url, ca in serve_tls(app, tmp_path / "pki"):
        yield state, f"{url}/v3", ca


async def crawl(
    base: str, ca: str, date_from: datetime | None, date_to: datetime, *, key: str = API_KEY, **kwargs: Any
) -> list[Page]:
    async with HttpClient(ca_bundle=ca, timeout=5) as http:
        adapter = OcmAdapter(http, base_url=base, api_key=key, **kwargs)
        return [page async for page in adapter.crawl("locations", date_from, date_to)]


def yielded(pages: list[Page]) -> list[tuple[str, datetime]]:
    return [(r.source_id, r.last_updated) for p in pages for r in p.records]


# ---------------------------------------------------------------------------------------------
# POI -> LocationRecord
# ---------------------------------------------------------------------------------------------


def test_the_shared_fixture_pois_parse_to_concrete_values() -> None:
    afcon, pod = (parse_poi(p) for p in FIXTURE)

    assert afcon.source_id == "189853"
    assert afcon.name == "בית משה"  # this example names reference objects by `description`
    assert (afcon.address, afcon.city, afcon.postal_code, afcon.country) == ("כצנלסון 10", "Ashkelon", "78100", "ISR")
    assert (afcon.latitude, afcon.longitude) == (31.66148706692408, 34.587748089749425)
    assert afcon.operator_name == "Afcon (Israel)"
    assert afcon.publish is True and afcon.country_code is None and afcon.party_id is None
    assert afcon.last_updated == datetime(2021, 11, 7, 16, 36, tzinfo=UTC)
    # Quantity 3 of Type 2 plus 1 CCS: four EVSEs, as NumberOfPoints says.
    assert [e.uid for e in afcon.evses] == ["307235-1", "307235-2", "307235-3", "307236-1"]
    assert {e.status for e in afcon.evses} == {"AVAILABLE"}
    t2, ccs = afcon.evses[0].connectors[0], afcon.evses[3].connectors[0]
    assert (t2.standard, t2.format, t2.power_type, t2.max_electric_power) == (
        "IEC_62196_T2",
        "SOCKET",
        "AC_3_PHASE",
        22000,
    )
    assert (ccs.standard, ccs.format, ccs.power_type, ccs.max_electric_power) == (
        "IEC_62196_T2_COMBO",
        "CABLE",
        "DC",
        50000,
    )
    assert t2.max_voltage is None and t2.max_amperage is None and t2.max_power_kw == 22.0
    assert all(e.evse_id is None and e.last_updated == afcon.last_updated for e in afcon.evses)

    assert pod.source_id == "148527"
    assert pod.name == "string"  # the OpenAPI example's placeholder title, kept as given
    assert (pod.address, pod.city, pod.postal_code, pod.country) == ("Buttsgrove Way", "Huntingdon", "PE29 1PE", "GBR")
    assert (pod.latitude, pod.longitude) == (52.343197, -0.170632)
    assert pod.operator_name == "POD Point (UK)"
    assert pod.last_updated == datetime(2020, 2, 4, 6, 33, tzinfo=UTC)
    assert [e.uid for e in pod.evses] == ["206241-1", "206241-2"]
    connector = pod.evses[0].connectors[0]
    assert (connector.standard, connector.power_type, connector.max_voltage, connector.max_amperage) == (
        "IEC_62196_T2",
        "AC_1_PHASE",
        230,
        32,
    )
    assert connector.max_electric_power == 7400 and connector.tariff_ids == []


@pytest.mark.parametrize(
    ("connection_status", "site_status", "expected"),
    [
        (10, 50, "AVAILABLE"),
        (50, None, "AVAILABLE"),
        (20, 50, "CHARGING"),
        (30, 50, "INOPERATIVE"),
        (100, 50, "OUTOFORDER"),
        (150, 50, "PLANNED"),
        (200, 50, "REMOVED"),
        (0, 50, "UNKNOWN"),
        (None, 100, "OUTOFORDER"),  # no status of its own: the site's
        (None, None, "UNKNOWN"),
        (12345, 50, "UNKNOWN"),
    ],
)
def test_evse_status_comes_from_the_connection_else_the_site(
    connection_status: int | None, site_status: int | None, expected: str
) -> None:
    raw = poi(1, stamp(0), StatusTypeID=site_status)
    raw["Connections"][0]["StatusTypeID"] = connection_status
    assert parse_poi(raw).evses[0].status == expected


@pytest.mark.parametrize(
    ("type_id", "standard", "fmt"),
    [
        (25, "IEC_62196_T2", "SOCKET"),
        (1036, "IEC_62196_T2", "CABLE"),
        (33, "IEC_62196_T2_COMBO", "CABLE"),
        (2, "CHADEMO", "CABLE"),
        (3, "DOMESTIC_G", "SOCKET"),
        (1, "IEC_62196_T1", "CABLE"),
        (32, "IEC_62196_T1_COMBO", "CABLE"),
        (27, "TESLA_S", "CABLE"),
        (30, "TESLA_S", "CABLE"),
        (28, "DOMESTIC_F", "SOCKET"),
        (8, "UNKNOWN", None),
    ],
)
def test_connection_types_map_to_ocpi_standards(type_id: int, standard: str, fmt: str | None) -> None:
    raw = poi(1, stamp(0))
    raw["Connections"][0]["ConnectionTypeID"] = type_id
    connector = parse_poi(raw).evses[0].connectors[0]
    assert (connector.standard, connector.format) == (standard, fmt)


def test_tolerant_where_the_data_still_means_something() -> None:
    raw = poi(7, None, DateLastVerified="2024-05-06T07:08:09Z", OperatorInfo=None)
    raw["AddressInfo"].update(AddressLine1=None, AddressLine2="Unit 4", Postcode="X" * 40, Title="  ")
    raw["Connections"] = [{"ID": 70, "ConnectionType": {"ID": 33}, "CurrentType": {"ID": 30}, "Quantity": 0}]
    loc = parse_poi(raw)
    assert loc.last_updated == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)  # no DateLastStatusUpdate
    assert (loc.name, loc.address, loc.postal_code, loc.operator_name) == (None, "Unit 4", None, None)
    assert [e.uid for e in loc.evses] == ["70-1"]  # a missing quantity is one unit
    assert loc.evses[0].connectors[0].standard == "IEC_62196_T2_COMBO"  # ids from the embedded objects
    assert loc.evses[0].connectors[0].power_type == "DC"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda p: p.pop("ID"), "ID"),
        (lambda p: p["AddressInfo"].pop("Latitude"), "Latitude"),
        (lambda p: p["AddressInfo"].update(Latitude=0, Longitude=0), "placeholder"),
        (lambda p: p["AddressInfo"].update(Latitude=123.0), "out of range"),
        (lambda p: [p.pop(k, None) for k in ("DateLastStatusUpdate", "DateCreated")], "DateLastStatusUpdate"),
        (lambda p: p["Connections"][0].pop("ID"), "Connections[0].ID"),
        (lambda p: p["Connections"][0].update(Quantity=5000), "Quantity"),
    ],
)
def test_pois_that_cannot_be_normalised_say_why(change: Callable[[dict[str, Any]], Any], reason: str) -> None:
    raw = poi(1, stamp(0))
    change(raw)
    with pytest.raises(RecordError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_poi(raw)


# ---------------------------------------------------------------------------------------------
# Crawling
# ---------------------------------------------------------------------------------------------


async def test_ties_across_page_boundaries_are_neither_lost_nor_repeated(ocm: tuple[Ocm, str, str]) -> None:
    state, base, ca = ocm
    minutes = [0, 0, 1, 1, 1, 2, 3, 3, 3, 4, 5, 5, 6, 6, 7]  # ties smaller than a page
    state.pois = [poi(100 + i, stamp(m)) for i, m in enumerate(minutes)]
    for seed in range(5):  # a different shuffle of the ties each time
        state.rng, state.requests = random.Random(seed), []
        pages = await crawl(base, ca, T0, stamp(60), page_size=4)
        got = yielded(pages)
        assert sorted(got) == sorted((str(p["ID"]), updated_of(p)) for p in state.pois), seed
        assert len(got) == len(set(got))
        assert len(state.requests) <= 8  # bounded: each page moves the keyset on
        assert all(r["sortby"] == "modified_asc" and r["maxresults"] == "4" for r in state.requests)
    # Each next page asks again from the last timestamp of the one before (inclusive), not after it.
    assert state.requests[0]["modifiedsince"] == "2026-01-01T00:00:00Z"
    assert state.requests[1]["modifiedsince"] == "2026-01-01T00:01:00Z"


async def test_a_full_page_on_one_timestamp_is_walked_by_id(ocm: tuple[Ocm, str, str]) -> None:
    state, base, ca = ocm
    state.pois = [poi(1, stamp(0)), poi(2, stamp(0))]
    state.pois += [poi(10 + i, stamp(1)) for i in range(9)]  # more than a page share one second
    state.pois += [poi(50, stamp(2)), poi(3, stamp(3))]
    pages = await crawl(base, ca, T0, stamp(60), page_size=4)
    got = yielded(pages)
    assert sorted(got) == sorted((str(p["ID"]), updated_of(p)) for p in state.pois)
    assert len(got) == len(set(got))
    walk = [r for r in state.requests if r["sortby"] == "id_asc"]
    assert walk and all(r["modifiedsince"] == "2026-01-01T00:01:00Z" for r in walk)
    assert [r.get("greaterthanid") for r in walk] == [None, "12", "16"]


async def test_records_from_date_to_on_are_left_to_the_next_window(ocm: tuple[Ocm, str, str]) -> None:
    state, base, ca = ocm
    state.pois = [poi(i, stamp(i)) for i in range(1, 21)]
    first = await crawl(base, ca, T0, stamp(6), page_size=4)
    assert [sid for sid, _ in yielded(first)] == ["1", "2", "3", "4", "5"]
    assert len(state.requests) == 2  # stops once the timestamps pass the window's end
    second = await crawl(base, ca, stamp(6), stamp(30), page_size=4)
    assert [sid for sid, _ in yielded(second)] == [str(i) for i in range(6, 21)]


async def test_a_poi_edited_during_the_crawl_comes_again_with_its_new_version(ocm: tuple[Ocm, str, str]) -> None:
    state, base, ca = ocm
    state.pois = [poi(i, stamp(i)) for i in range(1, 9)]

    def edit_first_poi(s: Ocm) -> None:
        if len(s.requests) == 2:
            s.pois[0] = poi(1, stamp(7.5))

    state.before_answer = edit_first_poi
    got = yielded(await crawl(base, ca, T0, stamp(60), page_size=3))
    assert [sid for sid, _ in got].count("1") == 2
    assert ("1", stamp(7.5)) in got and len(got) == 9


async def test_first_run_mirrors_everything_by_id(ocm: tuple[Ocm, str, str]) -> None:
    state, base, ca = ocm
    state.pois = [poi(i, stamp(10 - i)) for i in range(1, 8)] + [poi(8, None)]  # 8: only DateCreated
    pages = await crawl(base, ca, None, stamp(60), page_size=3)
    assert sorted(int(sid) for sid, _ in yielded(pages)) == list(range(1, 9))
    assert all(r["sortby"] == "id_asc" and "modifiedsince" not in r for r in state.requests)
    assert [r.get("greaterthanid") for r in state.requests] == [None, "3", "6"]


async def test_invalid_pois_are_quarantined_and_the_page_kept(ocm: tuple[Ocm, str, str]) -> None:
    state, base, ca = ocm
    broken = poi(2, stamp(1))
    del broken["AddressInfo"]["Latitude"]
    state.pois = [poi(1, stamp(0)), broken, poi(3, stamp(2))]
    pages = await crawl(base, ca, T0, stamp(60))
    assert [sid for sid, _ in yielded(pages)] == ["1", "3"]
    (bad,) = [i for p in pages for i in p.invalid]
    assert bad.source_id == "2" and bad.module == "locations" and "Latitude" in bad.reason and bad.raw == broken


async def test_request_parameters_and_the_key_in_a_header_only(ocm: tuple[Ocm, str, str]) -> None:
    state, base, ca = ocm
    state.pois = [poi(1, stamp(0))]
    box = "(51.7,-0.6),(51.2,0.4)"
    await crawl(base, ca, T0, stamp(60), bounding_box=box, country_code="GB", page_size=50)
    (query,) = state.requests
    assert query == {
        "output": "json",
        "verbose": "false",
        "compact": "false",
        "camelcase": "false",
        "includecomments": "false",
        "maxresults": "50",
        "boundingbox": box,
        "countrycode": "GB",
        "sortby": "modified_asc",
        "modifiedsince": "2026-01-01T00:00:00Z",
    }
    assert state.keys == [API_KEY]
    assert API_KEY not in state.urls[0] and "key=" not in state.urls[0]


async def test_a_refused_key_is_upstream_auth(ocm: tuple[Ocm, str, str]) -> None:
    _, base, ca = ocm
    with pytest.raises(UpstreamError) as exc:
        await crawl(base, ca, T0, stamp(60), key="wrong")
    assert exc.value.code == "UPSTREAM_AUTH" and "wrong" not in str(exc.value)


async def test_a_server_that_ignores_the_order_is_a_protocol_error(ocm: tuple[Ocm, str, str]) -> None:
    state, base, ca = ocm
    state.pois = [poi(i, stamp(i)) for i in range(1, 6)]
    state.ignore_sort = True
    with pytest.raises(UpstreamError) as exc:
        await crawl(base, ca, T0, stamp(60), page_size=10)
    assert exc.value.code == "UPSTREAM_PROTOCOL"
    with pytest.raises(UpstreamError) as exc:
        await crawl(base, ca, None, stamp(60), page_size=10)
    assert exc.value.code == "UPSTREAM_PROTOCOL"


async def test_server_now_is_the_date_header_and_other_modules_are_refused(ocm: tuple[Ocm, str, str]) -> None:
    state, base, ca = ocm
    async with HttpClient(ca_bundle=ca, timeout=5) as http:
        adapter = OcmAdapter(http, base_url=base + "/", api_key=API_KEY)
        assert await adapter.server_now() == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert state.requests[0]["maxresults"] == "1"
        with pytest.raises(UpstreamError) as exc:
            [page async for page in adapter.crawl("tariffs", T0, stamp(1))]
        assert exc.value.code == "UPSTREAM_PROTOCOL"
