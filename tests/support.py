"""Helpers shared by the tests: the shared reference folder, loopback servers, scripted OCPI operators,
and callers' credentials (API keys and the gateway's own tokens)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from aiohttp import web
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.auth import Role
from gateway.config import GatewayConfig, OperatorConfig
from gateway.credentials import create_api_key, create_client, make_grant
from gateway.credentials import new_api_key as new_api_key  # `ADMIN = new_api_key()`, then issue_api_key(key=ADMIN)
from gateway.db import close_db
from gateway.models import Cdr, Event, Session
from gateway.runtime import Runtime, start_runtime
from gateway.tokens import TokenService
from gateway.vault import generate_key
from simulator.cluster import Simulation
from simulator.tls import make_pki

# The key that encrypts operator secrets in test gateways (fresh per test run, never committed).
SECRET_KEYS = [generate_key()]

SHARED = Path(os.environ.get("EVGATE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


async def issue_api_key(
    role: Role | str = Role.ADMIN, *, key: str | None = None, name: str = "test", **scope: Any
) -> str:
    """An API key with `role` stored in the current database (`key`, or a new one), returned.

    `scope` is what the role is scoped to: `boroughs=[...]`, `operator_id=...`, `partner_id=...`,
    `scopes=[...]` (see `gateway.credentials.make_grant`).
    """
    return await create_api_key(name, make_grant(role, **scope), key=key)


async def mint_token(
    config: GatewayConfig,
    role: Role | str = Role.ADMIN,
    *,
    client_id: str | None = None,
    ttl: float | None = None,
    issued_at: float | None = None,
    audience: str | None = None,
    **scope: Any,
) -> str:
    """A JWT as /oauth/token would issue it, signed with the gateway's key (generated on first use,
    so `config` needs `secret_keys`), for an OAuth client registered for it in the current database."""
    grant = make_grant(role, **scope)
    client_id, _ = await create_client("test", grant, client_id=client_id)
    return await TokenService(config).mint(grant.principal(client_id), ttl=ttl, issued_at=issued_at, audience=audience)


def shared_path(*parts: str) -> Path:
    """A path under ../shared; the calling test module is skipped (never in CI) when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"{path} is missing: CI must run with ../shared beside the clone")
        pytest.skip(f"shared reference data not found at {path}", allow_module_level=True)
    return path


