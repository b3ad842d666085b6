"""The simulated London world and its charging sessions, generated lazily and deterministically.

Everything is a pure function of the seed (`simulator.sites` builds the estate). Sessions are drawn
from the fitted `params` one (operator, UTC day) at a time with that day's own seeded RNG, so a
long-running demo keeps producing them and any day is reproducible on its own: arrivals follow the
hourly profile (Europe/London local time), plug-in duration and energy are correlated lognormals,
and a few fault stretches (OUTOFORDER/INOPERATIVE, ~1-2 % of the time) are mixed in.

Non-overlap per EVSE without chaining every day to all before it: within a day a driver who finds
the EVSE busy waits for it (or gives up at midnight); candidates are shorter than 48 h; and a day's
candidate is kept only if it starts after every candidate of the two previous days on that EVSE
has ended. So a session that exists in two runs with different history ranges is the same in both.
"""

from __future__ import annotations

import bisect
import calendar
import itertools
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from simulator.boroughs import default_boroughs_path, load_boroughs
from simulator.model import DAY, Connector, Evse, Location, OperatorSpec, Session, Token, seed_int, weighted
from simulator.params import CLASS_PARAMS, ClassParams
from simulator.sites import build_locations, make_tokens, operator_spec
from simulator.tariffs import Tariff, compute_cost, make_tariffs

__all__ = ["MAX_SESSION_S", "OperatorWorld", "World", "build_world"]

MAX_SESSION_S = 48 * 3600 - 60  # strictly under 48 h: a candidate spills over two days at most
BASE_EPOCH = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
FAULT_PROBABILITY = 0.06  # per EVSE and day; with a ~4 h median this is ~1.5 % of the time

# Vehicle acceptance rates (kW): they split a stay into charging and parked time. Energy over
# a whole stay never exceeds DELIVERY_FACTOR x the connector's rating (in the fitted data, 97 %
# of rapid sessions average under 45 kW on 50 kW chargers).
AC_CAR_KW = ((3.7, 0.10), (7.4, 0.45), (11.0, 0.30), (22.0, 0.15))
DC_CAR_KW = ((40.0, 0.15), (50.0, 0.30), (75.0, 0.25), (100.0, 0.20), (150.0, 0.10))
DELIVERY_FACTOR = 0.9
QUEUE_GAP_S = 180  # the next driver plugs in three minutes after the previous one left


@lru_cache(maxsize=64)
def _bst_bounds(year: int) -> tuple[int, int]:
    """UK summer time for a year: last Sunday of March to last Sunday of October, 01:00 UTC."""

    def last_sunday(month: int) -> int:
        last = calendar.monthrange(year, month)[1]
        day = max(d for d in range(last - 6, last + 1) if calendar.weekday(year, month, d) == 6)
        return calendar.timegm((year, month, day, 1, 0, 0))

    return last_sunday(3), last_sunday(10)


def london_offset_hours(ts: int) -> int:
    """Europe/London's offset from UTC at `ts`, in whole hours (0 or 1)."""
    start, end = _bst_bounds(datetime.fromtimestamp(ts, UTC).year)
    return 1 if start <= ts < end else 0


# One candidate interval of a day's draw: (start, end, status, session or None for a fault).
_Candidate = tuple[int, int, str, Session | None]


