"""A database created by an older evgate (a table lacking a column) is refused at start with a
message naming what is missing, instead of failing later in the middle of an ingest."""

from __future__ import annotations

import pytest

from gateway.db import SchemaOutdated, close_db, connection, init_db
from tests.conftest import TestDb


async def test_a_table_lacking_a_column_is_refused_by_name(db: TestDb) -> None:
    await connection().execute_script('ALTER TABLE "sync_state" DROP COLUMN "clock_offset"')
    await close_db()
    try:
        with pytest.raises(SchemaOutdated, match=r"lacks sync_state\.clock_offset; migrations are not supported"):
            await init_db(db.url)
    finally:
        # Put the column back: the PostgreSQL database is shared by the whole test session.
        await init_db(db.url, create=False)
        column_type = "REAL" if db.kind == "sqlite" else "DOUBLE PRECISION"
        await connection().execute_script(f'ALTER TABLE "sync_state" ADD COLUMN "clock_offset" {column_type}')
    await close_db()
    await init_db(db.url)  # whole again: accepted
