"""PULL: `GET /partners/v1/events?after=&limit=` and its OpenAPI 3.1 description.

The same events, under the same rule, as the webhooks (`gateway.partners.visible_events`): status
changes for every caller with credentials, session events only of the operators whose agreement
shares USAGE data with the caller's role (a borough: in its boroughs). A partner must be
registered, active and have accepted the licence. Credentials as for GraphQL (`Authorization:
Bearer <API key or JWT>` or `X-API-Key`). Errors are JSON `{"errors": [{"code", "message"}]}` with
catalogue codes (`gateway.errors`): 400 BAD_USER_INPUT, 401 UNAUTHENTICATED, 403 FORBIDDEN.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import ErrorCode
from gateway.identity import Identity
from gateway.partners import (
    DEFAULT_PULL_LIMIT,
    MAX_PULL_LIMIT,
    entitlement,
    event_json,
    parse_cursor,
    visible_events,
)
from gateway.streams import settled_position
from gateway.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

EVENTS_PATH = "/partners/v1/events"
OPENAPI_PATH = "/partners/v1/openapi.json"
STATUS_OF = {ErrorCode.BAD_USER_INPUT: 400, ErrorCode.UNAUTHENTICATED: 401, ErrorCode.FORBIDDEN: 403}


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


def error_response(code: ErrorCode, message: str) -> Response:
    """A JSON error with its catalogue code (and, for 401, the Bearer challenge)."""
    headers = {"WWW-Authenticate": 'Bearer realm="evgate"'} if code is ErrorCode.UNAUTHENTICATED else None
    return _json({"errors": [{"code": code.value, "message": message}]}, STATUS_OF.get(code, 400), headers)


def events_endpoint(identity: Identity) -> Callable[[Request], Awaitable[Response]]:
    """The handler of `GET /partners/v1/events`."""

    async def events(request: Request) -> Response:
        principal = await identity.authenticate(request.headers)
        decision = await entitlement(principal)
        if not decision:
            assert decision.code is not None
            return error_response(decision.code, decision.reason)
        try:
            after = parse_cursor(request.query_params.get("after"))
        except ValueError:
            return error_response(ErrorCode.BAD_USER_INPUT, "after must be an event id (a cursor `next` returned)")
        raw_limit = request.query_params.get("limit")
        try:
            limit = DEFAULT_PULL_LIMIT if raw_limit in (None, "") else int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PULL_LIMIT:
            return error_response(ErrorCode.BAD_USER_INPUT, f"limit must be an integer from 1 to {MAX_PULL_LIMIT}")
        until = await settled_position(getattr(request.app.state, "hub", None))
        rows, cursor = await visible_events(principal, after, limit, until=until)
        return _json({"events": [event_json(r) for r in rows], "next": str(cursor)})

    return events


async def openapi_endpoint(request: Request) -> Response:
    """`GET /partners/v1/openapi.json`."""
    return _json(OPENAPI)


def partner_routes(identity: Identity) -> list[Route]:
    """The PULL routes, mounted next to /graphql by `gateway.app.create_app`."""
    return [
        Route(EVENTS_PATH, events_endpoint(identity), methods=["GET"]),
        Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"]),
    ]


_ERROR = {"$ref": "#/components/schemas/Errors"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "evgate partner events",
        "version": "1.0.0",
        "description": (
            "Events of London's charge point operators for registered partners that accepted the licence: "
            "EVSE status changes (open data) for every partner, session events only of operators whose "
            "data-sharing agreement grants partners USAGE data. PULL them here, or receive them PUSHed to a "
            "webhook (see `webhooks`). The same feed is the GraphQL field `partnerEvents`."
        ),
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {"apiKey": []}],
    "paths": {
        EVENTS_PATH: {
            "get": {
                "operationId": "listEvents",
                "summary": "Events after a cursor, oldest first",
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "The `next` of the previous page (an event id); absent: from the start.",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": f"Page size, 1 to {MAX_PULL_LIMIT}.",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_PULL_LIMIT,
                            "default": DEFAULT_PULL_LIMIT,
                        },
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A page of events; call again with `after=next` (an empty page keeps `next`).",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventPage"}}},
                    },
                    "400": {
                        "description": "BAD_USER_INPUT: a malformed cursor or limit.",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                    "401": {
                        "description": "UNAUTHENTICATED: no credentials, or invalid ones.",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                    "403": {
                        "description": "FORBIDDEN: partner unregistered, disabled, or licence not accepted.",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                },
            }
        }
    },
    "webhooks": {
        "event": {
            "post": {
                "summary": "One event, PUSHed to the partner's webhook URL",
                "description": (
                    "Sent by POST with a JSON body. Verify `X-Evgate-Signature`: `v1=` followed by the hex "
                    "HMAC-SHA256, keyed with the webhook secret shown at registration, of the ASCII timestamp "
                    'header, a dot, and the raw body (`f"{timestamp}.{body}"`); compare in constant time and '
                    "refuse timestamps more than a few minutes old. Answer 2xx once stored; anything else (or no "
                    "answer within the timeout) is retried with exponential backoff, then dead-lettered. "
                    "Delivery is at least once: deduplicate by the event id."
                ),
                "parameters": [
                    {
                        "name": SIGNATURE_HEADER,
                        "in": "header",
                        "required": True,
                        "description": "v1=<hex HMAC-SHA256(secret, timestamp + '.' + body)>",
                        "schema": {"type": "string", "pattern": "^v1=[0-9a-f]{64}$"},
                    },
                    {
                        "name": TIMESTAMP_HEADER,
                        "in": "header",
                        "required": True,
                        "description": "When the request was signed, in Unix seconds.",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    },
                    {
                        "name": EVENT_ID_HEADER,
                        "in": "header",
                        "required": True,
                        "description": "The event id (as in the body): the key to deduplicate on.",
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}},
                },
                "responses": {"2XX": {"description": "Received; not sent again."}},
            }
        }
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The partner's API key (evg_...) or a JWT from /oauth/token.",
            },
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        "schemas": {
            "Event": {
                "type": "object",
                "required": ["id", "kind", "operatorId", "boroughCode", "subjectId", "payload", "createdAt"],
                "properties": {
                    "id": {"type": "string", "description": "Monotonic event id (a decimal integer)."},
                    "kind": {
                        "type": "string",
                        "description": "evse.status_changed, session.started, session.updated, "
                        "session.completed, session.aborted",
                    },
                    "operatorId": {"type": "string"},
                    "boroughCode": {"type": ["string", "null"], "description": "GSS code of the borough."},
                    "subjectId": {"type": "string", "description": "The EVSE or session the event is about."},
                    "payload": {"type": "object", "description": "What happened (never a cost or a token)."},
                    "createdAt": {"type": "string", "format": "date-time"},
                },
            },
            "EventPage": {
                "type": "object",
                "required": ["events", "next"],
                "properties": {
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "next": {"type": "string", "description": "The cursor to pass as `after` next time."},
                },
            },
            "Errors": {
                "type": "object",
                "required": ["errors"],
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": ["BAD_USER_INPUT", "UNAUTHENTICATED", "FORBIDDEN"]},
                                "message": {"type": "string"},
                            },
                        },
                    }
                },
            },
        },
    },
}
