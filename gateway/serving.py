"""Serving: TLS for the listener, CORS for configured front ends, security headers on every response.

- TLS: `tls_certfile` (the certificate chain, PEM) and `tls_keyfile` (its key) go to uvicorn;
  both or neither, checked at start (the files must exist and hold a matching pair).
- CORS (`cors_origins`): only the listed origins, methods GET/POST/OPTIONS, headers Authorization
  and Content-Type; credentials are allowed only when every origin is explicit (never with "*");
  a refused preflight gets no CORS header at all.
- Security headers on every response (`SecurityHeaders`): X-Content-Type-Options nosniff,
  Referrer-Policy no-referrer, X-Frame-Options DENY, a Content-Security-Policy (strict everywhere;
  on the GraphiQL page just loose enough for it to load from unpkg.com), Strict-Transport-Security
  on HTTPS, and Cache-Control no-store on /graphql responses to requests carrying credentials
  (an Authorization header or a cookie), so no shared cache keeps a caller's protected data.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import uvicorn
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import GatewayConfig

CORS_METHODS = ("GET", "POST", "OPTIONS")
CORS_HEADERS = ("Authorization", "Content-Type")
CORS_MAX_AGE = 600
HSTS = "max-age=31536000; includeSubDomains"
# JSON answers load nothing and may not be framed.
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Strawberry's GraphiQL page: inline bootstrap script and styles, React and GraphiQL from unpkg.com
# (with subresource integrity), queries to this origin (HTTP and WebSocket).
GRAPHIQL_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://unpkg.com; "
    "style-src 'self' 'unsafe-inline' https://unpkg.com; img-src 'self' data: https://unpkg.com; "
    "font-src 'self' data: https://unpkg.com; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def check_tls(config: GatewayConfig) -> tuple[str, str] | None:
    """The (certificate, key) files to serve TLS with, or None for plain HTTP; ValueError if the
    settings are half given, the files missing, or the key does not match the certificate."""
    cert, key = config.tls_certfile, config.tls_keyfile
    if not cert and not key:
        return None
    if not cert or not key:
        raise ValueError("tls_certfile and tls_keyfile go together: give both, or neither")
    for name, path in (("tls_certfile", cert), ("tls_keyfile", key)):
        if not Path(path).is_file():
            raise ValueError(f"{name} {path} does not exist")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"tls_certfile/tls_keyfile cannot be used: {exc}") from None
    return cert, key


def server_config(app: ASGIApp, config: GatewayConfig, log_level: str = "info", **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration serving `app` as `config` says (TLS when configured)."""
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": log_level,
        "lifespan": "on",
        "server_header": False,  # do not advertise the server software
    }
    tls = check_tls(config)
    if tls is not None:
        options["ssl_certfile"], options["ssl_keyfile"] = tls
    options.update(overrides)
    return uvicorn.Config(app, **options)


def middleware(config: GatewayConfig, graphiql: bool) -> list[Middleware]:
    """The app's middleware, outermost first: security headers (on CORS answers too), then CORS."""
    stack = [Middleware(SecurityHeaders, graphiql=graphiql)]
    origins = [str(o).rstrip("/") for o in config.cors_origins]
    if origins:
        stack.append(
            Middleware(
                StrictCORS,
                allow_origins=origins,
                allow_credentials="*" not in origins,
                allow_methods=list(CORS_METHODS),
                allow_headers=list(CORS_HEADERS),
                max_age=CORS_MAX_AGE,
            )
        )
    return stack


class StrictCORS(CORSMiddleware):
    """Starlette's CORS, except that a refused preflight carries no CORS header at all (Starlette's
    still lists the allowed methods, headers and credentials)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 200:
            for name in [k for k in response.headers if k.lower().startswith("access-control-")]:
                del response.headers[name]
        return response


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers to every HTTP response."""

    def __init__(self, app: ASGIApp, graphiql: bool = True) -> None:
        self.app = app
        self.graphiql = graphiql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        credentials = "authorization" in request_headers or "cookie" in request_headers
        graphql_path = scope.get("path", "").rstrip("/") == "/graphql"
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                html = headers.get("content-type", "").startswith("text/html")
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["X-Frame-Options"] = "DENY"
                headers["Content-Security-Policy"] = GRAPHIQL_CSP if html and self.graphiql else STRICT_CSP
                if https:
                    headers["Strict-Transport-Security"] = HSTS
                if graphql_path and credentials:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
