"""Abuse limits: each one rejects a request just over it (with its code) and accepts one just under.

Depth, aliases, tokens, cost, page size, the per-principal rate limit and the persisted-query
safelist; and error masking: whatever fails, a client sees only a message and a catalogue code.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from graphql import Source, TokenKind, parse
from graphql.language.lexer import Lexer

from gateway import catalog
from gateway.app import create_app
from gateway.auth import Principal, Role
from gateway.config import GatewayConfig
from gateway.db import connection
from gateway.errors import ErrorCode
from gateway.limits import Admission, RateLimiter, Refused, rate_key
from resolvers.cost import MAX_COST, estimate_cost
from resolvers.schema import MAX_ALIASES, MAX_DEPTH, MAX_TOKENS, schema

pytestmark = pytest.mark.usefixtures("db")

CATALOGUE = {code.value for code in ErrorCode}
# What must never reach a client: tracebacks, file paths, SQL, exception class names.
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|/srv/|/work/|SELECT|no_such_table|RuntimeError|OperationalError|Exception",
    re.IGNORECASE,
)


def codes(body: dict[str, Any]) -> list[str]:
    """The codes of a response's errors, each checked to be from the catalogue."""
    found = [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
    assert all(code in CATALOGUE for code in found), body
    return found


@pytest.fixture
def gateway_config(db: Any) -> GatewayConfig:
    """The test database, no operators, default limits (overrides conftest's: no caller is configured)."""
    return GatewayConfig(database_url=db.url, pseudonym_key="test-key", poll=False)


@pytest.fixture
def app_client(gateway_config: GatewayConfig) -> Any:
    """`async with app_client(client_ip=..., **settings) as http`: a client for an app built with
    the test configuration changed by `settings`, calling from `client_ip`."""

    def make(client_ip: str = "127.0.0.1", **settings: Any) -> httpx.AsyncClient:
        app = create_app(dataclasses.replace(gateway_config, **settings))
        transport = httpx.ASGITransport(app=app, client=(client_ip, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    return make


async def post(
    http: httpx.AsyncClient, query: str | None, variables: dict[str, Any] | None = None, **extra: Any
) -> Any:
    """POST a GraphQL request; the response, whose errors must all carry a catalogue code and leak nothing."""
    body: dict[str, Any] = {"variables": variables or {}, **extra}
    if query is not None:
        body["query"] = query
    response = await http.post("/graphql", json=body)
    assert not LEAKS.search(response.text), response.text
    codes(response.json())
    return response


# ---------------------------------------------------------------------------------------------
# Depth, aliases, tokens: checked before execution
# ---------------------------------------------------------------------------------------------


def nested(levels: int) -> str:
    """`location` (depth 0) with `levels` single-valued fields under it, then `id`: depth levels + 1."""
    return '{ location(id: "x") { ' + "duplicateOf { " * levels + "id" + " }" * levels + " } }"


async def test_depth_limit(graphql: Any) -> None:
    assert codes(await graphql(nested(MAX_DEPTH - 1))) == []
    over = await graphql(nested(MAX_DEPTH))
    assert codes(over) == ["GRAPHQL_VALIDATION_FAILED"] and "depth" in over["errors"][0]["message"]


async def test_alias_limit(graphql: Any) -> None:
    def aliased(n: int) -> str:
        return "{ " + " ".join(f"a{i}: operators {{ id }}" for i in range(n)) + " }"

    assert codes(await graphql(aliased(MAX_ALIASES))) == []
    over = await graphql(aliased(MAX_ALIASES + 1))
    assert codes(over) == ["GRAPHQL_VALIDATION_FAILED"] and "aliases" in over["errors"][0]["message"]


def token_count(text: str) -> int:
    lexer, count = Lexer(Source(text)), 0
    while lexer.advance().kind is not TokenKind.EOF:
        count += 1
    return count


async def test_token_limit(graphql: Any) -> None:
    def padded(n: int) -> str:  # one token per operator id in the filter
        return "{ locations(filter: {operatorIds: [" + ' "a"' * n + "]}, first: 1) { totalCount } }"

    base = token_count(padded(0))
    under, over = padded(MAX_TOKENS - base), padded(MAX_TOKENS - base + 1)
    assert token_count(under) == MAX_TOKENS and token_count(over) == MAX_TOKENS + 1
    assert codes(await graphql(under)) == []
    body = await graphql(over)
    assert codes(body) == ["GRAPHQL_PARSE_FAILED"] and "tokens" in body["errors"][0]["message"]


# ---------------------------------------------------------------------------------------------
# Cost: fields times the list sizes above them, with variables
# ---------------------------------------------------------------------------------------------

HEAVY = "locations(first: {first}) {{ edges {{ node {{ evses {{ connectors {{ tariffs {{ id }} }} }} }} }} }}"
FINE = "locations(first: $n) { edges { cursor } }"  # costs 2 + n: one unit per location


def cost_of(query: str, variables: dict[str, Any] | None = None) -> int:
    return estimate_cost(schema._schema, parse(query), variables)


def costly_query() -> tuple[str, int]:
    """A query of heavy aliased pages plus a `$n`-sized fine part; (query, n) such that its cost is
    exactly MAX_COST."""
    parts, remaining = [], MAX_COST
    while True:
        first = 100
        while first > 1 and cost_of("{ " + HEAVY.format(first=first) + " }") > remaining - 3:
            first -= 1
        part_cost = cost_of("{ " + HEAVY.format(first=first) + " }")
        if part_cost > remaining - 3:
            break
        parts.append(f"h{len(parts)}: " + HEAVY.format(first=first))
        remaining -= part_cost
        if remaining - 2 <= 100:
            break
    query = "query($n: Int!) { " + " ".join(parts) + " fine: " + FINE + " }"
    n = remaining - 2
    assert 1 <= n < 100 and len(parts) + 1 <= MAX_ALIASES
    assert cost_of(query, {"n": n}) == MAX_COST
    return query, n


def test_cost_model() -> None:
    # A connection's page multiplies its edges; unpaged lists count their estimate.
    assert cost_of("{ locations(first: 7) { totalCount edges { cursor } } }") == 1 + 1 + 1 + 7
    assert cost_of("{ locations { edges { cursor } } }") == 2 + catalog.DEFAULT_PAGE_SIZE
    assert cost_of("{ locations(first: 5000) { edges { cursor } } }") == 2 + catalog.MAX_PAGE_SIZE
    assert cost_of("query($f: Int! = 3) { locations(first: $f) { edges { cursor } } }") == 5
    # Fragments and inline fragments count where they are spread.
    inline = "{ locations(first: 4) { edges { node { id name } } } }"
    spread = (
        "{ locations(first: 4) { edges { node { ...F ... on Location { name } } } } } fragment F on Location { id }"
    )
    assert cost_of(inline) == cost_of(spread) == 2 + 4 + 8
    twice = "{ a: locations(first: 4) { edges { node { ...F } } } b: locations(first: 4) { edges { node { ...F } } } }"
    assert cost_of(twice + " fragment F on Location { id }") == 2 * (2 + 4 + 4)


async def test_cost_limit_honours_variables(graphql: Any) -> None:
    query, n = costly_query()
    assert codes(await graphql(query, {"n": n})) == []  # exactly at the limit
    body = await graphql(query, {"n": n + 1})
    assert codes(body) == ["QUERY_TOO_COMPLEX"] and body["data"] is None
    error = body["errors"][0]
    assert error["extensions"]["cost"] == MAX_COST + 1 and error["extensions"]["maxCost"] == MAX_COST
    assert f"{MAX_COST + 1}" in error["message"] and f"{MAX_COST}" in error["message"]


async def test_page_size_cap(graphql: Any) -> None:
    query = "query($first: Int!) { locations(first: $first) { totalCount } }"
    assert codes(await graphql(query, {"first": catalog.MAX_PAGE_SIZE})) == []
    over = await graphql(query, {"first": catalog.MAX_PAGE_SIZE + 1})
    assert codes(over) == ["BAD_USER_INPUT"] and str(catalog.MAX_PAGE_SIZE) in over["errors"][0]["message"]


# ---------------------------------------------------------------------------------------------
# Rate limit: per principal, HTTP 429 with Retry-After
# ---------------------------------------------------------------------------------------------

QUERY = "{ operators { id } }"


async def test_rate_limit_rejects_just_over_the_burst_with_retry_after(app_client: Any) -> None:
    async with app_client(rate_limit_per_minute=6, rate_limit_burst=3) as http:
        for _ in range(3):  # the burst: accepted
            response = await post(http, QUERY)
            assert response.status_code == 200 and "errors" not in response.json()
        limited = await post(http, QUERY)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "10"  # 6 a minute: one every 10 s
    error = limited.json()["errors"][0]
    assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 10}


async def test_rate_limit_counts_cached_answers_and_is_per_principal(app_client: Any) -> None:
    settings = {"rate_limit_per_minute": 60, "rate_limit_burst": 2, "response_cache": "on"}
    async with app_client("10.0.0.1", **settings) as first:
        transport = first._transport  # the same app, another client address
        assert [(await post(first, QUERY)).status_code for _ in range(3)] == [200, 200, 429]
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=transport.app, client=("10.0.0.2", 50000)),  # type: ignore[attr-defined]
            base_url="http://127.0.0.1",
        )
        async with other:
            assert (await post(other, QUERY)).status_code == 200  # another principal is not limited
        assert (await post(first, QUERY)).status_code == 429


