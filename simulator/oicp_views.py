"""One simulated operator's data as OICP 2.3 records, translated from its OCPI view objects.

OICP has no location hierarchy: PullEvseData gives one record per EVSE (`ChargingStationID` = the
OCPI location id, `EvseID` = the OCPI `evse_id`, e.g. `GB*ALP*E00042`), PullEvseStatus the status
alone, GetChargeDetailRecords one record per CDR with a GUID `SessionID` (uuid5 of the OCPI
session id) and no price. Times carry the offset of Europe/London, as OICP wants the charge
point's local zone. A record's `lastUpdate` is its OCPI EVSE `last_updated` (status changes
included) and it counts as created when its connectors were (the location's base time).

The world never retires an EVSE by itself: `remove_evse` marks one REMOVED from a simulated time
on, which turns it into a `delete` in delta pulls, drops it from full pulls and makes its status
EvseNotFound.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from simulator.clock import parse_datetime
from simulator.data import OperatorWorld, london_offset_hours
from simulator.model import Evse, seed_int
from simulator.ocpi_views import OperatorViews, Selection, SliceSelection, location_to_ocpi

Json = dict[str, Any]

SESSION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:evgate-simulator:oicp-session")
EVSE_STATUS = {
    "AVAILABLE": "Available",
    "CHARGING": "Occupied",
    "BLOCKED": "Occupied",
    "RESERVED": "Reserved",
    "OUTOFORDER": "OutOfService",
    "INOPERATIVE": "OutOfService",
    "REMOVED": "EvseNotFound",
}  # anything else (UNKNOWN, PLANNED): Unknown
PLUGS = {
    ("IEC_62196_T2", "SOCKET"): "Type 2 Outlet",
    ("IEC_62196_T2_COMBO", "CABLE"): "CCS Combo 2 Plug (Cable Attached)",
    ("CHADEMO", "CABLE"): "CHAdeMO",
}
ACCESSIBILITY_LOCATION = {
    "ON_STREET": "OnStreet",
    "PARKING_LOT": "ParkingLot",
    "PARKING_GARAGE": "ParkingGarage",
    "UNDERGROUND_GARAGE": "UndergroundParkingGarage",
}
GEO_FORMATS = ("Google", "DecimalDegree", "DegreeMinuteSeconds")
_OUTWARD = ("E", "EC", "N", "NW", "SE", "SW", "W", "WC", "BR", "CR", "EN", "HA", "IG", "KT", "RM", "SM", "TW", "UB")


def fmt_local(ts: int) -> str:
    """An OICP Date/Time in Europe/London local time with its offset (`+00:00` or `+01:00`)."""
    offset = london_offset_hours(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts + offset * 3600)) + f"+{offset:02d}:00"


def session_guid(operator_id: str, session_id: str) -> str:
    """The OICP SessionID (a GUID) of an OCPI session, stable across runs."""
    return str(uuid.uuid5(SESSION_NAMESPACE, f"{operator_id}:{session_id}"))


def site_postcode(location_id: str, borough_gss: str) -> str:
    """A made-up but stable London postcode for a site (OCPI locations here carry none)."""
    area = _OUTWARD[seed_int("postcode-area", borough_gss) % len(_OUTWARD)]
    n = seed_int("postcode", borough_gss, location_id)
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return f"{area}{n % 20 + 1} {n // 20 % 10}{letters[n // 200 % 20]}{letters[n // 4000 % 20]}"


def _seconds(stamp: str) -> int:
    return math.floor(parse_datetime(stamp))


def _dms(value: float, positive: str, negative: str) -> str:
    """Degrees, minutes and seconds as OICP writes them, e.g. `N51°30'12.345''`."""
    hemisphere = positive if value >= 0 else negative
    total = round(abs(value) * 3600, 3)
    degrees, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hemisphere}{int(degrees)}°{int(minutes)}'{seconds:.3f}''"


def geo_coordinates(latitude: str, longitude: str, fmt: str) -> Json:
    """OICP GeoCoordinates in the format the client asked for."""
    if fmt == "Google":
        return {"Google": {"Coordinates": f"{latitude} {longitude}"}}
    if fmt == "DecimalDegree":
        return {"DecimalDegree": {"Latitude": latitude, "Longitude": longitude}}
    lat, lon = float(latitude), float(longitude)
    return {"DegreeMinuteSeconds": {"Latitude": _dms(lat, "N", "S"), "Longitude": _dms(lon, "E", "W")}}


@dataclass(frozen=True, slots=True)
class EvseEntry:
    """One EVSE at a simulated time: its OCPI status (REMOVED overlaid) and derived times."""

    evse_id: str
    status: str
    last_update: int  # the OCPI EVSE last_updated
    created: int  # its connectors' last_updated
    evse: Evse


@dataclass(slots=True)
class MappedSelection:
    """Another selection's records, each translated on the way out."""

    inner: Selection
    translate: Callable[[Json], Json]

    @property
    def total(self) -> int:
        return self.inner.total

    def items(self, offset: int, limit: int) -> list[Json]:
        return [self.translate(r) for r in self.inner.items(offset, limit)]


