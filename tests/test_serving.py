"""Serving: TLS under a real uvicorn, CORS, security headers, production mode."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from gateway.app import create_app
from gateway.cli import _serve
from gateway.config import GatewayConfig
from gateway.errors import ErrorCode
from gateway.serving import check_tls, server_config
from simulator.tls import make_pki

ORIGIN = "https://map.example.org"
CATALOGUE = {code.value for code in ErrorCode}


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    return GatewayConfig(database_url=f"sqlite://{tmp_path / 'serving.sqlite3'}", pseudonym_key="k", poll=False)


async def serve_with(config: GatewayConfig) -> AsyncIterator[int]:
    """The app under uvicorn configured as `evgate serve` does (`server_config`), on an ephemeral
    loopback port; yields the port."""
    app = create_app(config)
    server = uvicorn.Server(server_config(app, config, "warning", host="127.0.0.1", port=0))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


async def test_tls_is_served_and_verified(config: GatewayConfig, tmp_path: Path) -> None:
    pki = make_pki(21, tmp_path / "pki")
    tls = dataclasses.replace(config, tls_certfile=str(pki.server_cert), tls_keyfile=str(pki.server_key))
    trusted = ssl.create_default_context(cafile=str(pki.ca_cert))
    async for port in serve_with(tls):
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=trusted) as https:
            health = await https.get("/healthz")
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            body = await https.post("/graphql", json={"query": "{ operators { id } }"})
            assert body.json() == {"data": {"operators": []}}
            assert body.headers["Strict-Transport-Security"].startswith("max-age=")
            assert "server" not in body.headers  # uvicorn does not advertise itself
        # Plain HTTP to the TLS port gets no answer.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get("/healthz")
        # A client that does not trust the gateway's CA refuses the connection.
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context()
        ) as other:
            with pytest.raises(httpx.ConnectError):
                await other.get("/healthz")


async def test_plain_http_has_no_hsts(config: GatewayConfig) -> None:
    async for port in serve_with(config):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get("/healthz")
    assert response.status_code == 200 and "strict-transport-security" not in response.headers


def test_tls_settings_are_checked(config: GatewayConfig, tmp_path: Path) -> None:
    pki, other = make_pki(22, tmp_path / "a"), make_pki(23, tmp_path / "b")
    assert check_tls(config) is None
    with pytest.raises(ValueError, match="both, or neither"):
        check_tls(dataclasses.replace(config, tls_certfile=str(pki.server_cert)))
    with pytest.raises(ValueError, match="does not exist"):
        check_tls(dataclasses.replace(config, tls_certfile=str(tmp_path / "no.pem"), tls_keyfile=str(pki.server_key)))
    with pytest.raises(ValueError, match="cannot be used"):  # the key of another certificate
        check_tls(dataclasses.replace(config, tls_certfile=str(pki.server_cert), tls_keyfile=str(other.server_key)))
    good = dataclasses.replace(config, tls_certfile=str(pki.server_cert), tls_keyfile=str(pki.server_key))
    server = _serve(good)  # what `evgate serve` runs
    assert server.config.ssl_certfile == str(pki.server_cert) and server.config.ssl_keyfile == str(pki.server_key)


# ---------------------------------------------------------------------------------------------
# CORS and security headers (through the ASGI app)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def asgi(config: GatewayConfig, db: Any) -> Any:
    """`async with asgi(**settings) as http`: a client for the app built with changed settings."""

    def make(**settings: Any) -> httpx.AsyncClient:
        app = create_app(dataclasses.replace(config, database_url=db.url, **settings))
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")

    return make


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_cors_allows_only_configured_origins(asgi: Any) -> None:
    async with asgi(cors_origins=[ORIGIN]) as http:
        allowed = await http.options("/graphql", headers=preflight(ORIGIN))
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
        assert set(allowed.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST", "OPTIONS"}
        assert {"authorization", "content-type"} <= {
            h.strip().lower() for h in allowed.headers["Access-Control-Allow-Headers"].split(",")
        }
        refused = await http.options("/graphql", headers=preflight("https://evil.example"))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        assert "access-control-allow-credentials" not in refused.headers
        simple = await http.post("/graphql", json={"query": "{ operators { id } }"}, headers={"Origin": ORIGIN})
        assert simple.headers["Access-Control-Allow-Origin"] == ORIGIN
        other = await http.post(
            "/graphql", json={"query": "{ operators { id } }"}, headers={"Origin": "https://evil.example"}
        )
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    async with asgi() as http:  # no origins configured: no CORS at all
        response = await http.options("/graphql", headers=preflight(ORIGIN))
        assert "access-control-allow-origin" not in response.headers


async def test_wildcard_origin_never_allows_credentials(asgi: Any) -> None:
    async with asgi(cors_origins=["*"]) as http:
        response = await http.options("/graphql", headers=preflight(ORIGIN))
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_security_headers_on_every_response(asgi: Any) -> None:
    async with asgi() as http:
        responses = {
            "graphql": await http.post("/graphql", json={"query": "{ operators { id } }"}),
            "healthz": await http.get("/healthz"),
            "missing": await http.get("/nowhere"),
            "bad request": await http.post("/graphql", content=b"{", headers={"Content-Type": "application/json"}),
            "graphiql": await http.get("/graphql", headers={"Accept": "text/html"}),
        }
        with_credentials = await http.post(
            "/graphql", json={"query": "{ operators { id } }"}, headers={"Authorization": "Bearer nobody"}
        )
    for name, response in {**responses, "credentials": with_credentials}.items():
        assert response.headers["X-Content-Type-Options"] == "nosniff", name
        assert response.headers["Referrer-Policy"] == "no-referrer", name
        assert response.headers["X-Frame-Options"] == "DENY", name
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], name
    assert responses["graphql"].headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "script-src" not in responses["graphql"].headers["Content-Security-Policy"]
    # The GraphiQL page may load its scripts and styles from unpkg.com, and query this origin.
    ide = responses["graphiql"]
    assert ide.status_code == 200 and "graphiql" in ide.text.lower()
    csp = ide.headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline' https://unpkg.com" in csp and "connect-src 'self'" in csp
    assert with_credentials.headers["Cache-Control"] == "no-store"
    assert "cache-control" not in responses["graphql"].headers


# ---------------------------------------------------------------------------------------------
# Production mode
# ---------------------------------------------------------------------------------------------

INTROSPECTION = "{ __schema { queryType { name } } }"


async def test_production_mode_has_no_graphiql_and_no_introspection(asgi: Any) -> None:
    async with asgi(production=True) as http:
        ide = await http.get("/graphql", headers={"Accept": "text/html"})
        assert ide.status_code == 404 and "graphiql" not in ide.text.lower()
        assert ide.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        for query in (INTROSPECTION, '{ __type(name: "Location") { name } }'):
            body = (await http.post("/graphql", json={"query": query})).json()
            assert body["data"] is None
            assert {e["extensions"]["code"] for e in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}
            assert "introspection" in body["errors"][0]["message"]
        works = await http.post("/graphql", json={"query": "{ __typename operators { id } }"})
        assert works.json() == {"data": {"__typename": "Query", "operators": []}}


async def test_outside_production_graphiql_and_introspection_work(asgi: Any) -> None:
    async with asgi() as http:
        ide = await http.get("/graphql", headers={"Accept": "text/html"})
        assert ide.status_code == 200 and "graphiql" in ide.text.lower()
        body = (await http.post("/graphql", json={"query": INTROSPECTION})).json()
        assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


def test_production_mode_from_the_environment(config: GatewayConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.production is False
    monkeypatch.setenv("EVGATE_PRODUCTION", "true")
    assert dataclasses.replace(config).with_env().production is True
    monkeypatch.setenv("EVGATE_PRODUCTION", "0")
    assert dataclasses.replace(config, production=True).with_env().production is False


# ---------------------------------------------------------------------------------------------
# Limits over the WebSocket too
# ---------------------------------------------------------------------------------------------


async def test_websocket_operations_are_rate_limited(config: GatewayConfig) -> None:
    limited = dataclasses.replace(config, rate_limit_per_minute=6, rate_limit_burst=2)
    answers = []
    async for port in serve_with(limited):
        async with websockets.connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            for i in range(3):
                await ws.send(
                    json.dumps({"id": str(i), "type": "subscribe", "payload": {"query": "{ operators { id } }"}})
                )
                answers.append(json.loads(await ws.recv()))
                if answers[-1]["type"] == "next":
                    assert json.loads(await ws.recv()) == {"id": str(i), "type": "complete"}
    assert [a["type"] for a in answers[:2]] == ["next", "next"]
    assert answers[0]["payload"] == {"data": {"operators": []}}
    last = answers[2]
    errors = last["payload"] if last["type"] == "error" else last["payload"]["errors"]
    assert errors[0]["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 10}
