"""OCPI 2.2.1 objects as they are visible at a simulated time, indexed for fast paging.

Visibility rules (all on `last_updated <= now`):
- a session has an ACTIVE version (last_updated = start, no end, kwh 0) and a COMPLETED one
  (last_updated = end, final kwh and cost); the latest version not after now is the one shown;
- a CDR appears one minute after its session ends (last_updated = end + 60 s);
- an EVSE's status and last_updated follow its occupancy timeline; a location's last_updated is
  the latest of its own and its EVSEs';
- tariffs never change.

Every module is a `ModuleView` whose `select(now, date_from, date_to)` gives the total count and
the items by position, ordered by (last_updated, id). Records are kept sorted so that one page
costs O(log n + page size), whatever the history length.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from simulator.clock import fmt_ts
from simulator.data import MAX_SESSION_S, OperatorWorld
from simulator.model import Evse, Location, OperatorSpec, Session
from simulator.tariffs import CURRENCY, Cost

CDR_DELAY_S = 60
Json = dict[str, Any]


class Selection(Protocol):
    """The records matching one filter, in order; `items` renders a slice of them."""

    total: int

    def items(self, offset: int, limit: int) -> list[Json]: ...


class ModuleView(Protocol):
    """One OCPI module of one operator."""

    def select(self, now: int, date_from: int | None, date_to: int | None) -> Selection: ...


def _window(keys: Sequence[int], now: int, date_from: int | None, date_to: int | None) -> tuple[int, int]:
    """The index range of sorted `keys` with date_from <= key < date_to and key <= now."""
    hi = now + 1 if date_to is None else min(date_to, now + 1)
    lo = bisect.bisect_left(keys, date_from) if date_from is not None else 0
    return lo, max(lo, bisect.bisect_left(keys, hi))


@dataclass(slots=True)
class SliceSelection:
    """A contiguous range of one sorted list."""

    records: Sequence[Any]
    lo: int
    hi: int
    render: Callable[[Any], Json]

    @property
    def total(self) -> int:
        return self.hi - self.lo

    def items(self, offset: int, limit: int) -> list[Json]:
        start = self.lo + offset
        return [self.render(r) for r in self.records[start : min(self.hi, start + limit)]]


@dataclass(slots=True)
class MergedSelection:
    """Two sorted runs shown as one ordered sequence: completed sessions (keyed by end) and the
    few active ones (keyed by start)."""

    completed: Sequence[Session]
    c_lo: int
    c_hi: int
    active: Sequence[Session]
    render_completed: Callable[[Session], Json]
    render_active: Callable[[Session], Json]

    @property
    def total(self) -> int:
        return self.c_hi - self.c_lo + len(self.active)

    def _c(self, i: int) -> tuple[int, str]:
        s = self.completed[self.c_lo + i]
        return s.end, s.id

    def _a(self, j: int) -> tuple[int, str]:
        s = self.active[j]
        return s.start, s.id

    def _split(self, k: int) -> int:
        """How many of the first k merged records come from the completed run."""
        n_c, n_a = self.c_hi - self.c_lo, len(self.active)
        lo, hi = max(0, k - n_a), min(k, n_c)
        while lo < hi:
            i = (lo + hi) // 2
            if self._c(i) < self._a(k - i - 1):
                lo = i + 1
            else:
                hi = i
        return lo

    def items(self, offset: int, limit: int) -> list[Json]:
        n_c, n_a = self.c_hi - self.c_lo, len(self.active)
        offset = min(offset, n_c + n_a)
        i = self._split(offset)
        j = offset - i
        out: list[Json] = []
        while len(out) < limit and (i < n_c or j < n_a):
            if j >= n_a or (i < n_c and self._c(i) < self._a(j)):
                out.append(self.render_completed(self.completed[self.c_lo + i]))
                i += 1
            else:
                out.append(self.render_active(self.active[j]))
                j += 1
        return out


def _coords(loc: Location) -> Json:
    return {"latitude": loc.latitude, "longitude": loc.longitude}


def _price(pair: tuple[float, float]) -> Json:
    return {"excl_vat": pair[0], "incl_vat": pair[1]}


def _hours(seconds: int) -> float:
    return round(seconds / 3600.0, 4)


def evse_to_ocpi(evse: Evse, now: int) -> Json:
    """An OCPI EVSE with its status at `now`."""
    status, updated = evse.status_at(now)
    connector_updated = fmt_ts(evse.location.base_updated)
    connectors = []
    for c in evse.connectors:
        connectors.append(
            {
                "id": c.id,
                "standard": c.standard,
                "format": c.format,
                "power_type": c.power_type,
                "max_voltage": c.max_voltage,
                "max_amperage": c.max_amperage,
                "max_electric_power": c.max_electric_power,
                "tariff_ids": list(c.tariff_ids),
                "last_updated": connector_updated,
            }
        )
    return {
        "uid": evse.uid,
        "evse_id": evse.evse_id,
        "status": status,
        "capabilities": list(evse.capabilities),
        "connectors": connectors,
        "physical_reference": evse.physical_reference,
        "last_updated": fmt_ts(updated),
    }


def location_to_ocpi(loc: Location, spec: OperatorSpec, now: int) -> Json:
    """An OCPI Location (shape of location_example.json) as it is at `now`."""
    evses = [evse_to_ocpi(e, now) for e in loc.evses]
    obj: Json = {
        "country_code": spec.country_code,
        "party_id": spec.party_id,
        "id": loc.id,
        "publish": True,
        "name": loc.name,
        "address": loc.address,
        "city": loc.city,
        "country": "GBR",
        "coordinates": _coords(loc),
        "parking_type": loc.parking_type,
        "evses": evses,
        "operator": {"name": spec.name},
    }
    if loc.facilities:
        obj["facilities"] = list(loc.facilities)
    obj["time_zone"] = "Europe/London"
    obj["opening_times"] = {"twentyfourseven": True}
    obj["last_updated"] = fmt_ts(loc.last_updated_at(now))
    return obj


def charging_periods(s: Session) -> list[Json]:
    """One period charging (ENERGY, TIME), then one parked (PARKING_TIME) if the car stayed."""
    periods: list[Json] = [
        {
            "start_date_time": fmt_ts(s.start),
            "dimensions": [
                {"type": "ENERGY", "volume": s.kwh},
                {"type": "TIME", "volume": _hours(s.charge_end - s.start)},
            ],
            "tariff_id": s.tariff.id,
        }
    ]
    if s.end > s.charge_end:
        periods.append(
            {
                "start_date_time": fmt_ts(s.charge_end),
                "dimensions": [{"type": "PARKING_TIME", "volume": _hours(s.end - s.charge_end)}],
                "tariff_id": s.tariff.id,
            }
        )
    return periods


def session_to_ocpi(s: Session, spec: OperatorSpec, completed: bool) -> Json:
    """An OCPI Session, ACTIVE (as first reported) or COMPLETED (final)."""
    obj: Json = {
        "country_code": spec.country_code,
        "party_id": spec.party_id,
        "id": s.id,
        "start_date_time": fmt_ts(s.start),
    }
    if completed:
        obj["end_date_time"] = fmt_ts(s.end)
    obj["kwh"] = s.kwh if completed else 0.0
    obj["cdr_token"] = s.token.ocpi
    obj["auth_method"] = s.token.auth_method
    obj["location_id"] = s.location.id
    obj["evse_uid"] = s.evse.uid
    obj["connector_id"] = s.connector.id
    obj["currency"] = CURRENCY
    if completed:
        assert s.cost is not None
        obj["charging_periods"] = charging_periods(s)
        obj["total_cost"] = _price(s.cost.total)
    obj["status"] = "COMPLETED" if completed else "ACTIVE"
    obj["last_updated"] = fmt_ts(s.end if completed else s.start)
    return obj


def cdr_to_ocpi(s: Session, spec: OperatorSpec) -> Json:
    """The OCPI CDR of a completed session (shape of cdr_example.json)."""
    cost: Cost | None = s.cost
    assert cost is not None
    loc, c = s.location, s.connector
    dims = s.tariff.dimensions()
    obj: Json = {
        "country_code": spec.country_code,
        "party_id": spec.party_id,
        "id": s.cdr_id,
        "start_date_time": fmt_ts(s.start),
        "end_date_time": fmt_ts(s.end),
        "session_id": s.id,
        "cdr_token": s.token.ocpi,
        "auth_method": s.token.auth_method,
        "cdr_location": {
            "id": loc.id,
            "name": loc.name,
            "address": loc.address,
            "city": loc.city,
            "country": "GBR",
            "coordinates": _coords(loc),
            "evse_uid": s.evse.uid,
            "evse_id": s.evse.evse_id,
            "connector_id": c.id,
            "connector_standard": c.standard,
            "connector_format": c.format,
            "connector_power_type": c.power_type,
        },
        "currency": CURRENCY,
        "tariffs": [s.tariff.ocpi],
        "charging_periods": charging_periods(s),
        "total_cost": _price(cost.total),
    }
    if "FLAT" in dims:
        obj["total_fixed_cost"] = _price(cost.fixed)
    obj["total_energy"] = s.kwh
    obj["total_energy_cost"] = _price(cost.energy)
    obj["total_time"] = _hours(s.end - s.start)
    if "TIME" in dims:
        obj["total_time_cost"] = _price(cost.time)
    obj["total_parking_time"] = _hours(s.end - s.charge_end)
    if "PARKING_TIME" in dims:
        obj["total_parking_cost"] = _price(cost.parking)
    obj["last_updated"] = fmt_ts(s.end + CDR_DELAY_S)
    return obj


class SessionIndex:
    """An operator's sessions sorted by end (completed versions, CDRs) and by start (active
    versions), rebuilt whenever the world generates more days."""

    def __init__(self, op: OperatorWorld) -> None:
        self.op = op
        self._generation = -1
        self.by_end: list[Session] = []
        self.end_keys: list[int] = []
        self.cdr_keys: list[int] = []
        self.by_start: list[Session] = []
        self.start_keys: list[int] = []
        self._active_at: int | None = None
        self._active: list[Session] = []

    def refresh(self, now: int) -> None:
        """Make sure every session that can be visible at `now` is generated and indexed."""
        self.op.ensure_until(now)
        if self._generation == self.op.generation:
            return
        self.by_end = sorted(self.op.sessions, key=lambda s: (s.end, s.id))
        self.end_keys = [s.end for s in self.by_end]
        self.cdr_keys = [k + CDR_DELAY_S for k in self.end_keys]
        self.by_start = sorted(self.op.sessions, key=lambda s: (s.start, s.id))
        self.start_keys = [s.start for s in self.by_start]
        self._generation = self.op.generation
        self._active_at = None

    def active(self, now: int) -> list[Session]:
        """Sessions in progress at `now` (start <= now < end), by (start, id); cached per second."""
        if self._active_at != now:
            lo = bisect.bisect_left(self.start_keys, now - MAX_SESSION_S)
            hi = bisect.bisect_right(self.start_keys, now)
            self._active = [s for s in self.by_start[lo:hi] if s.end > now]
            self._active_at = now
        return self._active


class SessionsView:
    """GET /sessions: the visible version of every session started by now."""

    def __init__(self, op: OperatorWorld, index: SessionIndex) -> None:
        self.spec, self.index = op.spec, index

    def select(self, now: int, date_from: int | None, date_to: int | None) -> Selection:
        self.index.refresh(now)
        c_lo, c_hi = _window(self.index.end_keys, now, date_from, date_to)
        active = self.index.active(now)
        a_lo, a_hi = _window([s.start for s in active], now, date_from, date_to)
        spec = self.spec
        return MergedSelection(
            self.index.by_end,
            c_lo,
            c_hi,
            active[a_lo:a_hi],
            lambda s: session_to_ocpi(s, spec, completed=True),
            lambda s: session_to_ocpi(s, spec, completed=False),
        )


class CdrsView:
    """GET /cdrs: one CDR per session, a minute after it ended."""

    def __init__(self, op: OperatorWorld, index: SessionIndex) -> None:
        self.spec, self.index = op.spec, index

    def select(self, now: int, date_from: int | None, date_to: int | None) -> Selection:
        self.index.refresh(now)
        lo, hi = _window(self.index.cdr_keys, now, date_from, date_to)
        spec = self.spec
        return SliceSelection(self.index.by_end, lo, hi, lambda s: cdr_to_ocpi(s, spec))


class LocationsView:
    """GET /locations: every location with its EVSE statuses at now (re-sorted once per second)."""

    def __init__(self, op: OperatorWorld) -> None:
        self.op = op
        self._at: tuple[int, int] | None = None
        self._sorted: list[Location] = []
        self._keys: list[int] = []

    def _snapshot(self, now: int) -> None:
        self.op.ensure_until(now)
        if self._at != (now, self.op.generation):
            ranked = sorted((loc.last_updated_at(now), loc.id, loc) for loc in self.op.locations)
            self._keys = [r[0] for r in ranked]
            self._sorted = [r[2] for r in ranked]
            self._at = (now, self.op.generation)

    def select(self, now: int, date_from: int | None, date_to: int | None) -> Selection:
        self._snapshot(now)
        lo, hi = _window(self._keys, now, date_from, date_to)
        spec = self.op.spec
        return SliceSelection(self._sorted, lo, hi, lambda loc: location_to_ocpi(loc, spec, now))

    def get(self, location_id: str, now: int) -> Json | None:
        """One location by id, or None if unknown."""
        self.op.ensure_until(now)
        loc = self.op.location_by_id.get(location_id)
        return None if loc is None else location_to_ocpi(loc, self.op.spec, now)


class TariffsView:
    """GET /tariffs: the operator's tariffs (fixed, in the past)."""

    def __init__(self, op: OperatorWorld) -> None:
        self._sorted = sorted(op.tariffs.values(), key=lambda t: (t.last_updated, t.id))
        self._keys = [t.last_updated for t in self._sorted]

    def select(self, now: int, date_from: int | None, date_to: int | None) -> Selection:
        lo, hi = _window(self._keys, now, date_from, date_to)
        return SliceSelection(self._sorted, lo, hi, lambda t: t.ocpi)


@dataclass(slots=True)
class OperatorViews:
    """All module views of one operator."""

    locations: LocationsView
    sessions: SessionsView
    cdrs: CdrsView
    tariffs: TariffsView

    @classmethod
    def of(cls, op: OperatorWorld) -> OperatorViews:
        index = SessionIndex(op)
        return cls(LocationsView(op), SessionsView(op, index), CdrsView(op, index), TariffsView(op))

    def module(self, name: str) -> ModuleView:
        """The view for an OCPI module id (locations, sessions, cdrs, tariffs)."""
        view: ModuleView = getattr(self, name)
        return view
