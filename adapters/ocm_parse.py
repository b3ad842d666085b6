"""Open Charge Map v3 POIs (`/poi`, `compact=false`, PascalCase) to normalised location records.

`parse_poi` takes one POI and returns a `LocationRecord` or raises `RecordError` with a reason a
person can act on; the crawler quarantines that POI and keeps the rest of its page. OCM data is
crowd-sourced free text: parsing is tolerant where the data is still meaningful (no street address,
reference objects named by `description` instead of `Title`, over-long strings) and strict where it
is not (no ID, no coordinates, no date at all). Codes follow OCPI, as every other adapter's do.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from adapters.model import ConnectorRecord, EvseRecord, LocationRecord
from adapters.ocpi_parse import RecordError, parse_datetime

# OCM StatusType id -> OCPI EVSE status. 75 "Partly Operational (Mixed)" describes a whole site and
# says nothing about one charge point, hence UNKNOWN. 210 is OCM's "Removed (Duplicate Listing)".
STATUS: dict[int, str] = {
    0: "UNKNOWN",
    10: "AVAILABLE",
    20: "CHARGING",
    30: "INOPERATIVE",
    50: "AVAILABLE",
    75: "UNKNOWN",
    100: "OUTOFORDER",
    150: "PLANNED",
    200: "REMOVED",
    210: "REMOVED",
}
# OCM ConnectionType id -> (OCPI ConnectorType, ConnectorFormat). Types not listed are "UNKNOWN":
# the site is still worth showing, and the OCM id is not a standard anyone else understands.
CONNECTION_TYPES: dict[int, tuple[str, str | None]] = {
    1: ("IEC_62196_T1", "CABLE"),  # J1772: tethered
    2: ("CHADEMO", "CABLE"),
    3: ("DOMESTIC_G", "SOCKET"),  # BS1363 three-pin
    25: ("IEC_62196_T2", "SOCKET"),  # "Type 2 (Socket Only)"
    27: ("TESLA_S", "CABLE"),  # Tesla Supercharger
    28: ("DOMESTIC_F", "SOCKET"),  # Schuko
    30: ("TESLA_S", "CABLE"),  # Tesla (Model S/X)
    32: ("IEC_62196_T1_COMBO", "CABLE"),  # CCS1
    33: ("IEC_62196_T2_COMBO", "CABLE"),  # CCS2
    1036: ("IEC_62196_T2", "CABLE"),  # "Type 2 (Tethered Connector)"
}
POWER_TYPES: dict[int, str] = {10: "AC_1_PHASE", 20: "AC_3_PHASE", 30: "DC"}
# One EVSE per unit of a connection's Quantity; a larger figure is a typo, not a charging hub.
MAX_QUANTITY = 100
# Column widths of the stored model (gateway.models.Location, Evse): free text longer than these
# would make PostgreSQL refuse the whole window, so it is cut here (a postcode is dropped instead:
# a truncated postcode is a wrong one).
MAX_NAME, MAX_ADDRESS, MAX_CITY, MAX_POSTCODE, MAX_OPERATOR, MAX_REFERENCE = 255, 255, 100, 16, 200, 32

# ISO 3166-1 alpha-2 -> alpha-3: OCM gives the former, the stored model and the API the latter
# (as OCPI does), so that one country is one value whatever the source. XK (Kosovo) is the
# user-assigned code OCM and most registries use.
_ALPHA3 = dict(
    pair.split(":")
    for pair in """
