"""The simulated world's records: operators, locations, EVSEs, connectors, tokens and sessions.

Plain dataclasses with times as whole POSIX seconds; `simulator.sites` builds the static part,
`simulator.data` the sessions, `simulator.ocpi_views` turns them into OCPI JSON.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from simulator.tariffs import Cost, Tariff

DAY = 86_400
CLASSES = ("slow_ac", "fast_ac", "rapid_dc")


def seed_int(*parts: object) -> int:
    """A stable 64-bit integer from any parts (never Python's salted hash())."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def weighted(rng: random.Random, table: tuple[tuple[Any, float], ...]) -> Any:
    """One value of a (value, weight) table."""
    x = rng.random() * sum(w for _, w in table)
    for value, w in table:
        x -= w
        if x < 0:
            return value
    return table[-1][0]


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """Who an operator is and how clients authenticate to it."""

    id: str
    name: str
    country_code: str
    party_id: str
    token: str
    token_encoding: str  # "base64" (OCPI 2.2.1) or "raw"


@dataclass(frozen=True, slots=True)
class Connector:
    """An OCPI Connector (its last_updated is its location's base time)."""

    id: str
    standard: str
    format: str
    power_type: str
    max_voltage: int
    max_amperage: int
    max_electric_power: int
    tariff_ids: tuple[str, ...]


@dataclass(eq=False, slots=True)
class Evse:
    """An EVSE and its occupancy timeline: sorted, non-overlapping [start, end) intervals with the
    status shown during each (CHARGING for sessions, OUTOFORDER/INOPERATIVE for faults)."""

    index: int
    uid: str
    evse_id: str
    klass: str
    power_kw: float
    connectors: tuple[Connector, ...]
    capabilities: tuple[str, ...]
    physical_reference: str
    location: Location = field(repr=False)
    starts: list[int] = field(default_factory=list, repr=False)
    ends: list[int] = field(default_factory=list, repr=False)
    statuses: list[str] = field(default_factory=list, repr=False)

    def status_at(self, t: int) -> tuple[str, int]:
        """(status, last_updated) at time t: the interval covering t, else AVAILABLE since the
        last interval ended (or since the location's base time)."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0:
            return "AVAILABLE", self.location.base_updated
        if t < self.ends[i]:
            return self.statuses[i], self.starts[i]
        return "AVAILABLE", max(self.ends[i], self.location.base_updated)


@dataclass(eq=False, slots=True)
class Location:
    """A site in one borough; coordinates are kept as the 6-decimal strings OCPI carries."""

    id: str
    name: str
    address: str
    city: str
    latitude: str
    longitude: str
    borough_gss: str
    borough_name: str
    parking_type: str
    facilities: tuple[str, ...]
    base_updated: int
    evses: list[Evse] = field(default_factory=list, repr=False)

    def last_updated_at(self, t: int) -> int:
        """The latest change to the location or any of its EVSEs at or before t."""
        return max(self.base_updated, *(e.status_at(t)[1] for e in self.evses))


@dataclass(frozen=True, slots=True)
class Token:
    """A driver's token as it appears in sessions and CDRs (OCPI CdrToken)."""

    uid: str
    type: str
    contract_id: str
    country_code: str
    party_id: str
    auth_method: str
    ocpi: dict[str, str] = field(compare=False, repr=False)


@dataclass(eq=False, slots=True)
class Session:
    """One plug-in: charging from `start` to `charge_end`, then parked until `end`."""

    id: str
    cdr_id: str
    evse: Evse
    connector: Connector
    start: int
    end: int
    charge_end: int
    kwh: float
    token: Token
    tariff: Tariff
    cost: Cost | None = None

    @property
    def location(self) -> Location:
        return self.evse.location
