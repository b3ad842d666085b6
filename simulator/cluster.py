"""Start a whole simulation: one OCPI server per operator on 127.0.0.1, one PKI, one clock.

`Simulation` also answers for the ground truth: what a complete crawl of an operator's module
with given date filters returns at the current simulated time, so tests can compare the gateway
(or a hand-written client) against it.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from simulator.clock import SimClock, to_ts
from simulator.data import World, build_world
from simulator.ocpi_server import MODULES, OcpiServer
from simulator.ocpi_views import Selection
from simulator.tls import Pki, make_pki, make_rogue_pki


@dataclass(frozen=True, slots=True)
class SimOperator:
    """What a client needs to reach one simulated operator."""

    id: str
    name: str
    country_code: str
    party_id: str
    versions_url: str
    token: str
    token_encoding: str  # "base64" or "raw"
    port: int


@dataclass(eq=False)
class Simulation:
    """Running operator servers plus truth helpers; `await stop()` when done."""

    pki: Pki
    operators: list[SimOperator]
    clock: SimClock
    world: World
    servers: list[OcpiServer] = field(repr=False)
    rogue_pki: Pki | None = None
    _tmpdir: Path | None = field(default=None, repr=False)

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

    def server(self, operator_id: str) -> OcpiServer:
        """The running server of an operator (KeyError if unknown)."""
        for server in self.servers:
            if server.op.spec.id == operator_id:
                return server
        raise KeyError(operator_id)

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
        view = self.server(operator_id).views.module(module)
        return view.select(
            self.clock.now_s(),
            None if lo is None else math.ceil(lo),
            None if hi is None else math.ceil(hi),
        )

    async def stop(self) -> None:
        """Stop every server and remove the PKI directory if the simulation created it."""
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
) -> Simulation:
    """Build the world and start one HTTPS OCPI server per operator on 127.0.0.1 (ephemeral
    ports). `start` is the wall-clock start (default now): simulated time begins at start - lag
    and sessions from history_days before that. `rogue_tls` serves a certificate from an
    unrelated CA while `pki` still names the real one (for TLS refusal tests)."""
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
    now = clock.now_s()
    servers: list[OcpiServer] = []
    sim_operators: list[SimOperator] = []
    try:
        for op in world.operators:
            server = OcpiServer(op, clock, ssl_context, page_limit=page_limit)
            server.views.sessions.index.refresh(now)  # generate and index the history up front
            await server.start()
            servers.append(server)
            spec = op.spec
            sim_operators.append(
                SimOperator(
                    spec.id,
                    spec.name,
                    spec.country_code,
                    spec.party_id,
                    server.versions_url,
                    spec.token,
                    spec.token_encoding,
                    server.port,
                )
            )
    except BaseException:
        for server in servers:
            await server.stop()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    return Simulation(pki, sim_operators, clock, world, servers, rogue, tmpdir)
