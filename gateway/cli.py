"""The `evgate` command: `demo` (simulated operators + gateway on SQLite), `serve --config FILE`
and `secrets` (operator credentials in the encrypted store: set, list, rotate, generate-key)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.runtime import start_runtime
from gateway.vault import SECRET_NAMES, SecretError, generate_key

EXAMPLES = """\
Example queries (paste into GraphiQL):

  # 1. Operators and how many sites each holds in Camden (E09000007)
  {{ operators {{ id name }} locations(filter: {{boroughCodes: ["E09000007"]}}, first: 5) {{
      totalCount edges {{ node {{ id name address borough {{ name }} provenance {{ operatorId lastUpdated }} }} }} }} }}

  # 2. Chargers within 500 m of Trafalgar Square, nearest first, with live status and connectors
  {{ locations(filter: {{near: {{latitude: 51.508, longitude: -0.128, radiusMeters: 500}}}}, first: 10) {{
      edges {{ node {{ name distanceMeters
        evses {{ uid status statusSince connectors {{ standard powerType maxPowerKw }} }} }} }} }} }}

  # 3. Sessions of the last simulated hour (commercially sensitive: send the header below)
  {{ sessions(from: "{since}", to: "{until}", first: 10) {{
      totalCount edges {{ node {{ id start end kwh status provenance {{ operatorId protocol }} }} }} }} }}
  HTTP header: {{"Authorization": "Bearer {admin}"}}

  # 4. Sync health: faults on beta and the recoveries, quarantined records (administrators only)
  {{ syncHealth {{ operatorId module healthy cursor lagSeconds consecutiveFailures nextAttempt
      lastError {{ code message at }} lastSuccess recordsIngested recordsQuarantined }}
    quarantinedRecords(first: 3) {{ totalCount edges {{ node {{ operatorId module reason raw }} }} }} }}
  HTTP header: {{"Authorization": "Bearer {admin}"}}
"""


def _serve(config: GatewayConfig, log_level: str = "info") -> uvicorn.Server:
    app = create_app(config, runtime_factory=start_runtime)
    return uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, lifespan="on"))


def _secret_file(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> str:
    """A random secret kept in a file (0600), so that restarts of the demo keep pseudonyms stable
    and can still open the operator secrets they stored."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


async def _fresh_if_outdated(database: Path) -> None:
    """Start the demo on a new database when the kept one predates this version's model: its
    contents are simulated and the gateway catches them up again in seconds."""
    from gateway.db import SchemaOutdated, close_db, init_db

    try:
        await init_db(f"sqlite://{database}")
    except SchemaOutdated as exc:
        print(f"evgate demo: {database}: {exc}. Starting it afresh.")
        for path in database.parent.glob(database.name + "*"):
            path.unlink()
    finally:
        await close_db()


