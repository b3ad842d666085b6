"""PUSH: partner webhooks delivered from an outbox, signed, retried, dead-lettered.

Two steps, run together by `WebhookService` (started by the app's lifespan when polling is on):

1. `OutboxFiller.fill`: for each partner with a webhook that may receive (licence accepted, not
   disabled), the events after its cursor (`PartnerCursor`) that its policy scope admits
   (`gateway.partners.visible`) become `WebhookDelivery` rows, in one transaction with the cursor's
   advance, so a restart resumes exactly (and the unique (partner, event) pair makes a repeat
   harmless). On PostgreSQL a gap in event ids may be a transaction still committing (ids are
   handed out before commit): the filler stops before it and waits up to `webhook_gap_wait`
   seconds for it to fill, then passes it (an id lost to a rollback never comes).
2. `Deliverer.tick`: the due deliveries (bounded batch), grouped by partner, partners contacted in
   randomised order (concurrently; each partner's events one at a time, by id). Each is a POST of
   the event as JSON (`gateway.partners.event_json`) with `X-Evgate-Event-Id`,
   `X-Evgate-Timestamp` (Unix seconds) and `X-Evgate-Signature: v1=<hex HMAC-SHA256(secret,
   f"{timestamp}.{body}")>`, TLS verified (the system store plus `webhook_ca_bundle`), no
   redirects followed. A 2xx marks it delivered; anything else counts an attempt and schedules the
   next after an exponential backoff with jitter, until `webhook_max_attempts`, when it is
   dead-lettered (`evgate partners redeliver` brings it back). After a failure the partner's
   other deliveries wait for the next tick. Each attempt first claims its delivery with a
   conditional update, so that deliverers of several gateway processes never send it twice at
   once. A delivery whose event the partner may no longer see (agreement withdrawn) is
   dead-lettered without being sent.

Delivery is at least once (a partner that times out after processing gets the event again): the
event id, in the body and `X-Evgate-Event-Id`, is the partner's key to deduplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from tortoise.transactions import in_transaction

from gateway import catalog
from gateway.config import GatewayConfig
from gateway.db import connection
from gateway.models import Event, Partner, PartnerCursor, WebhookDelivery
from gateway.partners import EVENT_COLUMNS, event_json, principal_of, receives, visible
from gateway.policy import Agreements
from gateway.vault import SecretError, SecretStore

log = logging.getLogger("evgate.webhooks")

SIGNATURE_HEADER = "X-Evgate-Signature"
TIMESTAMP_HEADER = "X-Evgate-Timestamp"
EVENT_ID_HEADER = "X-Evgate-Event-Id"
SIGNATURE_VERSION = "v1"
MAX_ERROR_LENGTH = 500
PARTNER_CONCURRENCY = 8
MAX_TICKS_PER_ROUND = 10
CLAIM_MARGIN = 30.0  # seconds a claimed delivery stays claimed beyond the request timeout


@dataclass(frozen=True)
class WebhookSettings:
    """The `webhook_*` settings of `GatewayConfig`."""

    max_attempts: int = 8
    backoff_base: float = 10.0
    backoff_cap: float = 3600.0
    timeout: float = 10.0
    batch: int = 200
    interval: float = 2.0
    gap_wait: float = 30.0
    ca_bundle: str | None = None

    @classmethod
    def of(cls, config: GatewayConfig) -> WebhookSettings:
        """The settings of a gateway configuration."""
        return cls(
            max_attempts=config.webhook_max_attempts,
            backoff_base=config.webhook_backoff_base,
            backoff_cap=config.webhook_backoff_cap,
            timeout=config.webhook_timeout,
            batch=config.webhook_batch,
            interval=config.webhook_interval,
            gap_wait=config.webhook_gap_wait,
            ca_bundle=config.webhook_ca_bundle,
        )


# ---------------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Evgate-Signature` value: `v1=` and the hex HMAC-SHA256 of `{timestamp}.{body}`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float | None = 300.0,
    now: float | None = None,
) -> bool:
    """What a partner does on receipt: the signature matches (constant-time), and the timestamp is
    within `tolerance` seconds of `now` (replay protection; None: not checked)."""
    if tolerance is not None:
        try:
            age = abs((time.time() if now is None else now) - int(timestamp))
        except ValueError:
            return False
        if age > tolerance:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.strip().encode())


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before attempt `attempts + 1`: base * 2^(attempts - 1), capped, with "equal jitter"
    (half fixed, half random) so that partners failing together do not retry together."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay / 2 + rng.uniform(0, delay / 2)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# The outbox filler
# ---------------------------------------------------------------------------------------------


class OutboxFiller:
    """Turns the event log into deliveries, per partner, from its cursor."""

    def __init__(self, settings: WebhookSettings, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.monotonic = monotonic
        self._gaps: dict[int, float] = {}  # first missing id -> when first seen

    async def fill(self) -> int:
        """One pass over every receiving partner with a webhook; how many deliveries were enqueued."""
        partners = [
            p
            for p in await Partner.filter(webhook_url__not_isnull=True, disabled_at=None).order_by("id")
            if receives(p)
        ]
        if not partners:
            return 0
        agreements = await catalog.sharing_agreements()
        total = 0
        for partner in partners:
            total += await self._fill_one(partner, agreements)
        return total

    async def _fill_one(self, partner: Partner, agreements: Agreements) -> int:
        cursor_row, _ = await PartnerCursor.get_or_create(partner_id=partner.id)
        cursor = cursor_row.last_enqueued_event_id
        rows = (
            await Event.filter(id__gt=cursor)
            .order_by("id")
            .limit(self.settings.batch)
            .values("id", "kind", "operator_id", "borough_code")
        )
        # SQLite has one writer at a time, so its commit order is id order and a gap never fills.
        postgres = connection().capabilities.dialect == "postgres"
        settled = self._settled(cursor, [r["id"] for r in rows], self.settings.gap_wait if postgres else 0.0)
        if not settled:
            return 0
        rows = rows[: len(settled)]
        principal = principal_of(partner)
        now = _utcnow()
        todo = [
            WebhookDelivery(partner_id=partner.id, event_id=r["id"], next_attempt_at=now)
            for r in rows
            if visible(principal, r["kind"], r["operator_id"], r["borough_code"], agreements)
        ]
        async with in_transaction() as conn:
            moved = (
                await PartnerCursor.filter(partner_id=partner.id, last_enqueued_event_id=cursor)
                .using_db(conn)
                .update(last_enqueued_event_id=settled[-1])
            )
            if not moved:  # another filler advanced it: its deliveries stand, ours are not needed
                return 0
            if todo:
                await WebhookDelivery.bulk_create(todo, ignore_conflicts=True, using_db=conn)
        return len(todo)

    def _settled(self, cursor: int, ids: list[int], wait: float) -> list[int]:
        """The prefix of `ids` that can be passed: up to the first gap not yet waited out."""
        now = self.monotonic()
        expected = cursor + 1
        out: list[int] = []
        for event_id in ids:
            if event_id != expected:
                first_seen = self._gaps.setdefault(expected, now)
                if now - first_seen < wait:
                    break
            out.append(event_id)
            expected = event_id + 1
        if out:
            for key in [k for k in self._gaps if k <= out[-1]]:
                del self._gaps[key]
        return out


# ---------------------------------------------------------------------------------------------
# The deliverer
# ---------------------------------------------------------------------------------------------


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verification against the system store, plus `ca_bundle` when given."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(ca_bundle)
    return context


class Deliverer:
    """Sends due deliveries; `tick` is one bounded round (the service calls it in a loop)."""

    def __init__(
        self,
        settings: WebhookSettings,
        vault: SecretStore,
        *,
        clock: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.vault = vault
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            verify=ssl_context(settings.ca_bundle), timeout=settings.timeout, follow_redirects=False
        )

    async def close(self) -> None:
        """Release the HTTP pool (if it is ours)."""
        if self._own_client:
            await self.client.aclose()

    async def tick(self) -> int:
        """Attempt the due deliveries (at most `batch`); how many were attempted."""
        now = self.clock()
        partners = {
            p.id: p
            for p in await Partner.filter(webhook_url__not_isnull=True, disabled_at=None)
            if receives(p) and p.webhook_secret
        }
        if not partners:
            return 0
        due = (
            await WebhookDelivery.filter(
                partner_id__in=sorted(partners), delivered_at=None, dead_at=None, next_attempt_at__lte=now
            )
            .order_by("next_attempt_at", "id")
            .limit(self.settings.batch)
        )
        if not due:
            return 0
        events = {
            r["id"]: r for r in await Event.filter(id__in=sorted({d.event_id for d in due})).values(*EVENT_COLUMNS)
        }
        agreements = await catalog.sharing_agreements()
        by_partner: dict[str, list[WebhookDelivery]] = {}
        for delivery in due:
            by_partner.setdefault(delivery.partner_id, []).append(delivery)
        order = list(by_partner)
        self.rng.shuffle(order)  # nobody is always first
        limit = asyncio.Semaphore(PARTNER_CONCURRENCY)

        async def one(partner_id: str) -> int:
            async with limit:
                return await self._partner_round(partners[partner_id], by_partner[partner_id], events, agreements)

        return sum(await asyncio.gather(*(one(pid) for pid in order)))

    async def _partner_round(
        self, partner: Partner, deliveries: list[WebhookDelivery], events: dict[int, dict], agreements: Agreements
    ) -> int:
        """One partner's due deliveries, by event id, stopping at the first failure."""
        try:
            secret = self.vault.decrypt(partner.webhook_secret or "")
        except SecretError:
            log.error("webhook to %s: its signing secret opens with no configured key; not sending", partner.id)
            return 0
        principal = principal_of(partner)
        attempted = 0
        for delivery in sorted(deliveries, key=lambda d: d.event_id):
            event = events.get(delivery.event_id)
            if event is None or not visible(
                principal, event["kind"], event["operator_id"], event["borough_code"], agreements
            ):
                await self._dead(delivery, "event gone or no longer shared with this partner")
                continue
            if not await self._claim(delivery):
                continue  # another process is sending it
            attempted += 1
            if not await self._attempt(partner, secret, delivery, event):
                break
        return attempted

    async def _claim(self, delivery: WebhookDelivery) -> bool:
        """Take a due delivery for this attempt: its next attempt moves past the request's timeout,
        so that another gateway process's deliverer leaves it alone (and, should this process die
        mid-request, picks it up once the claim lapses)."""
        now = self.clock()
        claimed = await WebhookDelivery.filter(
            id=delivery.id, attempts=delivery.attempts, delivered_at=None, dead_at=None, next_attempt_at__lte=now
        ).update(next_attempt_at=now + timedelta(seconds=self.settings.timeout + CLAIM_MARGIN))
        return bool(claimed)

    async def _attempt(self, partner: Partner, secret: str, delivery: WebhookDelivery, event: dict) -> bool:
        """Send one delivery and record the outcome; whether it was delivered."""
        body = orjson.dumps(event_json(event))
        timestamp = str(int(self.clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "evgate-webhooks/1",
            EVENT_ID_HEADER: str(event["id"]),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = await self.client.post(partner.webhook_url or "", content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
        now = self.clock()
        attempts = delivery.attempts + 1
        update: dict = {"attempts": attempts, "last_status": status, "last_error": error}
        if error is None:
            update["delivered_at"] = now
        elif attempts >= self.settings.max_attempts:
            update["dead_at"] = now
            log.warning(
                "webhook to %s: event %s dead-lettered after %d attempts (%s)", partner.id, event["id"], attempts, error
            )
        else:
            delay = backoff(attempts, self.settings.backoff_base, self.settings.backoff_cap, self.rng)
            update["next_attempt_at"] = now + timedelta(seconds=delay)
        await WebhookDelivery.filter(id=delivery.id, delivered_at=None).update(**update)
        return error is None

    async def _dead(self, delivery: WebhookDelivery, reason: str) -> None:
        await WebhookDelivery.filter(id=delivery.id).update(dead_at=self.clock(), last_error=reason)


# ---------------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------------


class WebhookService:
    """Fills the outbox and delivers it every `interval` seconds, until stopped."""

    def __init__(self, config: GatewayConfig) -> None:
        self.settings = WebhookSettings.of(config)
        self.filler = OutboxFiller(self.settings)
        self.deliverer = Deliverer(self.settings, SecretStore(config.secret_keys))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background."""
        self._task = asyncio.create_task(self._run(), name="evgate-webhooks")

    async def _run(self) -> None:
        while True:
            try:
                await self.filler.fill()
                for _ in range(MAX_TICKS_PER_ROUND):  # a full batch: more may be due right now
                    if await self.deliverer.tick() < self.settings.batch:
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook round failed; retrying in %.0f s", self.settings.interval)
            await asyncio.sleep(self.settings.interval)

    async def stop(self) -> None:
        """Cancel the loop and release the HTTP pool."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.deliverer.close()