AD:AND AE:ARE AF:AFG AG:ATG AI:AIA AL:ALB AM:ARM AO:AGO AQ:ATA AR:ARG AS:ASM AT:AUT AU:AUS AW:ABW AX:ALA AZ:AZE
BA:BIH BB:BRB BD:BGD BE:BEL BF:BFA BG:BGR BH:BHR BI:BDI BJ:BEN BL:BLM BM:BMU BN:BRN BO:BOL BQ:BES BR:BRA BS:BHS
BT:BTN BV:BVT BW:BWA BY:BLR BZ:BLZ CA:CAN CC:CCK CD:COD CF:CAF CG:COG CH:CHE CI:CIV CK:COK CL:CHL CM:CMR CN:CHN
CO:COL CR:CRI CU:CUB CV:CPV CW:CUW CX:CXR CY:CYP CZ:CZE DE:DEU DJ:DJI DK:DNK DM:DMA DO:DOM DZ:DZA EC:ECU EE:EST
EG:EGY EH:ESH ER:ERI ES:ESP ET:ETH FI:FIN FJ:FJI FK:FLK FM:FSM FO:FRO FR:FRA GA:GAB GB:GBR GD:GRD GE:GEO GF:GUF
GG:GGY GH:GHA GI:GIB GL:GRL GM:GMB GN:GIN GP:GLP GQ:GNQ GR:GRC GS:SGS GT:GTM GU:GUM GW:GNB GY:GUY HK:HKG HM:HMD
HN:HND HR:HRV HT:HTI HU:HUN ID:IDN IE:IRL IL:ISR IM:IMN IN:IND IO:IOT IQ:IRQ IR:IRN IS:ISL IT:ITA JE:JEY JM:JAM
JO:JOR JP:JPN KE:KEN KG:KGZ KH:KHM KI:KIR KM:COM KN:KNA KP:PRK KR:KOR KW:KWT KY:CYM KZ:KAZ LA:LAO LB:LBN LC:LCA
LI:LIE LK:LKA LR:LBR LS:LSO LT:LTU LU:LUX LV:LVA LY:LBY MA:MAR MC:MCO MD:MDA ME:MNE MF:MAF MG:MDG MH:MHL MK:MKD
ML:MLI MM:MMR MN:MNG MO:MAC MP:MNP MQ:MTQ MR:MRT MS:MSR MT:MLT MU:MUS MV:MDV MW:MWI MX:MEX MY:MYS MZ:MOZ NA:NAM
NC:NCL NE:NER NF:NFK NG:NGA NI:NIC NL:NLD NO:NOR NP:NPL NR:NRU NU:NIU NZ:NZL OM:OMN PA:PAN PE:PER PF:PYF PG:PNG
PH:PHL PK:PAK PL:POL PM:SPM PN:PCN PR:PRI PS:PSE PT:PRT PW:PLW PY:PRY QA:QAT RE:REU RO:ROU RS:SRB RU:RUS RW:RWA
SA:SAU SB:SLB SC:SYC SD:SDN SE:SWE SG:SGP SH:SHN SI:SVN SJ:SJM SK:SVK SL:SLE SM:SMR SN:SEN SO:SOM SR:SUR SS:SSD
ST:STP SV:SLV SX:SXM SY:SYR SZ:SWZ TC:TCA TD:TCD TF:ATF TG:TGO TH:THA TJ:TJK TK:TKL TL:TLS TM:TKM TN:TUN TO:TON
TR:TUR TT:TTO TV:TUV TW:TWN TZ:TZA UA:UKR UG:UGA UM:UMI US:USA UY:URY UZ:UZB VA:VAT VC:VCT VE:VEN VG:VGB VI:VIR
VN:VNM VU:VUT WF:WLF WS:WSM XK:XKX YE:YEM YT:MYT ZA:ZAF ZM:ZMB ZW:ZWE
""".split()
)


def alpha3(code: str) -> str:
    """The ISO 3166-1 alpha-3 code of an alpha-2 code; an unknown code is kept as given."""
    return _ALPHA3.get(code.upper(), code.upper())


def _int(value: Any) -> int | None:
    """An integer id or count, or None (JSON numbers, or digit strings as some exports carry)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _number(value: Any) -> float | None:
    """A finite number, or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any, limit: int) -> str | None:
    """Trimmed text cut to `limit` characters; None when absent or blank."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text[:limit] if text else None


def _title(ref: Any) -> Any:
    """A reference object's name: `Title`, or `description` as some OCM examples and exports name it."""
    if not isinstance(ref, dict):
        return None
    for key in ("Title", "description", "title"):
        if ref.get(key) not in (None, ""):
            return ref[key]
    return None


def _ref_id(obj: dict[str, Any], id_field: str, ref_field: str) -> int | None:
    """A reference id from `XxxID`, else from the embedded `Xxx` object's `ID`."""
    value = _int(obj.get(id_field))
    if value is None and isinstance(obj.get(ref_field), dict):
        value = _int(obj[ref_field].get("ID"))
    return value


def poi_timestamp(obj: Any) -> datetime | None:
    """A POI's `DateLastStatusUpdate` (what `modifiedsince` and `sortby=modified_asc` use), or None."""
    if not isinstance(obj, dict) or obj.get("DateLastStatusUpdate") in (None, ""):
        return None
    try:
        return parse_datetime(obj["DateLastStatusUpdate"], "DateLastStatusUpdate")
    except RecordError:
        return None


def poi_id(obj: Any) -> int | None:
    """A POI's integer `ID`, or None."""
    return _int(obj.get("ID")) if isinstance(obj, dict) else None


def _last_updated(obj: dict[str, Any]) -> datetime:
    """DateLastStatusUpdate ("this POI or its children changed"), else DateLastVerified, else DateCreated."""
    for name in ("DateLastStatusUpdate", "DateLastVerified", "DateCreated"):
        if obj.get(name) not in (None, ""):
            return parse_datetime(obj[name], name)
    raise RecordError("DateLastStatusUpdate: required field missing (and no DateLastVerified or DateCreated)")


def _coordinates(address: dict[str, Any]) -> tuple[float, float]:
    lat, lon = _number(address.get("Latitude")), _number(address.get("Longitude"))
    if lat is None or lon is None:
        raise RecordError("AddressInfo.Latitude/Longitude: required numbers missing")
    if abs(lat) > 90 or abs(lon) > 180:
        raise RecordError(f"AddressInfo.Latitude/Longitude: out of range ({lat}, {lon})")
    if lat == 0 and lon == 0:  # "null island": a placeholder, and it would sit on a map as a real site
        raise RecordError("AddressInfo.Latitude/Longitude: 0,0 is a placeholder, not a location")
    return lat, lon


