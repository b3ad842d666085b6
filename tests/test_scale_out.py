"""Scale-out: two `evgate serve` processes on one PostgreSQL database with the Redis broker.

One simulated OCPI operator runs in the test process on a frozen clock, with slow pages so that
catching up takes many windows. Exactly one process holds the operator's lease and polls it (the
operator sees requests from that process only); a Redis listener in the test receives the event
ids it publishes. The holder is killed (SIGKILL) in the middle; the other process takes the lease
over within the lease's lifetime and catches up. At the end the database holds exactly the
operator's sessions and CDRs, each session started once; a subscriber that followed the
announced ids (reading the event log up to each) has seen every event, and an SSE subscriber of
the surviving process received session events ingested by the killed process, then its own.

Requires PostgreSQL and Redis on 127.0.0.1: skipped with the reason when either is unreachable,
except when `CI=true`, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from gateway.broker_redis import RedisBroker
from gateway.db import close_db, init_db
from gateway.models import Event, PollerLease, SyncState
from gateway.vault import generate_key
from simulator.cluster import Simulation, start_simulation
from simulator.faults import Faults
from tests.conftest import IN_CI, _empty_tables
from tests.support import assert_holds_exactly_the_operators_records, free_port, issue_api_key, shared_path

pytestmark = pytest.mark.postgres

BOROUGHS = shared_path("data", "london_boroughs_gla_wgs84.geojson")
REDIS_URL = os.environ.get("EVGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
BACKFILL = timedelta(days=2)
WINDOW = timedelta(hours=12)
LEASE_TTL = 3.0
SLOW = [{"kind": "slow", "delay": 0.15, "paths": ["sessions", "cdrs"]}]
WATCHED = ("alpha:locations", "alpha:sessions", "alpha:cdrs")


def _pid_of_local_port(port: int, pids: list[int]) -> int | None:
    """Which of `pids` owns the TCP socket bound to local `port` on this machine (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    return None


class RequestLog:
    """Which gateway process (pid) sent each request the operator served, and when."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.seen: list[tuple[float, int | None]] = []

    def record(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer and self.pids:
            self.seen.append((time.monotonic(), _pid_of_local_port(peer[1], self.pids)))

    def by(self, since: float = 0.0) -> set[int | None]:
        return {pid for at, pid in self.seen if at >= since}


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        await client.ping()
    except Exception as exc:
        reason = f"Redis unreachable at {REDIS_URL}: {exc!r}"
        if IN_CI:
            pytest.fail(reason + " (CI=true: Redis tests must run)")
        pytest.skip(reason)
    finally:
        await client.aclose()
    yield REDIS_URL


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[str]:
    await init_db(postgres_url)
    await _empty_tables()
    try:
        yield postgres_url
    finally:
        await close_db()


@pytest.fixture
async def requests_log(monkeypatch: pytest.MonkeyPatch) -> RequestLog:
    log = RequestLog()
    original = Faults._middleware

    @web.middleware
    async def spy(self: Faults, request: web.Request, handler):  # type: ignore[no-untyped-def]
        log.record(request)
        return await original(self, request, handler)

    monkeypatch.setattr(Faults, "_middleware", spy)
    return log


@pytest.fixture
async def sim(requests_log: RequestLog) -> AsyncIterator[Simulation]:
    simulation = await start_simulation(
        seed=23,
        operators=1,
        evses=160,
        speed=0.0,
        lag=timedelta(hours=1),
        history_days=3,
        page_limit=10,
        boroughs_geojson=BOROUGHS,
        faults={"alpha": SLOW},
    )
    try:
        yield simulation
    finally:
        await simulation.stop()


def _toml(sim: Simulation, database_url: str, port: int, channel: str) -> str:
    op = sim.operators[0]
    return "\n".join(
        [
            "[gateway]",
            f'database_url = "{database_url}"',
            f"port = {port}",
            f'boroughs_geojson = "{BOROUGHS}"',
            'broker = "redis"',
            f'redis_url = "{REDIS_URL}"',
            f'redis_channel = "{channel}"',
            f"lease_ttl = {LEASE_TTL}",
            "",
            "[[operators]]",
            f'id = "{op.id}"',
            f'name = "{op.name}"',
            f'url = "{op.url}"',
            f'ca_bundle = "{sim.ca_path}"',
            f'token = "{op.token}"',
            f'token_encoding = "{op.token_encoding}"',
            f"backfill = {BACKFILL.total_seconds()}",
            f"window = {WINDOW.total_seconds()}",
            "page_limit = 10",
            'modules = ["locations", "sessions", "cdrs"]',
            "[operators.cadence]",
            "locations = 1",
            "sessions = 1",
            "cdrs = 1",
            "",
        ]
    )


async def _start(config: Path, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--log-level", "warning"]
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(*cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _cursors() -> dict[str, datetime | None]:
    found = dict(await SyncState.filter(id__in=list(WATCHED)).values_list("id", "cursor"))
    return {sid: found.get(sid) for sid in WATCHED}


async def _subscribe(port: int, token: str, received: list[tuple[float, int]]) -> None:
    """A subscriber of one gateway: session events over SSE, resuming after the last id it got
    (it connects before the process listens, and again if asked to after falling behind)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(5, read=None)) as http:
        while True:
            after = received[-1][1] if received else 0
            params = {"stream": "sessionEvents", "after": str(after)}
            try:
                async with http.stream("GET", "/events/stream", params=params, headers=headers) as response:
                    if response.status_code != 200:
                        await asyncio.sleep(0.2)
                        continue
                    async for line in response.aiter_lines():
                        if line.startswith("id: "):
                            received.append((time.monotonic(), int(line[4:])))
            except httpx.TransportError:
                await asyncio.sleep(0.2)


