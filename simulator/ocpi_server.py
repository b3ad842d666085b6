"""One operator's OCPI 2.2.1 CPO Sender interface over HTTPS on loopback (aiohttp).

Versions, version details, credentials (GET) and the paginated Locations, Sessions, CDRs and
Tariffs modules with `date_from`/`date_to`/`offset`/`limit`, `X-Total-Count`, `X-Limit` and
`Link: <...>; rel="next"` exactly as the specification describes, the Authorization token in
base64 or raw form per operator, and the request/correlation ids echoed. Extra aiohttp
middlewares (fault injection) can be slotted in after the id echo and before authorization.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import ssl
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

from simulator.clock import SimClock, fmt_ts, parse_datetime
from simulator.data import OperatorWorld
from simulator.listener import Listener
from simulator.ocpi_views import OperatorViews

log = logging.getLogger(__name__)

VERSION = "2.2.1"
MODULES = ("locations", "sessions", "cdrs", "tariffs")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


class OcpiError(Exception):
    """A request the server answers with an OCPI error envelope."""

    def __init__(self, status_code: int, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The paging parameters of a list request, parsed; `raw_*` keep the client's spelling."""

    date_from: int | None
    date_to: int | None
    offset: int
    limit: int
    raw_date_from: str | None
    raw_date_to: str | None