def _connector(conn: dict[str, Any], updated: datetime) -> ConnectorRecord:
    type_id = _ref_id(conn, "ConnectionTypeID", "ConnectionType")
    standard, fmt = CONNECTION_TYPES.get(type_id, ("UNKNOWN", None)) if type_id is not None else ("UNKNOWN", None)
    kw = _number(conn.get("PowerKW"))
    volts, amps = _number(conn.get("Voltage")), _number(conn.get("Amps"))
    current = _ref_id(conn, "CurrentTypeID", "CurrentType")
    return ConnectorRecord(
        source_id="1",  # an OCM connection unit is one EVSE with one connector
        standard=standard,
        format=fmt,
        power_type=POWER_TYPES.get(current) if current is not None else None,
        max_voltage=round(volts) if volts and volts > 0 else None,
        max_amperage=round(amps) if amps and amps > 0 else None,
        max_electric_power=round(kw * 1000) if kw and kw > 0 else None,  # W, as OCPI
        tariff_ids=[],  # OCM's UsageCost is free text, not a tariff
        last_updated=updated,
    )


def _evses(obj: dict[str, Any], updated: datetime) -> list[EvseRecord]:
    """One EVSE per unit of each connection (`Quantity`), uid `<ConnectionID>-<n>`."""
    connections = obj.get("Connections") or []
    if not isinstance(connections, list):
        raise RecordError(f"Connections: expected a list, got {type(connections).__name__}")
    site_status = _ref_id(obj, "StatusTypeID", "StatusType")
    evses: list[EvseRecord] = []
    for i, conn in enumerate(connections):
        if not isinstance(conn, dict):
            raise RecordError(f"Connections[{i}]: expected an object")
        conn_id = _int(conn.get("ID"))
        if conn_id is None:  # without it the EVSE uids would change whenever the list is edited
            raise RecordError(f"Connections[{i}].ID: required field missing")
        quantity = _int(conn.get("Quantity"))
        quantity = 1 if quantity is None or quantity < 1 else quantity
        if quantity > MAX_QUANTITY:
            raise RecordError(f"Connections[{i}].Quantity: {quantity} is not plausible (at most {MAX_QUANTITY})")
        status_id = _ref_id(conn, "StatusTypeID", "StatusType")
        status_id = site_status if status_id is None else status_id
        status = STATUS.get(status_id, "UNKNOWN") if status_id is not None else "UNKNOWN"
        reference = _text(conn.get("Reference"), MAX_REFERENCE)
        evses.extend(
            EvseRecord(
                uid=f"{conn_id}-{n}",
                evse_id=None,  # OCM has no eMI3 EVSE ids
                status=status,
                capabilities=[],
                connectors=[_connector(conn, updated)],
                floor_level=None,
                physical_reference=reference,
                latitude=None,
                longitude=None,
                last_updated=updated,
            )
            for n in range(1, quantity + 1)
        )
    return evses


def _address(info: dict[str, Any]) -> str:
    lines = [_text(info.get(name), MAX_ADDRESS) for name in ("AddressLine1", "AddressLine2")]
    # A POI with only a title and coordinates is still a site on a map: an empty address, not an error.
    return ", ".join(line for line in lines if line)[:MAX_ADDRESS]


def parse_poi(obj: Any) -> LocationRecord:
    """One POI (`compact=false`) as a location with its EVSEs; raises RecordError with the reason."""
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
    source_id = poi_id(obj)
    if source_id is None:
        raise RecordError("ID: required integer missing")
    info = obj.get("AddressInfo")
    if not isinstance(info, dict):
        raise RecordError("AddressInfo: required object missing")
    lat, lon = _coordinates(info)
    updated = _last_updated(obj)
    country = info.get("Country")
    iso = _text(country.get("ISOCode"), 3) if isinstance(country, dict) else None
    postcode = _text(info.get("Postcode"), 100)
    return LocationRecord(
        source_id=str(source_id),
        country_code=None,  # the OCPI party's country: OCM is not an OCPI party
        party_id=None,
        publish=True,  # /poi serves only published submissions
        name=_text(_title(info), MAX_NAME),
        address=_address(info),
        city=_text(info.get("Town"), MAX_CITY) or "",
        postal_code=postcode if postcode is None or len(postcode) <= MAX_POSTCODE else None,
        country=alpha3(iso) if iso else "",
        latitude=lat,
        longitude=lon,
        parking_type=None,
        time_zone=None,
        opening_times=None,
        facilities=[],
        operator_name=_text(_title(obj.get("OperatorInfo")), MAX_OPERATOR),
        evses=_evses(obj, updated),
        last_updated=updated,
    )
