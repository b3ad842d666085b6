"""Nothing lost across a crash: `evgate serve` killed (SIGKILL) in the middle of a window and
started again holds exactly the operators' sessions and CDRs, OCPI and OICP.

The operators run in the test process on a frozen clock, with slow, small pages so that a window
takes seconds; the gateway runs as a real child process polling them. It is killed while windows
are in flight (the operators are still serving their pages), restarted, and left to catch up. A
window and its cursor commit together, so the killed window is simply crawled again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.models import SyncState
from gateway.vault import generate_key
from simulator.cluster import Simulation, start_simulation
from tests.conftest import TestDb
from tests.support import assert_holds_exactly_the_operators_records, free_port, shared_path

BOROUGHS = shared_path("data", "london_boroughs_gla_wgs84.geojson")
BACKFILL = timedelta(days=2)
WINDOW = timedelta(hours=12)
# Sessions and CDRs pages come slowly, so every window spans many seconds.
SLOW = [{"kind": "slow", "delay": 0.15, "paths": ["sessions", "cdrs", "charge-detail-records"]}]
WATCHED = ("alpha:sessions", "alpha:cdrs", "beta:cdrs")


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(
        seed=12,
        operators=2,
        oicp_operators=1,
        evses=160,
        speed=0.0,
        lag=timedelta(hours=1),
        history_days=3,
        page_limit=10,
        boroughs_geojson=BOROUGHS,
        faults={"alpha": SLOW, "beta": SLOW},
    )
    try:
        yield simulation
    finally:
        await simulation.stop()


def _toml(sim: Simulation, database_url: str, port: int) -> str:
    lines = ["[gateway]", f'database_url = "{database_url}"', f"port = {port}", f'boroughs_geojson = "{BOROUGHS}"', ""]
    for op in sim.operators:
        lines += [
            "[[operators]]",
            f'id = "{op.id}"',
            f'name = "{op.name}"',
            f'protocol = "{op.protocol}"',
            f'url = "{op.url}"',
            f'ca_bundle = "{sim.ca_path}"',
            f"backfill = {BACKFILL.total_seconds()}",
            f"window = {WINDOW.total_seconds()}",
            "page_limit = 10",
        ]
        if op.protocol == "ocpi":
            lines += [f'token = "{op.token}"', f'token_encoding = "{op.token_encoding}"']
        else:
            lines += [f'provider_id = "{op.provider_id}"', f'client_cert = "{op.client_cert}"']
            lines += [f'client_key = "{op.client_key}"']
        lines += ["[operators.cadence]", "locations = 1", "statuses = 1", "sessions = 1", "cdrs = 1", ""]
    return "\n".join(lines)


async def _start(config: Path, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--log-level", "warning"]
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(*cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _cursors() -> dict[str, datetime | None]:
    rows = await SyncState.filter(id__in=list(WATCHED)).values_list("id", "cursor")
    found = dict(rows)
    return {sid: found.get(sid) for sid in WATCHED}


async def test_a_gateway_killed_mid_window_catches_up_exactly_after_restart(
    db: TestDb, sim: Simulation, tmp_path: Path
) -> None:
    end = sim.clock.now().replace(microsecond=0)  # the frozen operators' now: where catching up ends
    start = end - BACKFILL
    config = tmp_path / "gateway.toml"
    config.write_text(_toml(sim, db.url, free_port()))
    env = {**os.environ, "EVGATE_PSEUDONYM_KEY": "crash", "EVGATE_SECRET_KEYS": generate_key()}
    log = tmp_path / "gateway.log"

    proc = await _start(config, env, log)
    try:
        # Wait until both operators have served a good number of slow pages, then kill -9.
        for _ in range(300):  # at most 60 s
            await asyncio.sleep(0.2)
            assert proc.returncode is None, log.read_text()
            if min(sim.faults["alpha"].fired["slow"], sim.faults["beta"].fired["slow"]) >= 6:
                break
        before_kill = await _cursors()
        pages_before = sim.faults["alpha"].fired["slow"]
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # Killed in the middle: windows were being crawled, and catching up was far from done.
    assert any(c is None or c < end for c in before_kill.values()), before_kill
    await asyncio.sleep(0.5)
    assert sim.faults["alpha"].fired["slow"] == pages_before  # nobody polls any more

    proc = await _start(config, env, log)
    try:
        for _ in range(600):  # at most 120 s
            await asyncio.sleep(0.2)
            assert proc.returncode is None, log.read_text()
            if all(c is not None and c >= end for c in (await _cursors()).values()):
                break
        else:
            raise AssertionError(f"not caught up: {await _cursors()}")
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)

    for operator_id in ("alpha", "beta"):
        await assert_holds_exactly_the_operators_records(sim, operator_id, start, end)
