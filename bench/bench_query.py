"""Front-end query throughput and latency: 100 locations with their EVSEs and connectors.

Run: `.venv/bin/python -m bench.bench_query [--concurrency 1 10 25] [--requests 300] [--modes cold cached]`.
It fills a SQLite database from the simulated operators, starts the gateway with the real CLI
(`evgate serve`, invoked as the installed console script does: import `gateway.cli`, call `main()`)
in its own process on 127.0.0.1, and drives it from this process with httpx at each
concurrency level (bounded request counts), printing queries per second, p50 and p99 latency, and
the server's resident memory. It does so twice, with a fresh server each time:
- cold: the response cache is off (`EVGATE_RESPONSE_CACHE=off`), so every request runs the query;
- cached: the cache is on and the same query is repeated with no data change in between, so after
  the first request every answer comes from the cache. That is the best case (a front end polling
  one view); real traffic sits between the two.
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
import orjson

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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
                body = orjson.loads(resp.content)  # the client's own CPU is part of what limits it
                assert "errors" not in body and len(body["data"]["locations"]["edges"]) == 100, body

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


# `evgate serve` exactly as the console script runs it. Not `python -m gateway.cli`: on CPython 3.11
# the gateway runs markedly slower (about 1.6x the CPU per query here) when its entry module is
# executed as `__main__` by runpy, which is not how it is deployed.
SERVE = [sys.executable, "-c", "from gateway.cli import main; main()", "serve"]

MODES = {
    "cold": ("off", "cold: response cache off, every request runs the query"),
    "cached": ("on", "cached: response cache on, the same query repeated, data unchanged"),
}


def run_mode(tmp: Path, db: Path, mode: str, concurrency: list[int], requests: int) -> None:
    """Start a fresh `evgate serve` with the response cache on or off, load it, print the figures."""
    switch, label = MODES[mode]
    port = free_port()
    cfg = tmp / "gateway.toml"
    cfg.write_text(f'[gateway]\ndatabase_url = "sqlite://{db}"\nport = {port}\npseudonym_key = "bench"\n')
    # Ten clients from one address are one caller to the per-principal rate limit: measure the
    # query path, not the limiter.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EVGATE_RESPONSE_CACHE": switch}
    env["EVGATE_RATE_LIMIT_PER_MINUTE"] = "off"
    server = subprocess.Popen([*SERVE, "--config", str(cfg), "--log-level", "warning"], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(base, time.monotonic() + 30))
        asyncio.run(load(base, 2, 20))  # warm-up: imports, caches, SQLite page cache
        print(f"  {label}")
        # CPU per query of each side: the load generator is one Python process on the same machine,
        # and when answers are cheap (cached) it, not the gateway, is what runs out of CPU first.
        print("  clients   requests   queries/s   p50 ms   p99 ms   gateway CPU ms/q   client CPU ms/q")
        for c in concurrency:
            server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
            elapsed, lat = asyncio.run(load(base, c, requests))
            server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - client_cpu
            q = statistics.quantiles(lat, n=100)
            print(
                f"  {c:7d} {len(lat):10d} {len(lat) / elapsed:11.1f} {q[49] * 1000:8.1f} {q[98] * 1000:8.1f}"
                f" {server_cpu / len(lat) * 1000:18.1f} {client_cpu / len(lat) * 1000:17.1f}"
            )
        print(f"  gateway process resident memory after the runs: {rss_mb(server.pid):.0f} MB")
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    """Fill, then for each mode: serve, load, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 25])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--evses", type=int, default=1500)
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["cold", "cached"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "query.sqlite3"
        stored = asyncio.run(fill(f"sqlite://{db}", args.evses))
        print(f"query: 100 locations with EVSEs, connectors, tariffs ({stored} locations stored), SQLite")
        for mode in args.modes:
            run_mode(Path(tmp), db, mode, args.concurrency, args.requests)


if __name__ == "__main__":
    main()
