"""Database lifecycle: one tortoise-orm connection for the whole process, SQLite or PostgreSQL.

`database_url` is `sqlite://PATH` (or `sqlite://:memory:`) or `postgres://USER@HOST:PORT/DB`.
"""

from __future__ import annotations

from tortoise import Tortoise
from tortoise.backends.base import executor
from tortoise.backends.base.client import BaseDBAsyncClient

MODELS_MODULE = "gateway.models"


async def init_db(database_url: str, *, create: bool = True) -> None:
    """Connect and (by default) create missing tables; safe to call on an existing database."""
    # tortoise caches each table's INSERT statement per connection name, in the placeholder style of
    # the first database seen; a process that moves from SQLite to PostgreSQL (the test suite, the
    # benchmarks) must start from an empty cache.
    executor.EXECUTOR_CACHE.clear()
    # The global fallback makes the connection visible to every task, not only to the one that ran
    # init: uvicorn runs the lifespan (which calls this) and each request in different tasks.
    await Tortoise.init(db_url=database_url, modules={"models": [MODELS_MODULE]}, _enable_global_fallback=True)
    if create:
        await Tortoise.generate_schemas(safe=True)
    if database_url.startswith("sqlite"):
        conn = connection()
        # WAL lets readers (GraphQL) proceed while the poller writes; a 64 MiB page cache keeps a
        # catch-up's indexes in memory (the 2 MiB default thrashes them).
        await conn.execute_script(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;"
        )


def connection() -> BaseDBAsyncClient:
    """The default connection, for transactions and for counting queries in tests."""
    return Tortoise.get_connection("default")


async def close_db() -> None:
    """Close every connection (end of process, end of test)."""
    await Tortoise.close_connections()
