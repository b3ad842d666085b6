"""Database lifecycle: one tortoise-orm connection for the whole process, SQLite or PostgreSQL.

`database_url` is `sqlite://PATH` (or `sqlite://:memory:`) or `postgres://USER@HOST:PORT/DB`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tortoise import Tortoise, fields
from tortoise.backends.base import executor
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

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
        await _check_columns()
    if database_url.startswith("sqlite"):
        conn = connection()
        # WAL lets readers (GraphQL) proceed while the poller writes; a 64 MiB page cache keeps a
        # catch-up's indexes in memory (the 2 MiB default thrashes them).
        await conn.execute_script(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;"
        )


class SchemaOutdated(Exception):
    """The database was created by an older evgate: tables exist but lack columns."""


async def _check_columns() -> None:
    """Refuse a database whose tables predate the model (creating missing tables does not add
    columns), with a message naming what is missing, rather than failing later mid-ingest."""
    conn = connection()
    missing = []
    for model in Tortoise.apps["models"].values():
        table = model._meta.db_table
        if conn.capabilities.dialect == "sqlite":
            rows = await conn.execute_query_dict(f'PRAGMA table_info("{table}")')
            have = {r["name"] for r in rows}
        else:
            rows = await conn.execute_query_dict(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1", [table]
            )
            have = {r["column_name"] for r in rows}
        wanted = set(model._meta.fields_db_projection.values())
        missing += [f"{table}.{c}" for c in sorted(wanted - have)]
    if missing:
        raise SchemaOutdated(
            f"the database was created by an older evgate and lacks {', '.join(missing)}; "
            "migrations are not supported yet: recreate it (the gateway catches up from the operators)"
        )


def connection() -> BaseDBAsyncClient:
    """The default connection, for transactions and for counting queries in tests."""
    return Tortoise.get_connection("default")


async def close_db() -> None:
    """Close every connection (end of process, end of test)."""
    await Tortoise.close_connections()


# Column types the database drivers (sqlite3, asyncpg) already return as the Python value.
_DRIVER_NATIVE = (fields.CharField, fields.TextField, fields.IntField, fields.BigIntField, fields.FloatField)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def stored_datetime(value: datetime | str | None) -> datetime | None:
    """A datetime column as read raw from the driver, as an aware UTC datetime (what tortoise returns
    with use_tz): SQLite gives ISO 8601 text, asyncpg a datetime. `fromisoformat` does in well under a
    microsecond what tortoise's iso8601 parsing and ZoneInfo conversion do in about 9."""
    if value is None:
        return None
    return as_utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def value_converters(model: type[Model], columns: Sequence[str]) -> list[tuple[str, Callable[[Any], Any]]]:
    """For rows read raw: how to turn each column's driver value into its Python value (columns that
    need nothing are left out)."""
    out: list[tuple[str, Callable[[Any], Any]]] = []
    for column in columns:
        field = model._meta.fields_map[column]
        if isinstance(field, fields.DatetimeField):
            out.append((column, stored_datetime))
        elif not isinstance(field, _DRIVER_NATIVE):
            out.append((column, field.to_python_value))  # JSON, booleans...: tortoise's own conversion
    return out
