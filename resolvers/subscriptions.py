"""The Subscription root: live session events and EVSE status changes (`gateway.streams`).

Over graphql-transport-ws at /graphql (credentials in the connection_init payload, as
`Authorization: Bearer ...`). Each event carries its `cursor` (the event log id): subscribing
again with `after: <the last cursor received>` replays what was missed from the log, then goes
live, with no gap and no duplicate. A subscriber that falls more than the hub's queue bound
(1,000 events) behind has its WebSocket closed with code 4429 ("too far behind; resume with
after=<id>"); it reconnects and resumes with its cursor.

`SessionEvent` is USAGE data (`@protected`): anonymous callers are refused (UNAUTHENTICATED) and
the hub leaves out, before they are sent, the events of operators and boroughs the caller may not
see (`gateway.policy.row_scope`). Status changes are OPEN.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from typing import Any

import strawberry
from starlette.websockets import WebSocket

from gateway.errors import ErrorCode, EvgateError
from gateway.policy import DataClass
from gateway.streams import (
    CLOSE_TOO_FAR_BEHIND,
    EventHub,
    EventWhere,
    Stream,
    StreamEvent,
    TooFarBehind,
)
from resolvers.context import RequestContext
from resolvers.permissions import protected

Info = strawberry.Info[RequestContext, None]


@strawberry.input(description="Every given criterion must hold (an empty list matches nothing).")
class EventFilter:
    operator_ids: list[str] | None = None
    borough_codes: list[str] | None = strawberry.field(default=None, description="GSS codes.")
    evse_ids: list[str] | None = strawberry.field(default=None, description="Gateway EVSE ids (`Evse.id`).")
    kinds: list[str] | None = strawberry.field(
        default=None,
        description="Event kinds: session.started, session.updated, session.completed, session.aborted; "
        "evse.status_changed.",
    )

    def to_where(self, stream: Stream) -> EventWhere:
        if self.kinds is not None:
            unknown = sorted(set(self.kinds) - stream.kinds)
            if unknown:
                raise EvgateError(ErrorCode.BAD_USER_INPUT, f"where.kinds: {unknown} are not kinds of {stream.value}")
        return EventWhere.of(self.operator_ids, self.borough_codes, self.evse_ids, self.kinds)


@strawberry.type(
    description="A charging session started, changed, completed or was aborted (USAGE data).",
    directives=protected(DataClass.USAGE),
)
class SessionEvent:
    id: strawberry.ID = strawberry.field(description="The event log id (the same as `cursor`).")
    cursor: strawberry.ID = strawberry.field(description="Pass as `after` to resume after this event.")
    kind: str = strawberry.field(description="session.started, session.updated, session.completed, session.aborted.")
    operator_id: str
    borough_code: str | None
    session_id: str
    location_id: str | None
    evse_id: str | None
    status: str | None
    start: datetime | None
    end: datetime | None
    kwh: float | None
    at: datetime = strawberry.field(description="When the gateway fetched the change.")

    @classmethod
    def of(cls, ev: StreamEvent) -> SessionEvent:
        p = ev.payload
        return cls(
            id=strawberry.ID(str(ev.id)),
            cursor=strawberry.ID(str(ev.id)),
            kind=ev.kind,
            operator_id=ev.operator_id,
            borough_code=ev.borough_code,
            session_id=str(p.get("session") or ev.subject_id),
            location_id=p.get("location"),
            evse_id=p.get("evse"),
            status=p.get("status"),
            start=_time(p.get("start")),
            end=_time(p.get("end")),
            kwh=p.get("kwh"),
            at=ev.created_at,
        )


@strawberry.type(description="An EVSE's status changed (OPEN data).")
class StatusChange:
    id: strawberry.ID = strawberry.field(description="The event log id (the same as `cursor`).")
    cursor: strawberry.ID = strawberry.field(description="Pass as `after` to resume after this event.")
    kind: str = strawberry.field(description="evse.status_changed.")
    operator_id: str
    borough_code: str | None
    evse_id: str
    location_id: str | None
    status: str
    previous: str | None
    since: datetime | None = strawberry.field(description="When the operator says the status changed.")
    at: datetime = strawberry.field(description="When the gateway fetched the change.")

    @classmethod
    def of(cls, ev: StreamEvent) -> StatusChange:
        p = ev.payload
        return cls(
            id=strawberry.ID(str(ev.id)),
            cursor=strawberry.ID(str(ev.id)),
            kind=ev.kind,
            operator_id=ev.operator_id,
            borough_code=ev.borough_code,
            evse_id=str(p.get("evse") or ev.subject_id),
            location_id=p.get("location"),
            status=str(p.get("status")),
            previous=p.get("previous"),
            since=_time(p.get("at")),
            at=ev.created_at,
        )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value)
    return None


def parse_after(after: str | None) -> int | None:
    """A cursor (`after`) as an event id; BAD_USER_INPUT unless a non-negative integer."""
    if after is None or after == "":
        return None
    try:
        value = int(after)
    except ValueError:
        value = -1
    if value < 0:
        raise EvgateError(ErrorCode.BAD_USER_INPUT, f"after: {after!r} is not a cursor")
    return value


def hub_of(info: Info) -> EventHub:
    """The process's event hub (created by the app's lifespan)."""
    connection = info.context.request
    app = getattr(connection, "scope", {}).get("app") if connection is not None else None
    hub = getattr(getattr(app, "state", None), "hub", None)
    if not isinstance(hub, EventHub):
        raise EvgateError(ErrorCode.INTERNAL_SERVER_ERROR, "live streams are not running")
    return hub


def _closer(info: Info) -> Callable[[TooFarBehind], Awaitable[None]] | None:
    """Close the WebSocket with 4429 when the subscriber falls too far behind."""
    connection = info.context.request
    if not isinstance(connection, WebSocket):
        return None

    async def close(exc: TooFarBehind) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(CLOSE_TOO_FAR_BEHIND, str(exc)[:120]), 10)

    return close


async def _events(info: Info, stream: Stream, where: EventFilter | None, after: strawberry.ID | None) -> Any:
    event_where = where.to_where(stream) if where is not None else EventWhere()
    cursor = parse_after(after)
    hub = hub_of(info)
    return await hub.subscribe(stream, event_where, cursor, info.context.principal, on_overflow=_closer(info))


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Session events as they are ingested. `after`: resume after this cursor (replayed from "
        "the event log, then live). Only the sessions the caller may see (USAGE data)."
    )
    async def session_events(
        self, info: Info, where: EventFilter | None = None, after: strawberry.ID | None = None
    ) -> AsyncGenerator[SessionEvent, None]:
        events = await _events(info, Stream.SESSIONS, where, after)
        async for ev in events:
            yield SessionEvent.of(ev)

    @strawberry.subscription(
        description="EVSE status changes as they are ingested. `after`: resume after this cursor (replayed "
        "from the event log, then live)."
    )
    async def status_changes(
        self, info: Info, where: EventFilter | None = None, after: strawberry.ID | None = None
    ) -> AsyncGenerator[StatusChange, None]:
        events = await _events(info, Stream.STATUS, where, after)
        async for ev in events:
            yield StatusChange.of(ev)
