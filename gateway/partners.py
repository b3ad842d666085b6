"""Partners: the registry (API key, scopes, licence, webhook) and which events each may see.

A partner is registered once (`evgate partners register`): it gets an API key (role PARTNER, its
partner id, its scopes; `gateway.credentials`) and, when it gives a webhook URL, a signing secret
stored encrypted (`gateway.vault.SecretStore`). Both are shown only at registration. Nothing is
delivered to a partner, by webhook or pull, until it has accepted the licence, nor while it is
disabled.

Which events a caller may see is one rule shared by the webhooks (`gateway.webhooks`), the PULL
endpoint (`gateway.pull_api`) and GraphQL (`partnerEvents`): an event's data class is OPEN for
status changes and USAGE for everything else (sessions; unknown kinds fail closed), and a USAGE
event is visible when `gateway.policy.row_scope(principal, USAGE, agreements)` admits its operator
and borough, so a partner sees session events only of operators whose agreement grants partners
USAGE data.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from gateway import catalog
from gateway.auth import Principal, Role
from gateway.credentials import IDENTIFIER, CredentialError, create_api_key, make_grant
from gateway.errors import ErrorCode
from gateway.models import ApiKey, Event, OAuthClient, Partner, PartnerCursor, WebhookDelivery
from gateway.policy import ALLOW, Agreements, DataClass, Decision, row_scope
from gateway.vault import SecretStore

# Event kinds that are OPEN data (public under the 2023 regulations); every other kind is USAGE.
OPEN_EVENT_KINDS: frozenset[str] = frozenset({"evse.status_changed"})
MAX_PULL_LIMIT = 1000
DEFAULT_PULL_LIMIT = 100
EVENT_COLUMNS = ("id", "kind", "operator_id", "borough_code", "subject_id", "payload", "created_at")


class PartnerError(ValueError):
    """A partner cannot be registered or changed as asked."""


def event_class(kind: str) -> DataClass:
    """The data class of an event kind (unknown kinds are USAGE: fail closed)."""
    return DataClass.OPEN if kind in OPEN_EVENT_KINDS else DataClass.USAGE


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What registering a partner returns, once: its API key and its webhook signing secret."""

    partner: Partner
    api_key: str
    webhook_secret: str | None


def _check_url(url: str | None) -> str | None:
    if url is None:
        return None
    if not url.startswith("https://") or len(url) > 500:
        raise PartnerError("a webhook URL must be an https:// URL (at most 500 characters)")
    return url


async def register(
    vault: SecretStore,
    partner_id: str,
    name: str,
    *,
    webhook_url: str | None = None,
    scopes: Iterable[str] = (),
    accept_licence: bool = False,
) -> Registration:
    """Register a partner with its API key (and signing secret, with a webhook). Its webhook
    cursor starts at the end of the event log: a partner gets events from its registration on
    (history is available by pull)."""
    if not IDENTIFIER.match(partner_id):
        raise PartnerError("a partner id is a short identifier (letters, digits, . _ : -)")
    _check_url(webhook_url)
    try:
        grant = make_grant(Role.PARTNER, partner_id=partner_id, scopes=scopes)
    except CredentialError as exc:
        raise PartnerError(str(exc)) from None
    secret = secrets.token_urlsafe(32) if webhook_url else None
    start = await last_event_id()
    async with in_transaction() as conn:
        if await Partner.filter(id=partner_id).using_db(conn).exists():
            raise PartnerError(f"partner {partner_id} exists already (use update)")
        partner = await Partner.create(
            id=partner_id,
            name=name,
            scopes=list(grant.scopes),
            licence_accepted_at=_now() if accept_licence else None,
            webhook_url=webhook_url,
            webhook_secret=vault.encrypt(secret) if secret else None,
            using_db=conn,
        )
        await PartnerCursor.create(partner_id=partner_id, last_enqueued_event_id=start, using_db=conn)
    api_key = await create_api_key(f"partner {partner_id}: {name}", grant)
    return Registration(partner, api_key, secret)


async def update(
    vault: SecretStore,
    partner_id: str,
    *,
    name: str | None = None,
    webhook_url: str | None = None,
    remove_webhook: bool = False,
    accept_licence: bool = False,
    rotate_secret: bool = False,
) -> tuple[Partner, str | None]:
    """Change a partner; returns it and its new signing secret when one was made (a first webhook
    URL, or `rotate_secret`), else None."""
    partner = await Partner.get_or_none(id=partner_id)
    if partner is None:
        raise PartnerError(f"no partner {partner_id}")
    secret = None
    if name is not None:
        partner.name = name
    if remove_webhook:
        partner.webhook_url = None
        partner.webhook_secret = None
    elif webhook_url is not None:
        partner.webhook_url = _check_url(webhook_url)
    if partner.webhook_url and (rotate_secret or partner.webhook_secret is None):
        secret = secrets.token_urlsafe(32)
        partner.webhook_secret = vault.encrypt(secret)
    if accept_licence and partner.licence_accepted_at is None:
        partner.licence_accepted_at = _now()
    await partner.save()
    return partner, secret


async def list_partners() -> list[Partner]:
    """Every partner, by id."""
    return await Partner.all().order_by("id")


async def disable(partner_id: str) -> bool:
    """Stop every delivery to a partner and revoke its credentials; whether it was active."""
    now = _now()
    changed = await Partner.filter(id=partner_id, disabled_at=None).update(disabled_at=now)
    if changed:
        await ApiKey.filter(partner_id=partner_id, revoked_at=None).update(revoked_at=now)
        await OAuthClient.filter(partner_id=partner_id, revoked_at=None).update(revoked_at=now)
    return bool(changed)


