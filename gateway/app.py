"""The ASGI application: GraphQL over HTTP and WebSocket at /graphql, /healthz, and the OAuth 2
token endpoint (`POST /oauth/token`) with its JWKS (`GET /.well-known/jwks.json`, `gateway.identity`).

The lifespan either starts the whole runtime (database, boroughs, pollers; `gateway.runtime`) or,
when none is given (tests, a read-only replica), just opens and closes the database. The GraphQL
context is built per request: the principal from `Authorization: Bearer <JWT or API key>` or
`X-API-Key` (or, on a WebSocket, from the connection_init payload) and fresh DataLoaders. Queries over HTTP go through
the response cache (`gateway.cache`) unless it is turned off.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from cross_web import HTTPException  # strawberry's own HTTP error type (a dependency of it)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from gateway.broker import InProcessBroker
from gateway.cache import CacheSettings, ResponseCache, create_cache, data_version
from gateway.config import GatewayConfig
from gateway.db import close_db, connection, init_db
from gateway.errors import ErrorCode
from gateway.identity import Identity
from gateway.limits import Admission, Refused
from gateway.pull_api import partner_routes
from gateway.serving import middleware
from gateway.sse import stream_endpoint
from gateway.streams import EventHub
from gateway.webhooks import WebhookService
from resolvers.context import RequestContext
from resolvers.schema import MAX_TOKENS, production_schema, schema

log = logging.getLogger("evgate.app")


class Runtime(Protocol):
    """What the lifespan needs of a started runtime."""

    async def stop(self) -> None: ...


RuntimeFactory = Callable[[GatewayConfig], Awaitable[Runtime]]


class OrjsonResponse(JSONResponse):
    """A JSON response encoded with orjson (faster, and serialises datetimes)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class EncodedResponse(bytes):
    """A response body already serialised (for or from the response cache)."""


@dataclass
class EncodedResult(ExecutionResult):
    """The result of a query answered with an already serialised body (no errors, by construction).

    Only ever returned for a single operation: batched requests are not enabled on this view.
    """

    body: EncodedResponse = field(default_factory=lambda: EncodedResponse(b""))


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """graphql-transport-ws messages as text frames (strawberry sends our orjson bytes as binary
    frames, which clients such as graphql-ws reject). A send after the server closed the socket
    (a subscriber closed as too far behind, `gateway.streams`) is a disconnection."""

    async def send_json(self, message: Any) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise WebSocketDisconnected from exc


