"""`evgate demo` as a user runs it: every simulated source (OCPI 2.2.1 and 2.1.1, OICP, Open Charge
Map) is queryable within a minute; a fault switched on through the simulators' admin endpoint shows
in sync health and then the recovery; and no credential appears in the log of the whole run."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import websockets

from simulator.sites import operator_spec
from tests.demo_process import demo_process, operator_location_counts
from tests.support import free_port, shared_path

shared_path("data", "london_boroughs_gla_wgs84.geojson")
SOURCES = {"alpha", "beta", "gamma", "delta", "ocm"}
HEALTH = '{ syncHealth(operatorId: "beta") { module healthy lastError { code } } }'


def _wait(check: Callable[[], bool], seconds: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        assert proc.poll() is None, log.read_text()[-5000:]
        time.sleep(1)
    raise AssertionError(f"not within {seconds} s")


async def _live_session_events(port: int, token: str, want: int, seconds: float) -> list[dict]:
    """The first `want` session events a live subscription receives from the demo."""
    query = "subscription { sessionEvents { cursor kind operatorId sessionId } }"
    url = f"ws://127.0.0.1:{port}/graphql"
    events: list[dict] = []
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send(orjson.dumps(init).decode())
        assert orjson.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(orjson.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}).decode())
        async with asyncio.timeout(seconds):
            while len(events) < want:
                message = orjson.loads(await ws.recv())
                assert message["type"] == "next", message
                assert "errors" not in message["payload"], message
                events.append(message["payload"]["data"]["sessionEvents"])
    return events


def test_demo_serves_every_source_and_shows_faults_and_recovery(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "demo"
    log = tmp_path / "demo.log"
    with demo_process(port, str(data_dir), "--log-level", "debug", output=log) as proc:
        counts: dict[str, int] = {}

        def every_source_served() -> bool:
            counts.update(operator_location_counts(port))
            return set(counts) == SOURCES and all(counts.values())

        _wait(every_source_served, 60, proc, log)
        assert all(counts[op] > 50 for op in SOURCES - {"ocm"}), counts
        assert sum(counts.values()) > 500  # 1,500 EVSEs over the four operators, plus OCM's own POIs

        graphql = f"http://127.0.0.1:{port}/graphql"
        admin = (data_dir / "admin.token").read_text().strip()  # the administrator's API key
        assert (data_dir / "admin.token").stat().st_mode & 0o777 == 0o600
        auth = {"Authorization": f"Bearer {admin}"}
        # The banner names the simulators' fault control endpoint; its token is the demo's, not the gateway's.
        (control,) = (line.split()[2] for line in log.read_text().splitlines() if line.startswith("Fault control: "))
        control_auth = {"Authorization": f"Bearer {(data_dir / 'control.token').read_text().strip()}"}
        put = httpx.put(f"{control}/beta", json=[{"kind": "http_5xx"}], headers=control_auth, timeout=5)
        assert put.status_code == 200, put.text

        def failing() -> bool:
            return any(h["lastError"] and h["lastError"]["code"] == "UPSTREAM_HTTP" for h in health())

        def health() -> list[dict]:
            body = httpx.post(graphql, json={"query": HEALTH}, headers=auth, timeout=5)
            return body.json()["data"]["syncHealth"]

        _wait(failing, 40, proc, log)
        # One OAuth client per role: the banner prints a bearer JWT for each; clients.json has their
        # secrets for fresh tokens at /oauth/token.
        banner = log.read_text().splitlines()
        (jwt,) = (line.split()[-1] for line in banner if " demo-admin " in line and "Authorization: Bearer" in line)
        by_jwt = {"Authorization": f"Bearer {jwt}"}
        assert httpx.post(graphql, json={"query": HEALTH}, headers=by_jwt, timeout=5).json()["data"]["syncHealth"]
        assert sum("Authorization: Bearer ey" in line for line in banner) == 4
        clients = json.loads((data_dir / "clients.json").read_text())
        assert set(clients) == {"demo-admin", "demo-borough", "demo-partner", "demo-alpha"}
        fresh = httpx.post(
            f"http://127.0.0.1:{port}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("demo-borough", clients["demo-borough"]),
            timeout=5,
        )
        assert fresh.status_code == 200 and fresh.json()["token_type"] == "Bearer", fresh.text
        assert httpx.delete(f"{control}/beta", headers=control_auth, timeout=5).status_code == 200
        _wait(lambda: all(h["healthy"] for h in health()), 60, proc, log)
        assert failing()  # the fault stays on record, older than the recovery

        # Live sessions flow to a subscription (graphql-transport-ws, credentials in connection_init).
        events = asyncio.run(_live_session_events(port, admin, want=3, seconds=60))
        assert len(events) == 3 and [e["cursor"] for e in events] == sorted(e["cursor"] for e in events)
        assert {e["kind"] for e in events} <= {"session.started", "session.updated", "session.completed"}
    output = log.read_text()
    assert f"http://127.0.0.1:{port}/graphql" in output and "Bearer " in output
    assert "POST /graphql" in output  # the debug log really is in the output
    secrets = [operator_spec(42, i).token for i in range(4)]
    secrets.append(hashlib.sha256(b"evgate-sim-ocm-key:42").hexdigest()[:32])
    for secret in secrets:
        assert secret not in output
    assert "PRIVATE KEY" not in output
