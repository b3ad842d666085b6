"""Every EVSE data, EVSE status and CDR example of OICP 2.3 parses, and each of Hubject's quirks is handled.

The examples are read from ../shared/fixtures/oicp: the EMP code snippets and OpenAPI examples,
plus the CPO side's EVSE data records and CDRs (the same record types, pushed). Expected values
are read off the files. Hubject's example quirks (protocols.md §2.7) each have a test of their own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.http import Response, UpstreamError
from adapters.model import CdrRecord, LocationRecord, SessionRecord, StatusRecord
from adapters.oicp import check_response, status_code
from adapters.oicp_parse import (
    RecordError,
    group_locations,
    parse_cdr,
    parse_cdr_page,
    parse_coordinates,
    parse_datetime,
    parse_evse_data,
    parse_evse_data_page,
    parse_opening_times,
    parse_status_page,
    plug_standard,
)
from tests.support import shared_path

FIXTURES = shared_path("fixtures", "oicp")
PULLED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GUID = "f98efba4-02d8-4fa0-b810-9a9d50d2c527"
UPDATED = datetime(2018, 1, 23, 14, 4, 29, 377000, tzinfo=UTC)  # "2018-01-23T14:04:29.377Z"


def _load(*parts: str) -> Any:
    return orjson.loads((FIXTURES / Path(*parts)).read_bytes())


def _response(body: Any) -> Response:
    return Response(status=200, headers={}, body=body, url="https://hub.test/api/oicp/x")


EVSE_DATA_PAGES = ["code-snippets-emp/eRoamingPullEVSEData_response.json"]
EVSE_DATA_PUSHED = [
    "code-snippets-cpo/eRoamingPushEvseData_request.json",
    "openapi-examples-cpo/eRoamingPushEvseData.example.json",
]
STATUS_ANSWERS = [
    "code-snippets-emp/eRoamingPullEVSEStatus_response.json",
    "code-snippets-emp/eRoamingPullEVSEStatusByID_response.json",
    "code-snippets-emp/eRoamingPullEVSEStatusByOperatorID_response.json",
    "openapi-examples-emp/eRoamingEVSEStatus.example.json",
    "openapi-examples-emp/eRoamingEVSEStatusByID.example.json",
]
CDR_PAGES = [
    "code-snippets-emp/eRoamingGetChargeDetailRecord_response.json",
    "openapi-examples-emp/eRoamingChargeDetailRecords.example.json",
]
CDR_SINGLE = [
    "openapi-examples-emp/eRoamingChargeDetailRecord.example.json",
    "openapi-examples-cpo/eRoamingChargeDetailRecord.example.json",
    "code-snippets-cpo/eRoamingChargeDetailRecord_request.json",
]


def test_fixture_files_exist() -> None:
    for name in EVSE_DATA_PAGES + EVSE_DATA_PUSHED + STATUS_ANSWERS + CDR_PAGES + CDR_SINGLE:
        assert (FIXTURES / name).is_file(), name


def _assert_example_site(loc: LocationRecord, raw: dict[str, Any]) -> None:
    """The values of Hubject's one example EVSE record, read off the fixture."""
    assert loc.source_id == raw["ChargingPoolID"] == "DE*ABC*P1234TEST*1"
    assert loc.name == "ABC Charging Station Test"  # the "en" of two ChargingStationNames
    assert (loc.address, loc.city, loc.postal_code, loc.country) == ("EUREF CAMPUS 22", "Berlin", "10829", "DEU")
    assert (loc.latitude, loc.longitude) == (52.480495, 13.356465)  # Google "52.480495 13.356465"
    assert loc.parking_type == "PARKING_GARAGE" and loc.time_zone == "UTC+01:00"
    assert loc.last_updated == UPDATED
    (evse,) = loc.evses
    assert evse.uid == evse.evse_id == raw["EvseID"] == "DE*XYZ*ETEST1"
    assert evse.status is None  # comes from the status pull
    assert evse.floor_level == "6OG" and evse.last_updated == UPDATED
    assert evse.capabilities == ["RFID_READER", "REMOTE_START_STOP_CAPABLE", "RESERVABLE"]
    (con,) = evse.connectors
    assert (con.source_id, con.standard, con.format) == ("1", "IEC_62196_T2", "SOCKET")  # "Type 2 Outlet"
    assert (con.max_voltage, con.max_amperage, con.max_electric_power) == (480, 32, 22000)
    assert con.last_updated == UPDATED


