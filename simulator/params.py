"""Session parameters per charger class, fitted on real UK charging-session logs.

The FITTED literal below is the verbatim output of `python -m simulator.fit` (Dundee City Council,
Jun-Sep 2018, and Perth & Kinross Council, Sep 2018-Aug 2019; OGL v3), cleaned of sessions under one
minute, over 48 hours, under 0.5 kWh or ending before they start. Durations are plug-in minutes,
energies kWh; `*_mu`/`*_sigma` are the mean and standard deviation of the natural log (lognormal),
`log_corr` the correlation of log duration with log energy, `hourly_arrivals` the share of
sessions starting in each local hour. The data itself is not shipped, only these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Fitted by `python -m simulator.fit` on cleaned sessions (slow_ac: 5293, fast_ac: 8381, rapid_dc: 34743).
FITTED: dict[str, dict[str, Any]] = {
    "slow_ac": {
        "sessions": 5293,
        "evses": 84,
        "sessions_per_evse_day": 0.422,
        "duration_min_mu": 5.4787,
        "duration_min_sigma": 1.2326,
        "duration_min_median": 225.0,
        "kwh_mu": 1.7087,
        "kwh_sigma": 0.8664,
        "kwh_median": 5.903,
        "log_corr": 0.3791,
        "hourly_arrivals": [
            0.0013,
            0.0011,
            0.0017,
            0.0055,
            0.0077,
            0.0149,
            0.007,
            0.0195,
            0.0748,
            0.0784,
            0.0784,
            0.1015,
            0.1226,
            0.0998,
            0.0799,
            0.099,
            0.0788,
            0.0312,
            0.0161,
            0.0102,
            0.0136,
            0.0452,
            0.0028,
            0.0091,
        ],
    },
    "fast_ac": {
        "sessions": 8381,
        "evses": 58,
        "sessions_per_evse_day": 0.339,
        "duration_min_mu": 4.5552,
        "duration_min_sigma": 1.2104,
        "duration_min_median": 90.0,
        "kwh_mu": 1.9546,
        "kwh_sigma": 0.8966,
        "kwh_median": 7.67,
        "log_corr": 0.5567,
        "hourly_arrivals": [
            0.0058,
            0.0063,
            0.0031,
            0.0024,
            0.003,
            0.0035,
            0.0054,
            0.0353,
            0.0741,
            0.1029,
            0.0892,
            0.0906,
            0.0987,
            0.0906,
            0.0766,
            0.0592,
            0.0572,
            0.0643,
            0.0469,
            0.0432,
            0.0215,
            0.0093,
            0.0064,
            0.0047,
        ],
    },
    "rapid_dc": {
        "sessions": 34743,
        "evses": 29,
        "sessions_per_evse_day": 3.182,
        "duration_min_mu": 3.2323,
        "duration_min_sigma": 0.7609,
        "duration_min_median": 25.0,
        "kwh_mu": 2.2066,
        "kwh_sigma": 0.7605,
        "kwh_median": 9.94,
        "log_corr": 0.6232,
        "hourly_arrivals": [
            0.0103,
            0.0123,
            0.0091,
            0.0058,
            0.0071,
            0.0076,
            0.0125,
            0.0229,
            0.0427,
            0.0561,
            0.0593,
            0.0708,
            0.0776,
            0.0754,
            0.0733,
            0.0764,
            0.0747,
            0.0828,
            0.0661,
            0.0547,
            0.0397,
            0.0278,
            0.0199,
            0.0152,
        ],
    },
}


@dataclass(frozen=True, slots=True)
class ClassParams:
    """The fitted behaviour of one charger class (see the module docstring for the units)."""

    sessions_per_evse_day: float
    duration_min_mu: float
    duration_min_sigma: float
    kwh_mu: float
    kwh_sigma: float
    log_corr: float
    hourly_arrivals: tuple[float, ...]


def _params(raw: dict[str, Any]) -> ClassParams:
    """Keep the fields the generator uses; the counts and medians are there for the reader."""
    return ClassParams(
        sessions_per_evse_day=raw["sessions_per_evse_day"],
        duration_min_mu=raw["duration_min_mu"],
        duration_min_sigma=raw["duration_min_sigma"],
        kwh_mu=raw["kwh_mu"],
        kwh_sigma=raw["kwh_sigma"],
        log_corr=raw["log_corr"],
        hourly_arrivals=tuple(raw["hourly_arrivals"]),
    )


CLASS_PARAMS: dict[str, ClassParams] = {name: _params(raw) for name, raw in FITTED.items()}