class GatewayGraphQL(GraphQL[RequestContext, None]):
    """Strawberry's ASGI view with our context, authentication, orjson and the response cache."""

    websocket_adapter_class = TextWebSocketAdapter  # type: ignore[assignment]

    def __init__(
        self, config: GatewayConfig, cache: ResponseCache | None = None, admission: Admission | None = None
    ) -> None:
        # Production mode: no GraphiQL page, no introspection (see README, "Serving").
        super().__init__(
            production_schema() if config.production else schema,
            graphql_ide=None if config.production else "graphiql",
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self.config = config
        self.cache = cache
        self.identity = Identity(config)  # credentials -> Principal; also serves /oauth/token and the JWKS
        self.admission = admission or Admission()

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
        """Who is asking (Authorization or X-API-Key header, `gateway.identity`), with fresh DataLoaders."""
        principal = await self.identity.authenticate(request.headers)
        return RequestContext(principal=principal, request=request, response=response)

    async def on_ws_connect(self, context: RequestContext) -> None:
        """Browsers cannot set headers on a WebSocket: accept the token (a JWT or an API key) in
        connection_init too."""
        params = context.connection_params or {}
        value = params.get("Authorization") or params.get("authorization") or params.get("authToken")
        if isinstance(value, str) and value:
            if not value.lower().startswith("bearer "):
                value = f"Bearer {value}"
            context.set_principal(await self.identity.authenticate({"authorization": value}))

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: RequestContext,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """As strawberry's, but admitted first (rate limit, persisted queries: `gateway.limits`), and
        answered from the response cache when the same query was answered for the same principal
        since the data last changed (`gateway.cache`)."""
        try:
            query = self.admission.admit(
                context.principal,
                request.client.host if request.client else None,
                request_data.query,
                request_data.extensions,
            )
        except Refused as refused:
            if refused.status != 200:
                sub_response.status_code = refused.status
            if refused.retry_after is not None:
                sub_response.headers["Retry-After"] = str(refused.retry_after)
            return ExecutionResult(data=None, errors=[refused.error])
        if query != request_data.query:
            request_data = dataclasses.replace(request_data, query=query)
        args = (request, request_adapter, sub_response, context, root_value, request_data)
        key = self._cache_key(request_adapter.method, request_data, context)
        if key is None or self.cache is None:
            return await super().execute_single(*args)
        cached = self.cache.get(key)
        if cached is None:
            cached = await self.cache.wait_for(key)  # the same query is being answered right now
        if cached is not None:
            return EncodedResult(data=None, errors=None, body=EncodedResponse(cached))
        with self.cache.computing(key):
            version = data_version()  # read before running: a commit during the run must not be hidden
            result = await super().execute_single(*args)
            if result.errors or _touched(sub_response):
                return result  # errors are never cached, nor responses with their own status or headers
            body = EncodedResponse(self.encode_json(await self.process_result(request, result)))
            self.cache.put(key, body, version)
        return EncodedResult(data=None, errors=None, body=body)

    def _cache_key(self, method: str, request_data: GraphQLRequestData, context: RequestContext) -> Hashable | None:
        """The response cache key of a request, or None if it is not to be cached."""
        if self.cache is None or method not in CACHEABLE_METHODS:
            return None
        return self.cache.key(
            request_data.query,
            request_data.variables,
            request_data.operation_name,
            request_data.extensions,
            context.principal,
        )

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        """Strawberry's, except that an already serialised result stays as it is (see `encode_json`)."""
        if isinstance(result, EncodedResult):
            return result.body  # type: ignore[return-value]  # passed through to encode_json
        return await super().process_result(request, result)

    def decode_json(self, data: str | bytes) -> object:
        """Parse request bodies with orjson (its JSONDecodeError is a json.JSONDecodeError)."""
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        """Serialise responses with orjson (an `EncodedResponse` is already serialised)."""
        if isinstance(data, EncodedResponse):
            return data
        return orjson.dumps(data)


# GET and POST both run queries (mutations are refused over GET, and never cached anyway).
CACHEABLE_METHODS: frozenset[str] = frozenset({"GET", "POST"})


def _touched(sub_response: Response) -> bool:
    """Whether a resolver set the response's status or headers (such a response is not cached)."""
    return sub_response.status_code is not None or bool(sub_response.headers.raw)


async def healthz(request: Request) -> Response:
    """Liveness and database reachability, for load balancers (no details: they may leak)."""
    try:
        await connection().execute_query("SELECT 1")
    except Exception:
        log.exception("health check: database unreachable")
        return OrjsonResponse({"status": "unavailable"}, status_code=503)
    return OrjsonResponse({"status": "ok"})


def create_app(
    config: GatewayConfig,
    runtime_factory: RuntimeFactory | None = None,
    cache: CacheSettings | None = None,
) -> Starlette:
    """The Starlette app serving /graphql and /healthz, with the runtime (or just the database)
    started and stopped by its lifespan. `cache` sizes the response cache (default: from the
    configuration's `response_cache*` settings; `CacheSettings(enabled=False)` turns it off)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if runtime_factory is not None:
            runtime = await runtime_factory(config)
            # Live streams (gateway.streams): woken by the runtime's broker after each commit.
            hub = EventHub(getattr(runtime, "broker", None) or InProcessBroker(), queue_size=config.stream_queue_size)
            # Partner webhooks (gateway.webhooks) go out from the polling process only.
            webhooks = WebhookService(config) if config.poll and config.secret_keys else None
            try:
                await graphql_app.identity.start()  # the token signing key, generated on first start
                await hub.start()
                app.state.hub = hub
                if webhooks is not None:
                    webhooks.start()
                yield
            finally:
                if webhooks is not None:
                    await webhooks.stop()
                await hub.stop()
                await runtime.stop()
        else:
            await init_db(config.database_url)
            try:
                await graphql_app.identity.start()
                yield
            finally:
                await close_db()

    settings = cache or CacheSettings.of(config.response_cache, config.response_cache_ttl, config.response_cache_mb)
    admission = Admission.of(
        config.rate_limit_per_minute, config.rate_limit_burst, config.persisted_queries, config.persisted_queries_file
    )
    graphql_app = GatewayGraphQL(config, create_cache(settings, max_tokens=MAX_TOKENS), admission)
    app = Starlette(
        middleware=middleware(config, graphiql=not config.production),
        routes=[
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_app),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/oauth/token", graphql_app.identity.token_endpoint, methods=["POST"]),
            Route("/.well-known/jwks.json", graphql_app.identity.jwks_endpoint, methods=["GET"]),
            Route("/events/stream", stream_endpoint(graphql_app.identity), methods=["GET"]),  # SSE (gateway.sse)
            *partner_routes(graphql_app.identity),  # PULL: /partners/v1/events and its OpenAPI description
        ],
        lifespan=lifespan,
    )
    app.state.admission = admission  # for operations over a WebSocket (gateway.limits.AdmissionExtension)
    return app
