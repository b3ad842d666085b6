"""Front-end query throughput and latency: 100 locations with their EVSEs and connectors.

Run: `.venv/bin/python -m bench.bench_query [--concurrency 1 10 25] [--requests 300]`.
It fills a SQLite database from the simulated operators, starts the gateway with the real CLI
(`evgate serve`) in its own process on 127.0.0.1, and drives it from this process with httpx at each
concurrency level (bounded request counts), printing queries per second, p50 and p99 latency, and
the server's resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

from bench.common import gateway_config
from bench.sim_process import simulation_process
from gateway.models import Location
from gateway.runtime import start_runtime

QUERY = """{ locations(first: 100) { edges { node {
  id name address coordinates { latitude longitude } borough { name }
  provenance { operatorId lastUpdated }
  evses { uid status statusSince connectors { standard powerType maxPowerKw tariffs { id currency } } }
} } } }"""


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def fill(database_url: str, evses: int) -> int:
    """Ingest the simulated operators' locations; returns how many were stored."""
    with simulation_process(seed=3, evses=evses, history_days=1) as sim:
        config = gateway_config(sim, database_url, backfill=timedelta(days=1))
        runtime = await start_runtime(config, poll=False)
        try:
            await runtime.sync_all(("locations", "tariffs"))
            return await Location.all().count()
        finally:
            await runtime.stop()


async def wait_ready(base: str, deadline: float) -> None:
    """Poll /healthz until the server answers (bounded by `deadline`)."""
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("gateway did not start")


async def load(base: str, concurrency: int, requests: int) -> tuple[float, list[float]]:
    """(elapsed seconds, per-request latencies) for `requests` queries at `concurrency`."""
    latencies: list[float] = []
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                resp = await http.post("/graphql", json={"query": QUERY})
                latencies.append(time.perf_counter() - t0)
                body = resp.json()
                assert "errors" not in body and len(body["data"]["locations"]["edges"]) == 100, body

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def main() -> None:
    """Fill, serve, load, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 25])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--evses", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "query.sqlite3"
        stored = asyncio.run(fill(f"sqlite://{db}", args.evses))
        port = free_port()
        cfg = Path(tmp) / "gateway.toml"
        cfg.write_text(f'[gateway]\ndatabase_url = "sqlite://{db}"\nport = {port}\npseudonym_key = "bench"\n')
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--log-level", "warning"]
        server = subprocess.Popen(cmd, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(base, time.monotonic() + 30))
            asyncio.run(load(base, 2, 20))  # warm-up: imports, caches, SQLite page cache
            print(f"query: 100 locations with EVSEs, connectors, tariffs ({stored} locations stored), SQLite")
            print("  clients   requests   queries/s   p50 ms   p99 ms")
            for c in args.concurrency:
                elapsed, lat = asyncio.run(load(base, c, args.requests))
                q = statistics.quantiles(lat, n=100)
                print(f"  {c:7d} {len(lat):10d} {len(lat) / elapsed:11.1f} {q[49] * 1000:8.1f} {q[98] * 1000:8.1f}")
            print(f"  gateway process resident memory after the runs: {rss_mb(server.pid):.0f} MB")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
