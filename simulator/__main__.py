"""`python -m simulator`: run the operator simulators (OCPI, OICP, Open Charge Map) until Ctrl-C, for
manual testing, optionally with faults from a TOML file and the fault control endpoint."""

from __future__ import annotations

import argparse
import asyncio
import time
import tomllib
from datetime import timedelta
from pathlib import Path

from simulator.cluster import start_simulation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults replay yesterday in real time."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--operators", type=int, default=3)
    parser.add_argument("--evses", type=int, default=1500)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (0 freezes)")
    parser.add_argument("--lag-hours", type=float, default=24.0, help="how far behind the wall clock to start")
    parser.add_argument("--history-days", type=int, default=3)
    parser.add_argument("--page-limit", type=int, default=100)
    parser.add_argument("--demand-scale", type=float, default=1.0, help="multiply the fitted session rates")
    parser.add_argument("--pki-dir", type=Path, default=None, help="where to write ca.pem (default: a temp dir)")
    parser.add_argument("--rogue-tls", action="store_true", help="serve a certificate from an untrusted CA")
    parser.add_argument("--oicp-operators", type=int, default=0, help="how many of the operators speak OICP")
    parser.add_argument("--ocm", action="store_true", help="also serve Open Charge Map")
    parser.add_argument(
        "--faults", type=Path, default=None, help='TOML: one table per operator, `[[alpha]]` kind = "outage" ...'
    )
    parser.add_argument("--control-token", default=None, help="start the fault control endpoint with this token")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    """Start the simulation, print how to reach it, and serve until cancelled."""
    t0 = time.perf_counter()
    sim = await start_simulation(
        seed=args.seed,
        operators=args.operators,
        evses=args.evses,
        speed=args.speed,
        lag=timedelta(hours=args.lag_hours),
        history_days=args.history_days,
        page_limit=args.page_limit,
        pki_dir=args.pki_dir,
        rogue_tls=args.rogue_tls,
        demand_scale=args.demand_scale,
        oicp_operators=args.oicp_operators,
        ocm=args.ocm,
        faults=tomllib.loads(args.faults.read_text()) if args.faults else None,
        control_token=args.control_token,
    )
    try:
        print(f"started in {time.perf_counter() - t0:.2f} s; simulated now {sim.clock.now():%Y-%m-%dT%H:%M:%SZ}")
        print(f"CA certificate: {sim.ca_path}")
        for op in sim.operators:
            if op.protocol == "ocpi":
                credential = f"token={op.token} ({op.token_encoding})"
            elif op.protocol == "oicp":
                credential = f"provider={op.provider_id} client cert={op.client_cert} key={op.client_key}"
            else:
                credential = f"X-API-Key={op.api_key}"
            print(f"{op.id:8} {op.protocol:5} {op.name:16} {op.url}  {credential}")
        if sim.control is not None:
            print(f"fault control: {sim.control.url}/admin/faults")
        print("Ctrl-C to stop.", flush=True)
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    try:
        asyncio.run(run(parse_args(argv)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
