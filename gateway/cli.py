"""The `evgate` command: `demo` (simulated operators + gateway on SQLite), `serve --config FILE`,
`secrets` (operator credentials in the encrypted store: set, list, rotate, generate-key), and the
gateway's callers: `clients` (OAuth clients of /oauth/token) and `keys` (API keys), each with
create, list and revoke."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.auth import Role
from gateway.config import GatewayConfig
from gateway.credentials import CredentialError, CredentialRejected, Grant, new_api_key
from gateway.partners import PartnerError
from gateway.partners_cli import add_partner_commands, run_partners
from gateway.runtime import start_runtime
from gateway.serving import server_config
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
  HTTP header: {{"Authorization": "Bearer {admin}"}}    (the administrator's API key)

  # 4. Sync health: faults on beta and the recoveries, quarantined records (administrators only)
  {{ syncHealth {{ operatorId module healthy cursor lagSeconds consecutiveFailures nextAttempt
      lastError {{ code message at }} lastSuccess recordsIngested recordsQuarantined }}
    quarantinedRecords(first: 3) {{ totalCount edges {{ node {{ operatorId module reason raw }} }} }} }}
  HTTP header: {{"Authorization": "Bearer {admin}"}}

  # 5. Live sessions as they start and end (a subscription; GraphiQL sends the header in connection_init)
  subscription {{ sessionEvents(where: {{kinds: ["session.started", "session.completed"]}}) {{
      cursor kind operatorId boroughCode sessionId evseId status kwh at }} }}
  HTTP header: {{"Authorization": "Bearer {admin}"}}    (or a partner's or borough's token: fewer events)
"""


def _serve(config: GatewayConfig, log_level: str = "info") -> uvicorn.Server:
    app = create_app(config, runtime_factory=start_runtime)
    return uvicorn.Server(server_config(app, config, log_level))  # TLS when configured


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
        DEMO_AGREEMENTS,
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
    control_token = _secret_file(var / "control.token")  # the simulators' fault control, not the gateway's
    sim = await start_simulation(
        seed=args.seed,
        operators=DEMO_OPERATORS,
        oicp_operators=DEMO_OICP_OPERATORS,
        ocm=True,
        evses=args.evses,
        speed=args.speed,
        pki_dir=var / "pki",
        ocpi_variants=DEMO_VARIANTS,
        control_token=control_token,
    )
    faults = asyncio.create_task(cycle_faults(sim.faults[DEMO_FAULTY], DEMO_FAULTS, DEMO_FAULT_CYCLE))
    operators = [
        replace(op, agreement=DEMO_AGREEMENTS.get(op.id, {}))  # replace() validates it again
        for op in simulated_operators(
            sim,
            cadences=dict(DEMO_CADENCES),
            backfill=float(args.backfill_hours) * 3600,
            window=6 * 3600.0,
        )
    ]
    config = GatewayConfig(
        database_url=f"sqlite://{var / 'demo.sqlite3'}",
        host="127.0.0.1",
        port=args.port,
        pseudonym_key=_secret_file(var / "pseudonym.key"),
        secret_keys=[_secret_file(var / "secret.key", generate_key)],
        operators=operators,
    )
    admin_key, role_tokens = await _demo_credentials(var, config)
    server = _serve(config, args.log_level)
    # The simulation replays the recent past at --speed, so "now" is the operators' clock, not ours.
    now = sim.clock.now().replace(microsecond=0)
    print(f"\nevgate demo: {len(operators)} simulated sources on 127.0.0.1 (TLS, CA {sim.ca_path})")
    for op in sim.operators:
        kind = op.protocol.upper() + (f" {op.ocpi_version}" if op.ocpi_version else "")
        note = "  <- faults switched on in turn, every few minutes" if op.id == DEMO_FAULTY else ""
        print(f"  {op.id:8} {kind:11} {op.url}{note}")
    assert sim.control is not None
    print(f"\nFault control: {sim.control.url}/admin/faults (Bearer: the token in {var / 'control.token'})")
    print(f"\nGraphiQL: http://{config.host}:{config.port}/graphql\n")
    print(
        EXAMPLES.format(
            since=(now - timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
            until=now.isoformat().replace("+00:00", "Z"),
            admin=admin_key,
        )
    )
    _print_demo_credentials(config, var, role_tokens)
    sys.stdout.flush()
    try:
        await server.serve()
    finally:
        faults.cancel()
        await sim.stop()


# One OAuth client per role for the demo: (client id, name, grant).
DEMO_CLIENTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("demo-admin", "Demo administrator", {"role": "admin"}),
    ("demo-borough", "Camden and Islington officers", {"role": "borough", "boroughs": ["E09000007", "E09000019"]}),
    ("demo-partner", "Demo roaming partner", {"role": "partner", "partner_id": "demo-partner"}),
    ("demo-alpha", "Operator alpha", {"role": "operator", "operator_id": "alpha"}),
)


