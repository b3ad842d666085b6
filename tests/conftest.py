"""Shared fixtures: a real database (SQLite and PostgreSQL), the ASGI app and an HTTP client for it.

`db` is parametrised: every test that uses it runs once on SQLite (a temporary file) and once on
PostgreSQL. For PostgreSQL one uniquely named database (`evgate_test_<random>`) is created per
test session on the server at `EVGATE_TEST_POSTGRES` (default
`postgres://postgres@127.0.0.1:5432/test`) and dropped at the end; each test starts from empty
tables. When PostgreSQL is unreachable those tests are skipped with the reason, except when
`CI=true`, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from tortoise import Tortoise

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.db import close_db, connection, init_db
from tests.response_audit import AUDIT, ResponseAudit, install
from tests.support import SECRET_KEYS, issue_api_key, new_api_key

T = TypeVar("T")

POSTGRES_ADMIN_URL = os.environ.get("EVGATE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
ADMIN_TOKEN = new_api_key()  # stored in the test database by the `admin_token` fixture
IN_CI = os.environ.get("CI", "").lower() == "true"


def run_in_thread(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion on a private event loop (usable inside or outside a loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)  # type: ignore[arg-type]
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database for this test session (dropped afterwards)."""
    name = f"evgate_test_{secrets.token_hex(6)}"

    async def create() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    try:
        run_in_thread(create())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc!r}"
        if IN_CI:
            pytest.fail(reason + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    try:
        yield _with_database(POSTGRES_ADMIN_URL, name)
    finally:
        run_in_thread(drop())


@dataclass(frozen=True)
class TestDb:
    """The database a test runs against."""

    __test__ = False  # a fixture value, not a test class

    kind: str  # "sqlite" or "postgres"
    url: str


async def _empty_tables() -> None:
    conn = connection()
    tables = [f'"{model._meta.db_table}"' for model in Tortoise.apps.get_models_iterable()]
    if conn.capabilities.dialect == "postgres":
        await conn.execute_script(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
    else:
        for table in tables:
            await conn.execute_script(f"DELETE FROM {table}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[TestDb]:
    """An initialised, empty database: once SQLite (temporary file), once PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'evgate.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    await init_db(url)
    await _empty_tables()
    try:
        yield TestDb(request.param, url)
    finally:
        await close_db()


@pytest.fixture
def gateway_config(db: TestDb) -> GatewayConfig:
    """A configuration for the test database, with no operators (and a secret key, to sign tokens)."""
    return GatewayConfig(database_url=db.url, pseudonym_key="test-key", secret_keys=SECRET_KEYS, poll=False)


@pytest.fixture
async def admin_token(db: TestDb) -> str:
    """An administrator's API key, stored in the test database: the bearer token of an admin."""
    return await issue_api_key(key=ADMIN_TOKEN)


@pytest.fixture
async def client(gateway_config: GatewayConfig) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the real ASGI app (its lifespan is not run: `db` owns the database)."""
    app = create_app(gateway_config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http


GraphQL = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def graphql(client: httpx.AsyncClient) -> GraphQL:
    """`await graphql(query, variables=None, token=None, authorization=None)`: POST to /graphql
    through the real app and return the decoded body (`token` becomes a Bearer header)."""

    async def post(
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        authorization: str | None = None,
    ) -> dict[str, Any]:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if authorization is not None:
            headers["Authorization"] = authorization
        body = {"query": query, "variables": variables or {}}
        response = await client.post("/graphql", json=body, headers=headers)
        assert response.headers["content-type"].startswith("application/json"), response.text
        return response.json()

    return post


# ---------------------------------------------------------------------------------------------
# The response audit (tests/response_audit.py): no gateway response of the run carries a
# driver's raw token or an operator credential.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def response_audit() -> Iterator[ResponseAudit]:
    """Record every gateway response and every secret the simulators make, for the whole run."""
    patcher = pytest.MonkeyPatch()
    # The specification's example tokens, which several tests ingest.
    AUDIT.register("123abc", "012345678", "DE8ACC12E46L89", "NL-TST-C12345678-S")
    install(patcher.setattr)
    try:
        yield AUDIT
    finally:
        patcher.undo()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any gateway response carried a registered secret."""
    found = sorted(set(AUDIT.findings()))
    if found:
        lines = "\n".join(f"  {url}: {secret[:4]}…" for url, secret in found[:20])
        session.config.get_terminal_writer().line(
            f"\nresponse audit: {len(found)} gateway response(s) carried a secret:\n{lines}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif AUDIT.bodies:
        session.config.get_terminal_writer().line(
            f"\nresponse audit: {len(AUDIT.bodies)} gateway responses, {len(AUDIT.secrets)} secrets: none leaked"
        )