def test_rate_limit_keys_and_refill() -> None:
    admin, anonymous = Principal(role=Role.ADMIN, subject="alice"), Principal()
    assert rate_key(admin, "10.0.0.1") == rate_key(admin, "10.0.0.2") == "admin:alice"
    assert rate_key(anonymous, "10.0.0.1") == "ip:10.0.0.1"
    assert rate_key(Principal(credential_error="bad token"), "10.0.0.1") == "ip:10.0.0.1"
    now = [0.0]
    admission = Admission(RateLimiter(60, 2, clock=lambda: now[0]))
    for _ in range(2):
        admission.admit(anonymous, "10.0.0.1", QUERY, None)
    with pytest.raises(Refused) as refused:
        admission.admit(anonymous, "10.0.0.1", QUERY, None)
    assert refused.value.status == 429 and refused.value.retry_after == 1
    admission.admit(admin, "10.0.0.1", QUERY, None)  # the subject has its own bucket, from the same address
    now[0] = 1.0  # one second at 60 a minute: one more request
    admission.admit(anonymous, "10.0.0.1", QUERY, None)
    with pytest.raises(Refused):
        admission.admit(anonymous, "10.0.0.1", QUERY, None)


def test_rate_limit_can_be_off() -> None:
    assert Admission.of("off", 10).limiter is None and Admission.of(0, 10).limiter is None
    assert Admission.of(120, 10).limiter is not None


