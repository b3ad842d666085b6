"""Database lifecycle: one tortoise-orm connection for the whole process, SQLite or PostgreSQL.

`database_url` is `sqlite://PATH` (or `sqlite://:memory:`) or `postgres://USER@HOST:PORT/DB`.
"""

from __future__ import annotations

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

MODELS_MODULE = "gateway.models"


async def init_db(database_url: str, *, create: bool = True) -> None:
    """Connect and (by default) create missing tables; safe to call on an existing database."""
    await Tortoise.init(db_url=database_url, modules={"models": [MODELS_MODULE]})
    if create:
        await Tortoise.generate_schemas(safe=True)
    if database_url.startswith("sqlite"):
        conn = connection()
        # WAL lets readers (GraphQL) proceed while the poller writes.
        await conn.execute_script("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")


def connection() -> BaseDBAsyncClient:
    """The default connection, for transactions and for counting queries in tests."""
    return Tortoise.get_connection("default")


async def close_db() -> None:
    """Close every connection (end of process, end of test)."""
    await Tortoise.close_connections()
