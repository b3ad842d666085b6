"""The GraphQL response cache: repeated queries cost no SQL, a committed ingest window invalidates
them, principals never share entries, errors are never cached, and it can be turned off.

Real app over HTTP (ASGI), real database (SQLite and PostgreSQL), and for invalidation a real
scripted OCPI operator over TLS polled by the real scheduler.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.cache import CacheSettings, ResponseCache, bump_data_version, data_version
from gateway.config import GatewayConfig, OperatorConfig
from gateway.db import close_db
from gateway.runtime import start_runtime
from tests import seed
from tests.conftest import TestDb
from tests.support import SECRET_KEYS, ocpi_envelope, scripted_operator, shared_path
from tests.test_no_n_plus_one import count_queries

LOCATION = orjson.loads(shared_path("fixtures", "ocpi", "2.2.1", "location_example.json").read_bytes())

NESTED = """query($first: Int!) {
  locations(first: $first) { edges { node {
    id name borough { name } evses { uid status connectors { standard tariffs { id } } }
  } } }
}"""
SESSIONS = """query($from: DateTime!, $to: DateTime!) {
  sessions(from: $from, to: $to) { edges { node { id kwh totalCostExclVat } } }
}"""
WINDOW = {"from": seed.NOW.isoformat(), "to": (seed.NOW + timedelta(hours=3)).isoformat()}
LONG_TTL = CacheSettings(ttl=600.0)  # the tests must not depend on how fast the machine is


class Api:
    """POST /graphql through a real app; returns the raw body, so answers can be compared byte for byte."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def raw(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> bytes:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.content

    async def __call__(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> Any:
        return orjson.loads(await self.raw(query, variables, token))


def app_cache(app: Any) -> ResponseCache:
    """The response cache of an app made by `create_app`."""
    route = next(r for r in app.routes if getattr(r, "path", None) == "/graphql" and hasattr(r.endpoint, "cache"))
    return route.endpoint.cache


@pytest.fixture
async def api(gateway_config: GatewayConfig) -> AsyncIterator[tuple[Api, ResponseCache]]:
    app = create_app(gateway_config, cache=LONG_TTL)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        yield Api(http), app_cache(app)


async def seed_sites() -> str:
    await seed.operators("op-a")
    await seed.boroughs(seed.WESTMINSTER)
    await seed.tariffs("op-a", "STD")
    (loc, _) = await seed.sites([seed.Site("op-a", "L1", *seed.CENTRE), seed.Site("op-a", "L2", *seed.offset(50, 0))])
    return loc


async def test_a_repeated_query_is_answered_from_the_cache_without_sql(
    db: TestDb, api: tuple[Api, ResponseCache]
) -> None:
    call, cache = api
    await seed_sites()
    with count_queries() as first_sql:
        first = await call.raw(NESTED, {"first": 10})
    with count_queries() as second_sql:
        second = await call.raw(NESTED, {"first": 10})
    assert len(first_sql) > 0 and second_sql == []
    assert second == first and "errors" not in orjson.loads(first)
    assert (cache.hits, len(cache)) == (1, 1)

    # Formatting and comments do not matter; variables do.
    reformatted = "# the map\n" + " ".join(NESTED.split())
    with count_queries() as reformatted_sql:
        assert await call.raw(reformatted, {"first": 10}) == first
    assert reformatted_sql == []
    with count_queries() as other_sql:
        assert len((await call(NESTED, {"first": 1}))["data"]["locations"]["edges"]) == 1
    assert len(other_sql) > 0


async def test_principals_never_share_entries(db: TestDb, api: tuple[Api, ResponseCache], admin_token: str) -> None:
    call, _ = api
    loc = await seed_sites()
    await seed.session("op-a", "S1", loc, seed.NOW, seed.NOW + timedelta(hours=1))

    admin = await call(SESSIONS, WINDOW, token=admin_token)
    assert [e["node"]["id"] for e in admin["data"]["sessions"]["edges"]] == ["op-a/S1"]
    with count_queries() as cached_sql:
        assert await call(SESSIONS, WINDOW, token=admin_token) == admin
    assert [q for q in cached_sql if '"api_key"' not in q] == []  # only the key is read: never cached

    # The same query from anyone else is run for them, and refused: never the administrator's answer.
    for token in (None, "not-the-admin-token"):
        other = await call(SESSIONS, WINDOW, token=token)
        assert other["data"] == {"sessions": None}
        assert [e["extensions"]["code"] for e in other["errors"]] == ["UNAUTHENTICATED"]

    # Open data cached for an anonymous caller is not served to the administrator from that entry.
    await call(NESTED, {"first": 10})
    with count_queries() as admin_sql:
        await call(NESTED, {"first": 10}, token=admin_token)
    assert len(admin_sql) > 0


async def test_responses_with_errors_are_never_cached(db: TestDb, api: tuple[Api, ResponseCache]) -> None:
    call, cache = api
    await seed_sites()
    partly_refused = """query($from: DateTime!, $to: DateTime!) {
      operators { id } sessions(from: $from, to: $to) { edges { node { id } } }
    }"""
    for _ in range(2):
        with count_queries() as sql:
            body = await call(partly_refused, WINDOW)
        assert body["data"]["operators"] == [{"id": "op-a"}] and body["errors"]
        assert len(sql) > 0  # run again each time: the error is not cached
    bad_input = await call(NESTED, {"first": 1000})
    assert bad_input["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    syntax = await call("{ locations { edges ")
    assert syntax["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert len(cache) == 0


async def test_a_burst_of_identical_queries_runs_the_query_once(db: TestDb, api: tuple[Api, ResponseCache]) -> None:
    call, _ = api
    await seed_sites()
    with count_queries() as alone:
        expected = await call.raw(NESTED, {"first": 5})
    with count_queries() as burst:
        bodies = await asyncio.gather(*(call.raw(NESTED, {"first": 1}) for _ in range(10)))
    assert len(set(bodies)) == 1 and bodies[0] != expected
    assert len(burst) == len(alone)  # one execution, nine answers waited for it
    # A burst whose answer cannot be cached (it has errors) is answered, each request by itself.
    partly_refused = """query($from: DateTime!, $to: DateTime!) {
      a: sessions(from: $from, to: $to) { edges { node { id } } } operators { id }
    }"""
    answers = await asyncio.gather(*(call(partly_refused, WINDOW) for _ in range(3)))
    assert all(a["data"]["operators"] == [{"id": "op-a"}] and a["errors"] for a in answers)


async def test_the_cache_can_be_turned_off(db: TestDb, gateway_config: GatewayConfig) -> None:
    assert not CacheSettings.of("off", 3, 64).enabled
    assert not CacheSettings.of(False, 3, 64).enabled
    assert not CacheSettings.of("on", 0, 64).enabled
    assert not CacheSettings.of("on", 3, 0).enabled
    assert CacheSettings.of("on", 3, 64).enabled
    await seed_sites()
    app = create_app(gateway_config, cache=CacheSettings(enabled=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        call = Api(http)
        first = await call.raw(NESTED, {"first": 10})
        with count_queries() as sql:
            assert await call.raw(NESTED, {"first": 10}) == first
    assert len(sql) > 0


# ---------------------------------------------------------------------------------------------
# Invalidation by a committed ingest window
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def operator(tmp_path: Path) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """An OCPI operator publishing one location (the specification's example); the test changes
    `state["location"]` and moves the operator's clock `state["now"]`."""
    state: dict[str, Any] = {"location": copy.deepcopy(LOCATION), "now": "2026-01-02T00:00:00Z"}

    async def locations(_: web.Request) -> web.Response:
        return ocpi_envelope([state["location"]], timestamp=state["now"], headers={"X-Total-Count": "1"})

    async for versions_url, ca in scripted_operator(tmp_path / "pki", {"locations": locations}, lambda: state["now"]):
        yield versions_url, ca, state


async def test_a_committed_ingest_window_invalidates_cached_answers(
    db: TestDb, operator: tuple[str, str, dict[str, Any]]
) -> None:
    versions_url, ca, state = operator
    await close_db()  # the runtime opens the database itself, as in production
    op = OperatorConfig(id="be", name="BeCharged", url=versions_url, token="t", ca_bundle=ca)
    config = GatewayConfig(database_url=db.url, pseudonym_key="k", secret_keys=SECRET_KEYS, operators=[op], poll=False)
    runtime = await start_runtime(config, poll=False)
    try:
        await runtime.pollers["be"].sync_module("locations")
        app = create_app(config, cache=LONG_TTL)
        query = '{ location(id: "be/LOC1") { name evses { uid status } } }'
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
            call = Api(http)
            before = await call(query)
            assert before["data"]["location"]["name"] == "Gent Zuid"
            assert before["data"]["location"]["evses"][0]["status"] == "AVAILABLE"
            with count_queries() as cached_sql:
                assert await call(query) == before
            assert cached_sql == []

            # The operator renames the site and an EVSE starts charging; the next poll commits it.
            changed = state["location"]
            changed.update(name="Gent Zuid Station", last_updated="2026-01-02T00:30:00Z")
            changed["evses"][0].update(status="CHARGING", last_updated="2026-01-02T00:30:00Z")
            state["now"] = "2026-01-02T01:00:00Z"
            version = data_version()
            result = await runtime.pollers["be"].sync_module("locations")
            assert result.windows == 1 and result.ingest.written > 0
            assert data_version() > version

            after = await call(query)
            assert after["data"]["location"]["name"] == "Gent Zuid Station"
            assert after["data"]["location"]["evses"][0]["status"] == "CHARGING"
    finally:
        await runtime.stop()


# ---------------------------------------------------------------------------------------------
# The cache itself: versions, expiry, bounds, what is cacheable
# ---------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_and_a_data_change_hides_them() -> None:
    clock = Clock()
    cache = ResponseCache(CacheSettings(ttl=3.0), max_tokens=2000, clock=clock)
    key = cache.key("{ operators { id } }", None, None, None, "anonymous")
    assert key is not None
    cache.put(key, b"one", data_version())
    assert cache.get(key) == b"one"
    clock.now = 3.0
    assert cache.get(key) is None and len(cache) == 0  # expired

    cache.put(key, b"two", data_version())
    bump_data_version()
    assert cache.get(key) is None  # the data changed since it was computed

    started = data_version()
    bump_data_version()  # a commit while the query ran: its answer may predate it
    cache.put(key, b"three", started)
    assert cache.get(key) is None and len(cache) == 0


def test_size_is_bounded_least_recently_used_first() -> None:
    cache = ResponseCache(
        CacheSettings(max_entries=3, max_bytes=1000, max_entry_bytes=400), max_tokens=2000, clock=Clock()
    )
    keys = [cache.key(f"{{ a{i}: operators {{ id }} }}", None, None, None, "anonymous") for i in range(5)]
    version = data_version()
    for key in keys[:3]:
        cache.put(key, b"x" * 100, version)
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], b"x" * 100, version)
    assert [cache.get(k) is not None for k in keys[:4]] == [True, False, True, True]
    cache.put(keys[4], b"x" * 500, version)  # bigger than one entry may be: not stored
    assert cache.get(keys[4]) is None
    cache.put(keys[4], b"x" * 400, version)
    assert len(cache) == 3 and cache.size_bytes <= 1000


def test_only_queries_that_parse_are_cacheable() -> None:
    cache = ResponseCache(CacheSettings(), max_tokens=50, clock=Clock())
    assert cache.key("{ operators { id } }", None, None, None, "anonymous") is not None
    assert cache.key("mutation { register(id: 1) { id } }", None, None, None, "anonymous") is None
    assert cache.key("subscription { events { id } }", None, None, None, "anonymous") is None
    assert cache.key("{ operators { id }", None, None, None, "anonymous") is None  # syntax error
    assert cache.key("{ " + "operators { id } " * 20 + "}", None, None, None, "anonymous") is None  # too many tokens
    two = "query A { operators { id } } mutation B { register { id } }"
    assert cache.key(two, None, "A", None, "anonymous") is not None
    assert cache.key(two, None, "B", None, "anonymous") is None
    assert cache.key(two, None, None, None, "anonymous") is None  # which one runs is an error
    # Variables are compared as values, whatever their key order.
    assert cache.key("{ x }", {"a": 1, "b": 2}, None, None, "p") == cache.key(
        "{ x }", {"b": 2, "a": 1}, None, None, "p"
    )
    assert cache.key("{ x }", {"a": 1}, None, None, "p") != cache.key("{ x }", {"a": 1}, None, None, "q")
    # What cannot be keyed small and reliably is not cached.
    assert cache.key("{ x }", {"ids": ["x" * 100] * 200}, None, None, "p") is None
    assert cache.key("{ x }", {"at": object()}, None, None, "p") is None
    assert cache.key("{ x }", None, None, None, ["unhashable"]) is None
