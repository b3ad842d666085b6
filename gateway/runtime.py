"""The running gateway's moving parts: database, boroughs, operators and their pollers.

`start_runtime` is what the ASGI app's lifespan calls; tests call it too, with polling off, and
drive `Runtime.sync_all()` themselves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tortoise.transactions import in_transaction

from adapters.http import HttpClient
from adapters.model import MODULES
from adapters.ocm import OcmAdapter
from adapters.ocpi import OcpiAdapter
from adapters.oicp import OicpAdapter
from gateway.broker import Broker, InProcessBroker
from gateway.cache import bump_data_version
from gateway.config import GatewayConfig, OperatorConfig
from gateway.db import close_db, init_db
from gateway.dedupe import mark_duplicates
from gateway.geo import BoroughIndex
from gateway.ingest import Ingestor
from gateway.lease import Lease, process_identity
from gateway.models import Borough, Operator
from gateway.pseudonym import Pseudonymizer
from gateway.scheduler import Adapter, OperatorPoller, RunResult
from gateway.vault import SecretError, SecretStore

log = logging.getLogger("evgate.runtime")


@dataclass
class Runtime:
    """Everything started for one gateway process."""

    config: GatewayConfig
    boroughs: BoroughIndex | None
    pollers: dict[str, OperatorPoller] = field(default_factory=dict)
    clients: list[HttpClient] = field(default_factory=list)
    # Commit notifications (in-process, or Redis across processes) and this process's identity
    # as a lease holder (gateway.lease).
    broker: Broker = field(default_factory=InProcessBroker)
    holder: str = field(default_factory=process_identity)

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
            await poller.stop()  # releases its lease, if it held one
        await self.broker.stop()
        for client in self.clients:
            await client.close()
        await close_db()


async def load_boroughs(index: BoroughIndex) -> None:
    """Store the borough boundaries so that queries can name and filter by borough."""
    rows = [Borough(gss_code=b.gss_code, name=b.name, geometry=b.geojson) for b in index.boroughs]
    async with in_transaction() as conn:
        await Borough.bulk_create(rows, on_conflict=["gss_code"], update_fields=["name", "geometry"], using_db=conn)


async def register_operator(op: OperatorConfig) -> None:
    """Record an operator from configuration, with its data-sharing agreement (its credentials go
    to the vault, not here). Bumps the data version: responses cached under the old agreement
    must not be served any more."""
    await Operator.update_or_create(
        id=op.id,
        defaults={
            "name": op.name,
            "protocol": op.protocol,
            "base_url": op.url,
            "cadences": op.cadences,
            "agreement": op.agreement,
        },
    )
    bump_data_version()


def configured_secrets(op: OperatorConfig) -> dict[str, str]:
    """The secrets an operator's configuration gives (a client key is read from its PEM file)."""
    given = {"token": op.token, "api_key": op.api_key}
    if op.client_key:
        given["client_key"] = Path(op.client_key).read_text()
    return {name: value for name, value in given.items() if value}


async def bootstrap_secrets(op: OperatorConfig, vault: SecretStore) -> None:
    """Move the secrets given in configuration into the encrypted store, which is what adapters
    are built from."""
    for name, value in configured_secrets(op).items():
        await vault.put(op.id, name, value)


async def build_adapter(op: OperatorConfig, vault: SecretStore | None) -> tuple[Adapter, HttpClient]:
    """The protocol adapter of one operator, with its credentials decrypted from the vault."""

    async def secret(name: str, required: bool) -> str | None:
        value = await vault.get(op.id, name) if vault is not None else None
        if value is None and required:
            raise SecretError(f"operator {op.id}: no {name} stored (evgate secrets set {op.id} {name})")
        return value

    if op.protocol == "oicp":
        if not (op.client_cert and op.provider_id):
            raise ValueError(f"operator {op.id}: OICP needs provider_id and client_cert")
        key = await secret("client_key", required=True)
        client = HttpClient(ca_bundle=op.ca_bundle, timeout=op.timeout, client_cert=(op.client_cert, key.encode()))
        return OicpAdapter(client, base_url=op.url, provider_id=op.provider_id, page_size=op.page_limit), client
    client = HttpClient(ca_bundle=op.ca_bundle, timeout=op.timeout)
    if op.protocol == "ocm":
        api_key = await secret("api_key", required=True)
        adapter: Adapter = OcmAdapter(
            client, base_url=op.url, api_key=api_key, bounding_box=op.bounding_box, page_size=op.page_limit
        )
        return adapter, client
    token = await secret("token", required=False)  # open-data OCPI feeds need none (UK PCPR)
    adapter = OcpiAdapter(
        client,
        versions_url=op.url,
        token=token,
        token_encoding=op.token_encoding,
        auth_header=op.auth_header,
        auth_scheme=op.auth_scheme,
        link_origins=op.link_origins,
        page_limit=op.page_limit,
    )
    return adapter, client


def make_broker(config: GatewayConfig) -> Broker:
    """The configured broker: in-process, or Redis for several gateway processes."""
    if config.broker == "redis":
        from gateway.broker_redis import RedisBroker  # redis is only imported when configured

        return RedisBroker(config.redis_url, config.redis_channel)
    return InProcessBroker()


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
    runtime = Runtime(config=config, boroughs=boroughs, broker=make_broker(config))
    await runtime.broker.start()
    polling = config.poll if poll is None else poll
    pseudonymize = Pseudonymizer(config.pseudonym_key)
    vault = SecretStore(config.secret_keys) if config.secret_keys else None
    for op in config.operators:
        await register_operator(op)
        if vault is not None:
            await bootstrap_secrets(op, vault)
        elif op.token or op.api_key or op.client_key:
            raise SecretError(f"operator {op.id} has credentials but no secret key is configured to store them")
        adapter, client = await build_adapter(op, vault)
        runtime.clients.append(client)
        # Polling processes share each operator through a lease; tests driving `sync_all` need none.
        lease = Lease(op.id, runtime.holder, config.lease_ttl) if polling else None
        runtime.pollers[op.id] = OperatorPoller(
            op,
            adapter,
            Ingestor(op.id, op.protocol, boroughs, pseudonymize),
            lease=lease,
            publish=runtime.broker.publish,
        )
    # A full pass repairs marks that concurrent windows (PostgreSQL) or a changed configuration left.
    await mark_duplicates()
    if polling:
        for poller in runtime.pollers.values():
            poller.start()
    return runtime
