"""PUSH: the outbox filler and deliverer against a real HTTPS receiver on loopback (aiohttp)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from gateway import partners
from gateway.config import GatewayConfig
from gateway.models import Operator, PartnerCursor, WebhookDelivery
from gateway.vault import SecretStore
from gateway.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Deliverer,
    OutboxFiller,
    WebhookSettings,
    backoff,
    sign,
    verify,
)
from tests.conftest import TestDb
from tests.partner_fixtures import event_log, operators_with_agreements, visible_to_partner
from tests.support import SECRET_KEYS, running_gateway, serve_tls

MAX_TICKS = 60  # every delivery loop below is bounded


@dataclass
class Receiver:
    """A partner's webhook endpoint: fails its first `fail_first` requests, then answers 200;
    verifies every signature and records the event ids it accepted."""

    fail_first: int = 3
    always_fail: bool = False
    secret: str = ""
    requests: int = 0
    received: list[str] = field(default_factory=list)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        timestamp = request.headers[TIMESTAMP_HEADER]
        if not verify(self.secret, timestamp, body, request.headers[SIGNATURE_HEADER], tolerance=None):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.always_fail or self.requests <= self.fail_first:
            return web.Response(status=500)
        event = orjson.loads(body)
        assert request.headers[EVENT_ID_HEADER] == event["id"]
        assert set(event) == {"id", "kind", "operatorId", "boroughCode", "subjectId", "payload", "createdAt"}
        self.received.append(event["id"])
        return web.Response(status=204)


class Clock:
    """A settable clock for the deliverer (backoff is measured on it)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def settings(ca: str, max_attempts: int = 8) -> WebhookSettings:
    return WebhookSettings(
        max_attempts=max_attempts, backoff_base=1.0, backoff_cap=8.0, timeout=5.0, batch=50, gap_wait=0.0, ca_bundle=ca
    )


async def receiver_at(tmp_path: Path, receiver: Receiver):
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async for url, ca in serve_tls(app, tmp_path / "pki"):
        yield f"{url}/hook", ca


async def drive(deliverer: Deliverer, clock: Clock, done) -> int:
    """Tick (advancing the clock past any backoff) until `done()`; the number of ticks."""
    for tick in range(1, MAX_TICKS + 1):
        await deliverer.tick()
        if await done():
            return tick
        clock.advance(30)
    raise AssertionError("deliveries did not finish within the bounded number of ticks")


async def pending() -> int:
    return await WebhookDelivery.filter(delivered_at=None, dead_at=None).count()


async def test_every_event_arrives_exactly_once_despite_three_failures_and_only_what_may_be_seen(
    db: TestDb, tmp_path: Path
) -> None:
    await operators_with_agreements()
    receiver = Receiver(fail_first=3)
    vault = SecretStore(SECRET_KEYS)
    async for url, ca in receiver_at(tmp_path, receiver):
        reg = await partners.register(vault, "appco", "App Co", webhook_url=url, accept_licence=True)
        assert reg.webhook_secret and reg.api_key.startswith("evg_")
        receiver.secret = reg.webhook_secret
        stored = await partners.Partner.get(id="appco")
        assert stored.webhook_secret and reg.webhook_secret not in stored.webhook_secret  # encrypted at rest
        ids = await event_log(per_kind=4)
        filler = OutboxFiller(settings(ca))
        assert await filler.fill() == len(visible_to_partner(ids))
        assert await filler.fill() == 0  # resumes from its cursor: nothing twice
        clock = Clock()
        deliverer = Deliverer(settings(ca), vault, clock=clock, rng=random.Random(7))
        try:
            await drive(deliverer, clock, _none_pending)
        finally:
            await deliverer.close()
    assert receiver.bad_signatures == 0
    assert receiver.requests == len(receiver.received) + 3
    assert sorted(int(i) for i in receiver.received) == visible_to_partner(ids)
    assert len(set(receiver.received)) == len(receiver.received)  # exactly once by id
    assert not set(receiver.received) & {str(i) for i in ids["PRIVATE/USAGE"]}  # never PRIVATE's sessions
    retried = await WebhookDelivery.filter(attempts__gt=1).count()
    assert retried >= 1 and await WebhookDelivery.filter(delivered_at=None).count() == 0


async def _none_pending() -> bool:
    return await pending() == 0


async def test_dead_letter_after_max_attempts_then_redeliver(db: TestDb, tmp_path: Path) -> None:
    await operators_with_agreements()
    receiver = Receiver(fail_first=0, always_fail=True)
    vault = SecretStore(SECRET_KEYS)
    async for url, ca in receiver_at(tmp_path, receiver):
        reg = await partners.register(vault, "appco", "App Co", webhook_url=url, accept_licence=True)
        receiver.secret = reg.webhook_secret or ""
        ids = await event_log(per_kind=1)
        await OutboxFiller(settings(ca)).fill()
        clock = Clock()
        deliverer = Deliverer(settings(ca, max_attempts=3), vault, clock=clock, rng=random.Random(1))
        try:
            await drive(deliverer, clock, _none_pending)
            dead = await WebhookDelivery.filter(dead_at__not_isnull=True).order_by("event_id")
            assert [d.event_id for d in dead] == visible_to_partner(ids)
            assert all(d.attempts == 3 and d.last_status == 500 and d.delivered_at is None for d in dead)
            assert receiver.received == []
            receiver.always_fail = False
            assert await partners.redeliver("appco", dead=True) == len(dead)
            await drive(deliverer, clock, _none_pending)
            assert sorted(int(i) for i in receiver.received) == visible_to_partner(ids)
            # One event again, on request: delivered once more (partners deduplicate by id).
            assert await partners.redeliver("appco", event_id=dead[0].event_id) == 1
            await drive(deliverer, clock, _none_pending)
            assert receiver.received.count(str(dead[0].event_id)) == 2
            # An event the partner may not see cannot be forced on it.
            with pytest.raises(partners.PartnerError):
                await partners.redeliver("appco", event_id=ids["PRIVATE/USAGE"][0])
        finally:
            await deliverer.close()
    assert receiver.bad_signatures == 0


