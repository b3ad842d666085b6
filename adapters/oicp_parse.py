"""OICP 2.3 (Hubject) records to normalised records, one record at a time.

OICP sends one flat record per EVSE (no site hierarchy), its live status in a separate pull, and
CDRs without prices. Each `parse_*` function takes one JSON record and returns a record or raises
`RecordError` with a reason; the `*_page` functions apply them record by record, so one bad record
is quarantined and the rest of its page kept. Hubject's own examples contain quirks (see
../shared/reference/protocols.md §2.7); each is tolerated or quarantined here with a comment why.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from adapters.model import (
    CdrRecord,
    ConnectorRecord,
    EvseRecord,
    InvalidRecord,
    LocationRecord,
    Page,
    Record,
    SessionRecord,
    StatusRecord,
)
from adapters.ocpi_parse import RecordError, parse_datetime

__all__ = [
    "RecordError",
    "group_locations",
    "parse_cdr",
    "parse_cdr_page",
    "parse_coordinates",
    "parse_datetime",
    "parse_evse_data",
    "parse_evse_data_page",
    "parse_opening_times",
    "parse_status_page",
    "parse_status_record",
    "plug_standard",
    "status_record_list",
]

# OICP PlugType -> OCPI (ConnectorType, ConnectorFormat). Types OCPI has no value for (inductive
# paddles, AVCON) keep their OICP name: the GraphQL field is a free string by design.
PLUG_TYPES: dict[str, tuple[str, str | None]] = {
    "Type 2 Outlet": ("IEC_62196_T2", "SOCKET"),
    "Type 2 Connector (Cable Attached)": ("IEC_62196_T2", "CABLE"),
    "Type 1 Connector (Cable Attached)": ("IEC_62196_T1", "CABLE"),
    "Type 3 Outlet": ("IEC_62196_T3C", "SOCKET"),
    "CCS Combo 2 Plug (Cable Attached)": ("IEC_62196_T2_COMBO", "CABLE"),
    "CCS Combo 1 Plug (Cable Attached)": ("IEC_62196_T1_COMBO", "CABLE"),
    "CHAdeMO": ("CHADEMO", "CABLE"),
    "Tesla Connector": ("TESLA_S", "CABLE"),
    "NEMA 5-20": ("NEMA_5_20", "SOCKET"),
    "Type E French Standard": ("DOMESTIC_E", "SOCKET"),
    "Type F Schuko": ("DOMESTIC_F", "SOCKET"),
    "Type G British Standard": ("DOMESTIC_G", "SOCKET"),
    "Type J Swiss Standard": ("DOMESTIC_J", "SOCKET"),
    "IEC 60309 Single Phase": ("IEC_60309_2_single_16", "SOCKET"),
    "IEC 60309 Three Phase": ("IEC_60309_2_three_32", "SOCKET"),
}
# Plugs that only ever carry direct current; every other known plug is AC (Tesla: either).
DC_PLUGS = frozenset({"CCS Combo 2 Plug (Cable Attached)", "CCS Combo 1 Plug (Cable Attached)", "CHAdeMO"})
AC_OR_DC_PLUGS = frozenset({"Tesla Connector"})

# EvseStatusType -> OCPI Status. Occupied is CHARGING: OICP cannot tell a blocked bay apart.
EVSE_STATUS: dict[str, str] = {
    "Available": "AVAILABLE",
    "Reserved": "RESERVED",
    "Occupied": "CHARGING",
    "OutOfService": "OUTOFORDER",
    "Unknown": "UNKNOWN",
    "EvseNotFound": "UNKNOWN",
}
REMOVED = "REMOVED"  # OCPI's status of an EVSE that no longer exists

# AuthenticationModes and ValueAddedServices that have an OCPI Capability.
CAPABILITIES: dict[str, str] = {
    "NFC RFID Classic": "RFID_READER",
    "NFC RFID DESFire": "RFID_READER",
    "REMOTE": "REMOTE_START_STOP_CAPABLE",
    "Reservation": "RESERVABLE",
}
PARKING_TYPES: dict[str, str] = {
    "OnStreet": "ON_STREET",
    "ParkingLot": "PARKING_LOT",
    "ParkingGarage": "PARKING_GARAGE",
    "UndergroundParkingGarage": "UNDERGROUND_GARAGE",
}
WEEKDAYS: dict[str, tuple[int, ...]] = {
    "Everyday": (1, 2, 3, 4, 5, 6, 7),
    "Workdays": (1, 2, 3, 4, 5),
    "Weekend": (6, 7),
    "Monday": (1,),
    "Tuesday": (2,),
    "Wednesday": (3,),
    "Thursday": (4,),
    "Friday": (5,),
    "Saturday": (6,),
    "Sunday": (7,),
}
# Identification kinds in order of preference (Hubject's examples fill in all of them at once):
# (kind, field holding the token, OCPI AuthMethod). Local tokens are authorised through Hubject.
IDENTIFICATIONS: tuple[tuple[str, str, str], ...] = (
    ("RFIDMifareFamilyIdentification", "UID", "AUTH_REQUEST"),
    ("RFIDIdentification", "UID", "AUTH_REQUEST"),
    ("QRCodeIdentification", "EvcoID", "AUTH_REQUEST"),
    ("PlugAndChargeIdentification", "EvcoID", "AUTH_REQUEST"),
    ("RemoteIdentification", "EvcoID", "COMMAND"),
)
# OICP SessionID: Hubject assigns a GUID (pattern from the OICP 2.2 Swagger documents).
SESSION_ID = re.compile(r"^[A-Za-z0-9]{8}(-[A-Za-z0-9]{4}){3}-[A-Za-z0-9]{12}$")
# Degrees, minutes and seconds: `9°21'39.32''` (the spec's form), with `"`/′/″ and N/S/E/W accepted.
_DMS = re.compile(
    r"""^\s*(?P<sign>[-+])?\s*(?P<deg>\d{1,3}(?:\.\d+)?)\s*°\s*
    (?:(?P<min>\d{1,2}(?:\.\d+)?)\s*['′](?!')\s*)?
    (?:(?P<sec>\d{1,2}(?:\.\d+)?)\s*(?:''|"|″)\s*)?
    (?P<hemi>[NSEWnsew])?\s*$""",
    re.VERBOSE,
)
FLOOR_MAX = 8  # the stored column's width; a longer "floor" is free text, not a level


def _opt_datetime(obj: dict[str, Any], field: str) -> datetime | None:
    value = obj.get(field)
    return None if value in (None, "") else parse_datetime(value, field)


def _str(obj: dict[str, Any], field: str, where: str = "") -> str:
    value = obj.get(field)
    if value is None or value == "" or isinstance(value, (dict, list)):
        raise RecordError(f"{where}{field}: required field missing")
    return str(value)


def _opt_str(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    return None if value in (None, "") or isinstance(value, (dict, list)) else str(value)


def _as_list(value: Any) -> list[Any]:
    """A JSON list; a lone object is read as a list of one, null as empty."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _number(value: Any, field: str) -> float:
    """A JSON number or a numeric string (OICP decimals are often sent as strings)."""
    if isinstance(value, bool) or value is None:
        raise RecordError(f"{field}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{field}: expected a number, got {value!r}") from exc


def _opt_int(obj: dict[str, Any], field: str, where: str) -> int | None:
    value = obj.get(field)
    return None if value in (None, "") else round(_number(value, f"{where}{field}"))


def _bool(value: Any) -> bool | None:
    """true/false as JSON booleans or strings; None for anything else ("auto", absent)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _coordinate(value: Any, field: str) -> float:
    """One decimal-degree number from a decimal string, a number or a degree-minute-second string."""
    if isinstance(value, str) and "°" in value:
        match = _DMS.match(value)
        if match is None:
            raise RecordError(f"{field}: not a degree-minute-second value: {value!r}")
        degrees = float(match["deg"]) + float(match["min"] or 0) / 60 + float(match["sec"] or 0) / 3600
        negative = match["sign"] == "-" or (match["hemi"] or "").upper() in ("S", "W")
        return -degrees if negative else degrees
    return _number(value, field)


def parse_coordinates(geo: Any, where: str = "") -> tuple[float, float]:
    """(latitude, longitude) from OICP GeoCoordinates in any of its three formats.

    We ask for DecimalDegree, but a hub may answer in the format the CPO pushed (the examples
    use Google's "lat lon"), so all three are read.
    """
    if not isinstance(geo, dict):
        raise RecordError(f"{where}GeoCoordinates: required field missing")
    try:
        if isinstance(geo.get("DecimalDegree"), dict):
            dd = geo["DecimalDegree"]
            lat, lon = _coordinate(dd.get("Latitude"), "Latitude"), _coordinate(dd.get("Longitude"), "Longitude")
        elif isinstance(geo.get("Google"), dict):
            text = str(geo["Google"].get("Coordinates", ""))
            parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
            if len(parts) != 2:
                raise RecordError(f"Google.Coordinates: expected 'lat lon', got {text!r}")
            lat, lon = _coordinate(parts[0], "Latitude"), _coordinate(parts[1], "Longitude")
        elif isinstance(geo.get("DegreeMinuteSeconds"), dict):
            dms = geo["DegreeMinuteSeconds"]
            lat, lon = _coordinate(dms.get("Latitude"), "Latitude"), _coordinate(dms.get("Longitude"), "Longitude")
        else:
            raise RecordError("no DecimalDegree, Google or DegreeMinuteSeconds value")
    except RecordError as exc:
        raise RecordError(f"{where}GeoCoordinates: {exc}") from exc
    if abs(lat) > 90 or abs(lon) > 180:
        raise RecordError(f"{where}GeoCoordinates: out of range ({lat}, {lon})")
    return lat, lon


def plug_standard(plug: str, amperage: int | None = None) -> tuple[str, str | None]:
    """The OCPI (standard, format) of an OICP PlugType; unknown types keep their name (<= 32 chars)."""
    if plug == "IEC 60309 Three Phase" and amperage is not None:
        # The 32 A blue-red plug is the common one; the rating tells the others apart.
        size = 16 if amperage <= 16 else 64 if amperage > 32 else 32
        return f"IEC_60309_2_three_{size}", "SOCKET"
    return PLUG_TYPES.get(plug, (plug[:32], None))


def _current(facility: dict[str, Any]) -> str | None:
    power_type = str(facility.get("PowerType") or "")
    return "DC" if power_type == "DC" else "AC" if power_type.startswith("AC") else None


def _pair(plugs: list[str], facilities: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """The charging facility of each plug.

    OICP lists plugs and facilities side by side without linking them. Each plug takes the first
    facility of its kind of current not taken yet (so [CCS, Type 2] with [AC 22, DC 50] pair
    correctly), else any facility of its kind, else the one at its index, else none.
    """
    taken: set[int] = set()
    out: list[dict[str, Any] | None] = []
    for i, plug in enumerate(plugs):
        kind = None if plug in AC_OR_DC_PLUGS or plug not in PLUG_TYPES else "DC" if plug in DC_PLUGS else "AC"
        fits = [j for j, f in enumerate(facilities) if kind is None or _current(f) in (kind, None)]
        free = [j for j in fits if j not in taken]
        if free:
            chosen: int | None = free[0]
        elif fits:
            chosen = fits[0]
        elif i < len(facilities):
            chosen = i
        else:
            chosen = None
        if chosen is not None:
            taken.add(chosen)
        out.append(None if chosen is None else facilities[chosen])
    return out


def _connectors(obj: dict[str, Any], updated: datetime, where: str) -> list[ConnectorRecord]:
    """One connector per plug, with the ratings of the facility paired with it.

    The ChargingModes of a facility are not checked against its PowerType: Hubject's own example
    declares AC_3_PHASE with Mode_4 (a DC mode), and a wrong mode says nothing about the plug.
    """
    plugs = [str(p) for p in _as_list(obj.get("Plugs")) if isinstance(p, str) and p]
    facilities = [f for f in _as_list(obj.get("ChargingFacilities")) if isinstance(f, dict)]
    connectors = []
    for i, (plug, facility) in enumerate(zip(plugs, _pair(plugs, facilities), strict=True)):
        here = f"{where}ChargingFacilities: "
        fac = facility or {}
        amperage = _opt_int(fac, "Amperage", here)
        power_kw = fac.get("Power")
        standard, fmt = plug_standard(plug, amperage)
        power_type = _opt_str(fac, "PowerType") or ("DC" if plug in DC_PLUGS else None)
        connectors.append(
            ConnectorRecord(
                source_id=str(i + 1),
                standard=standard,
                format=fmt,
                power_type=power_type,
                max_voltage=_opt_int(fac, "Voltage", here),
                max_amperage=amperage,
                max_electric_power=None if power_kw in (None, "") else round(_number(power_kw, f"{here}Power") * 1000),
                tariff_ids=[],
                last_updated=updated,
            )
        )
    return connectors


def _capabilities(obj: dict[str, Any]) -> list[str]:
    names = _as_list(obj.get("AuthenticationModes")) + _as_list(obj.get("ValueAddedServices"))
    out: list[str] = []
    for name in names:
        cap = CAPABILITIES.get(name) if isinstance(name, str) else None
        if cap and cap not in out:
            out.append(cap)
    return out


def parse_opening_times(obj: dict[str, Any]) -> dict[str, Any] | None:
    """OICP IsOpen24Hours/OpeningTimes as OCPI Hours; None when nothing usable is given.

    Tolerated: the OpenAPI examples (YAML converted to JSON) carry the weekday under the key
    "true" instead of "on", because YAML 1.1 reads the bare key `on` as a boolean.
    """
    if _bool(obj.get("IsOpen24Hours")):
        return {"twentyfourseven": True}
    regular = []
    for entry in _as_list(obj.get("OpeningTimes")):
        if not isinstance(entry, dict):
            continue
        days = WEEKDAYS.get(str(entry.get("on", entry.get("true", ""))))
        if days is None:
            continue
        for period in _as_list(entry.get("Period")):
            if isinstance(period, dict) and period.get("begin") and period.get("end"):
                regular.extend(
                    {"weekday": d, "period_begin": str(period["begin"]), "period_end": str(period["end"])} for d in days
                )
    if not regular:
        return None
    regular.sort(key=lambda h: (h["weekday"], h["period_begin"]))
    return {"twentyfourseven": False, "regular_hours": regular}


def _operator_id(obj: dict[str, Any]) -> str | None:
    # Tolerated: Hubject's PullEVSEData response example spells the key `OperatorId`.
    return _opt_str(obj, "OperatorID") or _opt_str(obj, "OperatorId")


def _party(operator_id: str | None) -> tuple[str | None, str | None]:
    """(country code, party id) of an OperatorID such as `DE*ABC`; none for the numeric form."""
    match = re.match(r"^([A-Za-z]{2})\*?([A-Za-z0-9]{3})$", operator_id or "")
    return (match[1].upper(), match[2].upper()) if match else (None, None)


def _name(obj: dict[str, Any]) -> str | None:
    """The station name, in English when given (the gateway serves an English-speaking audience)."""
    names = [n for n in _as_list(obj.get("ChargingStationNames")) if isinstance(n, dict) and n.get("value")]
    english = [n for n in names if str(n.get("lang", "")).lower().startswith("en")]
    chosen = (english or names or [None])[0]
    return None if chosen is None else str(chosen["value"])[:255]


def _group_key(obj: dict[str, Any], evse_id: str) -> str:
    """The site an EVSE belongs to: its pool, else its station, else itself.

    A ChargingStationID is free text, unique only within its operator, and one Hubject connection
    carries many operators, so it is qualified with the OperatorID.
    """
    pool = _opt_str(obj, "ChargingPoolID")
    if pool:
        return pool
    station = _opt_str(obj, "ChargingStationID")
    if station:
        operator = _operator_id(obj)
        return f"{operator}:{station}" if operator else station
    return evse_id


def _address(address: dict[str, Any]) -> str:
    street = _str(address, "Street", "Address.")
    number = _opt_str(address, "HouseNum") or ""
    if str(address.get("Country", "")).upper() in ("GBR", "IRL"):  # "12 High Street"
        return f"{number} {street}".strip()
    return f"{street} {number}".strip()  # "Hauptstraße 12", as most of Europe writes it


def _site(obj: dict[str, Any], evse_id: str, updated: datetime, deleted: bool) -> LocationRecord:
    where = f"evse {evse_id}: "
    address = obj.get("Address")
    if not isinstance(address, dict):
        raise RecordError(f"{where}Address: required field missing")
    lat, lon = parse_coordinates(obj.get("GeoCoordinates"), where)
    floor = _opt_str(address, "Floor")
    status: str | None = None  # the status pull reports it
    if deleted:
        status = REMOVED
    elif _bool(obj.get("DynamicInfoAvailable")) is False:
        # No live status will ever come for this EVSE. Tolerated: Hubject's example sends the
        # flag as the string "true", so strings are read as booleans; "auto" means it may come.
        status = "UNKNOWN"
    evse = EvseRecord(
        uid=evse_id,
        evse_id=evse_id,
        status=status,
        capabilities=_capabilities(obj),
        connectors=_connectors(obj, updated, where),
        floor_level=floor if floor and len(floor) <= FLOOR_MAX else None,
        physical_reference=None,
        latitude=lat,
        longitude=lon,
        last_updated=updated,
    )
    operator_id = _operator_id(obj)
    country_code, party_id = _party(operator_id)
    return LocationRecord(
        source_id=_group_key(obj, evse_id),
        country_code=country_code,
        party_id=party_id,
        publish=True,
        name=_name(obj),
        address=_address(address)[:255],
        city=_str(address, "City", "Address."),
        postal_code=_opt_str(address, "PostalCode"),
        country=_str(address, "Country", "Address.").upper(),
        latitude=lat,
        longitude=lon,
        parking_type=PARKING_TYPES.get(str(obj.get("AccessibilityLocation"))),
        time_zone=_opt_str(address, "TimeZone"),
        opening_times=parse_opening_times(obj),
        facilities=[],
        operator_name=_opt_str(obj, "OperatorName"),
        evses=[evse],
        last_updated=updated,
    )


def parse_evse_data(obj: Any, fallback: datetime) -> LocationRecord | StatusRecord:
    """One PullEvseData record as a single-EVSE location (see `group_locations`).

    `fallback` stands in for a missing `lastUpdate` (the operator's clock at the pull). A
    `deltaType: delete` record marks its EVSE REMOVED; when it is too sparse to describe a site
    it becomes a bare REMOVED status, so that no made-up address overwrites the stored one.
    """
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    evse_id = _str(obj, "EvseID")
    try:
        updated = _opt_datetime(obj, "lastUpdate") or fallback
        deleted = str(obj.get("deltaType", "")).lower() == "delete"
        try:
            return _site(obj, evse_id, updated, deleted)
        except RecordError:
            if deleted:
                return StatusRecord(evse_uid=evse_id, status=REMOVED, last_updated=updated)
            raise
    except RecordError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RecordError(f"evse {evse_id}: malformed record: {exc}") from exc


def group_locations(records: list[LocationRecord]) -> list[LocationRecord]:
    """Merge single-EVSE locations of the same site, in first-seen order.

    The site's fields come from its first record; its `last_updated` is the latest of its EVSEs'
    (an EVSE repeated in the page keeps its latest version).
    """
    merged: dict[str, LocationRecord] = {}
    for rec in records:
        have = merged.get(rec.source_id)
        if have is None:
            merged[rec.source_id] = replace(rec, evses=list(rec.evses))
            continue
        for evse in rec.evses:
            same = next((i for i, e in enumerate(have.evses) if e.uid == evse.uid), None)
            if same is None:
                have.evses.append(evse)
            elif evse.last_updated > have.evses[same].last_updated:
                have.evses[same] = evse
        have.last_updated = max(have.last_updated, rec.last_updated)
    return list(merged.values())


def _source_id(obj: Any, field: str) -> str | None:
    value = obj.get(field) if isinstance(obj, dict) else None
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def parse_evse_data_page(content: list[Any], fallback: datetime) -> Page:
    """The records of one PullEvseData page: its sites, REMOVED statuses and quarantined records."""
    page = Page()
    sites: list[LocationRecord] = []
    for obj in content:
        try:
            rec = parse_evse_data(obj, fallback)
        except RecordError as exc:
            page.invalid.append(InvalidRecord("locations", str(exc), obj, _source_id(obj, "EvseID")))
            continue
        if isinstance(rec, LocationRecord):
            sites.append(rec)
        else:
            page.records.append(rec)
    page.records[:0] = group_locations(sites)
    return page


def status_record_list(body: dict[str, Any]) -> list[Any]:
    """The EvseStatusRecords of a PullEvseStatus answer, in either of its shapes.

    PullEvseStatus and ByOperatorID answer `EvseStatuses.OperatorEvseStatus[].EvseStatusRecord[]`;
    the ByID examples answer `EVSEStatusRecords.EvseStatusRecord[]`. Both are accepted.
    """
    if "EvseStatuses" in body:
        statuses = body["EvseStatuses"] or {}
        if not isinstance(statuses, dict):
            raise RecordError("EvseStatuses: expected an object")
        operators = _as_list(statuses.get("OperatorEvseStatus"))
        return [r for op in operators if isinstance(op, dict) for r in _as_list(op.get("EvseStatusRecord"))]
    records = body.get("EVSEStatusRecords") or {}
    if not isinstance(records, dict):
        raise RecordError("EVSEStatusRecords: expected an object")
    return _as_list(records.get("EvseStatusRecord"))


def parse_status_record(obj: Any, at: datetime) -> StatusRecord:
    """One EvseStatusRecord, as reported at `at` (OICP statuses carry no time of their own)."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    evse_id = _str(obj, "EvseID")
    value = obj.get("EvseStatus")
    status = EVSE_STATUS.get(value) if isinstance(value, str) else None
    if status is None:
        raise RecordError(f"evse {evse_id}: EvseStatus: unknown value {value!r}")
    return StatusRecord(evse_uid=evse_id, status=status, last_updated=at)


def parse_status_page(body: dict[str, Any], at: datetime) -> Page:
    """Every status of a PullEvseStatus answer, with unknown values quarantined."""
    page = Page()
    for obj in status_record_list(body):
        try:
            page.records.append(parse_status_record(obj, at))
        except RecordError as exc:
            page.invalid.append(InvalidRecord("statuses", str(exc), obj, _source_id(obj, "EvseID")))
    return page


def _identification(value: Any) -> tuple[str | None, str | None]:
    """(OCPI auth method, token) of an Identification; (None, None) when none is readable."""
    if not isinstance(value, dict):
        return None, None
    for kind, field, method in IDENTIFICATIONS:
        ident = value.get(kind)
        if isinstance(ident, dict):
            token = _opt_str(ident, field) or _opt_str(ident, "EvcoID")
            return method, token
    return None, None


def _hours(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 3600.0


def parse_cdr(obj: Any) -> tuple[CdrRecord, SessionRecord]:
    """One ChargeDetailRecord as a price-less CDR and the COMPLETED session it closes.

    Quarantined: a SessionID that is not a GUID. Hubject assigns every SessionID as a GUID and it
    is our key for the CDR and the session; a placeholder such as the examples' "string" would
    merge unrelated CDRs into one, so the record is kept aside with its reason instead.
    """
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    session_id = _str(obj, "SessionID")
    where = f"session {session_id}: "
    if not SESSION_ID.match(session_id):
        raise RecordError(f"{where}SessionID: not a GUID; Hubject assigns GUIDs, a placeholder identifies nothing")
    try:
        evse_id = _str(obj, "EvseID", where)
        session_start = parse_datetime(obj.get("SessionStart"), f"{where}SessionStart")
        session_end = parse_datetime(obj.get("SessionEnd"), f"{where}SessionEnd")
        if session_end < session_start:
            raise RecordError(f"{where}SessionEnd is before SessionStart")
        charging_start = _opt_datetime(obj, "ChargingStart")
        charging_end = _opt_datetime(obj, "ChargingEnd")
        energy = _number(obj.get("ConsumedEnergy"), f"{where}ConsumedEnergy")
        if energy < 0:
            raise RecordError(f"{where}ConsumedEnergy: negative ({energy})")
    except RecordError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RecordError(f"{where}malformed record: {exc}") from exc
    start = charging_start or session_start
    end = charging_end or session_end
    parking = None
    if charging_start and charging_end and charging_end >= charging_start:
        parking = max(0.0, _hours(session_start, session_end) - _hours(charging_start, charging_end))
    method, token = _identification(obj.get("Identification"))
    cdr = CdrRecord(
        source_id=session_id,
        session_source_id=session_id,
        start=start,
        end=end,
        total_energy=energy,
        total_time=_hours(session_start, session_end),
        total_parking_time=parking,
        currency=None,
        total_cost=None,
        credit=False,
        credit_reference_id=None,
        auth_method=method,
        token_uid=token,
        location_source_id=None,
        evse_uid=evse_id,
        connector_source_id=None,
        tariff_ids=[],
        last_updated=session_end,
    )
    session = SessionRecord(
        source_id=session_id,
        start=start,
        end=end,
        kwh=energy,
        status="COMPLETED",
        auth_method=method,
        token_uid=token,
        location_source_id=None,
        evse_uid=evse_id,
        connector_source_id=None,
        currency=None,
        total_cost=None,
        last_updated=session_end,
    )
    return cdr, session


def _redacted(obj: Any) -> Any:
    """A quarantined CDR without its token values (UID, EvcoID, PIN): only pseudonyms are kept."""
    if not isinstance(obj, dict) or not isinstance(obj.get("Identification"), dict):
        return obj
    kinds = {k: "[redacted]" for k in obj["Identification"]}
    return {**obj, "Identification": kinds}


def parse_cdr_page(content: list[Any], seen: set[str] | None = None) -> Page:
    """The CDRs (and their sessions) of one page, each SessionID once.

    Hubject does not track which CDRs it has already delivered, so a SessionID may come twice;
    `seen` carries the SessionIDs of earlier pages of the same crawl.
    """
    seen = set() if seen is None else seen
    page = Page()
    records: list[Record] = []
    for obj in content:
        try:
            cdr, session = parse_cdr(obj)
        except RecordError as exc:
            page.invalid.append(InvalidRecord("cdrs", str(exc), _redacted(obj), _source_id(obj, "SessionID")))
            continue
        if cdr.source_id in seen:
            continue
        seen.add(cdr.source_id)
        records.extend((cdr, session))
    page.records = records
    return page
