"""Live streams (gateway.streams): GraphQL subscriptions over graphql-transport-ws and SSE.

Simulated operators -> poller -> event log -> hub -> a real uvicorn server -> a gql WebSocket
client (and an SSE client): events arrive in id order, a client that disconnects and resumes with
its cursor gets exactly the events it missed (compared with the Event table), the access policy
applies to every event, a slow subscriber is closed with 4429 while a fast one gets everything,
and on PostgreSQL an event committed out of id order is not skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from gateway.auth import Principal, Role
from gateway.broker import InProcessBroker
from gateway.db import connection
from gateway.demo import simulated_operators
from gateway.models import Event
from gateway.partners import visible_events
from gateway.streams import CLOSE_TOO_FAR_BEHIND, SESSION_KINDS, EventHub, EventWhere, Stream, settled_position
from simulator.cluster import Simulation, start_simulation
from tests.conftest import TestDb
from tests.support import (
    Gateway,
    issue_api_key,
    new_api_key,
    shared_path,
    simulated_gateway,
)

BOROUGHS = shared_path("data", "london_boroughs_gla_wgs84.geojson")
ADMIN = new_api_key()
STEP = timedelta(minutes=20)

SESSION_EVENTS = """
subscription($where: EventFilter, $after: ID) {
  sessionEvents(where: $where, after: $after) {
    id cursor kind operatorId boroughCode sessionId evseId status start end kwh at
  }
}"""
STATUS_CHANGES = """
subscription($where: EventFilter, $after: ID) {
  statusChanges(where: $where, after: $after) { id kind operatorId boroughCode evseId status previous }
}"""


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(seed=11, evses=300, history_days=1, speed=0.0, boroughs_geojson=BOROUGHS)
    try:
        yield simulation
    finally:
        await simulation.stop()


async def _gateway(db: TestDb, sim: Simulation, **settings: Any) -> AsyncIterator[Gateway]:
    operators = simulated_operators(sim, backfill=timedelta(days=2).total_seconds())
    # The first operator shares its usage data with boroughs; the others with no one.
    operators[0] = dataclasses.replace(operators[0], agreement={"USAGE": ["borough"]})
    async for gw in simulated_gateway(db.url, operators, admin=ADMIN, **settings):
        yield gw


@pytest.fixture
async def gateway(db: TestDb, sim: Simulation) -> AsyncIterator[Gateway]:
    async for gw in _gateway(db, sim):
        yield gw


async def step(gw: Gateway, sim: Simulation, times: int = 1) -> None:
    """Simulated time passes; the gateway catches up (sessions start and stop)."""
    for _ in range(times):
        sim.clock.advance(STEP)
        await gw.runtime.sync_all()


async def max_event_id() -> int:
    last = await Event.all().order_by("-id").limit(1).values_list("id", flat=True)
    return int(last[0]) if last else 0


async def logged(after: int, kinds: frozenset[str] = SESSION_KINDS, **filters: Any) -> list[int]:
    """The ids of the event log after `after`, in order (the truth a stream is compared with)."""
    return list(
        await Event.filter(id__gt=after, kind__in=sorted(kinds), **filters).order_by("id").values_list("id", flat=True)
    )


def ws_client(gw: Gateway, token: str | None) -> Client:
    payload = {"Authorization": f"Bearer {token}"} if token else {}
    transport = WebsocketsTransport(
        url=f"ws://{gw.url}/graphql",
        init_payload=payload,
        subprotocols=["graphql-transport-ws"],
        connect_timeout=10,
        close_timeout=5,
    )
    return Client(transport=transport, fetch_schema_from_transport=False)


def _closed_too_far_behind(exc: BaseException) -> bool:
    """Whether a client error is the server's 4429 close (anywhere in the exception chain)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        rcvd = getattr(seen, "rcvd", None)
        if rcvd is not None and rcvd.code == CLOSE_TOO_FAR_BEHIND:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Collector:
    """A subscription running in the background, keeping what it receives."""

    def __init__(self, gw: Gateway, token: str | None, document: str, variables: dict[str, Any]) -> None:
        self.received: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.resumed = 0  # times it was closed as too far behind and resumed with its cursor
        self.task = asyncio.create_task(self._run(gw, token, document, variables))

    async def _run(self, gw: Gateway, token: str | None, document: str, variables: dict[str, Any]) -> None:
        # As a real client does: closed with 4429 (too far behind, as on a loaded machine), it
        # resumes after the last event it received.
        for _ in range(20):
            try:
                async with ws_client(gw, token) as session:
                    async for result in session.subscribe(GraphQLRequest(document, variable_values=variables)):
                        self.received.append(next(iter(result.values())))
                return
            except Exception as exc:
                if not _closed_too_far_behind(exc):
                    self.error = exc
                    return
                self.resumed += 1
                if self.received:
                    variables = {**variables, "after": self.received[-1]["id"]}

    @property
    def ids(self) -> list[int]:
        return [int(r["id"]) for r in self.received]

    # Longer than the hub's longest wait at a hole (60 s): on a loaded PostgreSQL a transaction
    # that began before a hole can keep it open that long, and the events then arrive late, not never.
    async def until(self, condition: Callable[[], bool], seconds: float = 90) -> None:
        for _ in range(int(seconds / 0.05)):
            if condition() or self.task.done():
                break
            await asyncio.sleep(0.05)
        assert condition(), (self.error, len(self.received))

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_events_arrive_in_order_and_resuming_loses_nothing(gateway: Gateway, sim: Simulation) -> None:
    await gateway.runtime.sync_all()  # the backfill
    start = await max_event_id()
    assert start > 0
    sub = Collector(gateway, ADMIN, SESSION_EVENTS, {"after": str(start)})
    await step(gateway, sim, 3)
    want = await logged(start)
    assert len(want) > 5  # sessions started and stopped
    await sub.until(lambda: len(sub.received) >= len(want))
    assert sub.ids == want  # in order, none missing, none twice
    assert {r["kind"] for r in sub.received} <= SESSION_KINDS
    assert all(r["cursor"] == r["id"] for r in sub.received)
    await sub.stop()

    # Disconnected while sessions go on; resumed with the last cursor: exactly what was missed.
    last = sub.ids[-1]
    await step(gateway, sim, 3)
    resumed = Collector(gateway, ADMIN, SESSION_EVENTS, {"after": str(last)})
    missed = await logged(last)
    assert missed
    await resumed.until(lambda: len(resumed.received) >= len(missed))
    await step(gateway, sim, 1)  # and then live again, with no gap
    more = await logged(last)
    await resumed.until(lambda: len(resumed.received) >= len(more))
    assert resumed.ids == more
    await asyncio.sleep(0.3)
    assert resumed.ids == more  # nothing more, nothing twice
    await resumed.stop()


