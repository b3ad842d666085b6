"""Test-only principals, and a small world of operators, boroughs and usage rows to test access on.

The access tests need callers of every role without depending on how credentials are issued
(`gateway.identity` owns that). `app_with_test_principals` builds the real app with `create_app`
and turns its GraphQL view into `PrincipalFromHeader`, a subclass defined here whose `get_context`
takes the principal from the `X-Test-Principal` header. Nothing of this exists in production code:
the production view never reads that header.

`seed_world` stores three operators with different data-sharing agreements, each with sites,
sessions and CDRs in Camden and Islington (and one outside any borough), sync states and
quarantined records. `VISIBLE` says, written out by hand from the rules in DESIGN.md (not computed
by `gateway.policy`), which of those rows each test principal may see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from gateway.app import GatewayGraphQL, create_app
from gateway.auth import ANONYMOUS, Principal, Role
from gateway.cache import CacheSettings
from gateway.config import GatewayConfig
from gateway.models import Operator, QuarantinedRecord, SyncState
from gateway.policy import DataClass
from resolvers.context import RequestContext
from tests import seed

HEADER = "x-test-principal"


def encode(principal: Principal) -> str:
    """The header value naming `principal`."""
    return orjson.dumps(
        {
            "role": principal.role.value,
            "subject": principal.subject,
            "boroughs": sorted(principal.boroughs),
            "operator_id": principal.operator_id,
            "partner_id": principal.partner_id,
        }
    ).decode()


def decode(value: str | None) -> Principal:
    """The principal a header value names (none: anonymous)."""
    if not value:
        return ANONYMOUS
    raw = orjson.loads(value)
    return Principal(
        role=Role(raw["role"]),
        subject=raw["subject"],
        boroughs=frozenset(raw["boroughs"]),
        operator_id=raw["operator_id"],
        partner_id=raw["partner_id"],
    )


class PrincipalFromHeader(GatewayGraphQL):
    """The app's GraphQL view, except that the principal comes from the test header."""

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> RequestContext:
        return RequestContext(principal=decode(request.headers.get(HEADER)), request=request, response=response)


def app_with_test_principals(config: GatewayConfig, cache: CacheSettings | None = None) -> Starlette:
    """`create_app(config)` whose GraphQL view is a `PrincipalFromHeader`."""
    app = create_app(config, cache=cache)
    views = {id(r.endpoint): r.endpoint for r in app.routes if isinstance(getattr(r, "endpoint", None), GatewayGraphQL)}
    assert len(views) == 1, "the app should have one GraphQL view (HTTP and WebSocket)"
    (view,) = views.values()
    view.__class__ = PrincipalFromHeader
    return app


def config_for(database_url: str) -> GatewayConfig:
    """A gateway configuration for the test database: no polling, no rate limit (the access
    tests send hundreds of requests as one principal)."""
    return GatewayConfig(database_url=database_url, pseudonym_key="test-key", poll=False, rate_limit_per_minute="off")


Post = Callable[..., Awaitable[dict[str, Any]]]


