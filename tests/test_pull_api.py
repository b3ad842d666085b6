"""PULL: `GET /partners/v1/events`, its OpenAPI description, and `partnerEvents` in GraphQL."""

from __future__ import annotations

from typing import Any

import httpx

from gateway import partners
from gateway.auth import Role
from gateway.models import Operator
from gateway.vault import SecretStore
from tests.conftest import GraphQL, TestDb
from tests.partner_fixtures import event_log, operators_with_agreements, visible_to_partner
from tests.response_audit import AUDIT
from tests.support import SECRET_KEYS, issue_api_key

EVENTS = "/partners/v1/events"
QUERY = """query ($after: ID, $limit: Int!) {
  partnerEvents(after: $after, limit: $limit) {
    next events { id kind operatorId boroughCode subjectId payload createdAt }
  }
}"""


async def registered(partner_id: str = "appco", *, licence: bool = True) -> str:
    """A registered partner's API key (events are logged after it registered)."""
    reg = await partners.register(
        SecretStore(SECRET_KEYS), partner_id, "App Co", webhook_url="https://127.0.0.1:9/h", accept_licence=licence
    )
    assert reg.webhook_secret
    AUDIT.register(reg.webhook_secret)  # no gateway response may ever carry it
    return reg.api_key


async def pull_all(client: httpx.AsyncClient, key: str, limit: int) -> list[int]:
    """Every page, following `next`, bounded."""
    ids: list[int] = []
    after = ""
    for _ in range(200):
        resp = await client.get(EVENTS, params={"after": after, "limit": limit}, headers={"X-API-Key": key})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["events"]) <= limit
        if not body["events"]:
            assert body["next"] == (after or "0")
            return ids
        ids += [int(e["id"]) for e in body["events"]]
        after = body["next"]
        assert after == body["events"][-1]["id"]
    raise AssertionError("pagination did not end")


async def graphql_all(graphql: GraphQL, key: str, limit: int) -> list[int]:
    ids: list[int] = []
    after = None
    for _ in range(200):
        body = await graphql(QUERY, {"after": after, "limit": limit}, token=key)
        assert "errors" not in body, body
        page = body["data"]["partnerEvents"]
        if not page["events"]:
            return ids
        ids += [int(e["id"]) for e in page["events"]]
        after = page["next"]
    raise AssertionError("pagination did not end")


async def test_pages_hold_each_visible_event_once_and_nothing_else(
    db: TestDb, client: httpx.AsyncClient, graphql: GraphQL
) -> None:
    await operators_with_agreements()
    key = await registered()
    ids = await event_log(per_kind=5)
    want = visible_to_partner(ids)
    for limit in (1, 3, 1000):
        assert await pull_all(client, key, limit) == want
    assert await graphql_all(graphql, key, 4) == want
    # The body of one event, as the webhook sends it too.
    resp = await client.get(EVENTS, params={"limit": 1}, headers={"Authorization": f"Bearer {key}"})
    event = resp.json()["events"][0]
    assert event["kind"] == "evse.status_changed" and event["operatorId"] and event["createdAt"].endswith("Z")
    # An administrator sees the whole log, an operator its own events and status changes.
    admin = await issue_api_key(Role.ADMIN)
    everything = sorted(i for group in ids.values() for i in group)
    assert await pull_all(client, admin, 1000) == everything
    operator = await issue_api_key(Role.OPERATOR, operator_id="private-op")
    own = sorted(ids["SHARING/OPEN"] + ids["PRIVATE/OPEN"] + ids["PRIVATE/USAGE"])
    assert await pull_all(client, operator, 7) == own


async def test_a_partner_without_the_agreement_gets_no_session_events(
    db: TestDb, client: httpx.AsyncClient, graphql: GraphQL
) -> None:
    await operators_with_agreements()
    await Operator.filter().update(agreement={"COMMERCIAL": ["partner"], "USAGE": ["borough"]})
    key = await registered()
    ids = await event_log()
    only_open = sorted(ids["SHARING/OPEN"] + ids["PRIVATE/OPEN"])
    assert await pull_all(client, key, 2) == only_open
    assert await graphql_all(graphql, key, 2) == only_open


async def test_refusals_carry_catalogue_codes(db: TestDb, client: httpx.AsyncClient, graphql: GraphQL) -> None:
    await operators_with_agreements()
    await event_log(per_kind=1)

    async def refused(status: int, code: str, **kwargs: Any) -> None:
        resp = await client.get(EVENTS, **kwargs)
        assert resp.status_code == status, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json()["errors"][0]["code"] == code

    await refused(401, "UNAUTHENTICATED")
    await refused(401, "UNAUTHENTICATED", headers={"X-API-Key": "evg_nope_nope"})
    no_licence = await registered("nolicence", licence=False)
    await refused(403, "FORBIDDEN", headers={"X-API-Key": no_licence})
    unregistered = await issue_api_key(Role.PARTNER, partner_id="stranger")
    await refused(403, "FORBIDDEN", headers={"X-API-Key": unregistered})
    key = await registered()
    await refused(400, "BAD_USER_INPUT", params={"limit": 1001}, headers={"X-API-Key": key})
    await refused(400, "BAD_USER_INPUT", params={"limit": 0}, headers={"X-API-Key": key})
    await refused(400, "BAD_USER_INPUT", params={"after": "abc"}, headers={"X-API-Key": key})
    await partners.disable("appco")
    await refused(401, "UNAUTHENTICATED", headers={"X-API-Key": key})  # its key was revoked
    body = await graphql(QUERY, {"limit": 5})
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    body = await graphql(QUERY, {"limit": 5}, token=no_licence)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["data"] == {"partnerEvents": None}


async def test_openapi_document(db: TestDb, client: httpx.AsyncClient) -> None:
    resp = await client.get("/partners/v1/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    operation = doc["paths"][EVENTS]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"after", "limit"}
    assert {"200", "400", "401", "403"} <= set(operation["responses"])
    hook = doc["webhooks"]["event"]["post"]
    assert "X-Evgate-Signature" in {p["name"] for p in hook["parameters"]}
    assert "HMAC-SHA256" in hook["description"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):  # every reference resolves
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict)