# ---------------------------------------------------------------------------------------------
# Persisted-query safelist
# ---------------------------------------------------------------------------------------------

ALLOWED = "{ operators { id } }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_only(text_or_hash: str) -> dict[str, Any]:
    digest = text_or_hash if re.fullmatch(r"[0-9a-f]{64}", text_or_hash) else sha(text_or_hash)
    return {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}


@pytest.fixture(params=["json", "directory"])
def safelist_file(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "json":
        path = tmp_path / "persisted.json"
        path.write_bytes(orjson.dumps({sha(ALLOWED): ALLOWED}))
        return str(path)
    directory = tmp_path / "queries"
    directory.mkdir()
    (directory / "operators.graphql").write_text(ALLOWED + "\n")
    return str(directory)


async def test_safelist_runs_only_listed_queries(app_client: Any, safelist_file: str) -> None:
    async with app_client(persisted_queries="safelist", persisted_queries_file=safelist_file) as http:
        listed = await post(http, ALLOWED)
        assert listed.json() == {"data": {"operators": []}}
        by_hash = await post(http, None, **hash_only(ALLOWED))
        assert by_hash.json() == {"data": {"operators": []}}
        extensions = orjson.dumps(hash_only(ALLOWED)["extensions"]).decode()
        get = await http.get("/graphql", params={"extensions": extensions}, headers={"Accept": "application/json"})
        assert get.json() == {"data": {"operators": []}}
        # Just over: the same query with one more field is not on the list.
        other = await post(http, "{ operators { id name } }")
        assert codes(other.json()) == ["PERSISTED_QUERY_NOT_ALLOWED"] and other.json()["data"] is None
        unknown = await post(http, None, **hash_only("0" * 64))
        assert codes(unknown.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
        mismatch = await post(http, ALLOWED, **hash_only("{ boroughs { code } }"))
        assert codes(mismatch.json()) == ["BAD_REQUEST"]


async def test_persisted_queries_off_runs_any_text_and_asks_for_text_after_a_bare_hash(app_client: Any) -> None:
    async with app_client() as http:
        assert (await post(http, "{ operators { id name } }")).json() == {"data": {"operators": []}}
        bare = await post(http, None, **hash_only(ALLOWED))
        assert codes(bare.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_safelist_settings_are_checked(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="persisted_queries_file"):
        Admission.of("off", 1, "safelist", None)
    with pytest.raises(ValueError, match="persisted_queries must be"):
        Admission.of("off", 1, "allowlist", None)
    wrong = tmp_path / "wrong.json"
    wrong.write_bytes(orjson.dumps({"0" * 64: ALLOWED}))
    with pytest.raises(ValueError, match="SHA-256"):
        Admission.of("off", 1, "safelist", str(wrong))


# ---------------------------------------------------------------------------------------------
# Error masking
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def http(app_client: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client() as client:
        yield client


async def test_a_resolver_exception_is_masked(http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> list[Any]:
        raise RuntimeError("boom in /srv/evgate/gateway/catalog.py: SELECT token FROM session")

    monkeypatch.setattr(catalog, "operators", broken)
    body = (await post(http, "{ operators { id } }")).json()
    assert codes(body) == ["INTERNAL_SERVER_ERROR"]
    assert body["errors"][0]["message"] == "Internal server error."
    assert set(body["errors"][0]) <= {"message", "locations", "path", "extensions"}


async def test_a_database_error_is_masked(http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def bad_sql() -> list[Any]:
        return await connection().execute_query_dict("SELECT secret_column FROM no_such_table")

    monkeypatch.setattr(catalog, "operators", bad_sql)
    body = (await post(http, "{ operators { id } }")).json()
    assert codes(body) == ["INTERNAL_SERVER_ERROR"] and body["errors"][0]["message"] == "Internal server error."


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        base64.urlsafe_b64encode(b'["tariff", "x"]').decode(),  # another listing's cursor
        base64.urlsafe_b64encode(b'["location", {"$gt": "SELECT 1"}]').decode(),  # a key of the wrong type
    ],
)
async def test_a_bad_cursor_is_bad_user_input_or_masked(http: httpx.AsyncClient, cursor: str) -> None:
    query = "query($after: String) { locations(first: 2, after: $after) { edges { cursor } } }"
    body = (await post(http, query, {"after": cursor})).json()
    assert codes(body) in (["BAD_USER_INPUT"], ["INTERNAL_SERVER_ERROR"])
    assert body["errors"][0]["message"] in ("after is not a cursor returned by this field", "Internal server error.")


async def test_errors_of_every_phase_carry_a_catalogue_code(http: httpx.AsyncClient) -> None:
    for query in (
        "{ operators { id }",
        "{ operators { nope } }",
        "query($f: Int!) { locations(first: $f) { totalCount } }",
    ):
        body = (await post(http, query, {"f": "ten"})).json()
        assert body["errors"] and codes(body)
    bad = await http.post("/graphql", content=b"{", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and codes(bad.json()) == ["BAD_REQUEST"] and not LEAKS.search(bad.text)