@pytest.mark.parametrize("name", EVSE_DATA_PAGES)
def test_pull_evse_data_example_parses(name: str) -> None:
    body = _load(name)
    assert check_response(_response(body), "content") is body
    page = parse_evse_data_page(body["content"], PULLED_AT)
    assert page.invalid == []
    (loc,) = page.records
    assert isinstance(loc, LocationRecord)
    _assert_example_site(loc, body["content"][0])
    assert loc.operator_name == "ABC technologies"
    hours = loc.opening_times
    assert hours is not None and hours["twentyfourseven"] is False  # IsOpen24Hours false
    assert {(h["weekday"], h["period_begin"], h["period_end"]) for h in hours["regular_hours"]} == {
        (d, "09:00", "18:00") for d in range(1, 8)
    }  # "Everyday" 09:00-18:00


@pytest.mark.parametrize("name", EVSE_DATA_PUSHED)
def test_pushed_evse_data_records_parse(name: str) -> None:
    """The CPO side's pushed records are the same type; OperatorID sits on the envelope there."""
    body = _load(name)
    (raw,) = body["OperatorEvseData"]["EvseDataRecord"]
    loc = parse_evse_data(raw, PULLED_AT)
    assert isinstance(loc, LocationRecord)
    _assert_example_site(loc, raw)
    assert loc.country_code is None and loc.party_id is None  # no OperatorID in the record itself


def test_quirk_opening_times_under_key_true() -> None:
    """Quirk (OpenAPI YAML->JSON): the weekday key `on` became "true"; still read as the weekday."""
    raw = _load(EVSE_DATA_PUSHED[1])["OperatorEvseData"]["EvseDataRecord"][0]
    assert raw["OpeningTimes"][0] == {"Period": [{"begin": "09:00", "end": "18:00"}], "true": "Everyday"}
    hours = parse_opening_times(raw)
    assert hours is not None and len(hours["regular_hours"]) == 7
    assert parse_opening_times({"IsOpen24Hours": "true"}) == {"twentyfourseven": True}
    assert parse_opening_times({"IsOpen24Hours": False, "OpeningTimes": [{"on": "Someday"}]}) is None


def test_quirk_operator_id_spelled_operatorid() -> None:
    """Quirk: the PullEVSEData response example spells `OperatorId`; it is read like `OperatorID`."""
    raw = _load(EVSE_DATA_PAGES[0])["content"][0]
    assert "OperatorId" in raw and "OperatorID" not in raw
    loc = parse_evse_data(raw, PULLED_AT)
    assert isinstance(loc, LocationRecord)
    assert (loc.country_code, loc.party_id) == ("DE", "ABC")
    spec = {k: v for k, v in raw.items() if k != "OperatorId"} | {"OperatorID": "GB*XYZ"}
    loc = parse_evse_data(spec, PULLED_AT)
    assert isinstance(loc, LocationRecord) and (loc.country_code, loc.party_id) == ("GB", "XYZ")


@pytest.mark.parametrize(
    ("value", "status"),
    [("true", None), (True, None), ("auto", None), ("false", "UNKNOWN"), (False, "UNKNOWN")],
)
def test_quirk_dynamic_info_available_as_string(value: Any, status: str | None) -> None:
    """Quirk: the example sends `"DynamicInfoAvailable": "true"` (a string). Strings are read as
    booleans; an EVSE without dynamic info will never get a live status, so it is UNKNOWN."""
    raw = _load(EVSE_DATA_PAGES[0])["content"][0]
    assert raw["DynamicInfoAvailable"] == "true"
    loc = parse_evse_data({**raw, "DynamicInfoAvailable": value}, PULLED_AT)
    assert isinstance(loc, LocationRecord) and loc.evses[0].status == status


def test_quirk_ac_three_phase_with_mode_4_is_not_validated() -> None:
    """Quirk: AC_3_PHASE at 480 V with ChargingModes ["Mode_4"] (a DC mode): kept as declared."""
    raw = _load(EVSE_DATA_PAGES[0])["content"][0]
    assert raw["ChargingFacilities"][0]["ChargingModes"] == ["Mode_4"]
    loc = parse_evse_data(raw, PULLED_AT)
    assert isinstance(loc, LocationRecord)
    con = loc.evses[0].connectors[0]
    assert con.power_type == "AC_3_PHASE"
    assert con.max_power_kw == 22.0  # the declared Power, not 480 V x 32 A x 3


