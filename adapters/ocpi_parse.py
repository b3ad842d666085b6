"""OCPI 2.2.1 and 2.1.1 objects to normalised records, one object at a time.

Each `parse_*` function takes one JSON object and returns a record or raises `RecordError` with a
reason a person can act on. The crawler catches that per object, so one bad record is quarantined
and the rest of its page is kept (the OCPI specification asks receivers to do exactly this).
Parsing is tolerant where the data is still meaningful (coordinates swapped, ratings missing,
offsets on timestamps) and strict where it is not (no id, no `last_updated`, no coordinates).

OCPI 2.1.1 objects are recognised by their field names and normalised into the same records:
Location `type` for `parking_type`, connector `voltage`/`amperage`/`tariff_id`, Session
`start_datetime`/`end_datetime`, CDR `stop_date_time`, `auth_id` for the token (2.1.1's contract
reference, the only one it carries), an embedded `location` (holding just the EVSE and connector
used) for `location_id`/`evse_uid`/`connector_id` or `cdr_location`, and `total_cost` as a plain
number (excluding VAT). Fields 2.1.1 lacks (country_code, party_id, CDR session_id) stay None.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from adapters.model import (
    CdrRecord,
    ConnectorRecord,
    EvseRecord,
    LocationRecord,
    Module,
    Price,
    Record,
    SessionRecord,
    TariffRecord,
)


class RecordError(ValueError):
    """One operator object could not be normalised; the message is the quarantine reason."""


def parse_datetime(value: Any, field: str) -> datetime:
    """An OCPI DateTime as an aware UTC datetime.

    OCPI says UTC, `Z` optional, fractional seconds allowed; real servers also send `+00:00` or
    other offsets, which are converted rather than rejected.
    """
    if not isinstance(value, str) or not value:
        raise RecordError(f"{field}: expected an RFC 3339 date-time string, got {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RecordError(f"{field}: not an RFC 3339 date-time: {value!r}") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _opt_datetime(obj: dict[str, Any], field: str) -> datetime | None:
    value = obj.get(field)
    return None if value in (None, "") else parse_datetime(value, field)


def _required(obj: dict[str, Any], field: str, where: str = "") -> Any:
    value = obj.get(field)
    if value is None or value == "":
        raise RecordError(f"{where}{field}: required field missing")
    return value


def _str(obj: dict[str, Any], field: str, where: str = "") -> str:
    value = _required(obj, field, where)
    if isinstance(value, (dict, list)):
        raise RecordError(f"{where}{field}: expected a string, got {type(value).__name__}")
    return str(value)


def _opt_str(obj: dict[str, Any], field: str) -> str | None:
    value = obj.get(field)
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def _opt_int(obj: dict[str, Any], field: str, where: str = "", alias: str | None = None) -> int | None:
    """An optional integer, read from `alias` (the OCPI 2.1.1 name) when `field` is absent."""
    value = obj.get(field)
    if value is None and alias is not None:
        value = obj.get(alias)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{where}{field}: expected an integer, got {value!r}") from exc


def _number(obj: dict[str, Any], field: str, where: str = "") -> float:
    value = _required(obj, field, where)
    if isinstance(value, bool):
        raise RecordError(f"{where}{field}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{where}{field}: expected a number, got {value!r}") from exc


def _price(value: Any, field: str) -> Price | None:
    """A Price object; a bare number (OCPI 2.1.1 style) is read as excluding VAT."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Price(excl_vat=float(value))
    if not isinstance(value, dict):
        raise RecordError(f"{field}: expected a Price object, got {value!r}")
    incl = value.get("incl_vat")
    return Price(
        excl_vat=_number(value, "excl_vat", f"{field}."),
        incl_vat=None if incl is None else float(incl),
    )


