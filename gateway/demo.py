"""Wiring the gateway to the simulated operators: used by `evgate demo`, the tests and bench/."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from gateway.config import OperatorConfig
from simulator.cluster import SimOperator
from simulator.faults import Faults
from simulator.ocpi_variants import OcpiQuirks


class SimulationLike(Protocol):
    """What the wiring needs of a simulation, in this process or another."""

    operators: list[SimOperator]
    ca_path: Path


# The demo's operators: alpha speaks OCPI 2.2.1 by the book; beta too, with faults switched on in
# turn (DEMO_FAULTS); gamma is an OCPI 2.1.1 server with real-world quirks (no envelope, no
# X-Total-Count, a Bearer token, dates with +00:00); delta speaks OICP 2.3 over mutual TLS; and
# Open Charge Map adds public points of interest, most of them duplicates of the operators' sites.
DEMO_OPERATORS = 4
DEMO_OICP_OPERATORS = 1
DEMO_FAULTY = "beta"
DEMO_VARIANTS: dict[str, dict[str, Any]] = {
    "gamma": {
        "version": "2.1.1",
        "quirks": OcpiQuirks(envelope=False, total_count=False, auth_scheme="Bearer", dates="offset"),
    }
}
# What each demo operator shares beyond itself and the hub, so that every role's token shows
# something different: alpha shares usage with boroughs and partners and costs with partners,
# beta usage with boroughs only, delta usage with partners only; gamma and OCM share nothing.
DEMO_AGREEMENTS: dict[str, dict[str, list[str]]] = {
    "alpha": {"USAGE": ["borough", "partner"], "COMMERCIAL": ["partner"]},
    "beta": {"USAGE": ["borough"]},
    "delta": {"USAGE": ["partner"]},
}
# One cycle of faults on beta (seconds after the cycle starts): each shows in sync health, then the
# recovery. `start`/`duration` are wall-clock seconds; the cycle repeats every DEMO_FAULT_CYCLE.
DEMO_FAULT_CYCLE = 240.0
DEMO_FAULTS: list[dict[str, Any]] = [
    {"kind": "outage", "start": 30, "duration": 25},
    {"kind": "http_5xx", "start": 80, "duration": 20},
    {"kind": "malformed_records", "start": 120, "duration": 40, "records": 2},
    {"kind": "rate_limit", "start": 180, "duration": 20, "retry_after": 15},
    {"kind": "tls_expired", "start": 210, "duration": 20},
]


async def cycle_faults(faults: Faults, plan: list[dict[str, Any]], period: float) -> None:
    """Apply `plan` again every `period` seconds, so the demo keeps showing faults and recoveries."""
    while True:
        await faults.apply(plan)
        await asyncio.sleep(period)


# The demo polls far more often than a real deployment would ("think in hours, not minutes"),
# so that changes in the accelerated simulation show up within seconds.
DEMO_CADENCES = {"locations": 15.0, "statuses": 10.0, "sessions": 10.0, "cdrs": 30.0, "tariffs": 300.0}


def simulated_operators(sim: SimulationLike, **overrides: Any) -> list[OperatorConfig]:
    """One OperatorConfig per simulated operator, whatever its protocol, trusting the simulation's CA."""
    configs = []
    for op in sim.operators:
        settings: dict[str, Any] = {"id": op.id, "name": op.name, "url": op.url, "protocol": op.protocol}
        if op.protocol == "ocpi":
            settings.update(
                token=op.token,
                token_encoding=op.token_encoding,
                auth_header=op.auth_header,
                auth_scheme=op.auth_scheme,
            )
        elif op.protocol == "oicp":
            settings.update(provider_id=op.provider_id, client_cert=str(op.client_cert), client_key=str(op.client_key))
        else:
            settings.update(api_key=op.api_key)
        settings.update(overrides)
        configs.append(OperatorConfig(ca_bundle=str(sim.ca_path), **settings))
    return configs