async def _demo_credentials(var: Path, config: GatewayConfig) -> tuple[str, dict[str, tuple[str, str, str]]]:
    """Create (idempotently) the demo's callers: an administrator API key kept in `admin.token` and one
    OAuth client per role, its secret kept in `clients.json` (both 0600). Returns the API key and, per
    client id, (role, secret, a fresh bearer JWT)."""
    from gateway.credentials import create_api_key, create_client, make_grant, parse_api_key
    from gateway.db import close_db, init_db
    from gateway.tokens import TokenService

    key_file = var / "admin.token"
    admin_key = key_file.read_text().strip() if key_file.exists() else ""
    try:
        parse_api_key(admin_key)
    except CredentialRejected:  # absent, or the random token of an older demo
        admin_key = new_api_key()
        key_file.write_text(admin_key)
    key_file.chmod(0o600)
    secrets_file = var / "clients.json"
    stored: dict[str, str] = json.loads(secrets_file.read_text()) if secrets_file.exists() else {}
    for client_id, _, _ in DEMO_CLIENTS:
        stored.setdefault(client_id, secrets.token_urlsafe(32))
    secrets_file.write_text(json.dumps(stored, indent=2))
    secrets_file.chmod(0o600)
    tokens = TokenService(config)
    out: dict[str, tuple[str, str, str]] = {}
    await init_db(config.database_url)
    try:
        await create_api_key("demo administrator", make_grant("admin"), key=admin_key)
        for client_id, name, grant_args in DEMO_CLIENTS:
            grant = make_grant(**grant_args)
            await create_client(name, grant, client_id=client_id, secret=stored[client_id])
            out[client_id] = (grant.role.value, stored[client_id], await tokens.mint(grant.principal(client_id)))
    finally:
        await close_db()
    return admin_key, out


