"""The app under a real uvicorn on 127.0.0.1: lifespan, HTTP and graphql-transport-ws."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.db import close_db, init_db
from tests import seed
from tests.support import issue_api_key, new_api_key, serve

ADMIN = new_api_key()


class StubRuntime:
    """Stands in for gateway.runtime.Runtime: owns the database, records that it was stopped."""

    def __init__(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        await close_db()
        self.stopped = True


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    return GatewayConfig(database_url=f"sqlite://{tmp_path / 'server.sqlite3'}", pseudonym_key="k", poll=False)


async def test_lifespan_without_runtime_opens_the_database(config: GatewayConfig) -> None:
    async for base in serve(create_app(config)):
        async with httpx.AsyncClient(base_url=f"http://{base}") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            body = (await http.post("/graphql", json={"query": "{ operators { id } boroughs { code } }"})).json()
            assert body == {"data": {"operators": [], "boroughs": []}}


async def test_runtime_factory_and_websocket_queries(config: GatewayConfig) -> None:
    runtimes: list[StubRuntime] = []

    async def factory(cfg: GatewayConfig) -> StubRuntime:
        await init_db(cfg.database_url)
        await seed.operators("op-a")
        (loc,) = await seed.sites([seed.Site("op-a", "L1", *seed.CENTRE)])
        await seed.session("op-a", "S1", loc, seed.NOW, seed.NOW + timedelta(hours=1))
        await issue_api_key(key=ADMIN)
        runtimes.append(StubRuntime())
        return runtimes[-1]

    query = """query($from: DateTime!, $to: DateTime!) {
      sessions(from: $from, to: $to) { edges { node { id totalCostExclVat } } }
    }"""
    variables = {"from": seed.NOW.isoformat(), "to": (seed.NOW + timedelta(hours=2)).isoformat()}

    async def over_websocket(base: str, init: dict[str, Any]) -> dict[str, Any]:
        async with websockets.connect(f"ws://{base}/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": init}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})
            )
            message = json.loads(await ws.recv())
            assert message["type"] == "next", message
            assert json.loads(await ws.recv()) == {"id": "1", "type": "complete"}
            return message["payload"]

    async for base in serve(create_app(config, runtime_factory=factory)):
        admin = await over_websocket(base, {"Authorization": f"Bearer {ADMIN}"})
        assert admin == {"data": {"sessions": {"edges": [{"node": {"id": "op-a/S1", "totalCostExclVat": 5.63}}]}}}
        assert (await over_websocket(base, {"authToken": ADMIN}))["data"]["sessions"] is not None
        anonymous = await over_websocket(base, {})
        assert anonymous["data"] == {"sessions": None}
        assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

        async with httpx.AsyncClient(base_url=f"http://{base}") as http:
            response = await http.post(
                "/graphql", json={"query": query, "variables": variables}, headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert response.json()["data"]["sessions"]["edges"][0]["node"]["id"] == "op-a/S1"
    assert runtimes and runtimes[0].stopped
