"""Multi-row writes for the ingest hot path, without building an ORM object per row.

tortoise's `bulk_create` instantiates and validates a model object for every row, which costs more
than the database write itself at tens of thousands of rows a second. Ingest already has
normalised, typed values, so it writes them as parameter tuples through the same connection and
transaction. The statements are derived from the tortoise model metadata (table and column names),
never from input, and all values are bound parameters.

The upsert is guarded: `ON CONFLICT (id) DO UPDATE ... WHERE excluded.last_updated > stored`, so
the database itself guarantees that an older version never overwrites a newer one. The syntax is
the same in SQLite (3.24+) and PostgreSQL.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import orjson
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.fields.data import JSONField
from tortoise.models import Model

from gateway.db import value_converters

BATCH = 500


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _placeholders(dialect: str, n_cols: int) -> str:
    if dialect == "postgres":
        return ", ".join(f"${i + 1}" for i in range(n_cols))
    return ", ".join("?" * n_cols)


class BulkWriter:
    """Prepared INSERT (or guarded UPSERT) of many rows of one model, as dicts of field values."""

    def __init__(self, model: type[Model], *, upsert: bool, guard: str | None = "last_updated") -> None:
        meta = model._meta
        self.table = meta.db_table
        pk = meta.pk_attr
        generated = set(meta.generated_db_fields)
        self.columns = [name for name in meta.db_fields if name not in generated]
        self.upsert = upsert
        self.pk = pk
        self.guard = guard if upsert else None
        # Rows are dicts with every column; itemgetter pulls them out in column order at C speed.
        self._values = operator.itemgetter(*self.columns)
        # Values that the driver cannot take as they are: JSON columns are sent as text.
        self._json_columns = [i for i, c in enumerate(self.columns) if isinstance(meta.fields_map[c], JSONField)]

    def _sql(self, dialect: str) -> str:
        cols = ", ".join(f'"{c}"' for c in self.columns)
        sql = f'INSERT INTO "{self.table}" ({cols}) VALUES ({_placeholders(dialect, len(self.columns))})'
        return sql + self._on_conflict() if self.upsert else sql

    def _tuple(self, row: dict[str, Any]) -> Sequence[Any]:
        values = self._values(row)
        if not self._json_columns:
            return values
        values = list(values)
        for i in self._json_columns:
            values[i] = _json(values[i])
        return values

    async def write(self, rows: Sequence[dict[str, Any]], conn: BaseDBAsyncClient) -> None:
        """Write the rows on `conn` (inside the caller's transaction).

        SQLite: one prepared statement executed for many parameter rows (in process, already fast).
        PostgreSQL: binary COPY, straight into the table for plain inserts, or into a temporary
        table and from there one guarded INSERT ... SELECT ... ON CONFLICT for upserts; measured
        several times faster than executemany for pages of a thousand rows.
        """
        if not rows:
            return
        if self.upsert:  # one statement must not touch a row twice: the last version of a key wins
            rows = list({row[self.pk]: row for row in rows}.values())
        values = [self._tuple(r) for r in rows]
        if conn.capabilities.dialect != "postgres":
            sql = self._sql("sqlite")
            for i in range(0, len(values), BATCH):
                await conn.execute_many(sql, values[i : i + BATCH])
            return
        async with conn.acquire_connection() as raw:
            if not self.upsert:
                await raw.copy_records_to_table(self.table, records=values, columns=self.columns)
                return
            staging = f"_staging_{self.table}"
            await raw.execute(
                f'CREATE TEMP TABLE IF NOT EXISTS "{staging}" (LIKE "{self.table}" INCLUDING DEFAULTS) '
                "ON COMMIT DELETE ROWS"
            )
            await raw.copy_records_to_table(staging, records=values, columns=self.columns)
            await raw.execute(self._upsert_from(staging))
            await raw.execute(f'TRUNCATE "{staging}"')

    def _upsert_from(self, staging: str) -> str:
        cols = ", ".join(f'"{c}"' for c in self.columns)
        sql = f'INSERT INTO "{self.table}" ({cols}) SELECT {cols} FROM "{staging}"'
        return sql + self._on_conflict()

    def _on_conflict(self) -> str:
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in self.columns if c != self.pk)
        sql = f' ON CONFLICT ("{self.pk}") DO UPDATE SET {updates}'
        if self.guard:
            sql += f' WHERE excluded."{self.guard}" > "{self.table}"."{self.guard}"'
        return sql


async def fetch_by_ids(
    model: type[Model],
    ids: Sequence[str],
    columns: Sequence[str],
    conn: BaseDBAsyncClient,
) -> list[dict[str, Any]]:
    """The given columns of the rows whose primary key is in `ids` (bound parameters, in batches).

    Ingest asks this once per page to learn what it already holds; building the same query through
    the ORM's query builder cost more than running it.
    """
    meta = model._meta
    converters = value_converters(model, columns)
    cols = ", ".join(f'"{c}"' for c in columns)
    dialect = conn.capabilities.dialect
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), BATCH):
        chunk = list(ids[i : i + BATCH])
        sql = f'SELECT {cols} FROM "{meta.db_table}" WHERE "{meta.pk_attr}" IN ({_placeholders(dialect, len(chunk))})'
        for row in await conn.execute_query_dict(sql, chunk):
            for col, convert in converters:
                row[col] = convert(row[col])
            out.append(row)
    return out
