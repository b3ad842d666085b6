"""Every simulator fault shows up in sync health with its catalogue code, the gateway keeps serving
queries while it lasts, and the next poll after it is cleared recovers.

One OCPI and one OICP operator on real TLS; each fault is switched on in the simulator, the module
is polled once (as the scheduler would), sync health is read through GraphQL as an administrator,
and a public query must still answer from what the gateway holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from adapters.http import UpstreamError
from gateway.demo import simulated_operators
from simulator.cluster import Simulation, start_simulation
from tests.conftest import TestDb
from tests.support import (
    Gateway,
    new_api_key,
    shared_path,
    simulated_gateway,
)

BOROUGHS = shared_path("data", "london_boroughs_gla_wgs84.geojson")
ADMIN = new_api_key()

# (operator, module, fault plan, the code sync health must show; None: the poll succeeds)
FAULTS: list[tuple[str, str, dict[str, Any], str | None]] = [
    ("alpha", "sessions", {"kind": "outage"}, "UPSTREAM_UNAVAILABLE"),
    ("alpha", "sessions", {"kind": "http_5xx"}, "UPSTREAM_HTTP"),
    ("alpha", "sessions", {"kind": "timeout", "delay": 5}, "UPSTREAM_TIMEOUT"),
    ("alpha", "sessions", {"kind": "slow", "delay": 0.3}, None),
    ("alpha", "sessions", {"kind": "truncated_json"}, "UPSTREAM_PROTOCOL"),
    ("alpha", "sessions", {"kind": "rate_limit", "retry_after": 9}, "UPSTREAM_RATE_LIMITED"),
    ("alpha", "sessions", {"kind": "ocpi_status", "status_code": 2001}, "UPSTREAM_PROTOCOL"),
    ("alpha", "sessions", {"kind": "ocpi_status", "status_code": 3001}, "UPSTREAM_UNAVAILABLE"),
    ("alpha", "sessions", {"kind": "tls_expired"}, "UPSTREAM_TLS"),
    ("alpha", "sessions", {"kind": "tls_self_signed"}, "UPSTREAM_TLS"),
    ("alpha", "sessions", {"kind": "tls_wrong_host"}, "UPSTREAM_TLS"),
    ("alpha", "sessions", {"kind": "tls_untrusted"}, "UPSTREAM_TLS"),
    ("alpha", "sessions", {"kind": "tls_legacy"}, "UPSTREAM_TLS"),
    ("alpha", "locations", {"kind": "malformed_records", "paths": ["locations"]}, "RECORD_INVALID"),
    ("beta", "cdrs", {"kind": "outage"}, "UPSTREAM_UNAVAILABLE"),
    ("beta", "cdrs", {"kind": "http_5xx"}, "UPSTREAM_HTTP"),
    ("beta", "cdrs", {"kind": "oicp_status", "status_code": "017"}, "UPSTREAM_AUTH"),
    ("beta", "cdrs", {"kind": "oicp_status", "status_code": "320"}, "UPSTREAM_UNAVAILABLE"),
    ("beta", "cdrs", {"kind": "truncated_json"}, "UPSTREAM_PROTOCOL"),
    ("beta", "locations", {"kind": "malformed_records", "paths": ["data-records"]}, "RECORD_INVALID"),
    ("beta", "statuses", {"kind": "tls_expired"}, "UPSTREAM_TLS"),
]

HEALTH = """query($op: String) { syncHealth(operatorId: $op) {
  module healthy consecutiveFailures recordsQuarantined lastError { code retryAfter } recentErrors { code } } }"""
SITES = "{ locations(first: 3) { totalCount edges { node { id } } } }"


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(
        seed=13, operators=2, oicp_operators=1, evses=80, speed=0.0, history_days=1, boroughs_geojson=BOROUGHS
    )
    try:
        yield simulation
    finally:
        await simulation.stop()


@pytest.fixture
async def gateway(db: TestDb, sim: Simulation) -> AsyncIterator[Gateway]:
    operators = simulated_operators(sim, backfill=timedelta(hours=12).total_seconds(), timeout=1.0)
    async for gw in simulated_gateway(db.url, operators, admin=ADMIN):
        yield gw


async def module_health(gw: Gateway, operator_id: str, module: str) -> dict[str, Any]:
    rows = (await gw.query(HEALTH, {"op": operator_id}, ADMIN))["syncHealth"]
    return next(r for r in rows if r["module"] == module)


async def test_every_fault_is_reported_in_sync_health_while_queries_are_served(
    gateway: Gateway, sim: Simulation
) -> None:
    await gateway.runtime.sync_all()  # a healthy start: every module has data and a cursor
    served = (await gateway.query(SITES))["locations"]["totalCount"]
    assert served > 0

    for operator_id, module, plan, code in FAULTS:
        poller = gateway.runtime.pollers[operator_id]
        sim.clock.advance(timedelta(minutes=30))  # every poll has a new window to fetch
        await sim.faults[operator_id].apply([plan])
        try:
            if code in (None, "RECORD_INVALID"):
                await poller.sync_module(module)  # type: ignore[arg-type]
            else:
                with pytest.raises(UpstreamError) as raised:
                    await poller.sync_module(module)  # type: ignore[arg-type]
                assert raised.value.code == code, plan
            health = await module_health(gateway, operator_id, module)
            # The gateway goes on answering from what it holds, whatever the operator is doing.
            assert (await gateway.query(SITES))["locations"]["totalCount"] >= served
        finally:
            await sim.faults[operator_id].clear()
        if code is None:
            assert health["healthy"], (plan, health)
        elif code == "RECORD_INVALID":
            # The window succeeds with its good records; the bad ones are quarantined and reported.
            assert health["healthy"] and health["recordsQuarantined"] > 0, (plan, health)
            assert health["recentErrors"][0]["code"] == "RECORD_INVALID", (plan, health)
        else:
            assert not health["healthy"] and health["lastError"]["code"] == code, (plan, health)
            assert health["consecutiveFailures"] >= 1
            if code == "UPSTREAM_RATE_LIMITED":
                assert health["lastError"]["retryAfter"] == 9
            # Cleared: the next poll recovers from the cursor.
            await poller.sync_module(module)  # type: ignore[arg-type]
            recovered = await module_health(gateway, operator_id, module)
            assert recovered["healthy"] and recovered["consecutiveFailures"] == 0, (plan, recovered)
            assert recovered["lastError"]["code"] == code  # still on record, older than the success
