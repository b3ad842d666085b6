"""Fit the session parameters in `simulator.params` from real UK charging-session logs.

Run `python -m simulator.fit [SHARED_DIR]`: it reads the Dundee and Perth & Kinross session CSVs
from the shared data folder with the csv module, drops obviously bad rows (end before start, under
one minute, over 48 hours, under 0.5 kWh), maps each charger model to a charger class and prints a
Python literal to paste into `params.py`. Only these fitted numbers are shipped, never the data.

Classes come from the model name ("Rapid"/"50kW" rapid DC, "22kW"/"Semi-Rapid" fast AC, "7kW"
slow AC); the Dundee locations file's Type (joined on CP ID) is only a fallback, because it
contradicts the session file's models for several chargers (e.g. a "Dual Rapid" listed as Slow).
Dundee's "***TEST SITE***" rows are left out. A rapid charger counts as one EVSE, each AC outlet
as its own.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

DUNDEE_SESSIONS = "dundee_sessions_2018-06-06_to_2018-09-06.csv"
DUNDEE_LOCATIONS = "dundee_charge_point_locations.csv"
PERTH_SESSIONS = "perth_kinross_sessions_2018-09_to_2019-08.csv"

CLASSES = ("slow_ac", "fast_ac", "rapid_dc")
LOCATION_TYPE_CLASS = {"Slow": "slow_ac", "Fast": "fast_ac", "Rapid": "rapid_dc"}


@dataclass(frozen=True, slots=True)
class Row:
    """One cleaned session: which charger (and outlet), its class, when, how long, how much."""

    source: str
    cp_id: str
    connector: str
    klass: str
    start: datetime
    minutes: float
    kwh: float


def model_class(model: str) -> str | None:
    """The charger class of a manufacturer model name, or None when the name says nothing."""
    name = model.lower()
    if "rapid" in name and "semi" not in name:
        return "rapid_dc"
    if "50kw" in name.replace(" ", ""):
        return "rapid_dc"
    if "22kw" in name.replace(" ", "") or "semi-rapid" in name:
        return "fast_ac"
    if "7kw" in name.replace(" ", ""):
        return "slow_ac"
    return None


def _evse_key(row: Row) -> tuple[str, str, str]:
    """A rapid charger is one EVSE (one car at a time); each AC outlet is its own EVSE."""
    return (row.source, row.cp_id, "" if row.klass == "rapid_dc" else row.connector)


def _clean(
    source: str, cp_id: str, connector: str, klass: str | None, start: datetime, end: datetime, kwh: float
) -> Row | None:
    """A Row, or None when the session is obviously bad (domain.md §1.2) or unclassifiable."""
    minutes = (end - start).total_seconds() / 60.0
    if klass is None or minutes < 1.0 or minutes > 48 * 60 or kwh < 0.5:
        return None
    return Row(source, cp_id, connector, klass, start, minutes, kwh)


def read_dundee(data_dir: Path, rejects: Counter[str]) -> Iterator[Row]:
    """Dundee sessions (dd/mm/yyyy HH:MM local); class from the model, else the locations file."""
    location_type: dict[str, str] = {}
    with (data_dir / DUNDEE_LOCATIONS).open(newline="", encoding="utf-8-sig") as f:
        for loc in csv.DictReader(f):
            if loc["CP ID"].strip() and loc["Type"] in LOCATION_TYPE_CLASS:
                location_type[loc["CP ID"].strip()] = LOCATION_TYPE_CLASS[loc["Type"]]
    with (data_dir / DUNDEE_SESSIONS).open(newline="", encoding="utf-8-sig") as f:
        for rec in csv.DictReader(f):
            if "TEST SITE" in rec["Site"]:
                rejects["dundee test site"] += 1
                continue
            try:
                start = datetime.strptime(f"{rec['Start Date']} {rec['Start Time']}", "%d/%m/%Y %H:%M")
                end = datetime.strptime(f"{rec['End Date']} {rec['End Time']}", "%d/%m/%Y %H:%M")
                kwh = float(rec["Total kWh"])
            except (ValueError, TypeError):
                rejects["dundee unparsable"] += 1
                continue
            cp_id = rec["CP ID"].strip()
            klass = model_class(rec["Model"]) or location_type.get(cp_id)
            row = _clean("dundee", cp_id, rec["Connector"].strip(), klass, start, end, kwh)
            if row is None:
                rejects["dundee bad"] += 1
                continue
            yield row


def read_perth(data_dir: Path, rejects: Counter[str]) -> Iterator[Row]:
    """Perth & Kinross sessions (ISO date with T00:00:00 plus HH:MM local); class from the model."""
    with (data_dir / PERTH_SESSIONS).open(newline="", encoding="utf-8-sig") as f:
        for rec in csv.DictReader(f):
            try:
                start = datetime.strptime(f"{rec['Start Date'][:10]} {rec['Start Time']}", "%Y-%m-%d %H:%M")
                end = datetime.strptime(f"{rec['End Date'][:10]} {rec['End Time']}", "%Y-%m-%d %H:%M")
                kwh = float(rec["Total kWh"])
            except (ValueError, TypeError):
                rejects["perth unparsable"] += 1
                continue
            row = _clean(
                "perth",
                rec["CP ID"].strip(),
                rec["Connector"].strip(),
                model_class(rec["Model"]),
                start,
                end,
                kwh,
            )
            if row is None:
                rejects["perth bad"] += 1
                continue
            yield row


def _sessions_per_evse_day(rows: list[Row]) -> float:
    """Sessions per EVSE per day in service (each EVSE's first to last session day)."""
    first: dict[tuple[str, str, str], datetime] = {}
    last: dict[tuple[str, str, str], datetime] = {}
    for row in rows:
        key = _evse_key(row)
        first[key] = min(first.get(key, row.start), row.start)
        last[key] = max(last.get(key, row.start), row.start)
    days = sum((last[k].date() - first[k].date() + timedelta(days=1)).days for k in first)
    return len(rows) / days


def fit_class(rows: list[Row]) -> dict[str, object]:
    """Lognormal fits (mu, sigma of the natural log) of duration and energy, their correlation,
    the sessions per EVSE per day and the share of arrivals in each local hour."""
    log_min = [math.log(r.minutes) for r in rows]
    log_kwh = [math.log(r.kwh) for r in rows]
    hours = Counter(r.start.hour for r in rows)
    return {
        "sessions": len(rows),
        "evses": len({_evse_key(r) for r in rows}),
        "sessions_per_evse_day": round(_sessions_per_evse_day(rows), 3),
        "duration_min_mu": round(statistics.fmean(log_min), 4),
        "duration_min_sigma": round(statistics.stdev(log_min), 4),
        "duration_min_median": round(statistics.median(r.minutes for r in rows), 1),
        "kwh_mu": round(statistics.fmean(log_kwh), 4),
        "kwh_sigma": round(statistics.stdev(log_kwh), 4),
        "kwh_median": round(statistics.median(r.kwh for r in rows), 3),
        "log_corr": round(statistics.correlation(log_min, log_kwh), 4),
        "hourly_arrivals": [round(hours[h] / len(rows), 4) for h in range(24)],
    }


def fit(shared: Path) -> tuple[dict[str, dict[str, object]], Counter[str]]:
    """Read both session files under `shared/data` and fit each charger class."""
    rejects: Counter[str] = Counter()
    data = shared / "data"
    by_class: dict[str, list[Row]] = defaultdict(list)
    for row in [*read_dundee(data, rejects), *read_perth(data, rejects)]:
        by_class[row.klass].append(row)
    return {k: fit_class(by_class[k]) for k in CLASSES}, rejects


def main(argv: list[str] | None = None) -> None:
    """Print the fitted literal (and, on stderr, what was dropped)."""
    args = sys.argv[1:] if argv is None else argv
    default = Path(__file__).resolve().parents[1].parent / "shared"
    shared = Path(args[0]) if args else Path(os.environ.get("EVGATE_SHARED", str(default)))
    fitted, rejects = fit(shared)
    print(f"# rows dropped: {dict(sorted(rejects.items()))}", file=sys.stderr)
    counts = ", ".join(f"{k}: {v['sessions']}" for k, v in fitted.items())
    print(f"# Fitted by `python -m simulator.fit` on cleaned sessions ({counts}).")
    print("FITTED: dict[str, dict[str, Any]] = " + json.dumps(fitted, indent=4))


if __name__ == "__main__":
    main()