async def test_nothing_enqueued_without_licence_or_when_disabled(db: TestDb) -> None:
    await operators_with_agreements()
    vault = SecretStore(SECRET_KEYS)
    await partners.register(vault, "nolicence", "No Licence", webhook_url="https://127.0.0.1:9/hook")
    await partners.register(vault, "gone", "Gone", webhook_url="https://127.0.0.1:9/hook", accept_licence=True)
    assert await partners.disable("gone")
    await event_log()
    filler = OutboxFiller(WebhookSettings(gap_wait=0))
    assert await filler.fill() == 0
    assert await WebhookDelivery.all().count() == 0
    # Accepting the licence later: events from the partner's cursor (its registration) on.
    await partners.update(vault, "nolicence", accept_licence=True)
    assert await filler.fill() > 0
    cursor = await PartnerCursor.get(partner_id="nolicence")
    assert cursor.last_enqueued_event_id == await partners.last_event_id()


async def test_a_partner_whose_operators_share_no_usage_gets_only_status_changes(db: TestDb) -> None:
    await operators_with_agreements()
    vault = SecretStore(SECRET_KEYS)
    await partners.register(vault, "appco", "App Co", webhook_url="https://127.0.0.1:9/hook", accept_licence=True)
    # Withdraw the sharing operator's agreement too: only OPEN events remain for partners.
    await Operator.filter().update(agreement={})
    ids = await event_log()
    await OutboxFiller(WebhookSettings(gap_wait=0)).fill()
    queued = sorted(await WebhookDelivery.all().values_list("event_id", flat=True))
    assert queued == sorted(ids["SHARING/OPEN"] + ids["PRIVATE/OPEN"])


def test_signature_and_backoff() -> None:
    body = b'{"id":"1"}'
    signature = sign("s3cret", "1700000000", body)
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert verify("s3cret", "1700000000", body, signature, now=1700000100)
    assert not verify("s3cret", "1700000000", body + b" ", signature, now=1700000100)
    assert not verify("other", "1700000000", body, signature, now=1700000100)
    assert not verify("s3cret", "1700000000", body, signature, now=1700009999)  # too old: a replay
    rng = random.Random(3)
    delays = [backoff(n, 10.0, 300.0, rng) for n in range(1, 10)]
    for n, delay in enumerate(delays, start=1):
        full = min(300.0, 10.0 * 2 ** (n - 1))
        assert full / 2 <= delay <= full
    assert max(delays) <= 300.0


def test_gaps_are_waited_for_then_passed() -> None:
    now = [0.0]
    filler = OutboxFiller(WebhookSettings(gap_wait=10.0), monotonic=lambda: now[0])
    assert filler._settled(5, [6, 7, 9, 10], 10.0) == [6, 7]  # 8 may still be committing
    now[0] = 5.0
    assert filler._settled(7, [9, 10], 10.0) == []
    now[0] = 10.5
    assert filler._settled(7, [9, 10], 10.0) == [9, 10]  # waited long enough: 8 was rolled back
    assert filler._settled(10, [12], 0.0) == [12]  # SQLite: a gap never fills


def test_cli_registers_lists_and_redelivers(tmp_path: Path) -> None:
    config = tmp_path / "evgate.toml"
    config.write_text(
        f'[gateway]\ndatabase_url = "sqlite://{tmp_path / "cli.sqlite3"}"\npseudonym_key = "k"\n'
        f'secret_keys = ["{SECRET_KEYS[0]}"]\n'
    )

    def evgate(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "partners", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = evgate(
        "register", "--id", "appco", "--name", "App Co", "--webhook-url", "https://x.test/h", "--accept-licence"
    )
    assert "api_key:        evg_" in out and "webhook_secret: " in out
    assert "appco" in evgate("list") and "not accepted" not in evgate("list")
    assert "scheduled 0 deliveries" in evgate("redeliver", "--partner", "appco", "--dead")


async def test_the_served_gateway_delivers_in_the_background(db: TestDb, tmp_path: Path) -> None:
    """The app's lifespan runs the webhook service when polling is on (here with no operators)."""
    await operators_with_agreements()
    receiver = Receiver(fail_first=1)
    async for url, ca in receiver_at(tmp_path, receiver):
        config = GatewayConfig(
            database_url=db.url,
            pseudonym_key="test-key",
            secret_keys=SECRET_KEYS,
            poll=True,
            webhook_interval=0.05,
            webhook_backoff_base=0.05,
            webhook_backoff_cap=0.1,
            webhook_ca_bundle=ca,
        )
        reg = await partners.register(SecretStore(SECRET_KEYS), "appco", "App", webhook_url=url, accept_licence=True)
        receiver.secret = reg.webhook_secret or ""
        ids = await event_log(per_kind=2)
        async for _gateway in running_gateway(config):
            for _ in range(400):  # at most about 20 s
                if len(receiver.received) >= len(visible_to_partner(ids)):
                    break
                await asyncio.sleep(0.05)
    assert sorted(int(i) for i in receiver.received) == visible_to_partner(ids)
    assert receiver.bad_signatures == 0
