"""OCPI as real operators serve it: the 2.1.1 object shapes and the production quirks of §4.3.

`OcpiQuirks` is the per-server switchboard (envelope, paging headers, Link style, auth header and
scheme, date format, a clock that moves during a crawl); `render_211` turns the 2.2.1 objects of
`simulator.ocpi_views` into their 2.1.1 form, so both versions show the same world.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Json = dict[str, Any]
LinkStyle = Literal["query", "opaque", "none"]
DateStyle = Literal["Z", "offset", "naive", "fraction"]


@dataclass(frozen=True, slots=True)
class OcpiQuirks:
    """How one simulated operator deviates from the letter of OCPI 2.2.1 (defaults: it does not).

    - `envelope`: False answers with the bare `data` (a JSON array for lists), no status or timestamp.
    - `total_count` / `x_limit`: whether `X-Total-Count` / `X-Limit` are sent.
    - `links`: "query" (the spec's `?offset=&limit=&date_*=`), "opaque" (`/hub/page/<token>`, on
      `OcpiServer.link_origin` when a hub listener set one) or "none".
    - `ignore_offset`: every page starts at the first record, whatever `offset` asks.
    - `auth_header` / `auth_scheme` / `token_encoding`: where and how the token is expected
      ("" scheme = the bare credential, as for `apikey: KEY`; Basic carries base64 of `token` when
      it holds a colon, else of `token:`); `token_encoding` None means the operator's own setting,
      raw for a 2.1.1 server.
    - `dates`: DateTimes as `...Z` (spec), `...+00:00`, without a designator, or with `.000Z`.
    - `advance_per_page`: simulated seconds the clock moves on after each list page (a slow crawl
      while the world goes on, so objects leave a `date_to` window and `X-Total-Count` drops). The
      clock is shared: use it on a server with a clock of its own.
    """

    envelope: bool = True
    total_count: bool = True
    x_limit: bool = True
    links: LinkStyle = "query"
    ignore_offset: bool = False
    auth_header: str = "Authorization"
    auth_scheme: str = "Token"
    token_encoding: str | None = None
    dates: DateStyle = "Z"
    advance_per_page: float = 0.0


# -- dates -----------------------------------------------------------------------------------------

_DATETIME_Z = re.compile(rb'"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z"')
_DATE_REPLACEMENTS: dict[str, bytes] = {
    "offset": rb'"\1+00:00"',
    "naive": rb'"\1"',
    "fraction": rb'"\1.000Z"',
}


def restyle_datetimes(body: bytes, style: DateStyle) -> bytes:
    """A JSON body with every `YYYY-MM-DDTHH:MM:SSZ` string rewritten in `style`."""
    replacement = _DATE_REPLACEMENTS.get(style)
    return body if replacement is None else _DATETIME_Z.sub(replacement, body)


# -- opaque page links ---------------------------------------------------------------------------


def encode_page_token(params: dict[str, Any]) -> str:
    """An opaque page reference (as a hub's `/page/<token>`), carrying the list parameters."""
    return base64.urlsafe_b64encode(orjson.dumps(params)).decode().rstrip("=")


def decode_page_token(token: str) -> dict[str, Any] | None:
    """The parameters of `encode_page_token`, or None for a token this server did not make."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None


# -- OCPI 2.1.1 ------------------------------------------------------------------------------------

# ParkingType (2.2.1) -> LocationType (2.1.1)
_LOCATION_TYPE = {
    "ON_STREET": "ON_STREET",
    "PARKING_GARAGE": "PARKING_GARAGE",
    "UNDERGROUND_GARAGE": "UNDERGROUND_GARAGE",
    "PARKING_LOT": "PARKING_LOT",
    "ALONG_MOTORWAY": "OTHER",
    "ON_DRIVEWAY": "OTHER",
}
_CDR_DIMENSIONS_211 = {"ENERGY", "FLAT", "MAX_CURRENT", "MIN_CURRENT", "PARKING_TIME", "TIME"}
_RESTRICTIONS_NOT_211 = ("min_current", "max_current", "reservation")
LocationLookup = Callable[[str], Json | None]


def connector_211(c: Json) -> Json:
    """A 2.1.1 Connector: `voltage`/`amperage`, one `tariff_id`, no `max_electric_power`."""
    out: Json = {"id": c["id"], "standard": c["standard"], "format": c["format"], "power_type": c["power_type"]}
    out["voltage"] = c["max_voltage"]
    out["amperage"] = c["max_amperage"]
    if c.get("tariff_ids"):
        out["tariff_id"] = c["tariff_ids"][0]
    out["last_updated"] = c["last_updated"]
    return out


def evse_211(e: Json) -> Json:
    """A 2.1.1 EVSE (its connectors converted)."""
    return {**e, "connectors": [connector_211(c) for c in e["connectors"]]}


def location_211(loc: Json, evse_uid: str | None = None, connector_id: str | None = None) -> Json:
    """A 2.1.1 Location: `type` instead of `parking_type`, no `publish`, country_code or party_id;
    with `evse_uid` (and `connector_id`) only that EVSE (and connector), as sessions embed it."""
    out: Json = {"id": loc["id"], "type": _LOCATION_TYPE.get(loc.get("parking_type") or "", "UNKNOWN")}
    skip = {"country_code", "party_id", "publish", "parking_type", "id", "evses"}
    for key, value in loc.items():
        if key not in skip:
            out[key] = value
    evses = loc.get("evses", [])
    if evse_uid is not None:
        evses = [e for e in evses if e["uid"] == evse_uid]
        if connector_id is not None:
            evses = [{**e, "connectors": [c for c in e["connectors"] if c["id"] == connector_id]} for e in evses]
    out["evses"] = [evse_211(e) for e in evses]
    out["last_updated"] = loc["last_updated"]
    return out


def tariff_211(t: Json) -> Json:
    """A 2.1.1 Tariff: no type, min/max price, validity period or VAT."""
    drop = {"country_code", "party_id", "type", "min_price", "max_price", "start_date_time", "end_date_time"}
    out = {k: v for k, v in t.items() if k not in drop}
    elements = []
    for element in t["elements"]:
        converted: Json = {
            "price_components": [{k: v for k, v in pc.items() if k != "vat"} for pc in element["price_components"]]
        }
        restrictions = {k: v for k, v in (element.get("restrictions") or {}).items() if k not in _RESTRICTIONS_NOT_211}
        if restrictions:
            converted["restrictions"] = restrictions
        elements.append(converted)
    out["elements"] = elements
    return out


def _periods_211(periods: list[Json]) -> list[Json]:
    return [
        {
            "start_date_time": p["start_date_time"],
            "dimensions": [d for d in p["dimensions"] if d["type"] in _CDR_DIMENSIONS_211],
        }
        for p in periods
    ]


def _auth_211(obj: Json) -> Json:
    """2.1.1 names the driver's contract (`auth_id`, 2.2's contract_id) and knows no COMMAND."""
    method = obj["auth_method"]
    return {
        "auth_id": obj["cdr_token"]["contract_id"],
        "auth_method": "AUTH_REQUEST" if method == "COMMAND" else method,
    }


def _embedded(lookup: LocationLookup, location_id: str, evse_uid: str, connector_id: str) -> Json:
    loc = lookup(location_id)
    if loc is None:
        raise LookupError(f"unknown location {location_id}")
    return location_211(loc, evse_uid, connector_id)


def session_211(s: Json, lookup: LocationLookup) -> Json:
    """A 2.1.1 Session: `start_datetime`/`end_datetime`, `auth_id`, the location embedded and
    `total_cost` as a plain number (excluding VAT)."""
    out: Json = {"id": s["id"], "start_datetime": s["start_date_time"]}
    if "end_date_time" in s:
        out["end_datetime"] = s["end_date_time"]
    out["kwh"] = s["kwh"]
    out.update(_auth_211(s))
    out["location"] = _embedded(lookup, s["location_id"], s["evse_uid"], s["connector_id"])
    out["currency"] = s["currency"]
    if "charging_periods" in s:
        out["charging_periods"] = _periods_211(s["charging_periods"])
    if "total_cost" in s:
        out["total_cost"] = s["total_cost"]["excl_vat"]
    out["status"] = s["status"]
    out["last_updated"] = s["last_updated"]
    return out


def cdr_211(c: Json, lookup: LocationLookup) -> Json:
    """A 2.1.1 CDR: `stop_date_time`, `auth_id`, the location embedded, `total_cost` a number,
    no session_id and no cost breakdown."""
    where = c["cdr_location"]
    out: Json = {"id": c["id"], "start_date_time": c["start_date_time"], "stop_date_time": c["end_date_time"]}
    out.update(_auth_211(c))
    out["location"] = _embedded(lookup, where["id"], where["evse_uid"], where["connector_id"])
    out["currency"] = c["currency"]
    out["tariffs"] = [tariff_211(t) for t in c.get("tariffs", [])]
    out["charging_periods"] = _periods_211(c["charging_periods"])
    out["total_cost"] = c["total_cost"]["excl_vat"]
    for key in ("total_energy", "total_time", "total_parking_time"):
        if key in c:
            out[key] = c[key]
    out["last_updated"] = c["last_updated"]
    return out


def render_211(module: str, obj: Json, lookup: LocationLookup) -> Json:
    """One 2.2.1 object of `module` in its 2.1.1 form; `lookup` finds a location (2.2.1) by id."""
    if module == "locations":
        return location_211(obj)
    if module == "sessions":
        return session_211(obj, lookup)
    if module == "cdrs":
        return cdr_211(obj, lookup)
    return tariff_211(obj)
