"""`evgate partners ...`: register (the API key and webhook secret printed once), update, list,
disable, redeliver (`gateway.partners`)."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.config import GatewayConfig


def add_partner_commands(sub: Any) -> None:
    """The `partners` sub-command and its actions."""
    parser = sub.add_parser("partners", help="partners: registry, webhooks, redelivery")
    actions = parser.add_subparsers(dest="action", required=True)
    register = actions.add_parser("register", help="register one; its API key and webhook secret are printed once")
    register.add_argument("--config", required=True)
    register.add_argument("--id", required=True, help="the partner id (letters, digits, . _ : -)")
    register.add_argument("--name", required=True)
    register.add_argument("--webhook-url", help="https:// URL events are POSTed to")
    register.add_argument("--scope", action="append", help="a scope granted to its API key (repeatable)")
    register.add_argument("--accept-licence", action="store_true", help="the partner has accepted the licence")
    update = actions.add_parser("update", help="change its name, webhook, licence; rotate its webhook secret")
    update.add_argument("--config", required=True)
    update.add_argument("--id", required=True)
    update.add_argument("--name")
    update.add_argument("--webhook-url")
    update.add_argument("--remove-webhook", action="store_true")
    update.add_argument("--accept-licence", action="store_true")
    update.add_argument("--rotate-secret", action="store_true", help="a new webhook secret, printed once")
    actions.add_parser("list", help="list partners (never their secrets)").add_argument("--config", required=True)
    disable = actions.add_parser("disable", help="stop deliveries and revoke its credentials")
    disable.add_argument("--config", required=True)
    disable.add_argument("--id", required=True)
    redeliver = actions.add_parser("redeliver", help="deliver one event, or every dead letter, again")
    redeliver.add_argument("--config", required=True)
    redeliver.add_argument("--partner", required=True)
    which = redeliver.add_mutually_exclusive_group(required=True)
    which.add_argument("--event-id", type=int)
    which.add_argument("--dead", action="store_true", help="every dead-lettered delivery of the partner")


async def run_partners(args: argparse.Namespace) -> None:
    """Carry out one `evgate partners` action."""
    from gateway import partners
    from gateway.db import close_db, init_db
    from gateway.vault import SecretStore

    config = GatewayConfig.load(args.config)
    await init_db(config.database_url)
    try:
        if args.action == "register":
            vault = SecretStore(config.secret_keys)
            done = await partners.register(
                vault,
                args.id,
                args.name,
                webhook_url=args.webhook_url,
                scopes=args.scope or (),
                accept_licence=args.accept_licence,
            )
            print(f"partner:        {done.partner.id}")
            print(f"api_key:        {done.api_key}")
            if done.webhook_secret:
                print(f"webhook_secret: {done.webhook_secret}")
            print("Shown only now. Verify X-Evgate-Signature with the webhook secret (see /partners/v1/openapi.json).")
            if not args.accept_licence:
                print("Nothing is delivered until the licence is accepted (partners update --accept-licence).")
        elif args.action == "update":
            partner, secret = await partners.update(
                SecretStore(config.secret_keys),
                args.id,
                name=args.name,
                webhook_url=args.webhook_url,
                remove_webhook=args.remove_webhook,
                accept_licence=args.accept_licence,
                rotate_secret=args.rotate_secret,
            )
            print(f"updated partner {partner.id}")
            if secret:
                print(f"webhook_secret: {secret}\nShown only now.")
        elif args.action == "list":
            for p in await partners.list_partners():
                licence = p.licence_accepted_at.isoformat() if p.licence_accepted_at else "not accepted"
                state = f"disabled {p.disabled_at.isoformat()}" if p.disabled_at else "active"
                print(f"{p.id:20} {p.name[:28]:28} licence {licence:32} {state:10} webhook {p.webhook_url or '-'}")
        elif args.action == "disable":
            if not await partners.disable(args.id):
                raise partners.PartnerError(f"no active partner {args.id}")
            print(f"disabled partner {args.id}: no more deliveries, its credentials revoked")
        else:
            n = await partners.redeliver(args.partner, event_id=args.event_id, dead=args.dead)
            print(f"scheduled {n} deliver{'y' if n == 1 else 'ies'} to {args.partner} again")
    finally:
        await close_db()