@pytest.mark.parametrize("name", STATUS_ANSWERS)
def test_evse_status_examples_parse(name: str) -> None:
    body = _load(name)
    assert check_response(_response(body), "EvseStatuses", "EVSEStatusRecords") is body
    page = parse_status_page(body, PULLED_AT)
    assert page.invalid == []
    assert page.records == [StatusRecord(evse_uid="DE*XYZ*ETEST1", status="AVAILABLE", last_updated=PULLED_AT)]


@pytest.mark.parametrize(
    ("oicp", "ocpi"),
    [
        ("Available", "AVAILABLE"),
        ("Reserved", "RESERVED"),
        ("Occupied", "CHARGING"),
        ("OutOfService", "OUTOFORDER"),
        ("Unknown", "UNKNOWN"),
        ("EvseNotFound", "UNKNOWN"),
    ],
)
def test_status_values_map_to_ocpi(oicp: str, ocpi: str) -> None:
    body = _load(STATUS_ANSWERS[0])
    body["EvseStatuses"]["OperatorEvseStatus"][0]["EvseStatusRecord"][0]["EvseStatus"] = oicp
    assert [r.status for r in parse_status_page(body, PULLED_AT).records] == [ocpi]


def test_unknown_status_value_is_quarantined() -> None:
    body = _load(STATUS_ANSWERS[0])
    records = body["EvseStatuses"]["OperatorEvseStatus"][0]["EvseStatusRecord"]
    records.append({"EvseID": "DE*XYZ*ETEST2", "EvseStatus": "Charging"})
    page = parse_status_page(body, PULLED_AT)
    assert [r.evse_uid for r in page.records] == ["DE*XYZ*ETEST1"]
    (bad,) = page.invalid
    assert bad.module == "statuses" and bad.source_id == "DE*XYZ*ETEST2" and "'Charging'" in bad.reason


def _assert_example_cdr(cdr: CdrRecord, session: SessionRecord, raw: dict[str, Any]) -> None:
    charging_start = datetime(2020, 9, 23, 14, 17, 53, 38000, tzinfo=UTC)  # ChargingStart ...53.038Z
    session_end = datetime(2020, 9, 23, 14, 17, 53, 39000, tzinfo=UTC)  # SessionEnd ...53.039Z
    assert cdr.source_id == cdr.session_source_id == raw["SessionID"] == GUID
    assert cdr.start == charging_start and cdr.end == charging_start  # ChargingEnd == ChargingStart
    assert cdr.total_energy == 10.0 and cdr.total_time == 0.0
    assert cdr.currency is None and cdr.total_cost is None and cdr.credit is False
    # All five Identification kinds are filled in; the RFID card's UID is preferred.
    assert cdr.auth_method == "AUTH_REQUEST" and cdr.token_uid == "1234ABCD"
    assert cdr.location_source_id is None and cdr.evse_uid == "DE*XYZ*ETEST1"
    assert cdr.last_updated == session_end
    assert session.source_id == GUID and session.status == "COMPLETED" and session.kwh == 10.0
    assert (session.start, session.end, session.last_updated) == (cdr.start, cdr.end, session_end)
    assert session.evse_uid == "DE*XYZ*ETEST1" and session.location_source_id is None
    assert session.token_uid == "1234ABCD" and session.currency is None


def test_charge_detail_records_page_example_parses() -> None:
    body = _load(CDR_PAGES[1])
    assert check_response(_response(body), "content") is body
    page = parse_cdr_page(body["content"])
    assert page.invalid == []
    cdr, session = page.records
    assert isinstance(cdr, CdrRecord) and isinstance(session, SessionRecord)
    _assert_example_cdr(cdr, session, body["content"][0])


@pytest.mark.parametrize("name", CDR_SINGLE[:2])
def test_single_cdr_examples_parse(name: str) -> None:
    raw = _load(name)
    cdr, session = parse_cdr(raw)
    _assert_example_cdr(cdr, session, raw)


def test_quirk_cdr_answer_with_status_code_null_is_accepted() -> None:
    """Quirk: the GetChargeDetailRecord answer has `"StatusCode": null` with its content: accepted."""
    body = _load(CDR_PAGES[0])
    assert body["StatusCode"] is None and status_code(body) is None
    assert check_response(_response(body), "content") is body
    # Without the content, a null StatusCode is no success.
    with pytest.raises(UpstreamError) as err:
        check_response(_response({"StatusCode": None}), "content")
    assert err.value.code == "UPSTREAM_PROTOCOL"


