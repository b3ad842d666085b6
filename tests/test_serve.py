"""`evgate serve --config FILE` as an operator of the hub runs it: a TOML file naming OCPI operators.

The operators are the simulator's (real TLS, their CA given as `ca_bundle`); the gateway runs as its
own process, polls them on its own schedule, and serves what it ingested over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from gateway.db import close_db, init_db
from gateway.vault import generate_key
from simulator.cluster import Simulation, start_simulation
from tests.support import free_port, issue_api_key, shared_path

BOROUGHS = shared_path("data", "london_boroughs_gla_wgs84.geojson")


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(seed=31, evses=200, history_days=1, speed=0.0, boroughs_geojson=BOROUGHS)
    try:
        yield simulation
    finally:
        await simulation.stop()


def _toml(sim: Simulation, db: Path, port: int) -> str:
    lines = [
        "[gateway]",
        f'database_url = "sqlite://{db}"',
        f"port = {port}",
        f'boroughs_geojson = "{BOROUGHS}"',
        "",
    ]
    for op in sim.operators:
        lines += [
            "[[operators]]",
            f'id = "{op.id}"',
            f'name = "{op.name}"',
            f'url = "{op.versions_url}"',
            f'token = "{op.token}"',
            f'token_encoding = "{op.token_encoding}"',
            f'ca_bundle = "{sim.ca_path}"',
            f"backfill = {timedelta(days=2).total_seconds()}",
            "[operators.cadence]",
            "locations = 2",
            "sessions = 2",
            "",
        ]
    return "\n".join(lines)


def _database_bytes(directory: Path) -> bytes:
    """The SQLite file and its write-ahead log, as stored on disk."""
    return b"".join(p.read_bytes() for p in directory.glob("gw.sqlite3*"))


async def test_serve_polls_the_configured_operators(sim: Simulation, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(_toml(sim, tmp_path / "gw.sqlite3", port))
    env = {
        **os.environ,
        "EVGATE_PSEUDONYM_KEY": "serve-test-key",
        "EVGATE_SECRET_KEYS": generate_key(),
    }
    # An administrator, as `evgate keys create --role admin` would store one, on the gateway's database.
    await init_db(f"sqlite://{tmp_path / 'gw.sqlite3'}")
    try:
        admin = await issue_api_key()
    finally:
        await close_db()
    # The most talkative log level: no credential may appear in it even so.
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--log-level", "debug"]
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    end = sim.clock.now().replace(microsecond=0)
    want = {op.id: len(sim.truth_locations(op.id, date_to=end)) for op in sim.operators}
    query = " ".join(
        f'{op.id}: locations(filter: {{operatorIds: ["{op.id}"]}}, first: 1) {{ totalCount }}' for op in sim.operators
    )
    got: dict[str, int] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(60):  # at most 30 s
                await asyncio.sleep(0.5)
                if proc.returncode is not None:
                    output = await proc.stdout.read() if proc.stdout else b""
                    raise AssertionError(f"evgate serve exited: {output.decode()}")
                try:
                    body = (await http.post("/graphql", json={"query": "{ " + query + " }"})).json()
                except httpx.TransportError:
                    continue
                got = {op: body["data"][op]["totalCount"] for op in want}
                if got == want:
                    break
            assert got == want
            sessions = await http.post(
                "/graphql",
                json={"query": '{ sessions(from: "2000-01-01T00:00:00Z", to: "2100-01-01T00:00:00Z") { totalCount } }'},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert sessions.json()["data"]["sessions"]["totalCount"] > 0
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    log = (await proc.stdout.read()).decode() if proc.stdout else ""
    assert "GET /graphql" in log or "POST /graphql" in log  # the log is really captured
    stored = _database_bytes(tmp_path)
    for op in sim.operators:
        assert op.token and op.token not in log, f"{op.id}'s token was logged"
        assert op.token.encode() not in stored, f"{op.id}'s token is stored in the clear"