async def client_for(config: GatewayConfig) -> AsyncIterator[Post]:
    """`await post(query, variables=None, principal=ANONYMOUS)` through the real app (its lifespan
    is not run: the `db` fixture owns the database)."""
    app = app_with_test_principals(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:

        async def post(
            query: str, variables: dict[str, Any] | None = None, principal: Principal = ANONYMOUS
        ) -> dict[str, Any]:
            headers = {} if principal == ANONYMOUS else {HEADER: encode(principal)}
            response = await http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
            assert response.headers["content-type"].startswith("application/json"), response.text
            return response.json()

        yield post


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------

CAMDEN = seed.CAMDEN[0]
ISLINGTON = seed.ISLINGTON[0]
AGREEMENTS = {
    "op-a": {"USAGE": ["borough", "partner"], "COMMERCIAL": ["partner"]},
    "op-b": {"USAGE": ["partner"]},
    "op-c": {"USAGE": ["borough"]},
}
# (operator, borough) of each site, in the order their sessions and CDRs start.
SITES = (
    ("op-a", CAMDEN),
    ("op-a", ISLINGTON),
    ("op-a", None),
    ("op-b", CAMDEN),
    ("op-b", ISLINGTON),
    ("op-c", CAMDEN),
    ("op-c", ISLINGTON),
)
OPERATORS = ("op-a", "op-b", "op-c")
WINDOW = {"from": (seed.NOW - timedelta(days=1)).isoformat(), "to": (seed.NOW + timedelta(days=1)).isoformat()}


@dataclass(frozen=True)
class Row:
    """A seeded row: its id and whose and where it is."""

    id: str
    operator_id: str
    borough_code: str | None = None


@dataclass(frozen=True)
class World:
    """What `seed_world` stored, each list in the order the API lists it."""

    location_ids: dict[tuple[str, str | None], str]
    sessions: list[Row]
    cdrs: list[Row]
    sync_states: list[Row]
    quarantined: list[Row]


async def seed_world() -> World:
    """Store the operators (with their agreements), boroughs, sites, sessions, CDRs, sync states
    and quarantined records of the access tests."""
    await seed.operators(*OPERATORS)
    for operator_id, agreement in AGREEMENTS.items():
        await Operator.filter(id=operator_id).update(agreement=agreement)
    await seed.boroughs(seed.CAMDEN, seed.ISLINGTON)
    sites = [
        seed.Site(op, f"L{i}", *seed.offset(100 * i, 0), borough_code=borough, evses=1, connectors=1)
        for i, (op, borough) in enumerate(SITES)
    ]
    await seed.tariffs("op-a", "STD")
    location_ids = dict(zip(SITES, await seed.sites(sites), strict=True))
    sessions, cdrs = [], []
    for i, (op, borough) in enumerate(SITES):
        start = seed.NOW + timedelta(minutes=i)
        loc = location_ids[(op, borough)]
        sid = await seed.session(op, f"S{i}", loc, start, start + timedelta(hours=1), borough_code=borough)
        cid = await seed.cdr(op, f"C{i}", loc, start, start + timedelta(hours=1), borough_code=borough)
        sessions.append(Row(sid, op, borough))
        cdrs.append(Row(cid, op, borough))
    sync_states, quarantined = [], []
    for op in OPERATORS:
        await SyncState.create(id=f"{op}:sessions", operator_id=op, module="sessions", last_success=seed.NOW)
        await QuarantinedRecord.create(
            id=f"q-{op}",
            operator_id=op,
            module="sessions",
            code="INVALID",
            reason="no id",
            raw_json="{}",
            fetched_at=seed.NOW,
        )
        sync_states.append(Row(f"{op}:sessions", op))
        quarantined.append(Row(f"q-{op}", op))
    return World(location_ids, sessions, cdrs, sync_states, quarantined)


# ---------------------------------------------------------------------------------------------
# Who sees what (by hand, from DESIGN.md and the agreements above)
# ---------------------------------------------------------------------------------------------

ADMIN = Principal(role=Role.ADMIN, subject="admin")
OPERATOR_A = Principal(role=Role.OPERATOR, subject="op-a-staff", operator_id="op-a")
PARTNER = Principal(role=Role.PARTNER, subject="partner-1", partner_id="partner-1")
CAMDEN_OFFICER = Principal(role=Role.BOROUGH, subject="camden", boroughs=frozenset({CAMDEN}))
PRINCIPALS = {
    "anonymous": ANONYMOUS,
    "admin": ADMIN,
    "operator": OPERATOR_A,
    "partner": PARTNER,
    "borough": CAMDEN_OFFICER,
}

RowKey = tuple[str, str | None]  # (operator, borough); OPERATIONS rows have no borough
_ALL_USAGE: frozenset[RowKey] = frozenset(SITES)
_ALL_OPS: frozenset[RowKey] = frozenset((op, None) for op in OPERATORS)
VISIBLE: dict[str, dict[DataClass, frozenset[RowKey]]] = {
    "admin": {DataClass.USAGE: _ALL_USAGE, DataClass.COMMERCIAL: _ALL_USAGE, DataClass.OPERATIONS: _ALL_OPS},
    # All of its own data, nothing of others'.
    "operator": {
        DataClass.USAGE: frozenset(s for s in SITES if s[0] == "op-a"),
        DataClass.COMMERCIAL: frozenset(s for s in SITES if s[0] == "op-a"),
        DataClass.OPERATIONS: frozenset({("op-a", None)}),
    },
    # USAGE of op-a and op-b, COMMERCIAL of op-a only; never OPERATIONS.
    "partner": {
        DataClass.USAGE: frozenset(s for s in SITES if s[0] in ("op-a", "op-b")),
        DataClass.COMMERCIAL: frozenset(s for s in SITES if s[0] == "op-a"),
        DataClass.OPERATIONS: frozenset(),
    },
    # USAGE of op-a and op-c (the agreements granting boroughs), in Camden only; no COMMERCIAL.
    "borough": {
        DataClass.USAGE: frozenset({("op-a", CAMDEN), ("op-c", CAMDEN)}),
        DataClass.COMMERCIAL: frozenset(),
        DataClass.OPERATIONS: frozenset(),
    },
}