@pytest.mark.parametrize("name", [CDR_PAGES[0], CDR_SINGLE[2]])
def test_quirk_session_id_string_is_quarantined(name: str) -> None:
    """Quirk: `"SessionID": "string"` is no GUID. SessionID is the CDR's and the session's key and
    Hubject always assigns a GUID, so a placeholder is quarantined (kept with its reason), never
    stored where it could merge unrelated CDRs. The token values are not kept in quarantine."""
    body = _load(name)
    content = body["content"] if "content" in body else [body]
    assert content[0]["SessionID"] == "string"
    page = parse_cdr_page(content)
    assert page.records == []
    (bad,) = page.invalid
    assert bad.module == "cdrs" and bad.source_id == "string" and "not a GUID" in bad.reason
    assert "1234ABCD" not in orjson.dumps(bad.raw).decode() and "1234" not in str(bad.raw["Identification"])
    assert bad.raw["EvseID"] == "DE*XYZ*ETEST1"  # the rest of the record is kept for inspection
    with pytest.raises(RecordError):
        parse_cdr(content[0])


def test_cdr_duplicates_are_dropped_within_a_page_and_across_pages() -> None:
    raw = _load(CDR_SINGLE[0])
    other = {**raw, "SessionID": "a" * 8 + "-bbbb-cccc-dddd-" + "e" * 12}
    seen: set[str] = set()
    first = parse_cdr_page([raw, raw, other], seen)
    assert [r.source_id for r in first.records] == [GUID, GUID, other["SessionID"], other["SessionID"]]
    assert [type(r).__name__ for r in first.records] == ["CdrRecord", "SessionRecord"] * 2
    assert parse_cdr_page([other], seen).records == []


def test_cdr_times_with_offsets_become_utc_and_parking_time_is_derived() -> None:
    raw = _load(CDR_SINGLE[0]) | {
        "SessionStart": "2014-02-01T15:45:00+02:00",
        "ChargingStart": "2014-02-01T15:50:00+02:00",
        "ChargingEnd": "2014-02-01T17:20:00+02:00",
        "SessionEnd": "2014-02-01T17:45:00+02:00",
        "ConsumedEnergy": "12.345",
        "Identification": {"RemoteIdentification": {"EvcoID": "DE-DCB-C12345678-X"}},
    }
    cdr, session = parse_cdr(raw)
    assert cdr.start == datetime(2014, 2, 1, 13, 50, tzinfo=UTC) and cdr.end == datetime(2014, 2, 1, 15, 20, tzinfo=UTC)
    assert cdr.total_time == 2.0 and cdr.total_parking_time == pytest.approx(0.5)
    assert cdr.total_energy == 12.345 and session.kwh == 12.345
    assert cdr.last_updated == datetime(2014, 2, 1, 15, 45, tzinfo=UTC)
    assert (cdr.auth_method, cdr.token_uid) == ("COMMAND", "DE-DCB-C12345678-X")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"SessionEnd": "2020-09-23T13:00:00Z"}, "before SessionStart"),
        ({"ConsumedEnergy": "ten"}, "ConsumedEnergy"),
        ({"EvseID": None}, "EvseID"),
        ({"SessionStart": "yesterday"}, "SessionStart"),
    ],
)
def test_bad_cdrs_are_refused_with_a_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        parse_cdr(_load(CDR_SINGLE[0]) | change)


def test_iso_times_with_local_offsets_and_millis_become_utc() -> None:
    assert parse_datetime("2014-02-01T15:45:00+02:00", "t") == datetime(2014, 2, 1, 13, 45, tzinfo=UTC)
    assert parse_datetime("2020-09-23T14:17:53.038Z", "t") == datetime(2020, 9, 23, 14, 17, 53, 38000, tzinfo=UTC)
    raw = _load(EVSE_DATA_PAGES[0])["content"][0] | {"lastUpdate": "2014-02-01T15:45:00+02:00"}
    loc = parse_evse_data(raw, PULLED_AT)
    assert isinstance(loc, LocationRecord) and loc.last_updated == datetime(2014, 2, 1, 13, 45, tzinfo=UTC)


def test_missing_last_update_falls_back_to_the_pull_time() -> None:
    raw = {k: v for k, v in _load(EVSE_DATA_PAGES[0])["content"][0].items() if k != "lastUpdate"}
    loc = parse_evse_data(raw, PULLED_AT)
    assert isinstance(loc, LocationRecord) and loc.last_updated == loc.evses[0].last_updated == PULLED_AT