@dataclass(eq=False)
class OperatorWorld:
    """One operator's static data plus its lazily generated session history."""

    spec: OperatorSpec
    world_seed: int
    locations: list[Location]
    evses: list[Evse]
    tariffs: dict[str, Tariff]
    tokens: tuple[Token, ...]
    token_cum: list[float]
    range_start: int
    demand_scale: float = 1.0
    sessions: list[Session] = field(default_factory=list)
    generation: int = 0  # bumped whenever sessions are added (views re-index on change)
    location_by_id: dict[str, Location] = field(init=False, repr=False)
    evse_by_uid: dict[str, Evse] = field(init=False, repr=False)
    _next_day: int = field(init=False, repr=False)
    _candidates: dict[int, list[list[_Candidate]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._next_day = self.range_start // DAY
        self.location_by_id = {loc.id: loc for loc in self.locations}
        self.evse_by_uid = {e.uid: e for e in self.evses}

    def ensure_until(self, ts: float) -> None:
        """Generate every day up to the one containing `ts` (idempotent, cheap when done)."""
        last = math.floor(ts) // DAY
        if last < self._next_day:
            return
        while self._next_day <= last:
            self._accept_day(self._next_day)
            self._next_day += 1
        self.generation += 1

    def _day_candidates(self, day: int) -> list[list[_Candidate]]:
        cached = self._candidates.get(day)
        if cached is None:
            cached = self._candidates[day] = self._draw_day(day)
            for old in [d for d in self._candidates if d < day - 3]:
                del self._candidates[old]
        return cached

    def _accept_day(self, day: int) -> None:
        """Keep a day's candidates that start after everything of the two previous days ended
        (and not before the history range), and record them on the EVSEs."""
        today = self._day_candidates(day)
        before = [self._day_candidates(day - 2), self._day_candidates(day - 1)]
        for evse, candidates in zip(self.evses, today, strict=True):
            busy_until = max((c[1] for prev in before for c in prev[evse.index]), default=self.range_start)
            busy_until = max(busy_until, self.range_start)
            for start, end, status, session in candidates:
                if start < busy_until:
                    continue
                evse.starts.append(start)
                evse.ends.append(end)
                evse.statuses.append(status)
                if session is not None:
                    session.cost = compute_cost(session.tariff, end - start, session.charge_end - start, session.kwh)
                    self.sessions.append(session)

    def _draw_day(self, day: int) -> list[list[_Candidate]]:
        """Every EVSE's candidate intervals for one UTC day, greedily non-overlapping."""
        rng = random.Random(seed_int(self.world_seed, self.spec.id, "day", day))
        day_start = day * DAY
        offset = london_offset_hours(day_start + 12 * 3600)
        date = datetime.fromtimestamp(day_start, UTC).strftime("%Y%m%d")
        out: list[list[_Candidate]] = []
        for evse in self.evses:
            params = CLASS_PARAMS[evse.klass]
            cum = _hour_cum(evse.klass, offset)
            draws: list[tuple[int, int, str, Any]] = []
            for _ in range(_poisson(rng, params.sessions_per_evse_day * self.demand_scale)):
                hour = bisect.bisect_right(cum, rng.random() * cum[-1])
                start = day_start + min(hour, 23) * 3600 + rng.randrange(3600)
                draws.append(self._draw_session(rng, evse, params, start))
            if rng.random() < FAULT_PROBABILITY:
                start = day_start + rng.randrange(DAY)
                minutes = min(math.exp(rng.gauss(math.log(240), 0.8)), 30 * 60)
                status = "OUTOFORDER" if rng.random() < 0.6 else "INOPERATIVE"
                draws.append((start, max(600, int(minutes * 60)), status, None))
            draws.sort(key=lambda d: (d[0], d[2]))
            kept: list[_Candidate] = []
            busy_until = -1
            for k, (arrival, duration, status, raw) in enumerate(draws):
                # a driver who finds the EVSE busy waits for it (or gives up at midnight)
                start = max(arrival, busy_until + QUEUE_GAP_S) if busy_until >= 0 else arrival
                if start >= day_start + DAY:
                    break
                busy_until = end = start + duration
                key = f"{date}-{evse.index + 1:05d}-{k:02d}"
                session = None if raw is None else self._make_session(evse, start, end, raw, key)
                kept.append((start, end, status, session))
            out.append(kept)
        return out

    def _draw_session(
        self, rng: random.Random, evse: Evse, params: ClassParams, start: int
    ) -> tuple[int, int, str, tuple[Token, Connector, float, int]]:
        """Plug-in duration and energy (correlated lognormals, as fitted), the energy limited to
        what the connector can deliver in that time; the car's own rate splits the stay into
        charging and parked. Returns (arrival, duration, status, (token, connector, kwh, charging s))."""
        z1, z2 = rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)
        rho = params.log_corr
        minutes = math.exp(params.duration_min_mu + params.duration_min_sigma * z1)
        kwh = math.exp(params.kwh_mu + params.kwh_sigma * (rho * z1 + math.sqrt(1 - rho * rho) * z2))
        connector = evse.connectors[0] if len(evse.connectors) == 1 or rng.random() < 0.75 else evse.connectors[1]
        rated_kw = connector.max_electric_power / 1000.0
        car_kw = weighted(rng, DC_CAR_KW if evse.klass == "rapid_dc" else AC_CAR_KW)
        duration = int(min(max(minutes, 2.0), MAX_SESSION_S / 60) * 60)
        kwh = round(max(0.5, min(kwh, rated_kw * DELIVERY_FACTOR * duration / 3600.0)), 3)
        duration = min(max(duration, math.ceil(kwh / (rated_kw * DELIVERY_FACTOR) * 3600.0)), MAX_SESSION_S)
        charging = min(duration, math.ceil(kwh / (min(rated_kw, car_kw) * DELIVERY_FACTOR) * 3600.0))
        token = self.tokens[bisect.bisect_right(self.token_cum, rng.random() * self.token_cum[-1])]
        return start, duration, "CHARGING", (token, connector, kwh, charging)

    def _make_session(
        self, evse: Evse, start: int, end: int, raw: tuple[Token, Connector, float, int], key: str
    ) -> Session:
        token, connector, kwh, charging = raw
        role = "adhoc" if token.type == "AD_HOC_USER" else evse.klass
        return Session(
            id=f"S{key}",
            cdr_id=f"C{key}",
            evse=evse,
            connector=connector,
            start=start,
            end=end,
            charge_end=start + charging,
            kwh=kwh,
            token=token,
            tariff=self.tariffs[role],
        )


@lru_cache(maxsize=16)
def _hour_cum(klass: str, offset: int) -> list[float]:
    """Cumulative arrival weights per UTC hour, from the fitted local-hour profile."""
    hourly = CLASS_PARAMS[klass].hourly_arrivals
    return list(itertools.accumulate(hourly[(h + offset) % 24] for h in range(24)))


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth; lam is a handful of sessions a day)."""
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


@dataclass(eq=False)
class World:
    """All operators of one seed, plus the boroughs they were placed in."""

    seed: int
    operators: list[OperatorWorld]
    boroughs: dict[str, str]  # GSS code -> name
    range_start: int

    def operator(self, operator_id: str) -> OperatorWorld:
        """The operator with this id (KeyError if unknown)."""
        for op in self.operators:
            if op.spec.id == operator_id:
                return op
        raise KeyError(operator_id)

    def borough_of(self, operator_id: str, location_id: str) -> str:
        """Ground truth: the GSS code of the borough a location was placed in."""
        return self.operator(operator_id).location_by_id[location_id].borough_gss

    def evse_class(self, operator_id: str, evse_uid: str) -> str:
        """Ground truth: slow_ac, fast_ac or rapid_dc."""
        return self.operator(operator_id).evse_by_uid[evse_uid].klass

    def ensure_until(self, ts: float) -> None:
        """Generate every operator's sessions up to the day containing `ts`."""
        for op in self.operators:
            op.ensure_until(ts)


