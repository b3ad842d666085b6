"""Live streams over Server-Sent Events: `GET /events/stream`, for clients without WebSockets.

    GET /events/stream?stream=sessionEvents&after=123&operator=op-a&borough=E09000007&evse=...&kind=...

`stream` is `sessionEvents` (USAGE data: credentials needed) or `statusChanges` (OPEN; the
default). `operator`, `borough`, `evse` and `kind` may be repeated (any of the values). Credentials
as for /graphql: `Authorization: Bearer <JWT or API key>` or `X-API-Key`. Resume: `after=<id>`, or
the `Last-Event-ID` header that an EventSource sends by itself on reconnecting (it wins over
`after`). Each event is

    id: <event id>
    event: <kind>            (session.started, ..., evse.status_changed)
    data: <JSON: the same fields as the GraphQL SessionEvent / StatusChange, camelCase>

with a `: keepalive` comment every 15 s of silence. A refused caller gets a JSON error before any
stream (401 UNAUTHENTICATED, 403 FORBIDDEN, 400 BAD_USER_INPUT). A subscriber that falls too far
behind gets `event: error` with data `{"code": "TOO_FAR_BEHIND", "closeCode": 4429, "after": <last id
sent>, ...}`, and the stream ends: it reconnects with its Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.errors import ErrorCode, EvgateError
from gateway.identity import Identity
from gateway.streams import (
    CLOSE_TOO_FAR_BEHIND,
    TOO_FAR_BEHIND,
    EventHub,
    EventWhere,
    Stream,
    StreamEvent,
    TooFarBehind,
)

HEARTBEAT = 15.0
STATUS = {ErrorCode.UNAUTHENTICATED: 401, ErrorCode.FORBIDDEN: 403, ErrorCode.BAD_USER_INPUT: 400}


def event_json(ev: StreamEvent) -> dict[str, Any]:
    """An event as the GraphQL types show it (`resolvers.subscriptions`), camelCase."""
    p = ev.payload
    common = {
        "id": str(ev.id),
        "cursor": str(ev.id),
        "kind": ev.kind,
        "operatorId": ev.operator_id,
        "boroughCode": ev.borough_code,
        "at": ev.created_at.isoformat(),
    }
    if ev.kind == "evse.status_changed":
        return {
            **common,
            "evseId": p.get("evse") or ev.subject_id,
            "locationId": p.get("location"),
            "status": p.get("status"),
            "previous": p.get("previous"),
            "since": p.get("at"),
        }
    return {
        **common,
        "sessionId": p.get("session") or ev.subject_id,
        "locationId": p.get("location"),
        "evseId": p.get("evse"),
        "status": p.get("status"),
        "start": p.get("start"),
        "end": p.get("end"),
        "kwh": p.get("kwh"),
    }


def _error(code: ErrorCode, message: str) -> Response:
    body = {"errors": [{"message": message, "extensions": {"code": code.value}}]}
    return JSONResponse(body, status_code=STATUS.get(code, 400))


def _cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise EvgateError(ErrorCode.BAD_USER_INPUT, f"after / Last-Event-ID: {value!r} is not a cursor")
    return int(value)


def _where(request: Request, stream: Stream) -> EventWhere:
    params = request.query_params

    def values(name: str) -> list[str] | None:
        got = params.getlist(name)
        return got or None

    kinds = values("kind")
    if kinds is not None and set(kinds) - stream.kinds:
        raise EvgateError(ErrorCode.BAD_USER_INPUT, f"kind: {sorted(set(kinds) - stream.kinds)} not in {stream.value}")
    return EventWhere.of(values("operator"), values("borough"), values("evse"), kinds)


def stream_endpoint(identity: Identity) -> Callable[[Request], Awaitable[Response]]:
    """The `GET /events/stream` endpoint, authenticating with the app's `identity`."""

    async def endpoint(request: Request) -> Response:
        hub = getattr(request.app.state, "hub", None)
        if not isinstance(hub, EventHub):
            return _error(ErrorCode.INTERNAL_SERVER_ERROR, "live streams are not running")
        try:
            try:
                stream = Stream(request.query_params.get("stream", Stream.STATUS.value))
            except ValueError:
                raise EvgateError(ErrorCode.BAD_USER_INPUT, "stream: sessionEvents or statusChanges") from None
            after = _cursor(request.headers.get("last-event-id") or request.query_params.get("after"))
            where = _where(request, stream)
            principal = await identity.authenticate(request.headers)
            events = await hub.subscribe(stream, where, after, principal)
        except EvgateError as exc:
            return _error(exc.code, exc.message)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(_frames(events), media_type="text/event-stream", headers=headers)

    return endpoint


async def _frames(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    """The SSE frames of a subscription, with keepalives; ends with an error event on overflow."""
    pending: asyncio.Future[StreamEvent] | None = None
    try:
        yield b": connected\n\n"
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))  # type: ignore[arg-type]
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT)
            if not done:
                yield b": keepalive\n\n"
                continue
            future, pending = pending, None
            try:
                ev = future.result()
            except StopAsyncIteration:
                return
            except TooFarBehind as exc:
                data = {
                    "code": TOO_FAR_BEHIND,
                    "closeCode": CLOSE_TOO_FAR_BEHIND,
                    "message": str(exc),
                    "after": str(exc.last_id) if exc.last_id is not None else None,
                }
                yield b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"
                return
            yield b"id: %d\nevent: %s\ndata: %s\n\n" % (ev.id, ev.kind.encode(), orjson.dumps(event_json(ev)))
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