@pytest.mark.parametrize(
    ("geo", "expected"),
    [
        ({"DecimalDegree": {"Latitude": "51.507351", "Longitude": "-0.127758"}}, (51.507351, -0.127758)),
        ({"DecimalDegree": {"Latitude": 51.5, "Longitude": -0.1}}, (51.5, -0.1)),
        ({"Google": {"Coordinates": "52.480495 13.356465"}}, (52.480495, 13.356465)),
        ({"Google": {"Coordinates": "52.480495, 13.356465"}}, (52.480495, 13.356465)),
        ({"DegreeMinuteSeconds": {"Latitude": "9°21'39.32''", "Longitude": "9°21'39.32''"}}, (9.36092, 9.36092)),
        ({"DegreeMinuteSeconds": {"Latitude": "51°30'26.46''N", "Longitude": "0°7'39.93''W"}}, (51.50735, -0.12776)),
        ({"DegreeMinuteSeconds": {"Latitude": "-33°52'4.0''", "Longitude": "151°12'26.0''"}}, (-33.86778, 151.20722)),
    ],
)
def test_coordinates_in_all_three_formats(geo: dict[str, Any], expected: tuple[float, float]) -> None:
    lat, lon = parse_coordinates(geo)
    assert lat == pytest.approx(expected[0], abs=1e-5) and lon == pytest.approx(expected[1], abs=1e-5)


@pytest.mark.parametrize(
    "geo",
    [
        None,
        {},
        {"Google": {"Coordinates": "string"}},
        {"DecimalDegree": {"Latitude": "string", "Longitude": "string"}},
        {"DecimalDegree": {"Latitude": "95.0", "Longitude": "13.0"}},
        {"DegreeMinuteSeconds": {"Latitude": "9 deg 21", "Longitude": "9°21'39.32''"}},
    ],
)
def test_unreadable_coordinates_are_refused(geo: Any) -> None:
    with pytest.raises(RecordError, match="GeoCoordinates"):
        parse_coordinates(geo)


@pytest.mark.parametrize(
    ("plug", "standard", "fmt"),
    [
        ("Type 2 Outlet", "IEC_62196_T2", "SOCKET"),
        ("Type 2 Connector (Cable Attached)", "IEC_62196_T2", "CABLE"),
        ("CCS Combo 2 Plug (Cable Attached)", "IEC_62196_T2_COMBO", "CABLE"),
        ("CHAdeMO", "CHADEMO", "CABLE"),
        ("Type G British Standard", "DOMESTIC_G", "SOCKET"),
        ("Type 1 Connector (Cable Attached)", "IEC_62196_T1", "CABLE"),
        ("AVCON Connector", "AVCON Connector", None),
    ],
)
def test_plug_types_map_to_ocpi_connector_types(plug: str, standard: str, fmt: str | None) -> None:
    assert plug_standard(plug) == (standard, fmt)


def test_plugs_are_paired_with_facilities_of_their_current() -> None:
    """Plugs and facilities are unlinked lists; a CCS plug takes the DC facility even when listed first."""
    raw = _load(EVSE_DATA_PAGES[0])["content"][0] | {
        "Plugs": ["CCS Combo 2 Plug (Cable Attached)", "Type 2 Outlet", "CHAdeMO"],
        "ChargingFacilities": [
            {"PowerType": "AC_3_PHASE", "Power": 22, "Voltage": 400, "Amperage": 32},
            {"PowerType": "DC", "Power": "50.5", "Voltage": 500, "Amperage": 125},
        ],
    }
    loc = parse_evse_data(raw, PULLED_AT)
    assert isinstance(loc, LocationRecord)
    cons = loc.evses[0].connectors
    assert [(c.source_id, c.standard, c.power_type, c.max_electric_power) for c in cons] == [
        ("1", "IEC_62196_T2_COMBO", "DC", 50500),
        ("2", "IEC_62196_T2", "AC_3_PHASE", 22000),
        ("3", "CHADEMO", "DC", 50500),  # the only DC facility, shared
    ]


def test_bad_ratings_quarantine_the_record() -> None:
    raw = _load(EVSE_DATA_PAGES[0])["content"][0]
    raw = raw | {"ChargingFacilities": [{"PowerType": "AC_3_PHASE", "Power": "lots"}]}
    page = parse_evse_data_page([raw], PULLED_AT)
    assert page.records == []
    (bad,) = page.invalid
    assert bad.source_id == "DE*XYZ*ETEST1" and "Power" in bad.reason