def _print_demo_credentials(config: GatewayConfig, var: Path, role_tokens: dict[str, tuple[str, str, str]]) -> None:
    base = f"http://{config.host}:{config.port}"
    minutes = int(config.token_ttl // 60)
    print(f"Callers (administrator API key in {var / 'admin.token'}; client secrets in {var / 'clients.json'}).")
    print(f"Bearer tokens valid {minutes} minutes, one per role:\n")
    for client_id, (role, _, token) in role_tokens.items():
        print(f"  {role:9} {client_id:13} Authorization: Bearer {token}\n")
    client_id, (_, secret, _) = next(iter(role_tokens.items()))
    print("A fresh token (any client above, its secret from clients.json):")
    print(f"  curl -s -u {client_id}:{secret} -d grant_type=client_credentials {base}/oauth/token\n")


def _grant_from_args(args: argparse.Namespace) -> Grant:
    from gateway.credentials import make_grant

    return make_grant(args.role, args.borough or (), args.operator, args.partner, args.scope or ())


def _describe(row: Any) -> str:
    what = ",".join(row.boroughs) or row.operator_id or row.partner_id or "-"
    state = f"revoked {row.revoked_at.isoformat()}" if row.revoked_at else "active"
    scopes = ",".join(row.scopes) or "-"
    return f"{row.role:9} {what:22} scopes={scopes:12} created {row.created_at.isoformat()}  {state}"


async def run_credentials(args: argparse.Namespace) -> None:
    """`evgate clients ...` and `evgate keys ...`: create (the secret printed once), list, revoke."""
    from gateway import credentials
    from gateway.db import close_db, init_db

    config = GatewayConfig.load(args.config)
    grant = _grant_from_args(args) if args.action == "create" else None  # validated before touching the database
    await init_db(config.database_url)
    try:
        if args.command == "clients":
            if args.action == "create":
                assert grant is not None
                client_id, secret = await credentials.create_client(args.name, grant, client_id=args.client_id)
                print(f"client_id:     {client_id}\nclient_secret: {secret}")
                print("The secret is shown only now (the gateway keeps a hash). Exchange it at POST /oauth/token.")
            elif args.action == "list":
                for row in await credentials.list_clients():
                    print(f"{row.client_id:24} {row.name[:28]:28} {_describe(row)}")
            elif not await credentials.revoke_client(args.id):
                sys.exit(f"evgate: no active client {args.id}")
            else:
                print(f"revoked client {args.id}: it gets no new tokens and its tokens are refused")
        elif args.action == "create":
            assert grant is not None
            key = await credentials.create_api_key(args.name, grant)
            print(f"api_key: {key}")
            print("The key is shown only now (the gateway keeps a hash of its secret part).")
            print("Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.")
        elif args.action == "list":
            for row in await credentials.list_api_keys():
                used = row.last_used_at.isoformat() if row.last_used_at else "never"
                print(f"evg_{row.prefix:12} {row.name[:28]:28} {_describe(row)}  last used {used}")
        elif not await credentials.revoke_api_key(args.id):
            sys.exit(f"evgate: no active key {args.id}")
        else:
            print(f"revoked key {args.id}: refused from the next request on")
    finally:
        await close_db()


def _add_credential_commands(sub: Any) -> None:
    """`clients` and `keys`: create / list / revoke."""
    for command, what in (("clients", "OAuth clients of /oauth/token"), ("keys", "API keys")):
        parser = sub.add_parser(command, help=f"{what} (secrets stored only as hashes)")
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="create one; its secret is printed once")
        create.add_argument("--config", required=True)
        create.add_argument("--name", required=True, help="who it is for (shown in listings)")
        create.add_argument("--role", required=True, choices=[r.value for r in Role if r is not Role.ANONYMOUS])
        create.add_argument("--borough", action="append", help="a GSS code (borough role; repeatable)")
        create.add_argument("--operator", help="the operator id (operator role)")
        create.add_argument("--partner", help="the partner id (partner role)")
        create.add_argument("--scope", action="append", help="a scope granted (repeatable)")
        if command == "clients":
            create.add_argument("--client-id", help="default: a random evc-... id")
        actions.add_parser("list", help="list them (never their secrets)").add_argument("--config", required=True)
        revoke = actions.add_parser("revoke", help="revoke one, effective at once")
        revoke.add_argument("--config", required=True)
        revoke.add_argument("id", help="the client id" if command == "clients" else "the key's prefix (or the key)")


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
    _add_credential_commands(sub)
    add_partner_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `evgate` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    runner = {
        "demo": run_demo,
        "serve": run_serve,
        "secrets": run_secrets,
        "clients": run_credentials,
        "keys": run_credentials,
        "partners": run_partners,
    }[args.command]
    try:
        asyncio.run(runner(args))
    except KeyboardInterrupt:
        pass
    except (SecretError, CredentialError, PartnerError) as exc:  # a configuration problem: no traceback
        sys.exit(f"evgate: {exc}")


if __name__ == "__main__":
    main()