async def serve(app: Starlette) -> AsyncIterator[str]:
    """Run `app` under uvicorn on an ephemeral loopback port; yields "host:port", then shuts it down."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def serve_tls(app: web.Application, pki_dir: Path, seed: int = 99) -> AsyncIterator[tuple[str, str]]:
    """Serve an aiohttp app over TLS on an ephemeral loopback port, with a CA generated for it.

    Yields (base URL, CA certificate path).
    """
    pki = make_pki(seed, pki_dir)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_ssl_context())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}", str(pki.ca_cert)
    finally:
        await runner.cleanup()


def free_port() -> int:
    """An unused loopback port, for a server started as a separate process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ocpi_envelope(
    data: Any,
    *,
    status_code: int = 1000,
    timestamp: str = "2026-01-02T00:00:00Z",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OCPI response envelope around `data`."""
    body = {"data": data, "status_code": status_code, "status_message": "scripted", "timestamp": timestamp}
    return web.Response(body=orjson.dumps(body), content_type="application/json", headers=headers or {})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def scripted_operator(
    pki_dir: Path, modules: dict[str, Handler], timestamp: Callable[[], str] = lambda: "2026-01-02T00:00:00Z"
) -> AsyncIterator[tuple[str, str]]:
    """An OCPI 2.2.1 operator over TLS whose Sender endpoints are the given handlers, at `/{module}`.

    It answers the versions (`/versions`) and version details (`/2.2.1`) calls itself, with envelope
    timestamps from `timestamp` (the operator's clock). Yields (versions URL, CA certificate path).
    """
    app = web.Application()
    base: dict[str, str] = {}

    async def versions(_: web.Request) -> web.Response:
        return ocpi_envelope([{"version": "2.2.1", "url": f"{base['url']}/2.2.1"}], timestamp=timestamp())

    async def details(_: web.Request) -> web.Response:
        endpoints = [{"identifier": m, "role": "SENDER", "url": f"{base['url']}/{m}"} for m in modules]
        return ocpi_envelope({"version": "2.2.1", "endpoints": endpoints}, timestamp=timestamp())

    app.router.add_get("/versions", versions)
    app.router.add_get("/2.2.1", details)
    for module, handler in modules.items():
        app.router.add_get(f"/{module}", handler)
    async for url, ca in serve_tls(app, pki_dir):
        base["url"] = url
        yield f"{url}/versions", ca


@dataclass
class Gateway:
    """A running gateway: its base URL and its runtime (pollers driven by the test)."""

    url: str
    runtime: Runtime
    config: GatewayConfig

    async def post(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> dict:
        """The decoded GraphQL response, errors included."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=f"http://{self.url}", timeout=30) as http:
            resp = await http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def query(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> dict:
        """The `data` of a GraphQL response that must have no errors."""
        body = await self.post(query, variables, token)
        assert "errors" not in body, body["errors"]
        return body["data"]


async def running_gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    """The real app served by uvicorn on loopback, its runtime started without polling (tests
    drive `runtime.sync_all()` or the pollers themselves)."""
    holder: dict[str, Runtime] = {}

    async def factory(cfg: GatewayConfig) -> Runtime:
        holder["runtime"] = await start_runtime(cfg, poll=False)
        return holder["runtime"]

    async for url in serve(create_app(config, runtime_factory=factory)):
        yield Gateway(url, holder["runtime"], config)


async def simulated_gateway(
    database_url: str,
    operators: list[OperatorConfig],
    *,
    admin: str | None = None,
    **settings: Any,
) -> AsyncIterator[Gateway]:
    """`running_gateway` on `database_url` for simulated `operators` (`gateway.demo.
    simulated_operators`), with the shared borough boundaries and test secrets; `admin`, when
    given, is made an administrator's API key once the gateway is up."""
    await close_db()  # the runtime opens the database itself, as in production
    config = GatewayConfig(
        database_url=database_url,
        pseudonym_key="test-pseudonym-key",
        secret_keys=SECRET_KEYS,
        boroughs_geojson=str(shared_path("data", "london_boroughs_gla_wgs84.geojson")),
        operators=operators,
        poll=False,
        **settings,
    )
    async for gw in running_gateway(config):
        if admin is not None:
            await issue_api_key(key=admin)
        yield gw


async def assert_holds_exactly_the_operators_records(
    sim: Simulation, operator_id: str, start: datetime, end: datetime
) -> None:
    """The gateway's sessions and CDRs of an operator are exactly the operator's, version for version."""
    sessions = await Session.filter(operator_id=operator_id).values_list("source_id", "last_updated", "status")
    cdrs = await Cdr.filter(operator_id=operator_id).values_list("source_id", flat=True)
    started = await Event.filter(operator_id=operator_id, kind="session.started").count()
    if sim.operator(operator_id).protocol == "ocpi":
        truth = sim.truth_sessions(operator_id, start, end)
        want_sessions = {(s["id"], s["last_updated"], s["status"]) for s in truth}
        got_sessions = {(sid, at.strftime("%Y-%m-%dT%H:%M:%SZ"), status) for sid, at, status in sessions}
        want_cdrs = {c["id"] for c in sim.truth_cdrs(operator_id, start, end)}
    else:
        # OICP has no session pull: each CDR (by SessionID) is a completed session.
        truth_cdrs = sim.truth_oicp_cdrs(operator_id, start, end)
        want_cdrs = {c["SessionID"] for c in truth_cdrs}
        want_sessions = {(c["SessionID"], "COMPLETED") for c in truth_cdrs}
        got_sessions = {(sid, status) for sid, _, status in sessions}
    assert len(want_sessions) > 50 and len(want_cdrs) > 50  # enough for the comparison to mean something
    assert got_sessions == want_sessions
    assert sorted(cdrs) == sorted(want_cdrs)
    assert started == len(sessions)  # every session began once in the event log: no duplicate