async def _holder_pid() -> int | None:
    holders = await PollerLease.filter(operator_id="alpha").values_list("holder", flat=True)
    return int(holders[0].split(":")[1]) if holders else None


async def test_two_processes_share_one_operator_and_lose_nothing_when_the_poller_dies(
    pg: str, redis_url: str, sim: Simulation, requests_log: RequestLog, tmp_path: Path
) -> None:
    end = sim.clock.now().replace(microsecond=0)
    start = end - BACKFILL
    channel = f"evgate:test:{secrets.token_hex(4)}"
    env = {**os.environ, "EVGATE_PSEUDONYM_KEY": "scale-out", "EVGATE_SECRET_KEYS": generate_key()}
    env.pop("EVGATE_BROKER", None)
    env.pop("EVGATE_REDIS_URL", None)

    # A listener in the test process: on each announced id it reads the event log up to that id.
    # (Holes below an announced id, from a window of another module still committing, are
    # streams' business, gateway.streams; here the whole prefix is read again each time.)
    listener = RedisBroker(redis_url, channel)
    await listener.start()
    await asyncio.wait_for(listener.subscribed.wait(), 10)
    announced: list[tuple[float, int]] = []
    followed: set[int] = set()

    async def follow() -> None:
        async for event_id in listener.listen():
            announced.append((time.monotonic(), event_id))
            followed.update(await Event.filter(id__lte=event_id).values_list("id", flat=True))

    follower = asyncio.create_task(follow())
    procs: dict[int, asyncio.subprocess.Process] = {}
    # GraphQL-side subscribers: one per process, over SSE (gateway.sse), as an administrator.
    admin = await issue_api_key()
    streamed: dict[int, list[tuple[float, int]]] = {}
    subscribers: list[asyncio.Task[None]] = []
    log = tmp_path / "gateways.log"
    try:
        for name in ("a", "b"):
            config = tmp_path / f"{name}.toml"
            port = free_port()
            config.write_text(_toml(sim, pg, port, channel))
            proc = await _start(config, env, log)
            procs[proc.pid] = proc
            streamed[proc.pid] = []
            subscribers.append(asyncio.create_task(_subscribe(port, admin, streamed[proc.pid])))
        requests_log.pids = list(procs)

        # One process holds the lease and polls; wait until it is well into the slow windows.
        for _ in range(300):  # at most 60 s
            await asyncio.sleep(0.2)
            assert all(p.returncode is None for p in procs.values()), log.read_text()
            if sim.faults["alpha"].fired["slow"] >= 8 and announced:
                break
        else:
            raise AssertionError(f"no polling: {log.read_text()}")
        holder = await _holder_pid()
        assert holder in procs
        assert requests_log.by() == {holder}, requests_log.by()  # only the holder polls
        # The other process's subscriber receives what the holder ingests (through Redis).
        for _ in range(100):
            if streamed[set(procs).difference({holder}).pop()]:
                break
            await asyncio.sleep(0.1)
        before_kill = await _cursors()
        assert any(c is None or c < end for c in before_kill.values()), before_kill  # mid-catch-up
        procs[holder].send_signal(signal.SIGKILL)
        await procs[holder].wait()
        killed_at = time.monotonic()
        (other,) = set(procs) - {holder}

        # The other process takes the lease over within its lifetime (and a margin) and polls.
        for _ in range(100):
            await asyncio.sleep(0.1)
            if requests_log.by(killed_at) and await _holder_pid() == other:
                break
        took_over = time.monotonic() - killed_at
        assert await _holder_pid() == other
        assert took_over <= LEASE_TTL + 3.0, took_over
        announced_before_takeover = len(announced)

        for _ in range(600):  # at most 120 s
            await asyncio.sleep(0.2)
            assert procs[other].returncode is None, log.read_text()
            if all(c is not None and c >= end for c in (await _cursors()).values()):
                break
        else:
            raise AssertionError(f"not caught up: {await _cursors()}")
        assert requests_log.by(killed_at + 0.5) == {other}  # the dead one is silent
        highest = await Event.all().order_by("-id").limit(1).values_list("id", flat=True)
        sessions = set(await Event.filter(kind__startswith="session.").values_list("id", flat=True))
        for _ in range(100):  # the last announcement travels through Redis, then the stream
            if announced and announced[-1][1] == highest[0] and streamed[other][-1][1] == max(sessions):
                break
            await asyncio.sleep(0.1)
        assert len(announced) > announced_before_takeover  # the new poller publishes too
    finally:
        for task in subscribers:  # first: an open stream holds up a graceful shutdown
            task.cancel()
        await asyncio.gather(*subscribers, return_exceptions=True)
        for proc in procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in procs.values():
            await asyncio.wait_for(proc.wait(), 30)
        follower.cancel()
        await listener.stop()

    # Nothing lost, nothing twice: exactly the operator's records, each session started once.
    await assert_holds_exactly_the_operators_records(sim, "alpha", start, end)
    # A subscriber following the announcements saw every event, in non-decreasing announcements.
    ids = [event_id for _, event_id in announced]
    assert ids == sorted(ids)
    assert ids[-1] == highest[0]
    assert followed == set(await Event.all().values_list("id", flat=True))
    # The survivor's subscriber (from after=0) received every session event: those the other
    # process ingested while it polled (announced through Redis), then those of its own polling,
    # each once and in order.
    survivor = [event_id for _, event_id in streamed[other]]
    assert any(at < killed_at for at, _ in streamed[other]), {p: len(v) for p, v in streamed.items()}
    assert any(at > killed_at + took_over for at, _ in streamed[other])
    assert survivor == sorted(sessions)
    # Stopped cleanly: the survivor released the lease.
    assert await PollerLease.filter(operator_id="alpha").count() == 0
