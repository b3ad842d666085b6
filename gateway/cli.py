"""The `evgate` command: `demo` (simulated operators + gateway on SQLite) and `serve --config FILE`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.runtime import start_runtime

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
      totalCount edges {{ node {{ id start end kwh status }} }} }} }}
  HTTP header: {{"Authorization": "Bearer {admin}"}}
"""


def _serve(config: GatewayConfig, log_level: str = "info") -> uvicorn.Server:
    app = create_app(config, runtime_factory=start_runtime)
    return uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, lifespan="on"))


def _secret_file(path: Path) -> str:
    """A random secret kept in a file, so that restarts of the demo keep pseudonyms stable."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


async def run_demo(args: argparse.Namespace) -> None:
    """Start simulated operators, then the gateway against them, until interrupted."""
    from datetime import timedelta

    from gateway.demo import DEMO_CADENCES, simulated_operators
    from simulator.cluster import start_simulation

    var = Path(args.data_dir)
    sim = await start_simulation(
        seed=args.seed, operators=args.operators, evses=args.evses, speed=args.speed, pki_dir=var / "pki"
    )
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
        admin_token=_secret_file(var / "admin.token"),
        pseudonym_key=_secret_file(var / "pseudonym.key"),
        operators=operators,
    )
    server = _serve(config, args.log_level)
    # The simulation replays the recent past at --speed, so "now" is the operators' clock, not ours.
    now = sim.clock.now().replace(microsecond=0)
    print(f"\nevgate demo: {len(operators)} simulated OCPI operators on 127.0.0.1 (TLS, CA {sim.ca_path})")
    for op in sim.operators:
        print(f"  {op.id:8} {op.versions_url}")
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
        await sim.stop()


async def run_serve(args: argparse.Namespace) -> None:
    """Run the gateway against the operators of a configuration file."""
    config = GatewayConfig.load(args.config)
    if args.port:
        config.port = args.port
    await _serve(config, args.log_level).serve()


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per way of running the gateway."""
    parser = argparse.ArgumentParser(prog="evgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulated London operators plus the gateway on SQLite")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--operators", type=int, default=3)
    demo.add_argument("--evses", type=int, default=1500)
    demo.add_argument("--speed", type=float, default=30.0, help="simulated seconds per wall-clock second")
    demo.add_argument("--backfill-hours", type=float, default=24.0)
    demo.add_argument("--data-dir", default="var/demo", help="SQLite file, certificates and demo secrets")
    demo.add_argument("--log-level", default="warning")
    serve = sub.add_parser("serve", help="run against real operators")
    serve.add_argument("--config", required=True, help="TOML file, see README")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--log-level", default="info")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `evgate` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    runner = {"demo": run_demo, "serve": run_serve}[args.command]
    try:
        asyncio.run(runner(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
