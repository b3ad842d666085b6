"""Wiring the gateway to the simulated operators: used by `evgate demo`, the tests and bench/."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from gateway.config import OperatorConfig
from simulator.cluster import SimOperator


class SimulationLike(Protocol):
    """What the wiring needs of a simulation, in this process or another."""

    operators: list[SimOperator]
    ca_path: Path


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
