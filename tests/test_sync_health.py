"""Sync health in GraphQL: errors with their codes, backoff and recovery, quarantined records with
reasons and redacted tokens; administrators only, and no operator credential ever in a response.

A scripted OCPI operator on real TLS first answers 429 with Retry-After, then a page mixing good
sessions with a malformed one.
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

from adapters.http import UpstreamError
from gateway.config import GatewayConfig, OperatorConfig
from gateway.db import close_db
from gateway.models import QuarantinedRecord
from tests.conftest import TestDb
from tests.support import (
    SECRET_KEYS,
    Gateway,
    issue_api_key,
    new_api_key,
    ocpi_envelope,
    running_gateway,
    scripted_operator,
    shared_path,
)

ADMIN = new_api_key()
TOKEN = "cpo-credential-7d2f-do-not-leak"
SESSION = orjson.loads(
    shared_path("fixtures", "ocpi", "2.2.1-bugfixes", "session_example_1_simple_start.json").read_bytes()
)

HEALTH = """
query($op: String) {
  syncHealth(operatorId: $op) {
    operatorId module cursor lagSeconds healthy lastAttempt lastSuccess consecutiveFailures nextAttempt
    clockOffsetSeconds recordsIngested recordsQuarantined
    lastError { code message at retryAfter }
    recentErrors { code message at retryAfter }
  }
}"""

QUARANTINE = """
query($op: String, $after: String) {
  quarantinedRecords(operatorId: $op, module: "sessions", first: 1, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id operatorId module sourceId code reason fetchedAt raw } }
  }
}"""


def _sessions() -> list[Any]:
    good = []
    for i in range(3):
        s = copy.deepcopy(SESSION)
        s["id"] = f"OK{i}"
        s["last_updated"] = f"2026-01-01T00:0{i}:00Z"
        good.append(s)
    bad = copy.deepcopy(SESSION)
    bad["id"] = "BAD1"
    bad["kwh"] = "plenty"
    no_id = copy.deepcopy(SESSION)
    del no_id["id"]
    return [good[0], bad, good[1], no_id, good[2]]


@pytest.fixture
async def gateway(db: TestDb, tmp_path: Path) -> AsyncIterator[tuple[Gateway, dict[str, Any]]]:
    state: dict[str, Any] = {"mode": "rate_limited"}

    async def sessions(request: web.Request) -> web.Response:
        assert request.headers["Authorization"].startswith("Token ")
        if state["mode"] == "rate_limited":
            return web.json_response({"status_code": 2000}, status=429, headers={"Retry-After": "42"})
        return ocpi_envelope(_sessions())

    await close_db()
    async for versions_url, ca in scripted_operator(tmp_path / "pki", {"sessions": sessions}):
        op = OperatorConfig(
            id="hop", name="Health Ltd", url=versions_url, token=TOKEN, ca_bundle=ca, modules=("sessions",)
        )
        op.backfill = (datetime.now(UTC) - datetime(2025, 12, 31, tzinfo=UTC)).total_seconds()
        op.window = op.backfill + 86400
        config = GatewayConfig(
            database_url=db.url,
            pseudonym_key="k",
            secret_keys=SECRET_KEYS,
            operators=[op],
            poll=False,
        )
        async for gw in running_gateway(config):
            await issue_api_key(key=ADMIN)
            yield gw, state


async def test_sync_health_shows_the_error_the_backoff_and_the_recovery(gateway: tuple[Gateway, dict]) -> None:
    gw, state = gateway
    poller = gw.runtime.pollers["hop"]

    with pytest.raises(UpstreamError):
        await poller.sync_module("sessions")
    (failed,) = (await gw.query(HEALTH, {"op": "hop"}, ADMIN))["syncHealth"]
    assert failed["healthy"] is False and failed["consecutiveFailures"] == 1 and failed["cursor"] is None
    assert failed["lastError"]["code"] == "UPSTREAM_RATE_LIMITED" and failed["lastError"]["retryAfter"] == 42
    # Retry-After wins over the (shorter) first backoff step.
    wait = datetime.fromisoformat(failed["nextAttempt"]) - datetime.fromisoformat(failed["lastAttempt"])
    assert wait.total_seconds() >= 42
    assert [e["code"] for e in failed["recentErrors"]] == ["UPSTREAM_RATE_LIMITED"]

    state["mode"] = "ok"
    await poller.sync_module("sessions")
    (health,) = (await gw.query(HEALTH, {"op": "hop"}, ADMIN))["syncHealth"]
    assert health["healthy"] is True and health["consecutiveFailures"] == 0 and health["nextAttempt"] is None
    assert health["cursor"] == "2026-01-02T00:00:00+00:00"  # the operator's clock (envelope timestamp)
    assert health["recordsIngested"] == 3 and health["recordsQuarantined"] == 2
    assert health["lastSuccess"] > health["lastError"]["at"]  # the recovery, after the fault
    assert [e["code"] for e in health["recentErrors"]] == ["RECORD_INVALID", "UPSTREAM_RATE_LIMITED"]
    # Lag is measured on the operator's clock (here stopped at its envelope time), not on ours.
    offset = datetime(2026, 1, 2, tzinfo=UTC) - datetime.now(UTC)
    assert abs(health["clockOffsetSeconds"] - offset.total_seconds()) < 60
    assert 0 <= health["lagSeconds"] < 60


async def test_quarantined_records_are_listed_with_reasons_and_redacted_tokens(gateway: tuple[Gateway, dict]) -> None:
    gw, state = gateway
    state["mode"] = "ok"
    await gw.runtime.pollers["hop"].sync_module("sessions")
    # A first run that succeeds records the operator's clock too (lag is measured on it).
    (health,) = (await gw.query(HEALTH, {"op": "hop"}, ADMIN))["syncHealth"]
    assert health["clockOffsetSeconds"] < -86400 and 0 <= health["lagSeconds"] < 60

    nodes, after = [], None
    for _ in range(5):
        page = (await gw.query(QUARANTINE, {"op": "hop", "after": after}, ADMIN))["quarantinedRecords"]
        assert page["totalCount"] == 2
        nodes += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    by_source = {n["sourceId"]: n for n in nodes}
    assert set(by_source) == {"BAD1", None}
    assert by_source["BAD1"]["code"] == "RECORD_INVALID" and "kwh: expected a number" in by_source["BAD1"]["reason"]
    assert "id" in by_source[None]["reason"]
    raw = by_source["BAD1"]["raw"]
    assert raw["kwh"] == "plenty" and raw["id"] == "BAD1"
    # The driver's token is PERSONAL: redacted even for administrators; its type is kept.
    assert raw["cdr_token"]["uid"] == "[redacted]" and raw["cdr_token"]["type"] == SESSION["cdr_token"]["type"]
    assert SESSION["cdr_token"]["uid"] not in orjson.dumps(nodes).decode()
    # ... and it is not at rest either: quarantine stores the record already redacted.
    stored = await QuarantinedRecord.all().values_list("raw_json", flat=True)
    assert len(stored) == 2 and not any(SESSION["cdr_token"]["uid"] in raw for raw in stored)


@pytest.mark.parametrize("token", [None, "not-the-admin-token"])
async def test_sync_health_is_for_administrators_only(gateway: tuple[Gateway, dict], token: str | None) -> None:
    gw, _ = gateway
    for query, field in ((HEALTH, "syncHealth"), (QUARANTINE, "quarantinedRecords")):
        body = await gw.post(query, {"op": "hop"}, token)
        assert body["data"][field] is None
        # Without credentials, or with credentials that do not verify, nobody is authenticated.
        assert {e["extensions"]["code"] for e in body["errors"]} == {"UNAUTHENTICATED"}


async def test_no_response_carries_an_operator_credential(gateway: tuple[Gateway, dict]) -> None:
    gw, state = gateway
    state["mode"] = "ok"
    await gw.runtime.pollers["hop"].sync_module("sessions")
    bodies = [
        await gw.post(HEALTH, {}, ADMIN),
        await gw.post(QUARANTINE, {"op": "hop"}, ADMIN),
        await gw.post("{ operators { id name protocol } }", {}, ADMIN),
        await gw.post("{ __schema { types { name fields { name } } } }", {}, ADMIN),
    ]
    text = orjson.dumps(bodies).decode()
    assert "hop" in text and TOKEN not in text
    assert not any(word in text.lower() for word in ("ciphertext", "client_key", "apikey"))
