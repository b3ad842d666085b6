"""Live streams: events per second from the event log to 1,000 concurrent WebSocket subscribers,
with the commit-to-receipt latency, on SQLite, everything in one process.

Run: `.venv/bin/python -m bench.bench_events [--subscribers 1000] [--commits 40] [--batch 5] [--interval 0.5]`.

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
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import uvicorn
import websockets
from tortoise.transactions import in_transaction

from gateway.app import create_app
from gateway.config import GatewayConfig
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


async def run(subscribers: int, commits: int, batch: int, interval: float) -> None:
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
    url = f"ws://127.0.0.1:{port}/graphql"

    inboxes: list[list[tuple[int, float]]] = [[] for _ in range(subscribers)]
    readies = [asyncio.Event() for _ in range(subscribers)]
    clients = []
    t0 = time.perf_counter()
    for i in range(subscribers):  # connect in groups, not all at once
        clients.append(asyncio.create_task(subscriber(url, i, inboxes[i], readies[i])))
        if i % 50 == 49:
            await asyncio.gather(*(r.wait() for r in readies[: i + 1]))
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    await asyncio.sleep(1.0)  # every subscription registered with the hub
    print(f"events: {subscribers} subscribers connected in {time.perf_counter() - t0:.1f} s")

    broker = holder["runtime"].broker
    committed: dict[int, float] = {}
    row = {"kind": "evse.status_changed", "operator_id": "bench", "subject_id": "evse"}
    last = 0
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
    for _ in range(600):  # at most 60 s for the last deliveries
        if all(len(inbox) >= total for inbox in inboxes):
            break
        await asyncio.sleep(0.1)
    end = max((inbox[-1][1] for inbox in inboxes if inbox), default=time.perf_counter())
    latencies = sorted((t - committed[i]) * 1000 for inbox in inboxes for i, t in inbox if i in committed)
    complete = sum(1 for inbox in inboxes if [i for i, _ in inbox] == sorted(committed))
    elapsed = end - start
    print(
        f"events: {total} events in {commits} commits of {batch}, one every {interval} s, "
        f"to {subscribers} subscribers (SQLite, one process)"
    )
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
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    server.should_exit = True
    await asyncio.wait_for(serving, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--commits", type=int, default=40)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(run(args.subscribers, args.commits, args.batch, args.interval))


if __name__ == "__main__":
    main()
