"""The ASGI application: GraphQL over HTTP and WebSocket at /graphql, and /healthz.

The lifespan either starts the whole runtime (database, boroughs, pollers; `gateway.runtime`) or,
when none is given (tests, a read-only replica), just opens and closes the database. The GraphQL
context is built per request: the principal from `Authorization: Bearer <token>` (or, on a
WebSocket, from the connection_init payload) and fresh DataLoaders.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
from cross_web import HTTPException  # strawberry's own HTTP error type (a dependency of it)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from gateway.auth import authenticate
from gateway.config import GatewayConfig
from gateway.db import close_db, connection, init_db
from gateway.errors import ErrorCode
from resolvers.context import RequestContext
from resolvers.schema import schema

log = logging.getLogger("evgate.app")


class Runtime(Protocol):
    """What the lifespan needs of a started runtime."""

    async def stop(self) -> None: ...


RuntimeFactory = Callable[[GatewayConfig], Awaitable[Runtime]]


class OrjsonResponse(JSONResponse):
    """A JSON response encoded with orjson (faster, and serialises datetimes)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class GatewayGraphQL(GraphQL[RequestContext, None]):
    """Strawberry's ASGI view with our context, authentication and orjson."""

    def __init__(self, config: GatewayConfig) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql",
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As strawberry's, except that a malformed HTTP request gets a JSON error with a code
        (strawberry answers those in plain text)."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as exc:
            error = {"message": exc.reason, "extensions": {"code": ErrorCode.BAD_REQUEST.value}}
            response = OrjsonResponse({"errors": [error]}, status_code=exc.status_code)
        await response(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> RequestContext:
        """Who is asking (from the Authorization header), with fresh DataLoaders."""
        principal = authenticate(request.headers.get("authorization"), self.config.admin_token)
        return RequestContext(principal=principal, request=request, response=response)

    async def on_ws_connect(self, context: RequestContext) -> None:
        """Browsers cannot set headers on a WebSocket: accept the token in connection_init too."""
        params = context.connection_params or {}
        value = params.get("Authorization") or params.get("authorization") or params.get("authToken")
        if isinstance(value, str) and value:
            if not value.lower().startswith("bearer "):
                value = f"Bearer {value}"
            context.set_principal(authenticate(value, self.config.admin_token))

    def decode_json(self, data: str | bytes) -> object:
        """Parse request bodies with orjson (its JSONDecodeError is a json.JSONDecodeError)."""
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        """Serialise responses with orjson."""
        return orjson.dumps(data)


async def healthz(request: Request) -> Response:
    """Liveness and database reachability, for load balancers (no details: they may leak)."""
    try:
        await connection().execute_query("SELECT 1")
    except Exception:
        log.exception("health check: database unreachable")
        return OrjsonResponse({"status": "unavailable"}, status_code=503)
    return OrjsonResponse({"status": "ok"})


def create_app(config: GatewayConfig, runtime_factory: RuntimeFactory | None = None) -> Starlette:
    """The Starlette app serving /graphql and /healthz, with the runtime (or just the database)
    started and stopped by its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if runtime_factory is not None:
            runtime = await runtime_factory(config)
            try:
                yield
            finally:
                await runtime.stop()
        else:
            await init_db(config.database_url)
            try:
                yield
            finally:
                await close_db()

    graphql_app = GatewayGraphQL(config)
    return Starlette(
        routes=[
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_app),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