def _coordinates(value: Any, where: str) -> tuple[float, float]:
    """(latitude, longitude) from a GeoLocation, with provably swapped pairs put right.

    A latitude outside +-90 with a longitude inside it can only be a swap, so it is corrected
    rather than quarantined. (The specification's CDR example swaps a pair that stays in range,
    which nothing can detect.)
    """
    if not isinstance(value, dict):
        raise RecordError(f"{where}coordinates: required GeoLocation missing")
    try:
        lat = float(value["latitude"])
        lon = float(value["longitude"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{where}coordinates: latitude/longitude must be decimal strings") from exc
    if abs(lat) > 90 >= abs(lon):
        lat, lon = lon, lat
    if abs(lat) > 90 or abs(lon) > 180:
        raise RecordError(f"{where}coordinates: out of range ({lat}, {lon})")
    return lat, lon


def _list(obj: dict[str, Any], field: str) -> list[Any]:
    value = obj.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"{field}: expected a list, got {type(value).__name__}")
    return value


def _first(obj: dict[str, Any], *fields: str) -> Any:
    """The value of the first of `fields` present and not empty (the 2.2.1 name, then the 2.1.1 one)."""
    for name in fields:
        value = obj.get(name)
        if value is not None and value != "":
            return value
    return None


# OCPI 2.1.1 LocationType -> 2.2.1 ParkingType; OTHER and UNKNOWN say nothing about parking.
_LOCATION_TYPES = {t: t for t in ("ON_STREET", "PARKING_GARAGE", "UNDERGROUND_GARAGE", "PARKING_LOT")}


def _parking_type(obj: dict[str, Any]) -> str | None:
    parking = _opt_str(obj, "parking_type")
    if parking is not None:
        return parking
    location_type = _opt_str(obj, "type")  # OCPI 2.1.1
    return None if location_type is None else _LOCATION_TYPES.get(location_type.upper())


def parse_connector(obj: Any, where: str = "", parent_updated: datetime | None = None) -> ConnectorRecord:
    """One Connector object; without its own `last_updated` it takes its EVSE's."""
    if not isinstance(obj, dict):
        raise RecordError(f"{where}connector: expected an object")
    cid = _str(obj, "id", where)
    here = f"{where}connector {cid}: "
    tariff_ids = [str(t) for t in _list(obj, "tariff_ids")]
    if not tariff_ids and obj.get("tariff_id"):  # OCPI 2.1.1 has a single tariff_id
        tariff_ids = [str(obj["tariff_id"])]
    return ConnectorRecord(
        source_id=cid,
        standard=_str(obj, "standard", here),
        format=_opt_str(obj, "format"),
        power_type=_opt_str(obj, "power_type"),
        max_voltage=_opt_int(obj, "max_voltage", here, alias="voltage"),
        max_amperage=_opt_int(obj, "max_amperage", here, alias="amperage"),
        max_electric_power=_opt_int(obj, "max_electric_power", here),
        tariff_ids=tariff_ids,
        last_updated=parent_updated
        if obj.get("last_updated") is None and parent_updated is not None
        else parse_datetime(_required(obj, "last_updated", here), f"{here}last_updated"),
    )


def parse_evse(obj: Any, where: str = "") -> EvseRecord:
    """One EVSE object with its connectors."""
    if not isinstance(obj, dict):
        raise RecordError(f"{where}evse: expected an object")
    uid = _str(obj, "uid", where)
    here = f"{where}evse {uid}: "
    updated = parse_datetime(_required(obj, "last_updated", here), f"{here}last_updated")
    connectors = [parse_connector(c, here, updated) for c in _list(obj, "connectors")]
    lat = lon = None
    if isinstance(obj.get("coordinates"), dict):
        lat, lon = _coordinates(obj["coordinates"], here)
    return EvseRecord(
        uid=uid,
        evse_id=_opt_str(obj, "evse_id"),
        status=_str(obj, "status", here),
        capabilities=[str(c) for c in _list(obj, "capabilities")],
        connectors=connectors,
        floor_level=_opt_str(obj, "floor_level") or _opt_str(obj, "floor"),
        physical_reference=_opt_str(obj, "physical_reference"),
        latitude=lat,
        longitude=lon,
        last_updated=updated,
    )


def parse_location(obj: dict[str, Any]) -> LocationRecord:
    """One Location object with its EVSEs."""
    lat, lon = _coordinates(obj.get("coordinates"), "")
    operator = obj.get("operator")
    return LocationRecord(
        source_id=_str(obj, "id"),
        country_code=_opt_str(obj, "country_code"),
        party_id=_opt_str(obj, "party_id"),
        publish=bool(obj.get("publish", True)),
        name=_opt_str(obj, "name"),
        address=_str(obj, "address"),
        city=_str(obj, "city"),
        postal_code=_opt_str(obj, "postal_code"),
        country=_str(obj, "country"),
        latitude=lat,
        longitude=lon,
        parking_type=_parking_type(obj),
        time_zone=_opt_str(obj, "time_zone"),
        opening_times=obj.get("opening_times") if isinstance(obj.get("opening_times"), dict) else None,
        facilities=[str(f) for f in _list(obj, "facilities")],
        operator_name=operator.get("name") if isinstance(operator, dict) else None,
        evses=[parse_evse(e) for e in _list(obj, "evses")],
        last_updated=parse_datetime(_required(obj, "last_updated"), "last_updated"),
    )


def _token_uid(obj: dict[str, Any]) -> str | None:
    token = obj.get("cdr_token")
    if isinstance(token, dict) and token.get("uid"):
        return str(token["uid"])
    return _opt_str(obj, "auth_id")  # OCPI 2.1.1


def _embedded_site(location: Any) -> tuple[str | None, str | None, str | None]:
    """(location id, EVSE uid, connector id) of an OCPI 2.1.1 embedded Location, which holds
    only the EVSE and connector used; an EVSE or connector that is not unique is left unknown."""
    if not isinstance(location, dict):
        return None, None, None
    location_id = _opt_str(location, "id")
    evses = location.get("evses")
    if not isinstance(evses, list) or len(evses) != 1 or not isinstance(evses[0], dict):
        return location_id, None, None
    connectors = evses[0].get("connectors")
    connector_id = None
    if isinstance(connectors, list) and len(connectors) == 1 and isinstance(connectors[0], dict):
        connector_id = _opt_str(connectors[0], "id")
    return location_id, _opt_str(evses[0], "uid"), connector_id


def parse_session(obj: dict[str, Any]) -> SessionRecord:
    """One Session object (2.2.1, or 2.1.1 with its embedded location)."""
    start = _first(obj, "start_date_time", "start_datetime")
    end = _first(obj, "end_date_time", "end_datetime")
    site = _embedded_site(obj.get("location"))
    location_id = _opt_str(obj, "location_id") or site[0]
    if not location_id:
        raise RecordError("location_id: required field missing")
    evse_uid = _opt_str(obj, "evse_uid") if "evse_uid" in obj else site[1]
    connector_id = _opt_str(obj, "connector_id") if "connector_id" in obj else site[2]
    return SessionRecord(
        source_id=_str(obj, "id"),
        start=parse_datetime(start, "start_date_time"),
        end=None if end is None else parse_datetime(end, "end_date_time"),
        kwh=_number(obj, "kwh"),
        status=_str(obj, "status"),
        auth_method=_opt_str(obj, "auth_method"),
        token_uid=_token_uid(obj),
        location_source_id=str(location_id),
        evse_uid=None if evse_uid == "#NA" else evse_uid,
        connector_source_id=None if connector_id == "#NA" else connector_id,
        currency=_opt_str(obj, "currency"),
        total_cost=_price(obj.get("total_cost"), "total_cost"),
        last_updated=parse_datetime(_required(obj, "last_updated"), "last_updated"),
    )


def parse_cdr(obj: dict[str, Any]) -> CdrRecord:
    """One CDR object (credit CDRs included; 2.1.1 with its embedded location)."""
    loc = obj.get("cdr_location")
    if isinstance(loc, dict) and loc.get("id"):
        site = (str(loc["id"]), _opt_str(loc, "evse_uid"), _opt_str(loc, "connector_id"))
    else:
        site = _embedded_site(obj.get("location"))
    if not site[0]:
        raise RecordError("cdr_location: required CdrLocation missing")
    end = _first(obj, "end_date_time", "stop_date_time")
    total_cost = _price(_required(obj, "total_cost"), "total_cost")
    assert total_cost is not None
    credit = bool(obj.get("credit", False))
    credit_ref = _opt_str(obj, "credit_reference_id")
    if credit and not credit_ref:
        raise RecordError("credit_reference_id: required when credit is true")
    return CdrRecord(
        source_id=_str(obj, "id"),
        session_source_id=_opt_str(obj, "session_id"),
        start=parse_datetime(obj.get("start_date_time"), "start_date_time"),
        end=parse_datetime(end, "end_date_time"),
        total_energy=_number(obj, "total_energy"),
        total_time=_number(obj, "total_time"),
        total_parking_time=None if obj.get("total_parking_time") is None else float(obj["total_parking_time"]),
        currency=_str(obj, "currency"),
        total_cost=total_cost,
        credit=credit,
        credit_reference_id=credit_ref,
        auth_method=_opt_str(obj, "auth_method"),
        token_uid=_token_uid(obj),
        location_source_id=site[0],
        evse_uid=site[1],
        connector_source_id=site[2],
        tariff_ids=[str(t["id"]) for t in _list(obj, "tariffs") if isinstance(t, dict) and "id" in t],
        last_updated=parse_datetime(_required(obj, "last_updated"), "last_updated"),
    )


def parse_tariff(obj: dict[str, Any]) -> TariffRecord:
    """One Tariff object."""
    elements = _list(obj, "elements")
    if not elements:
        raise RecordError("elements: a tariff needs at least one element")
    for i, element in enumerate(elements):
        if not isinstance(element, dict) or not element.get("price_components"):
            raise RecordError(f"elements[{i}].price_components: required, non-empty")
    min_price = _price(obj.get("min_price"), "min_price")
    max_price = _price(obj.get("max_price"), "max_price")
    return TariffRecord(
        source_id=_str(obj, "id"),
        currency=_str(obj, "currency"),
        type=_opt_str(obj, "type"),
        alt_text=[t for t in _list(obj, "tariff_alt_text") if isinstance(t, dict)],
        alt_url=_opt_str(obj, "tariff_alt_url"),
        min_price=min_price,
        max_price=max_price,
        elements=elements,
        start=_opt_datetime(obj, "start_date_time"),
        end=_opt_datetime(obj, "end_date_time"),
        energy_mix=obj.get("energy_mix") if isinstance(obj.get("energy_mix"), dict) else None,
        last_updated=parse_datetime(_required(obj, "last_updated"), "last_updated"),
    )


PARSERS: dict[Module, Callable[[dict[str, Any]], Record]] = {
    "locations": parse_location,
    "sessions": parse_session,
    "cdrs": parse_cdr,
    "tariffs": parse_tariff,
}


def parse_object(module: Module, obj: Any) -> Record:
    """Parse one object of a module's list; raises RecordError with the reason."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    try:
        return PARSERS[module](obj)
    except RecordError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RecordError(f"malformed {module} object: {exc}") from exc
