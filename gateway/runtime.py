"""The running gateway's moving parts: database, boroughs, operators and their pollers.

`start_runtime` is what the ASGI app's lifespan calls; tests call it too, with polling off, and
drive `Runtime.sync_all()` themselves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from tortoise.transactions import in_transaction

from adapters.http import HttpClient
from adapters.model import MODULES
from adapters.ocpi import OcpiAdapter
from gateway.config import GatewayConfig, OperatorConfig
from gateway.db import close_db, init_db
from gateway.geo import BoroughIndex
from gateway.ingest import Ingestor
from gateway.models import Borough, Operator
from gateway.pseudonym import Pseudonymizer
from gateway.scheduler import OperatorPoller, RunResult

log = logging.getLogger("evgate.runtime")


@dataclass
class Runtime:
    """Everything started for one gateway process."""

    config: GatewayConfig
    boroughs: BoroughIndex | None
    pollers: dict[str, OperatorPoller] = field(default_factory=dict)
    clients: list[HttpClient] = field(default_factory=list)

    async def sync_all(self, modules: tuple[str, ...] = MODULES) -> dict[tuple[str, str], RunResult]:
        """One catch-up run of every operator's modules: operators side by side, as their pollers
        run, and each operator's modules in order (locations first)."""

        async def one(poller: OperatorPoller) -> dict[tuple[str, str], RunResult]:
            done = {}
            for module in modules:
                if module in poller.config.modules:
                    done[(poller.config.id, module)] = await poller.sync_module(module)  # type: ignore[arg-type]
            return done

        results: dict[tuple[str, str], RunResult] = {}
        for done in await asyncio.gather(*(one(p) for p in self.pollers.values())):
            results.update(done)
        return results

    async def stop(self) -> None:
        """Stop polling, release HTTP pools, close the database."""
        for poller in self.pollers.values():
            await poller.stop()
        for client in self.clients:
            await client.close()
        await close_db()


async def load_boroughs(index: BoroughIndex) -> None:
    """Store the borough boundaries so that queries can name and filter by borough."""
    rows = [Borough(gss_code=b.gss_code, name=b.name, geometry=b.geojson) for b in index.boroughs]
    async with in_transaction() as conn:
        await Borough.bulk_create(rows, on_conflict=["gss_code"], update_fields=["name", "geometry"], using_db=conn)


async def register_operator(op: OperatorConfig) -> None:
    """Record an operator from configuration (its credentials stay in configuration)."""
    await Operator.update_or_create(
        id=op.id,
        defaults={
            "name": op.name,
            "protocol": op.protocol,
            "base_url": op.url,
            "cadences": op.cadences,
        },
    )


def build_poller(
    op: OperatorConfig, boroughs: BoroughIndex | None, pseudonymize: Pseudonymizer
) -> tuple[OperatorPoller, HttpClient]:
    """The adapter, ingestor and poller of one operator."""
    if op.protocol != "ocpi":
        raise ValueError(f"operator {op.id}: protocol {op.protocol!r} is not supported yet")
    client = HttpClient(ca_bundle=op.ca_bundle, timeout=op.timeout)
    adapter = OcpiAdapter(
        client,
        versions_url=op.versions_url,
        token=op.token,
        token_encoding=op.token_encoding,
        page_limit=op.page_limit,
    )
    return OperatorPoller(op, adapter, Ingestor(op.id, op.protocol, boroughs, pseudonymize)), client


async def start_runtime(config: GatewayConfig, *, poll: bool | None = None) -> Runtime:
    """Initialise storage and operators; start polling unless `poll` (or the config) says not to."""
    await init_db(config.database_url)
    path = config.boroughs_path()
    boroughs = None
    if path.exists():
        boroughs = BoroughIndex.from_geojson(path)
        await load_boroughs(boroughs)
    else:
        log.warning("borough boundaries not found at %s: locations will have no borough", path)
    runtime = Runtime(config=config, boroughs=boroughs)
    pseudonymize = Pseudonymizer(config.pseudonym_key)
    for op in config.operators:
        await register_operator(op)
        poller, client = build_poller(op, boroughs, pseudonymize)
        runtime.pollers[op.id] = poller
        runtime.clients.append(client)
    if config.poll if poll is None else poll:
        for poller in runtime.pollers.values():
            poller.start()
    return runtime