async def test_filters_and_status_changes(gateway: Gateway, sim: Simulation) -> None:
    await gateway.runtime.sync_all()
    start = await max_event_id()
    op = sim.operators[0].id
    where = {"operatorIds": [op], "kinds": ["session.started"]}
    started = Collector(gateway, ADMIN, SESSION_EVENTS, {"after": str(start), "where": where})
    statuses = Collector(gateway, None, STATUS_CHANGES, {"after": "0"})  # OPEN: anonymous may
    await step(gateway, sim, 3)
    want = await logged(start, frozenset({"session.started"}), operator_id=op)
    want_status = await logged(0, frozenset({"evse.status_changed"}))
    await started.until(lambda: len(started.received) >= len(want))
    await statuses.until(lambda: len(statuses.received) >= len(want_status))
    assert started.ids == want and want
    assert statuses.ids == want_status
    await started.stop()
    await statuses.stop()


async def test_the_access_policy_applies_to_every_event(gateway: Gateway, sim: Simulation) -> None:
    await gateway.runtime.sync_all()
    start = await max_event_id()
    sharing = sim.operators[0].id  # shares USAGE with boroughs; the others share nothing
    rows = await Event.filter(operator_id=sharing, borough_code__not_isnull=True).values_list("borough_code", flat=True)
    borough = max(set(rows), key=rows.count)
    officer = await issue_api_key(Role.BOROUGH, boroughs=[borough])
    other = sim.operators[1].id
    operator_key = await issue_api_key(Role.OPERATOR, operator_id=other)
    partner = await issue_api_key(Role.PARTNER, partner_id="p1")

    by_officer = Collector(gateway, officer, SESSION_EVENTS, {"after": "0"})
    by_operator = Collector(gateway, operator_key, SESSION_EVENTS, {"after": str(start)})
    await step(gateway, sim, 2)
    want_officer = await logged(0, operator_id=sharing, borough_code=borough)
    want_operator = await logged(start, operator_id=other)
    assert want_officer and want_operator
    await by_officer.until(lambda: len(by_officer.received) >= len(want_officer))
    await by_operator.until(lambda: len(by_operator.received) >= len(want_operator))
    await asyncio.sleep(0.3)
    assert by_officer.ids == want_officer  # its borough, of the one operator sharing with boroughs
    assert by_operator.ids == want_operator  # its own operator's only
    await by_officer.stop()
    await by_operator.stop()

    # A partner with no agreement, and anonymous callers, are refused with the policy's codes.
    for token, code in ((partner, "FORBIDDEN"), (None, "UNAUTHENTICATED")):
        async with ws_client(gateway, token) as session:
            with pytest.raises(TransportQueryError) as refused:
                async for _ in session.subscribe(GraphQLRequest(SESSION_EVENTS, variable_values={"after": "0"})):
                    break
        assert refused.value.errors and refused.value.errors[0]["extensions"]["code"] == code