def parse_list_query(request: web.Request, max_limit: int, require_date_from: bool) -> ListQuery:
    """Parse date_from/date_to (RFC 3339, rounded up to whole seconds because last_updated has
    whole seconds), offset and limit (capped at the server's page size). Raises OcpiError 2001."""
    q = request.query
    bounds: dict[str, int | None] = {}
    for name in ("date_from", "date_to"):
        raw = q.get(name)
        try:
            bounds[name] = None if raw is None else math.ceil(parse_datetime(raw))
        except ValueError:
            raise OcpiError(2001, f"Invalid {name}: {raw!r}") from None
    if require_date_from and bounds["date_from"] is None:
        raise OcpiError(2001, "Missing required parameter: date_from")
    numbers: dict[str, int] = {}
    for name, default in (("offset", 0), ("limit", max_limit)):
        raw = q.get(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            raise OcpiError(2001, f"Invalid {name}: {raw!r}") from None
        if value < 0:
            raise OcpiError(2001, f"Invalid {name}: {raw!r}")
        numbers[name] = value
    return ListQuery(
        bounds["date_from"],
        bounds["date_to"],
        numbers["offset"],
        min(numbers["limit"], max_limit),
        q.get("date_from"),
        q.get("date_to"),
    )


def token_matches(header: str, token: str, encoding: str) -> bool:
    """Whether `Authorization: Token <credential>` carries the token, base64 (OCPI 2.2.1) or raw."""
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "token" or not credential.strip():
        return False
    credential = credential.strip()
    if encoding == "raw":
        return hmac.compare_digest(credential.encode(), token.encode())
    try:
        decoded = base64.b64decode(credential, validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(decoded, token.encode())


class OcpiServer:
    """The HTTPS server of one simulated operator, bound to 127.0.0.1."""

    def __init__(
        self,
        op: OperatorWorld,
        clock: SimClock,
        ssl_context: ssl.SSLContext,
        page_limit: int = 100,
        port: int = 0,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        self.op = op
        self.clock = clock
        self.views = OperatorViews.of(op)
        self.page_limit = page_limit
        self.ssl_context = ssl_context
        self.port = 0
        self.app = web.Application(middlewares=[self._ids, *middlewares, self._errors, self._auth])
        self._routes()
        self.listener = Listener(self.app, ssl_context, port)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def versions_url(self) -> str:
        return f"{self.base_url}/ocpi/versions"

    def _routes(self) -> None:
        root = f"/ocpi/{VERSION}"
        add = self.app.router.add_get
        for path, handler in (
            ("/ocpi/versions", self.versions),
            (root, self.version_details),
            (f"{root}/credentials", self.credentials),
            (f"{root}/{{module:locations|sessions|cdrs|tariffs}}", self.list_module),
            (f"{root}/locations/{{location_id}}", self.location),
            (f"{root}/locations/{{location_id}}/{{evse_uid}}", self.location),
            (f"{root}/locations/{{location_id}}/{{evse_uid}}/{{connector_id}}", self.location),
        ):
            add(path, handler)
            add(path + "/", handler)

    async def start(self) -> None:
        """Bind to 127.0.0.1 (an ephemeral port unless one was given) and serve."""
        await self.listener.start()
        self.port = self.listener.port

    async def stop(self) -> None:
        """Stop serving and release the port."""
        await self.listener.stop()

    # -- responses ---------------------------------------------------------------------------

    def envelope(
        self,
        data: Any = None,
        status_code: int = 1000,
        message: str = "Success",
        http_status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """An OCPI response envelope stamped with the simulated time (no `data` on errors)."""
        body: dict[str, Any] = {} if data is None and status_code != 1000 else {"data": data}
        body.update(status_code=status_code, status_message=message, timestamp=fmt_ts(self.clock.now_s()))
        return web.Response(
            body=orjson.dumps(body), status=http_status, headers=headers, content_type="application/json"
        )

    # -- middlewares -------------------------------------------------------------------------

    @web.middleware
    async def _ids(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Echo X-Request-ID and X-Correlation-ID (inventing them when the client sent none), and
        date the response by the simulated clock, which is this server's clock."""
        response = await handler(request)
        for name in ("X-Request-ID", "X-Correlation-ID"):
            response.headers[name] = request.headers.get(name) or str(uuid.uuid4())
        response.headers["Date"] = formatdate(self.clock.now_s(), usegmt=True)
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """OCPI error envelopes for OcpiError and for HTTP errors such as 404 and 405."""
        try:
            return await handler(request)
        except OcpiError as exc:
            return self.envelope(status_code=exc.status_code, message=exc.message, http_status=exc.http_status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return self.envelope(status_code=2000, message=exc.reason, http_status=exc.status)
        except Exception as exc:  # a simulator bug: log it, and still answer in OCPI form
            log.exception("%s %s failed", request.method, request.path_qs)
            return self.envelope(status_code=3000, message=f"Internal error: {exc!r}", http_status=500)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """401 unless the Authorization header carries this operator's token."""
        spec = self.op.spec
        if not token_matches(request.headers.get("Authorization", ""), spec.token, spec.token_encoding):
            raise OcpiError(2000, "Invalid or missing token", http_status=401)
        return await handler(request)

    # -- handlers ----------------------------------------------------------------------------

    async def versions(self, request: web.Request) -> web.Response:
        """GET /ocpi/versions: the one supported version."""
        return self.envelope([{"version": VERSION, "url": f"{self.base_url}/ocpi/{VERSION}"}])

    async def version_details(self, request: web.Request) -> web.Response:
        """GET /ocpi/2.2.1: the Sender endpoints."""
        root = f"{self.base_url}/ocpi/{VERSION}"
        endpoints = [
            {"identifier": module, "role": "SENDER", "url": f"{root}/{module}"} for module in ("credentials", *MODULES)
        ]
        return self.envelope({"version": VERSION, "endpoints": endpoints})

    async def credentials(self, request: web.Request) -> web.Response:
        """GET /ocpi/2.2.1/credentials: the credentials the client is using, as the CPO's."""
        spec = self.op.spec
        return self.envelope(
            {
                "token": spec.token,
                "url": self.versions_url,
                "roles": [
                    {
                        "role": "CPO",
                        "business_details": {"name": spec.name},
                        "party_id": spec.party_id,
                        "country_code": spec.country_code,
                    }
                ],
            }
        )

    async def list_module(self, request: web.Request) -> web.Response:
        """GET a module list: filter on last_updated, page, and link to the next page."""
        module = request.match_info["module"]
        query = parse_list_query(request, self.page_limit, require_date_from=module == "sessions")
        now = self.clock.now_s()
        selection = self.views.module(module).select(now, query.date_from, query.date_to)
        items = selection.items(query.offset, query.limit) if query.limit else []
        headers = {"X-Total-Count": str(selection.total), "X-Limit": str(self.page_limit)}
        next_offset = query.offset + len(items)
        if items and next_offset < selection.total:
            params = [("offset", str(next_offset)), ("limit", str(query.limit))]
            params += [(k, v) for k, v in (("date_from", query.raw_date_from), ("date_to", query.raw_date_to)) if v]
            headers["Link"] = f'<{request.url.with_query(params)}>; rel="next"'
        return self.envelope(items, headers=headers)

    async def location(self, request: web.Request) -> web.Response:
        """GET one Location, or one of its EVSEs or connectors."""
        info = request.match_info
        obj = self.views.locations.get(info["location_id"], self.clock.now_s())
        if obj is not None and "evse_uid" in info:
            obj = next((e for e in obj["evses"] if e["uid"] == info["evse_uid"]), None)
        if obj is not None and "connector_id" in info:
            obj = next((c for c in obj["connectors"] if c["id"] == info["connector_id"]), None)
        if obj is None:
            raise OcpiError(2003, "Unknown location", http_status=404)
        return self.envelope(obj)
