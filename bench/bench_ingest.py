"""Ingestion throughput: OCPI session records per second, simulator pages over TLS into the database.

Run: `.venv/bin/python -m bench.bench_ingest [--days 30] [--evses 1500] [--postgres URL]`.
It starts the simulated operators (frozen clock), lets the gateway catch up the sessions module of
every operator from an empty database, and prints records, seconds and records per second for
SQLite and (when reachable) PostgreSQL. Locations are ingested first and not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.common import fresh_postgres_url, gateway_config, pg_reachable
from bench.sim_process import RemoteSimulation, simulation_process
from gateway.models import Session
from gateway.runtime import start_runtime


async def measure(sim: RemoteSimulation, database_url: str, days: int, page_limit: int) -> tuple[int, float]:
    """(session records ingested, seconds) for one database."""
    config = gateway_config(sim, database_url, backfill=timedelta(days=days + 2), page_limit=page_limit)
    runtime = await start_runtime(config, poll=False)
    try:
        await runtime.sync_all(("locations",))
        started = time.perf_counter()
        await runtime.sync_all(("sessions",))
        elapsed = time.perf_counter() - started
        stored = await Session.all().count()
    finally:
        await runtime.stop()
    expected = sum(c["sessions"] for c in sim.counts.values())
    assert stored == expected, f"stored {stored} sessions, simulator has {expected}"
    return stored, elapsed


def main() -> None:
    """Print ingestion figures for SQLite and PostgreSQL."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--evses", type=int, default=1500)
    parser.add_argument("--page-limit", type=int, default=1000)
    parser.add_argument("--demand", type=float, default=3.0, help="simulated demand multiplier")
    parser.add_argument(
        "--postgres", default=os.environ.get("EVGATE_BENCH_PG", "postgres://postgres@127.0.0.1:5432/test")
    )
    args = parser.parse_args()
    print(
        f"ingest: {args.evses} EVSEs, {args.days} days of sessions (demand x{args.demand}), "
        f"page size {args.page_limit}; gateway in one process, simulator in another"
    )
    kwargs = dict(
        seed=11, evses=args.evses, history_days=args.days, page_limit=args.page_limit, demand_scale=args.demand
    )
    with simulation_process(**kwargs) as sim:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite://{Path(tmp) / 'bench.sqlite3'}"
            n, secs = asyncio.run(measure(sim, url, args.days, args.page_limit))
            print(f"  sqlite     {n:8d} sessions in {secs:6.2f} s = {n / secs:9.0f} records/s")
        if pg_reachable(args.postgres):
            with fresh_postgres_url(args.postgres) as url:
                n, secs = asyncio.run(measure(sim, url, args.days, args.page_limit))
                print(f"  postgresql {n:8d} sessions in {secs:6.2f} s = {n / secs:9.0f} records/s")
        else:
            print(f"  postgresql not reachable at {args.postgres}: skipped")


if __name__ == "__main__":
    main()