def build_world(
    seed: int,
    operators: int = 3,
    evses: int = 1500,
    boroughs_geojson: Path | None = None,
    *,
    history_start: datetime | None = None,
    demand_scale: float = 1.0,
) -> World:
    """Build the world for a seed: `evses` EVSEs shared out over `operators` operators, sessions
    from `history_start` on (default: three days ago), generated as far as `ensure_until` asks."""
    if operators < 1 or evses < operators:
        raise ValueError("need at least one operator and one EVSE per operator")
    boroughs = load_boroughs(Path(boroughs_geojson or default_boroughs_path()))
    if history_start is None:
        history_start = datetime.now(UTC) - timedelta(days=3)
    range_start = math.floor(history_start.timestamp())
    base = min(BASE_EPOCH, range_start - 30 * DAY)
    tokens, token_cum = make_tokens(seed, max(500, 3 * evses))
    ops = []
    for i in range(operators):
        spec = operator_spec(seed, i)
        rng = random.Random(seed_int(seed, spec.id, "locations"))
        tariffs = make_tariffs(rng, spec.country_code, spec.party_id, base - rng.randrange(60 * DAY))
        budget = evses // operators + (1 if i < evses % operators else 0)
        locations, op_evses = build_locations(rng, spec, boroughs, budget, tariffs, base)
        ops.append(
            OperatorWorld(spec, seed, locations, op_evses, tariffs, tokens, token_cum, range_start, demand_scale)
        )
    return World(seed, ops, {b.gss_code: b.name for b in boroughs}, range_start)
