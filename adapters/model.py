"""The normalised records every adapter yields, whatever protocol it speaks.

They are plain, slotted dataclasses: adapters build them, `gateway.ingest` stores them. Nothing here
knows about the database or GraphQL. Identifiers are the operator's own (`source_id`); the gateway
prefixes them with the operator id to make them unique across operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Module = Literal["locations", "statuses", "sessions", "cdrs", "tariffs"]
# Every module some protocol offers. OCPI carries EVSE status inside locations; OICP pulls it
# separately (PullEvseStatus), hence "statuses"; which modules an operator has depends on its protocol.
MODULES: tuple[Module, ...] = ("locations", "statuses", "sessions", "cdrs", "tariffs")
PROTOCOL_MODULES: dict[str, tuple[Module, ...]] = {
    "ocpi": ("locations", "sessions", "cdrs", "tariffs"),
    "oicp": ("locations", "statuses", "cdrs"),
    "ocm": ("locations",),
}


@dataclass(slots=True)
class Price:
    """An amount of money, excluding and (where known) including VAT."""

    excl_vat: float
    incl_vat: float | None = None


@dataclass(slots=True)
class ConnectorRecord:
    """One plug or socket of an EVSE."""

    source_id: str
    standard: str
    format: str | None
    # Ratings are required by OCPI but missing in some real payloads (even the spec's PUT example);
    # a connector without them is still worth showing on a map, so they are nullable, not fatal.
    power_type: str | None
    max_voltage: int | None
    max_amperage: int | None
    max_electric_power: int | None
    tariff_ids: list[str]
    last_updated: datetime

    @property
    def max_power_kw(self) -> float | None:
        """Rated power in kW: the declared maximum, else voltage x current (x3 for three-phase AC)."""
        if self.max_electric_power:
            return self.max_electric_power / 1000.0
        if self.max_voltage is None or self.max_amperage is None:
            return None
        phases = 3 if self.power_type == "AC_3_PHASE" else 1
        return self.max_voltage * self.max_amperage * phases / 1000.0


@dataclass(slots=True)
class EvseRecord:
    """A charge point: one vehicle can charge at a time."""

    uid: str
    evse_id: str | None
    # None when the protocol carries no status with the EVSE's data (OICP: a separate status pull);
    # ingest then keeps the stored status.
    status: str | None
    capabilities: list[str]
    connectors: list[ConnectorRecord]
    floor_level: str | None
    physical_reference: str | None
    latitude: float | None
    longitude: float | None
    last_updated: datetime


@dataclass(slots=True)
class LocationRecord:
    """A site with one or more EVSEs."""

    source_id: str
    country_code: str | None
    party_id: str | None
    publish: bool
    name: str | None
    address: str
    city: str
    postal_code: str | None
    country: str
    latitude: float
    longitude: float
    parking_type: str | None
    time_zone: str | None
    opening_times: dict[str, Any] | None
    facilities: list[str]
    operator_name: str | None
    evses: list[EvseRecord]
    last_updated: datetime
    module: Module = "locations"


@dataclass(slots=True)
class SessionRecord:
    """A charging session as the operator reports it while it runs and after it ends."""

    source_id: str
    start: datetime
    end: datetime | None
    kwh: float
    status: str
    auth_method: str | None
    token_uid: str | None  # raw; the gateway keeps only a keyed pseudonym of it
    # None when the protocol names only the EVSE (OICP): ingest finds the location by the EVSE uid.
    location_source_id: str | None
    evse_uid: str | None
    connector_source_id: str | None
    currency: str | None
    total_cost: Price | None
    last_updated: datetime
    module: Module = "sessions"


@dataclass(slots=True)
class CdrRecord:
    """The final, priced record of a session (immutable; corrections come as credit CDRs)."""

    source_id: str
    session_source_id: str | None
    start: datetime
    end: datetime
    total_energy: float
    total_time: float
    total_parking_time: float | None
    # Null for protocols whose CDRs carry no price (OICP prices through DynamicPricing).
    currency: str | None
    total_cost: Price | None
    credit: bool
    credit_reference_id: str | None
    auth_method: str | None
    token_uid: str | None
    # None when the protocol names only the EVSE (OICP): ingest finds the location by the EVSE uid.
    location_source_id: str | None
    evse_uid: str | None
    connector_source_id: str | None
    tariff_ids: list[str]
    last_updated: datetime
    module: Module = "cdrs"


@dataclass(slots=True)
class TariffRecord:
    """A price list that connectors refer to by id."""

    source_id: str
    currency: str
    type: str | None
    alt_text: list[dict[str, str]]
    alt_url: str | None
    min_price: Price | None
    max_price: Price | None
    elements: list[dict[str, Any]]
    start: datetime | None
    end: datetime | None
    energy_mix: dict[str, Any] | None
    last_updated: datetime
    module: Module = "tariffs"


@dataclass(slots=True)
class StatusRecord:
    """An EVSE's live status on its own, for protocols that pull status apart from site data.

    `evse_uid` is the EVSE's identifier as the operator's data records give it (OICP `EvseID`);
    `last_updated` is when the operator reported it (its clock at the pull).
    """

    evse_uid: str
    status: str
    last_updated: datetime
    module: Module = "statuses"

    @property
    def source_id(self) -> str:
        return self.evse_uid


Record = LocationRecord | SessionRecord | CdrRecord | TariffRecord | StatusRecord


@dataclass(slots=True)
class InvalidRecord:
    """An operator record that could not be normalised: kept with its reason, never dropped."""

    module: Module
    reason: str
    raw: Any
    source_id: str | None = None
    code: str = "RECORD_INVALID"


@dataclass(slots=True)
class Page:
    """One page of a crawl: the good records, the quarantined ones, and what the server said."""

    records: list[Record] = field(default_factory=list)
    invalid: list[InvalidRecord] = field(default_factory=list)
    total_count: int | None = None
    server_time: datetime | None = None
