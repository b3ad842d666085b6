"""Live streams: events per second from the event log to 1,000 concurrent WebSocket subscribers,
with the commit-to-receipt latency and memory per subscriber: on SQLite in one process, and (with
`--postgres ADMIN_URL`) on PostgreSQL with Redis, the writer and the gateway in two processes.

Run: `.venv/bin/python -m bench.bench_events [--subscribers 1000] [--commits 40] [--batch 5]
[--interval 0.5] [--postgres postgres://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/0]`.

The real app (uvicorn on 127.0.0.1, graphql-transport-ws, the event hub woken by the in-process
broker) and `--subscribers` raw WebSocket clients, each subscribed to `statusChanges` as an
anonymous caller, share this process and its one core. `--commits` transactions of `--batch`
events each are written to the event log as ingest writes them (one transaction, then
`broker.publish`), one every `--interval` seconds. For each event and subscriber the latency is
the time from the commit returning to the client parsing the message. Printed: events/s and
deliveries/s (events x subscribers) over the run, p50/p99/max latency, and whether every
subscriber got every event in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import uvicorn
import websockets
from tortoise.transactions import in_transaction

from bench.bench_query import free_port
from bench.common import fresh_postgres_url
from gateway.app import create_app
from gateway.broker import Broker
from gateway.broker_redis import RedisBroker
from gateway.config import GatewayConfig
from gateway.db import close_db, init_db
from gateway.models import Event
from gateway.runtime import Runtime, start_runtime
from gateway.vault import generate_key

QUERY = "subscription { statusChanges { id } }"


async def subscriber(url: str, index: int, received: list[tuple[int, float]], ready: asyncio.Event) -> None:
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"], open_timeout=60, max_queue=None) as ws:
        await ws.send(orjson.dumps({"type": "connection_init", "payload": {}}).decode())
        assert orjson.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(orjson.dumps({"id": str(index), "type": "subscribe", "payload": {"query": QUERY}}).decode())
        ready.set()
        async for raw in ws:
            now = time.perf_counter()
            message = orjson.loads(raw)
            if message["type"] != "next":
                break
            received.append((int(message["payload"]["data"]["statusChanges"]["id"]), now))


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process, in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def connect_all(url: str, subscribers: int) -> tuple[list[asyncio.Task[None]], list[list[tuple[int, float]]]]:
    """`subscribers` WebSocket subscriptions to `url`, connected in groups of 50."""
    inboxes: list[list[tuple[int, float]]] = [[] for _ in range(subscribers)]
    readies = [asyncio.Event() for _ in range(subscribers)]
    clients = []
    t0 = time.perf_counter()
    for i in range(subscribers):
        clients.append(asyncio.create_task(subscriber(url, i, inboxes[i], readies[i])))
        if i % 50 == 49:
            await asyncio.gather(*(r.wait() for r in readies[: i + 1]))
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    await asyncio.sleep(1.0)  # every subscription registered with the hub
    print(f"events: {subscribers} subscribers connected in {time.perf_counter() - t0:.1f} s")
    return clients, inboxes


async def commit_and_measure(
    broker: Broker, inboxes: list[list[tuple[int, float]]], commits: int, batch: int, interval: float, label: str
) -> None:
    """Write `commits` transactions of `batch` events as ingest does, announce each through the
    broker, wait for the deliveries and print the figures."""
    committed: dict[int, float] = {}
    row = {"kind": "evse.status_changed", "operator_id": "bench", "subject_id": "evse"}
    last = int(max(await Event.all().values_list("id", flat=True), default=0))
    start = time.perf_counter()
    for c in range(commits):
        now = datetime.now(UTC)
        async with in_transaction() as conn:
            events = [
                Event(**row, payload={"evse": f"evse-{c}-{k}", "status": "CHARGING"}, created_at=now)
                for k in range(batch)
            ]
            await Event.bulk_create(events, using_db=conn)
        at = time.perf_counter()
        ids = [int(i) for i in await Event.filter(id__gt=last).values_list("id", flat=True)]
        for event_id in ids:
            committed[event_id] = at
        last = max(ids)
        await broker.publish(last)
        await asyncio.sleep(interval)
    total = commits * batch
    subscribers = len(inboxes)
    for _ in range(600):  # at most 60 s for the last deliveries
        if all(len(inbox) >= total for inbox in inboxes):
            break
        await asyncio.sleep(0.1)
    end = max((inbox[-1][1] for inbox in inboxes if inbox), default=time.perf_counter())
    latencies = sorted((t - committed[i]) * 1000 for inbox in inboxes for i, t in inbox if i in committed)
    complete = sum(1 for inbox in inboxes if [i for i, _ in inbox] == sorted(committed))
    elapsed = end - start
    print(f"events: {total} events in {commits} commits of {batch}, one every {interval} s, to {subscribers} ({label})")
    print(
        f"  delivered {len(latencies)} of {total * subscribers}; {complete}/{subscribers} subscribers got "
        f"every event in order"
    )
    offered = f"offered {batch / interval:.1f} events/s" if interval > 0 else "offered as fast as commits go"
    print(
        f"  {total / elapsed:.1f} events/s, {len(latencies) / elapsed:.0f} deliveries/s over {elapsed:.1f} s; "
        + offered
    )
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"  commit-to-receipt latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")


async def run(subscribers: int, commits: int, batch: int, interval: float) -> None:
    """SQLite, one process: the gateway, the writer and the subscribers share it."""
    workdir = Path(tempfile.mkdtemp(prefix="evgate-bench-events-"))
    config = GatewayConfig(
        database_url=f"sqlite://{workdir / 'events.sqlite3'}",
        pseudonym_key=secrets.token_urlsafe(16),
        secret_keys=[generate_key()],
        boroughs_geojson=str(workdir / "none.geojson"),
        poll=False,
        stream_queue_size=1000,
        rate_limit_per_minute=10**9,
        rate_limit_burst=10**9,
    )
    holder: dict[str, Runtime] = {}

    async def factory(cfg: GatewayConfig) -> Runtime:
        holder["runtime"] = await start_runtime(cfg, poll=False)
        return holder["runtime"]

    server = uvicorn.Server(
        uvicorn.Config(create_app(config, runtime_factory=factory), host="127.0.0.1", port=0, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    before = rss_mb()
    clients, inboxes = await connect_all(f"ws://127.0.0.1:{port}/graphql", subscribers)
    per = (rss_mb() - before) * 1024 / subscribers
    print(f"  memory: {per:.0f} kB per subscriber (gateway and its client together: one process)")
    await commit_and_measure(holder["runtime"].broker, inboxes, commits, batch, interval, "SQLite, one process")
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    server.should_exit = True
    await asyncio.wait_for(serving, 30)


async def run_postgres(
    subscribers: int, commits: int, batch: int, interval: float, database_url: str, redis_url: str
) -> None:
    """PostgreSQL and Redis, two processes: this one writes the events and publishes through Redis,
    as a polling gateway does; `evgate serve` in a child process serves the subscribers."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="evgate-bench-events-"))
    config = workdir / "gateway.toml"
    config.write_text(
        f'[gateway]\ndatabase_url = "{database_url}"\nport = {port}\npseudonym_key = "bench"\npoll = false\n'
        f'broker = "redis"\nredis_url = "{redis_url}"\nrate_limit_per_minute = "off"\n'
        f'boroughs_geojson = "{workdir / "none.geojson"}"\n'
    )
    env = {**os.environ, "EVGATE_SECRET_KEYS": generate_key()}
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--log-level", "warning"]
    proc = await asyncio.create_subprocess_exec(*cmd, env=env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        await init_db(database_url)
        broker = RedisBroker(redis_url, "evgate:events")
        await broker.start()
        before = rss_mb(proc.pid)
        clients, inboxes = await connect_all(f"ws://127.0.0.1:{port}/graphql", subscribers)
        per = (rss_mb(proc.pid) - before) * 1024 / subscribers
        print(f"  memory: {per:.0f} kB per subscriber (the gateway process alone)")
        label = "PostgreSQL + Redis, writer and gateway in two processes"
        await commit_and_measure(broker, inboxes, commits, batch, interval, label)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await broker.stop()
        await close_db()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--commits", type=int, default=40)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--postgres", default=None, help="admin URL: also run PostgreSQL + Redis, two processes")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(run(args.subscribers, args.commits, args.batch, args.interval))
    if args.postgres:
        with fresh_postgres_url(args.postgres) as url:
            asyncio.run(run_postgres(args.subscribers, args.commits, args.batch, args.interval, url, args.redis))


if __name__ == "__main__":
    main()