class OicpViews:
    """PullEvseData, PullEvseStatus and GetChargeDetailRecords answers of one operator."""

    def __init__(self, op: OperatorWorld) -> None:
        self.op = op
        self.ocpi = OperatorViews.of(op)  # the OCPI objects translated here
        spec = op.spec
        self.operator_id = f"{spec.country_code}*{spec.party_id}"
        self.hotline = f"+4420{seed_int('hotline', spec.id) % 10**8:08d}"
        self.removed: dict[str, int] = {}  # OCPI EVSE uid -> when it was removed
        self._at: tuple[int, int] | None = None
        self._entries: list[EvseEntry] = []
        self._by_evse_id: dict[str, EvseEntry] = {}

    def remove_evse(self, evse_id: str, at: int) -> None:
        """Decommission an EVSE (by OICP EvseID) from simulated time `at` on."""
        self.removed[self.uid_of(evse_id)] = at
        self._at = None

    def uid_of(self, evse_id: str) -> str:
        """The OCPI EVSE uid behind an OICP EvseID (KeyError if unknown)."""
        for e in self.op.evses:
            if e.evse_id == evse_id:
                return e.uid
        raise KeyError(evse_id)

    # -- EVSE data and status ------------------------------------------------------------------

    def entries(self, now: int) -> list[EvseEntry]:
        """Every EVSE at `now`, by EvseID (recomputed at most once per simulated second)."""
        self.op.ensure_until(now)
        key = (now, self.op.generation)
        if self._at != key:
            entries = []
            for evse in self.op.evses:
                status, updated = evse.status_at(now)  # as the OCPI view shows it
                removed_at = self.removed.get(evse.uid)
                if removed_at is not None and removed_at <= now:
                    status, updated = "REMOVED", removed_at
                entries.append(EvseEntry(evse.evse_id, status, updated, evse.location.base_updated, evse))
            entries.sort(key=lambda e: e.evse_id)
            self._entries, self._by_evse_id, self._at = entries, {e.evse_id: e for e in entries}, key
        return self._entries

    def evse_data(self, now: int, last_call: int | None = None, geo_format: str = "Google") -> Selection:
        """PullEvseData: every EVSE not removed, or with `last_call` those updated since (each
        with its deltaType), by EvseID."""
        if last_call is None:
            chosen = [e for e in self.entries(now) if e.status != "REMOVED"]
        else:
            chosen = [e for e in self.entries(now) if e.last_update >= last_call]
        return SliceSelection(chosen, 0, len(chosen), lambda e: self.evse_record(e, now, geo_format, last_call))

    def evse_record(self, entry: EvseEntry, now: int, geo_format: str, last_call: int | None) -> Json:
        """One PullEvseDataRecord with every mandatory field of OICP 2.3, from the OCPI Location
        and EVSE objects."""
        loc = location_to_ocpi(entry.evse.location, self.op.spec, now)
        evse = next(e for e in loc["evses"] if e["uid"] == entry.evse.uid)
        number, _, street = loc["address"].partition(" ")
        capabilities = set(evse["capabilities"])
        direct = bool(capabilities & {"CREDIT_CARD_PAYABLE", "CONTACTLESS_CARD_SUPPORT"})
        modes = ["NFC RFID Classic"] * ("RFID_READER" in capabilities)
        modes += ["REMOTE"] * ("REMOTE_START_STOP_CAPABLE" in capabilities) + ["Direct Payment"] * direct
        record: Json = {}
        if last_call is not None:
            if entry.status == "REMOVED":
                record["deltaType"] = "delete"
            else:
                record["deltaType"] = "insert" if entry.created >= last_call else "update"
        record.update(
            {
                "lastUpdate": fmt_local(entry.last_update),
                "EvseID": entry.evse_id,
                "ChargingPoolID": f"{self.operator_id}*P{loc['id']}",
                "ChargingStationID": loc["id"],
                "ChargingStationNames": [{"lang": "en", "value": loc["name"][:150]}],
                "Address": {
                    "Country": loc["country"],
                    "City": loc["city"],
                    "Street": street,
                    "PostalCode": site_postcode(loc["id"], entry.evse.location.borough_gss),
                    "HouseNum": number,
                    "ParkingFacility": loc["parking_type"] != "ON_STREET",
                },
                "GeoCoordinates": geo_coordinates(
                    loc["coordinates"]["latitude"], loc["coordinates"]["longitude"], geo_format
                ),
                "Plugs": sorted({PLUGS[c["standard"], c["format"]] for c in evse["connectors"]}),
                "ChargingFacilities": [_facility(c) for c in evse["connectors"]],
                "RenewableEnergy": False,
                "CalibrationLawDataAvailability": "Not Available",
                "AuthenticationModes": modes,
                "PaymentOptions": ["Contract", "Direct"] if direct else ["Contract"],
                "ValueAddedServices": ["None"],
                "Accessibility": "Paying publicly accessible",
                "AccessibilityLocation": ACCESSIBILITY_LOCATION[loc["parking_type"]],
                "HotlinePhoneNumber": self.hotline,
                "IsOpen24Hours": loc["opening_times"]["twentyfourseven"],
                "IsHubjectCompatible": True,
                "DynamicInfoAvailable": "true",
                "OperatorID": self.operator_id,
                "OperatorName": self.op.spec.name,
            }
        )
        return record

    def statuses(self, now: int, evse_ids: Sequence[str] | None = None) -> list[Json]:
        """EvseStatusRecords: of every EVSE (removed ones EvseNotFound), or of the ids asked for
        in that order (EvseNotFound for ids this operator does not have)."""
        entries = self.entries(now)
        if evse_ids is None:
            return [{"EvseID": e.evse_id, "EvseStatus": EVSE_STATUS.get(e.status, "Unknown")} for e in entries]
        out = []
        for evse_id in evse_ids:
            entry = self._by_evse_id.get(evse_id)
            status = "EvseNotFound" if entry is None else EVSE_STATUS.get(entry.status, "Unknown")
            out.append({"EvseID": evse_id, "EvseStatus": status})
        return out

    # -- charge detail records -----------------------------------------------------------------

    def cdrs(self, now: int, date_from: int | None, date_to: int | None) -> Selection:
        """ChargeDetailRecords of the CDRs whose OCPI last_updated is in [date_from, date_to)."""
        return MappedSelection(self.ocpi.cdrs.select(now, date_from, date_to), self.cdr_record)

    def cdr_record(self, cdr: Json) -> Json:
        """An OICP ChargeDetailRecord from an OCPI CDR: times local, energy with meter readings,
        the RFID UID as identification, no price."""
        start, end = _seconds(cdr["start_date_time"]), _seconds(cdr["end_date_time"])
        periods = cdr["charging_periods"]
        charging_end = _seconds(periods[1]["start_date_time"]) if len(periods) > 1 else end
        kwh = cdr["total_energy"]
        meter_start = seed_int("meter", self.op.spec.id, cdr["session_id"]) % 5_000_000 / 1000
        return {
            "SessionID": session_guid(self.op.spec.id, cdr["session_id"]),
            "CPOPartnerSessionID": cdr["session_id"],
            "EvseID": cdr["cdr_location"]["evse_id"],
            "Identification": {"RFIDMifareFamilyIdentification": {"UID": cdr["cdr_token"]["uid"]}},
            "SessionStart": fmt_local(start),
            "SessionEnd": fmt_local(end),
            "ChargingStart": fmt_local(start),
            "ChargingEnd": fmt_local(charging_end),
            "ConsumedEnergy": kwh,
            "MeterValueStart": meter_start,
            "MeterValueEnd": round(meter_start + kwh, 3),
        }


def _facility(connector: Json) -> Json:
    """An OICP ChargingFacility from an OCPI Connector."""
    dc = connector["power_type"] == "DC"
    return {
        "PowerType": connector["power_type"],
        "Voltage": connector["max_voltage"],
        "Amperage": connector["max_amperage"],
        "Power": round(connector["max_electric_power"] / 1000),
        "ChargingModes": ["CHAdeMO" if connector["standard"] == "CHADEMO" else "Mode_4"] if dc else ["Mode_3"],
    }
