"""What the benchmarks share: a gateway configuration for a simulation, throwaway PostgreSQL databases."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.sim_process import RemoteSimulation
from gateway.config import GatewayConfig
from gateway.demo import simulated_operators
from gateway.vault import generate_key
from simulator.cluster import Simulation


def gateway_config(
    sim: Simulation | RemoteSimulation, database_url: str, *, backfill: timedelta, page_limit: int = 100
) -> GatewayConfig:
    """A gateway on `database_url` polling every simulated operator (polling driven by the caller)."""
    seconds = backfill.total_seconds()
    return GatewayConfig(
        database_url=database_url,
        pseudonym_key=secrets.token_urlsafe(16),
        secret_keys=[generate_key()],
        operators=simulated_operators(sim, backfill=seconds, window=86400.0, page_limit=page_limit),
        poll=False,
    )


def _pg(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


def pg_reachable(url: str) -> bool:
    """Whether PostgreSQL answers at `url`."""

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(_pg(url), timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@contextmanager
def fresh_postgres_url(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of `admin_url`, dropped afterwards."""
    name = f"evgate_bench_{secrets.token_hex(4)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(_pg(admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        parts = urlsplit(admin_url)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
