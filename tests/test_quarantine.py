"""Malformed operator records are quarantined with their reason and raw JSON; the page's good ones are kept.

A small OCPI operator on a real TLS server (loopback, a CA generated for the test) serves a
session page that mixes the specification's own examples with broken objects.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.config import GatewayConfig, OperatorConfig
from gateway.db import close_db
from gateway.models import QuarantinedRecord, Session, SyncState
from gateway.runtime import start_runtime
from tests.conftest import TestDb
from tests.support import SECRET_KEYS, ocpi_envelope, scripted_operator, shared_path

FIXTURES = shared_path("fixtures", "ocpi", "2.2.1-bugfixes")
TOKEN = "quarantine-test-token"


def _good_sessions() -> list[dict[str, Any]]:
    base = orjson.loads((FIXTURES / "session_example_1_simple_start.json").read_bytes())
    out = []
    for i in range(5):
        s = copy.deepcopy(base)
        s["id"] = f"GOOD{i}"
        s["last_updated"] = f"2026-01-01T00:0{i}:00Z"
        out.append(s)
    return out


BAD = [
    ("no-kwh", lambda s: s.pop("kwh"), "kwh: required field missing"),
    ("bad-date", lambda s: s.update(start_date_time="last tuesday"), "start_date_time: not an RFC 3339"),
    ("no-updated", lambda s: s.pop("last_updated"), "last_updated: required field missing"),
    ("kwh-text", lambda s: s.update(kwh="lots"), "kwh: expected a number"),
]


def _page() -> list[Any]:
    good = _good_sessions()
    bad = []
    for name, spoil, _ in BAD:
        s = copy.deepcopy(good[0])
        s["id"] = f"BAD-{name}"
        spoil(s)
        bad.append(s)
    # interleave, plus an object that is not an object at all
    return [good[0], bad[0], good[1], bad[1], good[2], "not an object", bad[2], good[3], bad[3], good[4]]


@pytest.fixture
async def operator(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    async def sessions(request: web.Request) -> web.Response:
        assert request.query["date_from"] and request.query["date_to"]
        return ocpi_envelope(_page())

    async for versions_url, ca in scripted_operator(tmp_path / "pki", {"sessions": sessions}):
        yield versions_url, ca


async def test_bad_records_are_quarantined_and_the_rest_kept(db: TestDb, operator: tuple[str, str]) -> None:
    versions_url, ca = operator
    await close_db()
    op = OperatorConfig(
        id="qop", name="Quarantine Ltd", url=versions_url, token=TOKEN, ca_bundle=ca, modules=("sessions",)
    )
    # the window must cover 2026-01-01, where the good sessions were updated
    op.backfill = (datetime.now(UTC) - datetime(2025, 12, 31, tzinfo=UTC)).total_seconds()
    op.window = op.backfill + 86400
    config = GatewayConfig(database_url=db.url, pseudonym_key="k", secret_keys=SECRET_KEYS, operators=[op], poll=False)
    runtime = await start_runtime(config, poll=False)
    try:
        result = await runtime.pollers["qop"].sync_module("sessions")
        assert result.ingest.written == 5 and result.ingest.quarantined == 5
        assert sorted(await Session.all().values_list("source_id", flat=True)) == [f"GOOD{i}" for i in range(5)]

        rows = {q["source_id"]: q for q in await QuarantinedRecord.all().values()}
        assert len(rows) == 5
        for name, _, reason in BAD:
            row = rows[f"BAD-{name}"]
            assert reason in row["reason"], row["reason"]
            assert row["code"] == "RECORD_INVALID" and row["module"] == "sessions" and row["operator_id"] == "qop"
            assert orjson.loads(row["raw_json"])["id"] == f"BAD-{name}"
        assert "expected a JSON object" in rows[None]["reason"]
        assert orjson.loads(rows[None]["raw_json"]) == "not an object"

        state = await SyncState.get(id="qop:sessions")
        assert state.records_ingested == 5 and state.records_quarantined == 5 and state.last_error_code is None

        # the same window again: nothing is stored or quarantined twice
        await SyncState.all().update(cursor=None)
        again = await runtime.pollers["qop"].sync_module("sessions")
        assert again.ingest.written == 0 and again.ingest.quarantined == 0
        assert await QuarantinedRecord.all().count() == 5 and await Session.all().count() == 5
    finally:
        await runtime.stop()
