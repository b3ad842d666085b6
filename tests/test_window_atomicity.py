"""A window commits whole or not at all: a failure on its third page leaves no trace but the error,
and the next run ingests the whole window. Real TLS operator, real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from adapters.http import UpstreamError
from gateway.config import GatewayConfig, OperatorConfig
from gateway.db import close_db
from gateway.models import Event, Session, SyncState
from gateway.runtime import start_runtime
from tests.conftest import TestDb
from tests.support import SECRET_KEYS, ocpi_envelope, scripted_operator, shared_path

SESSION = orjson.loads(
    shared_path("fixtures", "ocpi", "2.2.1-bugfixes", "session_example_1_simple_start.json").read_bytes()
)
SESSIONS = [
    {**copy.deepcopy(SESSION), "id": f"S{i:02d}", "last_updated": f"2026-01-01T00:{i:02d}:00Z"} for i in range(9)
]
PAGE = 3


@pytest.fixture
async def operator(tmp_path: Path) -> AsyncIterator[tuple[str, str, dict[str, bool]]]:
    """An operator serving 9 sessions in pages of 3; while `broken`, its third page answers 500."""
    state = {"broken": True}

    async def sessions(request: web.Request) -> web.Response:
        offset = int(request.query.get("offset", 0))
        if state["broken"] and offset >= 2 * PAGE:
            return web.Response(status=500)
        headers = {"X-Total-Count": str(len(SESSIONS))}
        if offset + PAGE < len(SESSIONS):
            query = request.query_string.replace(f"offset={offset}", f"offset={offset + PAGE}")
            headers["Link"] = f'<{request.url.origin()}/sessions?{query}>; rel="next"'
        return ocpi_envelope(SESSIONS[offset : offset + PAGE], headers=headers)

    async for versions_url, ca in scripted_operator(tmp_path / "pki", {"sessions": sessions}):
        yield versions_url, ca, state


async def test_a_failed_window_leaves_nothing_and_the_next_run_takes_it_whole(
    db: TestDb, operator: tuple[str, str, dict[str, bool]]
) -> None:
    versions_url, ca, state = operator
    await close_db()
    backfill = (datetime.now(UTC) - datetime(2025, 12, 31, tzinfo=UTC)).total_seconds()
    op = OperatorConfig(
        id="flaky",
        name="Flaky Ltd",
        url=versions_url,
        token="t",
        ca_bundle=ca,
        modules=("sessions",),
        page_limit=PAGE,
        backfill=backfill,
        window=backfill + 86400,  # one window holds all nine sessions
    )
    runtime = await start_runtime(
        GatewayConfig(database_url=db.url, pseudonym_key="k", secret_keys=SECRET_KEYS, operators=[op]), poll=False
    )
    try:
        with pytest.raises(UpstreamError) as err:
            await runtime.pollers["flaky"].sync_module("sessions")
        assert err.value.code == "UPSTREAM_HTTP"
        # pages one and two were ingested inside the window's transaction, which rolled back
        assert await Session.all().count() == 0 and await Event.all().count() == 0
        sync = await SyncState.get(id="flaky:sessions")
        assert sync.cursor is None and sync.last_error_code == "UPSTREAM_HTTP" and sync.records_ingested == 0

        state["broken"] = False
        result = await runtime.pollers["flaky"].sync_module("sessions")
        assert result.ingest.written == 9
        assert sorted(await Session.all().values_list("source_id", flat=True)) == [s["id"] for s in SESSIONS]
        sync = await SyncState.get(id="flaky:sessions")
        assert sync.cursor is not None and sync.records_ingested == 9
        # The error stays on record (sync health shows it); the success after it shows the recovery.
        assert sync.last_error_code == "UPSTREAM_HTTP" and sync.consecutive_failures == 0
        assert sync.last_error_at is not None and sync.last_success > sync.last_error_at
    finally:
        await runtime.stop()
