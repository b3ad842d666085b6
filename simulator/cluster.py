"""Start a whole simulation on 127.0.0.1: one server per operator, one PKI, one clock.

Operators speak OCPI 2.2.1 by default; the last `oicp_operators` of them are served as OICP 2.3
(mutual TLS: each gets a client certificate from the simulation CA), and `ocm=True` adds an Open
Charge Map source over the whole world (operator id "ocm").

`Simulation` also answers for the ground truth: what a complete crawl of an operator's module
with given date filters returns at the current simulated time (in OCPI form for OCPI and OICP
operators alike), what an OICP pull or the OCM POI list returns, and which OCM POIs duplicate
which operator sites, so tests can compare the gateway (or a hand-written client) against it.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from simulator.clock import SimClock, to_ts
from simulator.control import ControlServer
from simulator.data import World, build_world
from simulator.faults import FaultPlan, Faults
from simulator.ocm_server import OcmServer
from simulator.ocpi_server import MODULES, OcpiServer
from simulator.ocpi_views import OperatorViews, Selection
from simulator.oicp_server import OicpServer
from simulator.tls import Pki, make_client_cert, make_pki, make_rogue_pki

Server = OcpiServer | OicpServer | OcmServer
OCM_ID = "ocm"


@dataclass(frozen=True, slots=True)
class SimOperator:
    """What a client needs to reach one simulated operator (or the OCM source).

    `url` is the protocol's entry point: the OCPI versions URL (also in `versions_url`), the OICP
    base URL (`.../api/oicp`) or the OCM API base (`.../v3`). OCPI operators have a token; OICP
    ones a provider id and a client certificate with its key (PEM paths); OCM an API key.
    """

    id: str
    name: str
    country_code: str
    party_id: str | None
    versions_url: str | None
    token: str | None
    token_encoding: str  # "base64" or "raw"
    port: int
    protocol: str = "ocpi"
    url: str = ""
    provider_id: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    api_key: str | None = None
    # How an OCPI operator wants its token sent (simulator.ocpi_variants.OcpiQuirks).
    auth_header: str = "Authorization"
    auth_scheme: str = "Token"
    ocpi_version: str | None = None


@dataclass(eq=False)
class Simulation:
    """Running operator servers plus truth helpers; `await stop()` when done."""

    pki: Pki
    operators: list[SimOperator]
    clock: SimClock
    world: World
    servers: list[Server] = field(repr=False)  # in the order of `operators`
    rogue_pki: Pki | None = None
    _tmpdir: Path | None = field(default=None, repr=False)
    # Fault injection per operator id (simulator.faults), and the admin endpoint that drives it.
    faults: dict[str, Faults] = field(default_factory=dict, repr=False)
    control: ControlServer | None = None

    @property
    def ca_path(self) -> Path:
        """The CA certificate a client must trust (PEM)."""
        return self.pki.ca_cert

    def operator(self, operator_id: str) -> SimOperator:
        """The operator with this id (KeyError if unknown)."""
        for op in self.operators:
            if op.id == operator_id:
                return op
        raise KeyError(operator_id)

    def server(self, operator_id: str) -> Server:
        """The running server of an operator, or of "ocm" (KeyError if unknown)."""
        for op, server in zip(self.operators, self.servers, strict=True):
            if op.id == operator_id:
                return server
        raise KeyError(operator_id)

    def oicp_server(self, operator_id: str) -> OicpServer:
        """The server of an OICP operator (KeyError if there is no such OICP operator)."""
        server = self.server(operator_id)
        if not isinstance(server, OicpServer):
            raise KeyError(f"{operator_id} is not an OICP operator")
        return server

    def ocm_server(self) -> OcmServer:
        """The Open Charge Map server (KeyError unless started with ocm=True)."""
        server = self.server(OCM_ID)
        assert isinstance(server, OcmServer)
        return server

    def _views(self, operator_id: str) -> OperatorViews:
        """The OCPI views behind an OCPI or OICP operator."""
        server = self.server(operator_id)
        if isinstance(server, OcpiServer):
            return server.views
        if isinstance(server, OicpServer):
            return server.views.ocpi
        raise ValueError(f"{operator_id} has no OCPI modules")

    def truth(
        self,
        operator_id: str,
        module: str,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Everything a complete crawl of `module` with these filters returns now, in order, as
        decoded JSON (date_from is optional here even for sessions)."""
        selection = self._select(operator_id, module, date_from, date_to)
        return orjson.loads(orjson.dumps(selection.items(0, selection.total)))

    def truth_locations(
        self, operator_id: str, date_from: datetime | None = None, date_to: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The OCPI Location objects visible now (optionally filtered on last_updated)."""
        return self.truth(operator_id, "locations", date_from, date_to)

    def truth_sessions(
        self, operator_id: str, date_from: datetime | None = None, date_to: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The OCPI Session objects (their current versions) visible now."""
        return self.truth(operator_id, "sessions", date_from, date_to)

    def truth_cdrs(
        self, operator_id: str, date_from: datetime | None = None, date_to: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The OCPI CDRs visible now."""
        return self.truth(operator_id, "cdrs", date_from, date_to)

    def truth_tariffs(
        self, operator_id: str, date_from: datetime | None = None, date_to: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The OCPI Tariffs visible now."""
        return self.truth(operator_id, "tariffs", date_from, date_to)

    def count(
        self,
        operator_id: str,
        module: str,
        date_from: datetime | None = None,
        date_to: datetime | None = None,
    ) -> int:
        """How many records a complete crawl with these filters returns now (= X-Total-Count)."""
        return self._select(operator_id, module, date_from, date_to).total

    def _select(self, operator_id: str, module: str, date_from: datetime | None, date_to: datetime | None) -> Selection:
        if module not in MODULES:
            raise ValueError(f"unknown module {module!r}")
        lo, hi = to_ts(date_from), to_ts(date_to)
        view = self._views(operator_id).module(module)
        return view.select(
            self.clock.now_s(),
            None if lo is None else math.ceil(lo),
            None if hi is None else math.ceil(hi),
        )

    def truth_oicp_evse_data(self, operator_id: str, last_call: datetime | None = None) -> list[dict[str, Any]]:
        """Every record a complete OICP PullEvseData (a delta pull with `last_call`) returns now."""
        return self.oicp_server(operator_id).truth_evse_data(last_call)

    def truth_oicp_statuses(self, operator_id: str) -> dict[str, str]:
        """EvseID -> OICP EvseStatus as PullEvseStatus reports them now."""
        return self.oicp_server(operator_id).truth_statuses()

    def truth_oicp_cdrs(self, operator_id: str, date_from: datetime, date_to: datetime) -> list[dict[str, Any]]:
        """The OICP ChargeDetailRecords GetChargeDetailRecords returns now for [date_from, date_to)."""
        return self.oicp_server(operator_id).truth_cdrs(date_from, date_to)

    def truth_ocm_pois(self, modified_since: datetime | None = None) -> list[dict[str, Any]]:
        """Every OCM POI visible now (DateLastStatusUpdate >= modified_since if given), by ID."""
        return self.ocm_server().truth_pois(modified_since)

    def ocm_duplicates(self) -> dict[int, tuple[str, str]]:
        """OCM POI ID -> (operator id, location id) of every POI that duplicates an operator site."""
        return self.ocm_server().duplicates()

    async def stop(self) -> None:
        """Stop every server and remove the PKI directory if the simulation created it."""
        if self.control is not None:
            await self.control.stop()
        for faults in self.faults.values():
            await faults.close()  # releases responses held by a `timeout` fault
        for server in self.servers:
            await server.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


async def start_simulation(
    seed: int = 42,
    operators: int = 3,
    evses: int = 1500,
    speed: float = 0.0,
    lag: timedelta = timedelta(hours=24),
    history_days: int = 3,
    page_limit: int = 100,
    pki_dir: Path | None = None,
    start: datetime | None = None,
    rogue_tls: bool = False,
    *,
    boroughs_geojson: Path | None = None,
    demand_scale: float = 1.0,
    oicp_operators: int = 0,
    ocm: bool = False,
    ocpi_variants: dict[str, dict[str, Any]] | None = None,
    faults: dict[str, Any] | None = None,
    control_token: str | None = None,
) -> Simulation:
    """Build the world and start one HTTPS server per operator on 127.0.0.1 (ephemeral ports):
    OCPI, except for the last `oicp_operators` operators, which speak OICP; `ocm` adds an Open
    Charge Map server over the whole world. `start` is the wall-clock start (default now):
    simulated time begins at start - lag and sessions from history_days before that. `rogue_tls`
    serves a certificate from an unrelated CA while `pki` still names the real one (for TLS
    refusal tests); OICP servers still demand client certificates of the real CA.

    `ocpi_variants` maps an OCPI operator's id to OcpiServer options (`version="2.1.1"`,
    `quirks=OcpiQuirks(...)`); `faults` maps an operator id (or "ocm") to a fault plan active
    from the start; `control_token` starts the admin endpoint that changes plans at run time."""
    if not 0 <= oicp_operators <= operators:
        raise ValueError("oicp_operators must be between 0 and operators")
    plans = {k: FaultPlan.from_config(v) for k, v in (faults or {}).items()}  # validated before anything starts
    variants = ocpi_variants or {}
    clock = SimClock(start or datetime.now(UTC), speed=speed, lag=lag)
    world = build_world(
        seed,
        operators,
        evses,
        boroughs_geojson,
        history_start=clock.origin - timedelta(days=history_days),
        demand_scale=demand_scale,
    )
    tmpdir = None
    if pki_dir is None:
        tmpdir = pki_dir = Path(tempfile.mkdtemp(prefix="evgate-sim-pki-"))
    pki = make_pki(seed, pki_dir)
    rogue = make_rogue_pki(seed, pki_dir / "rogue") if rogue_tls else None
    ssl_context = (rogue or pki).server_ssl_context()
    mutual_context = (rogue or pki).mutual_tls_server_context(client_ca=pki.ca_cert)
    now = clock.now_s()
    first_oicp = operators - oicp_operators
    servers: list[Server] = []
    sim_operators: list[SimOperator] = []
    fault_sets: dict[str, Faults] = {}

    def faults_for(name: str) -> Faults:
        fault_sets[name] = Faults(seed=seed, directory=pki_dir, name=name)
        return fault_sets[name]

    ids = {op.spec.id for op in world.operators} | ({OCM_ID} if ocm else set())
    if unknown := (set(plans) | set(variants)) - ids:
        raise ValueError(f"faults or variants for unknown operators: {sorted(unknown)}")
    try:
        for i, op in enumerate(world.operators):
            spec = op.spec
            if i < first_oicp:
                ocpi = OcpiServer(
                    op,
                    clock,
                    ssl_context,
                    page_limit=page_limit,
                    middlewares=[faults_for(spec.id).middleware],
                    **variants.get(spec.id, {}),
                )
                fault_sets[spec.id].attach(ocpi)
                ocpi.views.sessions.index.refresh(now)  # generate and index the history up front
                await ocpi.start()
                servers.append(ocpi)
                quirks = ocpi.quirks
                sim_op = SimOperator(
                    spec.id,
                    spec.name,
                    spec.country_code,
                    spec.party_id,
                    ocpi.versions_url,
                    spec.token,
                    ocpi.token_encoding,  # what this server expects (raw for 2.1.1)
                    ocpi.port,
                    url=ocpi.versions_url,
                    auth_header=quirks.auth_header,
                    auth_scheme=quirks.auth_scheme,
                    ocpi_version=ocpi.version,
                )
            else:
                oicp = OicpServer(op, clock, mutual_context, middlewares=[faults_for(spec.id).middleware])
                fault_sets[spec.id].attach(oicp)
                oicp.views.ocpi.sessions.index.refresh(now)
                await oicp.start()
                servers.append(oicp)
                cert, key = make_client_cert(pki, seed, f"evgate {oicp.provider_id} for {spec.id}")
                sim_op = SimOperator(
                    spec.id,
                    spec.name,
                    spec.country_code,
                    spec.party_id,
                    None,
                    None,
                    "base64",
                    oicp.port,
                    protocol="oicp",
                    url=oicp.base_url,
                    provider_id=oicp.provider_id,
                    client_cert=cert,
                    client_key=key,
                )
            sim_operators.append(sim_op)
        if ocm:
            api_key = hashlib.sha256(f"evgate-sim-ocm-key:{seed}".encode()).hexdigest()[:32]
            ocm_faults = faults_for(OCM_ID)
            ocm_server = OcmServer(world, clock, ssl_context, api_key=api_key, middlewares=[ocm_faults.middleware])
            ocm_faults.attach(ocm_server)
            await ocm_server.start()
            servers.append(ocm_server)
            sim_operators.append(
                SimOperator(
                    OCM_ID,
                    "Open Charge Map",
                    "GB",
                    None,
                    None,
                    None,
                    "base64",
                    ocm_server.port,
                    protocol="ocm",
                    url=ocm_server.base_url,
                    api_key=api_key,
                )
            )
        for name, plan in plans.items():
            await fault_sets[name].apply(plan)  # after start: outages and TLS faults need a listener
        control = ControlServer(fault_sets, control_token) if control_token else None
        if control is not None:
            await control.start()
    except BaseException:
        for f in fault_sets.values():
            await f.close()
        for server in servers:
            await server.stop()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return Simulation(pki, sim_operators, clock, world, servers, rogue, tmpdir, fault_sets, control)