def test_evses_of_a_page_are_grouped_into_sites() -> None:
    """OICP has no site hierarchy: EVSEs group by ChargingPoolID, else (operator's) ChargingStationID, else alone."""
    base = {k: v for k, v in _load(EVSE_DATA_PAGES[0])["content"][0].items() if k != "ChargingPoolID"}

    def rec(evse: str, updated: str, **extra: Any) -> dict[str, Any]:
        return base | {"EvseID": evse, "lastUpdate": updated} | extra

    content = [
        rec("DE*ABC*E1", "2024-01-01T10:00:00Z", ChargingPoolID="DE*ABC*P1"),
        rec("DE*ABC*E2", "2024-01-01T12:00:00+01:00"),  # station "TEST 1"
        rec("DE*ABC*E3", "2024-01-01T12:30:00Z", ChargingPoolID="DE*ABC*P1"),
        rec("DE*ABC*E4", "2024-01-01T09:00:00Z"),  # station "TEST 1"
        rec("DE*ABC*E5", "2024-01-01T09:00:00Z", ChargingStationID=None),
        {"EvseID": "DE*ABC*E6", "Address": "nowhere"},  # not a site: quarantined, the page goes on
    ]
    page = parse_evse_data_page(content, PULLED_AT)
    sites = {r.source_id: r for r in page.records if isinstance(r, LocationRecord)}
    assert list(sites) == ["DE*ABC*P1", "DE*ABC:TEST 1", "DE*ABC*E5"]
    assert [e.uid for e in sites["DE*ABC*P1"].evses] == ["DE*ABC*E1", "DE*ABC*E3"]
    assert sites["DE*ABC*P1"].last_updated == datetime(2024, 1, 1, 12, 30, tzinfo=UTC)
    assert [e.uid for e in sites["DE*ABC:TEST 1"].evses] == ["DE*ABC*E2", "DE*ABC*E4"]
    assert sites["DE*ABC:TEST 1"].last_updated == datetime(2024, 1, 1, 11, 0, tzinfo=UTC)
    assert [e.uid for e in sites["DE*ABC*E5"].evses] == ["DE*ABC*E5"]
    assert [(b.source_id, "Address" in b.reason) for b in page.invalid] == [("DE*ABC*E6", True)]
    # The same EVSE twice in one page keeps its newer version.
    twice = group_locations(
        [
            parse_evse_data(rec("DE*ABC*E1", "2024-01-01T10:00:00Z", Plugs=["CHAdeMO"]), PULLED_AT),  # type: ignore[list-item]
            parse_evse_data(rec("DE*ABC*E1", "2024-01-01T11:00:00Z"), PULLED_AT),  # type: ignore[list-item]
        ]
    )
    assert len(twice) == 1 and [c.standard for c in twice[0].evses[0].connectors] == ["IEC_62196_T2"]


def test_delete_delta_marks_the_evse_removed() -> None:
    """deltaType delete: a full record gives its EVSE REMOVED; a sparse one a bare REMOVED status."""
    raw = _load(EVSE_DATA_PAGES[0])["content"][0] | {"deltaType": "delete"}
    sparse = {"EvseID": "DE*XYZ*ETEST9", "deltaType": "delete", "lastUpdate": "2024-05-01T08:00:00+02:00"}
    page = parse_evse_data_page([raw, sparse], PULLED_AT)
    assert page.invalid == []
    loc, status = page.records
    assert isinstance(loc, LocationRecord) and loc.evses[0].status == "REMOVED"
    assert status == StatusRecord(
        evse_uid="DE*XYZ*ETEST9", status="REMOVED", last_updated=datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
    )
    # A sparse record that is not a delete is quarantined.
    page = parse_evse_data_page([{**sparse, "deltaType": "update"}], PULLED_AT)
    assert page.records == [] and page.invalid[0].source_id == "DE*XYZ*ETEST9"


def test_record_without_evse_id_is_quarantined_without_source_id() -> None:
    raw = {k: v for k, v in _load(EVSE_DATA_PAGES[0])["content"][0].items() if k != "EvseID"}
    page = parse_evse_data_page([raw, "not an object"], PULLED_AT)
    assert page.records == []
    assert [(b.source_id, "EvseID" in b.reason or "JSON object" in b.reason) for b in page.invalid] == [
        (None, True),
        (None, True),
    ]
