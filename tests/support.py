"""Helpers shared by the tests: where the shared reference folder is, and skipping without it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from aiohttp import web
from starlette.applications import Starlette

from simulator.tls import make_pki

SHARED = Path(os.environ.get("EVGATE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


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