async def run_demo(args: argparse.Namespace) -> None:
    """Start simulated operators (OCPI 2.2.1 and 2.1.1, OICP, Open Charge Map, one with faults),
    then the gateway against them, until interrupted."""
    from datetime import timedelta

    from gateway.demo import (
        DEMO_CADENCES,
        DEMO_FAULT_CYCLE,
        DEMO_FAULTS,
        DEMO_FAULTY,
        DEMO_OICP_OPERATORS,
        DEMO_OPERATORS,
        DEMO_VARIANTS,
        cycle_faults,
        simulated_operators,
    )
    from simulator.cluster import start_simulation

    var = Path(args.data_dir)
    await _fresh_if_outdated(var / "demo.sqlite3")
    admin_token = _secret_file(var / "admin.token")
    sim = await start_simulation(
        seed=args.seed,
        operators=DEMO_OPERATORS,
        oicp_operators=DEMO_OICP_OPERATORS,
        ocm=True,
        evses=args.evses,
        speed=args.speed,
        pki_dir=var / "pki",
        ocpi_variants=DEMO_VARIANTS,
        control_token=admin_token,
    )
    faults = asyncio.create_task(cycle_faults(sim.faults[DEMO_FAULTY], DEMO_FAULTS, DEMO_FAULT_CYCLE))
    operators = simulated_operators(
        sim,
        cadences=dict(DEMO_CADENCES),
        backfill=float(args.backfill_hours) * 3600,
        window=6 * 3600.0,
    )
    config = GatewayConfig(
        database_url=f"sqlite://{var / 'demo.sqlite3'}",
        host="127.0.0.1",
        port=args.port,
        admin_token=admin_token,
        pseudonym_key=_secret_file(var / "pseudonym.key"),
        secret_keys=[_secret_file(var / "secret.key", generate_key)],
        operators=operators,
    )
    server = _serve(config, args.log_level)
    # The simulation replays the recent past at --speed, so "now" is the operators' clock, not ours.
    now = sim.clock.now().replace(microsecond=0)
    print(f"\nevgate demo: {len(operators)} simulated sources on 127.0.0.1 (TLS, CA {sim.ca_path})")
    for op in sim.operators:
        kind = op.protocol.upper() + (f" {op.ocpi_version}" if op.ocpi_version else "")
        note = "  <- faults switched on in turn, every few minutes" if op.id == DEMO_FAULTY else ""
        print(f"  {op.id:8} {kind:11} {op.url}{note}")
    assert sim.control is not None
    print(f"\nFault control: {sim.control.url}/admin/faults (Bearer: the administrator token below)")
    print(f"\nGraphiQL: http://{config.host}:{config.port}/graphql\n")
    print(
        EXAMPLES.format(
            since=(now - timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
            until=now.isoformat().replace("+00:00", "Z"),
            admin=config.admin_token,
        )
    )
    sys.stdout.flush()
    try:
        await server.serve()
    finally:
        faults.cancel()
        await sim.stop()


async def run_serve(args: argparse.Namespace) -> None:
    """Run the gateway against the operators of a configuration file."""
    config = GatewayConfig.load(args.config)
    if args.port:
        config.port = args.port
    await _serve(config, args.log_level).serve()


def _read_secret(path: str | None, keep_whitespace: bool) -> str:
    """A secret from a file or stdin: never from the command line, where `ps` would show it."""
    value = Path(path).read_text() if path else sys.stdin.read()
    return value if keep_whitespace else value.strip()


async def run_secrets(args: argparse.Namespace) -> None:
    """Manage operator secrets in the encrypted store: set, list (names only), rotate."""
    from gateway.db import close_db, init_db
    from gateway.models import OperatorSecret
    from gateway.vault import SecretStore

    if args.action == "generate-key":
        print(generate_key())
        return
    config = GatewayConfig.load(args.config)
    vault = SecretStore(config.secret_keys)
    await init_db(config.database_url)
    try:
        if args.action == "set":
            await vault.put(
                args.operator, args.name, _read_secret(args.file, keep_whitespace=args.name == "client_key")
            )
            print(f"stored {args.name} of {args.operator} (encrypted)")
        elif args.action == "list":
            for row in await OperatorSecret.all().order_by("id"):
                print(f"{row.operator_id:16} {row.name:12} updated {row.updated_at.isoformat()}")
        elif args.action == "rotate":
            print(f"re-encrypted {await vault.rotate()} secret(s) under the first configured key")
    finally:
        await close_db()


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per way of running the gateway."""
    parser = argparse.ArgumentParser(prog="evgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulated London operators plus the gateway on SQLite")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--evses", type=int, default=1500)
    demo.add_argument("--speed", type=float, default=30.0, help="simulated seconds per wall-clock second")
    demo.add_argument("--backfill-hours", type=float, default=24.0)
    demo.add_argument("--data-dir", default="var/demo", help="SQLite file, certificates and demo secrets")
    demo.add_argument("--log-level", default="warning")
    serve = sub.add_parser("serve", help="run against real operators")
    serve.add_argument("--config", required=True, help="TOML file, see README")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--log-level", default="info")
    sec = sub.add_parser("secrets", help="operator credentials, encrypted at rest")
    actions = sec.add_subparsers(dest="action", required=True)
    actions.add_parser("generate-key", help="print a new key for secret_keys / EVGATE_SECRET_KEYS")
    put = actions.add_parser("set", help="store a secret read from stdin or --file (never from argv)")
    put.add_argument("--config", required=True)
    put.add_argument("operator")
    put.add_argument("name", choices=SECRET_NAMES)
    put.add_argument("--file", help="read the value from this file (a client key PEM, say)")
    for name, text in (("list", "list stored secrets (names only)"), ("rotate", "re-encrypt under the first key")):
        actions.add_parser(name, help=text).add_argument("--config", required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `evgate` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    runner = {"demo": run_demo, "serve": run_serve, "secrets": run_secrets}[args.command]
    try:
        asyncio.run(runner(args))
    except KeyboardInterrupt:
        pass
    except SecretError as exc:  # a configuration problem: say what, without a traceback
        sys.exit(f"evgate: {exc}")


if __name__ == "__main__":
    main()