async def sse_events(
    gw: Gateway, token: str, params: dict[str, str], last_event_id: str | None, count: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Read `count` events from /events/stream (data and ids), then disconnect."""
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[dict[str, Any]] = []
    ids: list[str] = []
    async with (
        httpx.AsyncClient(base_url=f"http://{gw.url}", timeout=30) as http,
        http.stream("GET", "/events/stream", params=params, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
            elif line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
                if len(events) >= count:
                    break
    return events, ids


async def test_sse_stream_resumes_with_last_event_id(gateway: Gateway, sim: Simulation) -> None:
    await gateway.runtime.sync_all()
    start = await max_event_id()
    await step(gateway, sim, 2)
    want = await logged(start)
    half = len(want) // 2
    assert half > 2
    params = {"stream": "sessionEvents", "after": str(start)}
    first, ids = await sse_events(gateway, ADMIN, params, None, half)
    assert [int(e["id"]) for e in first] == want[:half] and ids == [e["id"] for e in first]
    # Reconnecting with Last-Event-ID (wins over `after`): the rest, then live.
    rest_task = asyncio.create_task(sse_events(gateway, ADMIN, params, ids[-1], len(want) - half + 3))
    await asyncio.sleep(0.2)
    await step(gateway, sim, 1)
    total = await logged(start)
    if len(total) < len(want) + 3:
        await step(gateway, sim, 3)
        total = await logged(start)
    rest, _ = await asyncio.wait_for(rest_task, 30)
    assert [int(e["id"]) for e in rest] == total[half : len(want) + 3]
    # Refusals are JSON errors before any stream.
    async with httpx.AsyncClient(base_url=f"http://{gateway.url}", timeout=10) as http:
        resp = await http.get("/events/stream", params={"stream": "sessionEvents"})
        assert resp.status_code == 401 and resp.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        resp = await http.get("/events/stream", params={"stream": "nope"})
        assert resp.status_code == 400


JS_CLIENT = Path(__file__).parent / "js" / "graphql_ws_client.cjs"


def node_modules_with_graphql_ws() -> str | None:
    """A node_modules folder holding the npm graphql-ws and ws packages (`EVGATE_NODE_MODULES`, or
    tests/js/node_modules after `npm install --prefix tests/js graphql-ws ws`), if node is here."""
    if shutil.which("node") is None:
        return None
    for candidate in (os.environ.get("EVGATE_NODE_MODULES"), str(JS_CLIENT.parent / "node_modules")):
        if candidate and (Path(candidate) / "graphql-ws").is_dir() and (Path(candidate) / "ws").is_dir():
            return candidate
    return None


async def test_the_npm_graphql_ws_client_resumes_with_the_cursor(gateway: Gateway, sim: Simulation) -> None:
    modules = node_modules_with_graphql_ws()
    if modules is None:
        pytest.skip("node, or the npm graphql-ws and ws packages, not installed (set EVGATE_NODE_MODULES)")
    await gateway.runtime.sync_all()
    start = await max_event_id()
    await step(gateway, sim, 2)
    want = await logged(start)
    assert len(want) > 4
    half = len(want) // 2

    async def run_client(after: int, count: int) -> list[int]:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(JS_CLIENT),
            f"ws://{gateway.url}/graphql",
            ADMIN,
            str(after),
            str(count),
            env={**os.environ, "NODE_PATH": modules},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (out, err)
        return orjson.loads(out.splitlines()[-1])["ids"]

    first = await run_client(start, half)
    assert first == want[:half]
    rest = await run_client(first[-1], len(want) - half)  # resumed with the cursor: the rest exactly
    assert rest == want[half:]


async def test_a_subscriber_too_far_behind_is_closed_with_4429(db: TestDb, sim: Simulation) -> None:
    # A queue of one event: the first commit of two or more events overflows it.
    async for gw in _gateway(db, sim, stream_queue_size=1):
        await gw.runtime.sync_all()
        async with websockets.connect(
            f"ws://{gw.url}/graphql", subprotocols=["graphql-transport-ws"], open_timeout=10
        ) as ws:
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {ADMIN}"}}
            await ws.send(orjson.dumps(init).decode())
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
            subscribe = {"id": "1", "type": "subscribe", "payload": {"query": "subscription { sessionEvents { id } }"}}
            await ws.send(orjson.dumps(subscribe).decode())
            await asyncio.sleep(0.3)  # subscribed (live from here)
            await step(gw, sim, 2)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                for _ in range(10_000):
                    message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert message["type"] == "next", message
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_TOO_FAR_BEHIND
        assert "too far behind; resume with after=" in closed.value.rcvd.reason


async def test_a_slow_subscriber_does_not_hold_back_the_others(db: TestDb) -> None:
    hub = EventHub(InProcessBroker(), queue_size=50, poll_interval=60)
    await hub.start()
    admin = Principal(role=Role.ADMIN, subject="admin")
    overflowed: list[int | None] = []
    fast = await hub.subscribe(Stream.STATUS, EventWhere(), None, admin)
    slow = await hub.subscribe(
        Stream.STATUS, EventWhere(), None, admin, on_overflow=lambda e: overflowed.append(e.last_id)
    )
    got: list[int] = []
    slow_got: list[int] = []

    async def read_fast() -> None:
        async for ev in fast:
            got.append(ev.id)

    async def read_slow() -> None:
        async for ev in slow:  # takes one event, then never reads again
            slow_got.append(ev.id)
            await asyncio.sleep(3600)

    readers = [asyncio.create_task(read_fast()), asyncio.create_task(read_slow())]
    await asyncio.sleep(0.05)
    row = {"kind": "evse.status_changed", "operator_id": "op", "subject_id": "e", "payload": {}}
    now = datetime.now(UTC)
    try:
        for _ in range(20):  # 200 events, 10 per commit: four times the slow one's bound
            await Event.bulk_create([Event(**row, created_at=now) for _ in range(10)])
            await hub.catch_up()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if len(got) == hub.dispatched:
                    break
        want = await logged(0, frozenset({"evse.status_changed"}))
        assert len(want) == 200 and got == want  # the fast one: everything, in order
        assert slow_got == want[:1] and overflowed == [want[0]]  # the slow one: closed, with its cursor
        assert len(hub.subscribers) == 1  # and forgotten: its buffer is gone
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await hub.stop()


@pytest.mark.postgres
async def test_an_event_committed_out_of_id_order_is_not_skipped(db: TestDb) -> None:
    if db.kind != "postgres":
        pytest.skip("only PostgreSQL commits concurrent transactions out of id order")
    hub = EventHub(InProcessBroker(), poll_interval=0.05, hole_grace=30, hole_max_wait=30)
    await hub.start()
    admin = Principal(role=Role.ADMIN, subject="admin")
    events = await hub.subscribe(Stream.STATUS, EventWhere(), None, admin)
    received: list[int] = []

    async def consume() -> None:
        async for ev in events:
            received.append(ev.id)

    consumer = asyncio.create_task(consume())
    row = {"kind": "evse.status_changed", "operator_id": "op", "subject_id": "e", "payload": "{}"}
    insert = (
        "INSERT INTO event (kind, operator_id, borough_code, subject_id, payload, created_at) "
        "VALUES ($1, $2, NULL, $3, $4, now()) RETURNING id"
    )
    first = connection()._in_transaction()  # type: ignore[attr-defined]
    second = connection()._in_transaction()  # type: ignore[attr-defined]
    try:
        async with first as t1:
            (early,) = await t1.execute_query_dict(insert, list(row.values()))
            async with second as t2:
                (late,) = await t2.execute_query_dict(insert, list(row.values()))
            assert late["id"] > early["id"]
            # The later id is committed, the earlier one not yet: the hub must wait for it.
            await asyncio.sleep(0.5)
            assert received == []
        # Committed: both arrive, in order.
        for _ in range(100):
            if len(received) >= 2:
                break
            await asyncio.sleep(0.05)
        assert received == [early["id"], late["id"]]

        # A rolled-back id is a permanent hole: the next event is not held back for long.
        with contextlib.suppress(RuntimeError):
            async with connection()._in_transaction() as t3:  # type: ignore[attr-defined]
                await t3.execute_query_dict(insert, list(row.values()))
                raise RuntimeError("roll back")
        async with connection()._in_transaction() as t4:  # type: ignore[attr-defined]
            (after_hole,) = await t4.execute_query_dict(insert, list(row.values()))
        for _ in range(100):
            if len(received) >= 3:
                break
            await asyncio.sleep(0.05)
        assert received == [early["id"], late["id"], after_hole["id"]]
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await hub.stop()


@pytest.mark.postgres
async def test_pull_never_hands_out_a_cursor_past_an_uncommitted_event(db: TestDb) -> None:
    if db.kind != "postgres":
        pytest.skip("only PostgreSQL commits concurrent transactions out of id order")
    hub = EventHub(InProcessBroker(), poll_interval=0.05, hole_grace=30, hole_max_wait=30)
    await hub.start()
    admin = Principal(role=Role.ADMIN, subject="admin")
    insert = (
        "INSERT INTO event (kind, operator_id, borough_code, subject_id, payload, created_at) "
        "VALUES ('evse.status_changed', 'op', NULL, 'e', '{}', now()) RETURNING id"
    )
    go = asyncio.Event()

    async def pull_when_told() -> tuple[list[dict], int]:
        await go.wait()
        return await visible_events(admin, 0, 10, until=await settled_position(hub))

    # Created outside the transactions below, so that it reads through its own connection.
    during = asyncio.create_task(pull_when_told())
    try:
        async with connection()._in_transaction() as t1:  # type: ignore[attr-defined]
            (early,) = await t1.execute_query_dict(insert)
            async with connection()._in_transaction() as t2:  # type: ignore[attr-defined]
                (late,) = await t2.execute_query_dict(insert)
            # The later event is committed, the earlier not yet: a pull must not pass it by.
            go.set()
            rows, cursor = await during
            assert rows == [] and cursor == 0
        rows, cursor = await visible_events(admin, 0, 10, until=await settled_position(hub))
        assert [r["id"] for r in rows] == [early["id"], late["id"]] and cursor == late["id"]
    finally:
        await hub.stop()


async def test_live_events_overflowing_during_a_replay_are_read_from_the_log(db: TestDb) -> None:
    row = {"kind": "evse.status_changed", "operator_id": "op", "subject_id": "e", "payload": {}}
    await Event.bulk_create([Event(**row, created_at=datetime.now(UTC)) for _ in range(20)])
    hub = EventHub(InProcessBroker(), queue_size=3, poll_interval=60)
    await hub.start()
    admin = Principal(role=Role.ADMIN, subject="admin")
    try:
        events = await hub.subscribe(Stream.STATUS, EventWhere(), 0, admin)
        got = [(await anext(events)).id]  # replaying the log now
        # Ten more events go live while the replay is under way: three times the buffer.
        await Event.bulk_create([Event(**row, created_at=datetime.now(UTC)) for _ in range(10)])
        await hub.catch_up()
        async with asyncio.timeout(10):
            while len(got) < 30:
                got.append((await anext(events)).id)
        assert got == await logged(0, frozenset({"evse.status_changed"}))  # all 30, in order, once
        await events.aclose()
    finally:
        await hub.stop()


async def test_a_client_closed_as_too_far_behind_resumes_and_misses_nothing(db: TestDb, sim: Simulation) -> None:
    # A queue of one event: every commit of several events closes the subscriber with 4429.
    async for gw in _gateway(db, sim, stream_queue_size=1):
        await _follow_through_closes(gw, sim)


async def _follow_through_closes(gw: Gateway, sim: Simulation) -> None:
    await gw.runtime.sync_all()
    start = await max_event_id()
    sub = Collector(gw, ADMIN, SESSION_EVENTS, {"after": str(start)})
    await asyncio.sleep(0.3)
    await step(gw, sim, 3)
    want = await logged(start)
    await sub.until(lambda: len(sub.received) >= len(want))
    await asyncio.sleep(0.3)
    assert sub.resumed > 0  # it really was closed, and came back with its cursor
    assert sub.ids == want  # in order, nothing missed, nothing twice
    await sub.stop()
