"""Operator tariffs (GBP, VAT 20 %) and the costing of a session against them.

Each operator gets four tariffs: slow AC and fast AC energy prices (fast AC with an overstay fee
after four hours), rapid DC (energy plus an overstay fee after 45 minutes) and an ad hoc tariff
(connection fee plus a higher energy price) for card payers. The cost engine implements the subset
of OCPI tariff semantics these use: FLAT, ENERGY, TIME and PARKING_TIME components, elements
limited by min_duration/max_duration, and step_size rounding up of each dimension's total.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

from simulator.clock import fmt_ts

VAT = 20.0
CURRENCY = "GBP"


@dataclass(frozen=True, slots=True)
class Component:
    """A price per unit (excl. VAT): FLAT per session, ENERGY per kWh, TIME/PARKING_TIME per hour."""

    type: str
    price: float
    step_size: int
    vat: float = VAT


@dataclass(frozen=True, slots=True)
class Element:
    """Components that apply while the session has lasted between min and max duration (s)."""

    components: tuple[Component, ...]
    min_duration: int | None = None
    max_duration: int | None = None


@dataclass(frozen=True, slots=True)
class Tariff:
    """An OCPI Tariff owned by one operator."""

    country_code: str
    party_id: str
    id: str
    type: str | None
    alt_text: str
    elements: tuple[Element, ...]
    last_updated: int
    ocpi: dict[str, Any] = field(default_factory=dict, compare=False)

    def dimensions(self) -> set[str]:
        """The dimension types this tariff prices."""
        return {c.type for e in self.elements for c in e.components}


@dataclass(frozen=True, slots=True)
class Cost:
    """What a session costs, excl. and incl. VAT, split by dimension (GBP, rounded to pence)."""

    fixed: tuple[float, float]
    energy: tuple[float, float]
    time: tuple[float, float]
    parking: tuple[float, float]
    total: tuple[float, float]


def _price(value: float) -> float:
    return round(value, 2)


def tariff_to_ocpi(tariff: Tariff) -> dict[str, Any]:
    """The OCPI 2.2.1 Tariff object (shape of the tariff_*.json examples)."""
    elements = []
    for element in tariff.elements:
        out: dict[str, Any] = {
            "price_components": [
                {"type": c.type, "price": c.price, "vat": c.vat, "step_size": c.step_size} for c in element.components
            ]
        }
        restrictions: dict[str, Any] = {}
        if element.min_duration is not None:
            restrictions["min_duration"] = element.min_duration
        if element.max_duration is not None:
            restrictions["max_duration"] = element.max_duration
        if restrictions:
            out["restrictions"] = restrictions
        elements.append(out)
    obj: dict[str, Any] = {
        "country_code": tariff.country_code,
        "party_id": tariff.party_id,
        "id": tariff.id,
        "currency": CURRENCY,
    }
    if tariff.type:
        obj["type"] = tariff.type
    obj["tariff_alt_text"] = [{"language": "en", "text": tariff.alt_text}]
    obj["elements"] = elements
    obj["last_updated"] = fmt_ts(tariff.last_updated)
    return obj


def make_tariffs(rng: random.Random, country_code: str, party_id: str, last_updated: int) -> dict[str, Tariff]:
    """The operator's four tariffs keyed by role: slow_ac, fast_ac, rapid_dc, adhoc."""
    slow = round(rng.uniform(0.36, 0.48), 2)
    fast = round(slow + rng.uniform(0.03, 0.08), 2)
    rapid = round(rng.uniform(0.58, 0.70), 2)
    adhoc = round(rapid + rng.uniform(0.04, 0.10), 2)
    fee = round(rng.choice((0.20, 0.25, 0.30)), 2)
    specs: dict[str, tuple[str, str | None, str, tuple[Element, ...]]] = {
        "slow_ac": (
            "AC7",
            "REGULAR",
            f"£{slow:.2f} per kWh excl. VAT.",
            (Element((Component("ENERGY", slow, 1),)),),
        ),
        "fast_ac": (
            "AC22",
            "REGULAR",
            f"£{fast:.2f} per kWh excl. VAT; £3.00 per hour parked after 4 hours.",
            (
                Element((Component("ENERGY", fast, 1),)),
                Element((Component("PARKING_TIME", 3.00, 300),), min_duration=4 * 3600),
            ),
        ),
        "rapid_dc": (
            "DC",
            "REGULAR",
            f"£{rapid:.2f} per kWh excl. VAT; overstay £12.00 per hour after 45 minutes.",
            (
                Element((Component("ENERGY", rapid, 1),)),
                Element((Component("PARKING_TIME", 12.00, 60),), min_duration=45 * 60),
            ),
        ),
        "adhoc": (
            "ADHOC",
            "AD_HOC_PAYMENT",
            f"£{fee:.2f} connection fee and £{adhoc:.2f} per kWh excl. VAT, pay by card.",
            (Element((Component("FLAT", fee, 1), Component("ENERGY", adhoc, 1))),),
        ),
    }
    tariffs = {}
    for role, (suffix, kind, text, elements) in specs.items():
        tariff = Tariff(country_code, party_id, f"{party_id}-{suffix}", kind, text, elements, last_updated)
        tariffs[role] = replace(tariff, ocpi=tariff_to_ocpi(tariff))
    return tariffs


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def compute_cost(tariff: Tariff, duration_s: int, charging_s: int, kwh: float) -> Cost:
    """Price a session that charged for `charging_s` seconds from its start, then stayed parked
    until `duration_s`, delivering `kwh`. For each dimension the first element whose duration
    window covers a moment applies to it (OCPI evaluates elements in order)."""
    sums: dict[str, list[float]] = {"FLAT": [0.0, 0.0], "ENERGY": [0.0, 0.0], "TIME": [0.0, 0.0]}
    sums["PARKING_TIME"] = [0.0, 0.0]
    claimed: dict[str, list[tuple[float, float]]] = {k: [] for k in sums}
    for element in tariff.elements:
        lo = float(element.min_duration or 0)
        hi = float(element.max_duration) if element.max_duration is not None else math.inf
        for comp in element.components:
            # the part of the window not already priced by an earlier element for this dimension
            free = [(lo, hi)]
            for c0, c1 in claimed[comp.type]:
                free = [p for f0, f1 in free for p in ((f0, min(f1, c0)), (max(f0, c1), f1)) if p[1] > p[0]]
            claimed[comp.type].append((lo, hi))
            if comp.type == "FLAT":
                volume = 1.0 if any(f0 <= duration_s for f0, _ in free) else 0.0
            elif comp.type == "ENERGY":
                share = sum(_overlap(0, charging_s, f0, f1) for f0, f1 in free) / charging_s if charging_s else 1
                wh = kwh * 1000.0 * share
                volume = math.ceil(wh / comp.step_size) * comp.step_size / 1000.0 if comp.step_size else wh / 1000
            else:
                start, end = (0, charging_s) if comp.type == "TIME" else (charging_s, duration_s)
                seconds = sum(_overlap(start, end, f0, f1) for f0, f1 in free)
                if comp.step_size:
                    seconds = math.ceil(seconds / comp.step_size) * comp.step_size
                volume = seconds / 3600.0
            excl = volume * comp.price
            sums[comp.type][0] += excl
            sums[comp.type][1] += excl * (1 + comp.vat / 100.0)
    parts = {k: (_price(v[0]), _price(v[1])) for k, v in sums.items()}
    total = (_price(sum(v[0] for v in sums.values())), _price(sum(v[1] for v in sums.values())))
    return Cost(parts["FLAT"], parts["ENERGY"], parts["TIME"], parts["PARKING_TIME"], total)