def principal_of(partner: Partner) -> Principal:
    """The principal a partner's webhook deliveries are decided for (as its API key would be)."""
    return Principal(
        role=Role.PARTNER,
        subject=f"partner:{partner.id}",
        partner_id=partner.id,
        scopes=frozenset(partner.scopes or ()),
    )


def receives(partner: Partner) -> bool:
    """Whether anything may be delivered to the partner at all (licence accepted, not disabled)."""
    return partner.licence_accepted_at is not None and partner.disabled_at is None


async def entitlement(principal: Principal) -> Decision:
    """Whether `principal` may read the event feed at all: credentials needed; a partner must be
    registered, active and have accepted the licence. Other roles are limited by their row scope."""
    if not principal.authenticated:
        reason = principal.credential_error or "the event feed needs credentials"
        return Decision(False, ErrorCode.UNAUTHENTICATED, reason)
    if principal.role is Role.PARTNER:
        partner = await Partner.get_or_none(id=principal.partner_id) if principal.partner_id else None
        if partner is None or partner.disabled_at is not None:
            return Decision(False, ErrorCode.FORBIDDEN, "this partner is not registered or is disabled")
        if partner.licence_accepted_at is None:
            return Decision(False, ErrorCode.FORBIDDEN, "this partner has not accepted the licence")
    return ALLOW


# ---------------------------------------------------------------------------------------------
# Which events a caller may see
# ---------------------------------------------------------------------------------------------


def visible(
    principal: Principal, kind: str, operator_id: str, borough_code: str | None, agreements: Agreements
) -> bool:
    """Whether one event may be shown to `principal`."""
    data_class = event_class(kind)
    return row_scope(principal, data_class, agreements).admits(operator_id, borough_code)


def visible_filter(principal: Principal, agreements: Agreements) -> Q | None:
    """The same rule as SQL (None: every event), so that pages hold only visible events."""
    scope = row_scope(principal, DataClass.USAGE, agreements)
    if scope.everything:
        return None
    open_events = Q(kind__in=sorted(OPEN_EVENT_KINDS))
    if scope.nothing:
        return open_events
    usage = Q(kind__not_in=sorted(OPEN_EVENT_KINDS))
    if scope.operator_ids is not None:
        usage &= Q(operator_id__in=sorted(scope.operator_ids))
    if scope.borough_codes is not None:
        usage &= Q(borough_code__in=sorted(scope.borough_codes))
    return open_events | usage


def parse_cursor(after: str | int | None) -> int:
    """An event cursor (the id of the last event seen; absent: from the start). ValueError if bad."""
    if after is None or after == "":
        return 0
    value = int(after)
    if value < 0:
        raise ValueError("negative cursor")
    return value


async def visible_events(
    principal: Principal,
    after: int,
    limit: int,
    agreements: Agreements | None = None,
    until: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` events after id `after` (and at most `until`) that `principal` may see, by
    id, and the cursor to continue from (the last id returned, or `after` when none).

    `until` is the event hub's position (`gateway.streams.settled_position`): on PostgreSQL a
    lower id can commit after a higher one, and a client must not be handed a cursor past it.
    """
    if agreements is None:
        agreements = await catalog.sharing_agreements()
    qs = Event.filter(id__gt=after)
    if until is not None:
        qs = qs.filter(id__lte=until)
    condition = visible_filter(principal, agreements)
    if condition is not None:
        qs = qs.filter(condition)
    rows = await qs.order_by("id").limit(limit).values(*EVENT_COLUMNS)
    return rows, (rows[-1]["id"] if rows else after)


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """An event as partners receive it (webhook body, PULL page entry)."""
    created = row["created_at"]
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "operatorId": row["operator_id"],
        "boroughCode": row["borough_code"],
        "subjectId": row["subject_id"],
        "payload": row["payload"],
        "createdAt": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


async def last_event_id() -> int:
    """The highest event id so far (0 for an empty log)."""
    top = await Event.all().order_by("-id").first().values_list("id", flat=True)
    return int(top or 0)


# ---------------------------------------------------------------------------------------------
# Redelivery
# ---------------------------------------------------------------------------------------------


async def redeliver(partner_id: str, *, event_id: int | None = None, dead: bool = False) -> int:
    """Deliver again: one event (enqueued anew if it never was, when the partner may see it) or
    every dead-lettered delivery of the partner; how many deliveries were rescheduled."""
    partner = await Partner.get_or_none(id=partner_id)
    if partner is None:
        raise PartnerError(f"no partner {partner_id}")
    if (event_id is None) == (not dead):
        raise PartnerError("name one event (--event-id) or every dead letter (--dead)")
    reset = {"attempts": 0, "next_attempt_at": _now(), "dead_at": None, "delivered_at": None, "last_error": None}
    if dead:
        return await WebhookDelivery.filter(partner_id=partner_id, dead_at__not_isnull=True).update(**reset)
    changed = await WebhookDelivery.filter(partner_id=partner_id, event_id=event_id).update(**reset)
    if changed:
        return changed
    event = await Event.get_or_none(id=event_id)
    if event is None:
        raise PartnerError(f"no event {event_id}")
    agreements = await catalog.sharing_agreements()
    if not visible(principal_of(partner), event.kind, event.operator_id, event.borough_code, agreements):
        raise PartnerError(f"event {event_id} is not shared with partner {partner_id}")
    await WebhookDelivery.create(partner_id=partner_id, event_id=event_id, next_attempt_at=_now())
    return 1
