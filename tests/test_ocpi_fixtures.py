"""Every Location, EVSE, Connector, Session, CDR and Tariff example of the OCPI specification parses.

The examples are read from ../shared/fixtures/ocpi (tag 2.2.1 and the 2.2.1 errata branch). Partial
objects (PATCH bodies, a PUT body without `last_updated`) are not complete objects: they must be
refused with a reason, never half-stored.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from adapters.model import CdrRecord, LocationRecord, SessionRecord, TariffRecord
from adapters.ocpi_parse import RecordError, parse_datetime, parse_evse, parse_object
from tests.support import shared_path

FIXTURES = shared_path("fixtures", "ocpi")
VERSIONS = ["2.2.1", "2.2.1-bugfixes"]


def _files(prefix: str) -> list[Path]:
    return sorted(p for v in VERSIONS for p in (FIXTURES / v).glob(f"{prefix}*.json"))


def _load(path: Path):
    return orjson.loads(path.read_bytes())


LOCATIONS = [p for p in _files("location_example")]
SESSIONS = [p for p in _files("session_example")]
CDRS = _files("cdr_example")
TARIFFS = [p for p in _files("tariff") if p.name != "tariff_put_example.json"]
PARTIAL = [p for p in _files("location_patch") + _files("session_patch")] + [
    FIXTURES / "2.2.1" / "tariff_put_example.json"
]


def test_fixture_sets_are_not_empty():
    assert len(LOCATIONS) >= 6 and len(SESSIONS) >= 3 and CDRS and len(TARIFFS) >= 18


@pytest.mark.parametrize("path", LOCATIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_location_examples_parse(path: Path):
    raw = _load(path)
    rec = parse_object("locations", raw)
    assert isinstance(rec, LocationRecord)
    assert rec.source_id == raw["id"]
    assert rec.latitude == pytest.approx(float(raw["coordinates"]["latitude"]))
    assert [e.uid for e in rec.evses] == [e["uid"] for e in raw.get("evses", [])]
    for evse, raw_evse in zip(rec.evses, raw.get("evses", []), strict=True):
        assert evse.status == raw_evse["status"]
        assert [c.source_id for c in evse.connectors] == [c["id"] for c in raw_evse["connectors"]]
        for con, raw_con in zip(evse.connectors, raw_evse["connectors"], strict=True):
            assert con.standard == raw_con["standard"]
            assert con.max_voltage == raw_con.get("max_voltage")
            assert con.tariff_ids == raw_con.get("tariff_ids", [])
    assert rec.last_updated == parse_datetime(raw["last_updated"], "last_updated")


def test_evse_put_example_parses_without_ratings():
    """The spec's own EVSE PUT example omits connector ratings: kept, with the ratings unknown."""
    raw = _load(FIXTURES / "2.2.1" / "location_put_example_add_evse.json")
    evse = parse_evse(raw)
    assert evse.uid == "3256" and evse.floor_level == "-1" and evse.physical_reference == "3"
    (con,) = evse.connectors
    assert con.standard == "IEC_62196_T2" and con.power_type is None and con.max_power_kw is None
    assert con.tariff_ids == ["14"]


def test_connector_power_is_derived_from_ratings():
    raw = _load(FIXTURES / "2.2.1" / "location_example.json")
    rec = parse_object("locations", raw)
    con = rec.evses[0].connectors[0]
    # 220 V x 16 A on three phases = 10.56 kW when no max_electric_power is declared
    assert con.power_type == "AC_3_PHASE"
    assert con.max_power_kw == pytest.approx(220 * 16 * 3 / 1000)


@pytest.mark.parametrize("path", SESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_session_examples_parse(path: Path):
    raw = _load(path)
    rec = parse_object("sessions", raw)
    assert isinstance(rec, SessionRecord)
    assert rec.source_id == raw["id"] and rec.status == raw["status"]
    assert rec.kwh == pytest.approx(raw["kwh"])
    assert rec.token_uid == raw["cdr_token"]["uid"]
    assert rec.location_source_id == raw["location_id"] and rec.evse_uid == raw["evse_uid"]
    assert (rec.end is None) == ("end_date_time" not in raw)
    if "total_cost" in raw:
        assert rec.total_cost.excl_vat == pytest.approx(raw["total_cost"]["excl_vat"])


@pytest.mark.parametrize("path", CDRS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_cdr_examples_parse(path: Path):
    raw = _load(path)
    rec = parse_object("cdrs", raw)
    assert isinstance(rec, CdrRecord)
    assert rec.total_energy == pytest.approx(raw["total_energy"])
    assert rec.total_cost.incl_vat == pytest.approx(raw["total_cost"]["incl_vat"])
    assert rec.location_source_id == raw["cdr_location"]["id"]
    assert rec.tariff_ids == [t["id"] for t in raw.get("tariffs", [])]
    assert rec.end > rec.start


def test_provably_swapped_coordinates_are_corrected():
    raw = _load(FIXTURES / "2.2.1" / "location_example.json")
    raw["coordinates"] = {"latitude": "-0.127700", "longitude": "151.507400"}
    assert parse_object("locations", raw).latitude == pytest.approx(-0.1277)
    raw["coordinates"] = {"latitude": "151.507400", "longitude": "-0.127700"}
    rec = parse_object("locations", raw)
    assert (rec.latitude, rec.longitude) == (pytest.approx(-0.1277), pytest.approx(151.5074))
    raw["coordinates"] = {"latitude": "95.0", "longitude": "181.0"}
    with pytest.raises(RecordError, match="out of range"):
        parse_object("locations", raw)


@pytest.mark.parametrize("path", TARIFFS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tariff_examples_parse(path: Path):
    raw = _load(path)
    rec = parse_object("tariffs", raw)
    assert isinstance(rec, TariffRecord)
    assert rec.source_id == raw["id"] and rec.currency == raw["currency"]
    assert rec.elements == raw["elements"]
    if "max_price" in raw:
        assert rec.max_price.excl_vat == pytest.approx(raw["max_price"]["excl_vat"])


@pytest.mark.parametrize("path", PARTIAL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_partial_objects_are_refused_with_a_reason(path: Path):
    module = (
        "sessions" if path.name.startswith("session") else "tariffs" if path.name.startswith("tariff") else "locations"
    )
    with pytest.raises(RecordError) as err:
        parse_object(module, _load(path))
    assert "required" in str(err.value) or "missing" in str(err.value)


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2015-06-29T20:39:09Z", "2015-06-29T20:39:09+00:00"),
        ("2015-06-29T20:39:09", "2015-06-29T20:39:09+00:00"),
        ("2016-12-29T17:45:09.2Z", "2016-12-29T17:45:09.200000+00:00"),
        ("2018-01-01T01:08:01.123", "2018-01-01T01:08:01.123000+00:00"),
        ("2018-01-01T02:08:01+01:00", "2018-01-01T01:08:01+00:00"),
    ],
)
def test_datetime_forms(text: str, iso: str):
    assert parse_datetime(text, "t").isoformat() == iso


@pytest.mark.parametrize("bad", ["", "yesterday", 1435610349, None, "2015-13-40T00:00:00Z"])
def test_bad_datetimes_are_refused(bad):
    with pytest.raises(RecordError):
        parse_datetime(bad, "last_updated")
