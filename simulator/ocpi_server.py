"""One operator's OCPI CPO Sender interface over HTTPS on loopback (aiohttp).

Versions, version details, credentials (GET) and the paginated Locations, Sessions, CDRs and
Tariffs modules with `date_from`/`date_to`/`offset`/`limit`, `X-Total-Count`, `X-Limit` and
`Link: <...>; rel="next"` exactly as the specification describes, the Authorization token in
base64 or raw form per operator, and the request/correlation ids echoed. Extra aiohttp
middlewares (fault injection) can be slotted in after the id echo and before authorization.

By default it is OCPI 2.2.1 to the letter; `version="2.1.1"` serves the same world the 2.1.1 way,
and `quirks=OcpiQuirks(...)` (simulator.ocpi_variants) the production deviations: no envelope, no
paging headers, opaque or hub Links (`OcpiHub`, a second listener), offset ignored, other auth
headers and schemes, other date formats, a world that moves on during a crawl.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

from simulator.clock import SimClock, fmt_ts, parse_datetime
from simulator.data import OperatorWorld
from simulator.listener import ListenedServer, Listener
from simulator.ocpi_variants import OcpiQuirks, decode_page_token, encode_page_token, render_211, restyle_datetimes
from simulator.ocpi_views import Json, OperatorViews

log = logging.getLogger(__name__)

VERSION = "2.2.1"
VERSIONS = ("2.2.1", "2.1.1")
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
    return parse_list_params(request.query, max_limit, require_date_from)


def parse_list_params(q: Mapping[str, str], max_limit: int, require_date_from: bool) -> ListQuery:
    """`parse_list_query` on the parameters themselves (a query string or an opaque page token)."""
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


def token_matches(header: str, token: str, encoding: str, scheme: str = "Token") -> bool:
    """Whether an auth header value `<scheme> <credential>` (just `<credential>` when `scheme` is
    "") carries the token, base64 (OCPI 2.2.1) or raw. Basic's base64 credential is RFC 7617's
    `user:password`: the token when it has a colon, else `token:` (a key as user, no password)."""
    value = header.strip()
    if scheme:
        given, _, value = value.partition(" ")
        if given.lower() != scheme.lower():
            return False
    credential = value.strip()
    if not credential:
        return False
    if encoding == "raw":
        return hmac.compare_digest(credential.encode(), token.encode())
    expected = token if scheme.lower() != "basic" or ":" in token else f"{token}:"
    try:
        decoded = base64.b64decode(credential, validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(decoded, expected.encode())


class OcpiServer(ListenedServer):
    """The HTTPS server of one simulated operator, bound to 127.0.0.1.

    `version` is "2.2.1" or "2.1.1" (the only version offered); `quirks` the deviations it shows.
    """

    def __init__(
        self,
        op: OperatorWorld,
        clock: SimClock,
        ssl_context: ssl.SSLContext,
        page_limit: int = 100,
        port: int = 0,
        middlewares: Sequence[Middleware] = (),
        *,
        version: str = VERSION,
        quirks: OcpiQuirks | None = None,
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"OCPI version must be one of {VERSIONS}")
        self.op = op
        self.clock = clock
        self.views = OperatorViews.of(op)
        self.page_limit = page_limit
        self.ssl_context = ssl_context
        self.version = version
        self.quirks = quirks or OcpiQuirks()
        # The origin opaque Links point to (a hub listener's, see OcpiHub); None: this server's own.
        self.link_origin: str | None = None
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

    @property
    def token_encoding(self) -> str:
        """The token encoding this server expects: the quirk, else raw for 2.1.1, else the operator's."""
        if self.quirks.token_encoding is not None:
            return self.quirks.token_encoding
        return "raw" if self.version == "2.1.1" else self.op.spec.token_encoding

    def _routes(self) -> None:
        root = f"/ocpi/{self.version}"
        add = self.app.router.add_get
        for path, handler in (
            ("/ocpi/versions", self.versions),
            (root, self.version_details),
            (f"{root}/credentials", self.credentials),
            (f"{root}/{{module:locations|sessions|cdrs|tariffs}}", self.list_module),
            (f"{root}/locations/{{location_id}}", self.location),
            (f"{root}/locations/{{location_id}}/{{evse_uid}}", self.location),
            (f"{root}/locations/{{location_id}}/{{evse_uid}}/{{connector_id}}", self.location),
            ("/hub/page/{token}", self.hub_page),
        ):
            add(path, handler)
            add(path + "/", handler)

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
        return self._json(body, http_status, headers)

    def respond(self, data: Any, headers: dict[str, str] | None = None) -> web.Response:
        """A success: the envelope, or the bare data when this server sends none."""
        return self.envelope(data, headers=headers) if self.quirks.envelope else self._json(data, 200, headers)

    def _json(self, body: Any, status: int, headers: dict[str, str] | None) -> web.Response:
        raw = restyle_datetimes(orjson.dumps(body), self.quirks.dates)
        return web.Response(body=raw, status=status, headers=headers, content_type="application/json")

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
        """401 unless the configured header carries this operator's token in the configured form."""
        q = self.quirks
        header = request.headers.get(q.auth_header, "")
        if not token_matches(header, self.op.spec.token, self.token_encoding, q.auth_scheme):
            raise OcpiError(2000, "Invalid or missing token", http_status=401)
        return await handler(request)

    # -- handlers ----------------------------------------------------------------------------

    async def versions(self, request: web.Request) -> web.Response:
        """GET /ocpi/versions: the one supported version."""
        return self.respond([{"version": self.version, "url": f"{self.base_url}/ocpi/{self.version}"}])

    async def version_details(self, request: web.Request) -> web.Response:
        """GET /ocpi/<version>: the Sender endpoints (2.1.1 has no `role`)."""
        root = f"{self.base_url}/ocpi/{self.version}"
        endpoints: list[Json] = []
        for module in ("credentials", *MODULES):
            endpoint: Json = {"identifier": module, "role": "SENDER", "url": f"{root}/{module}"}
            if self.version == "2.1.1":
                del endpoint["role"]
            endpoints.append(endpoint)
        return self.respond({"version": self.version, "endpoints": endpoints})

    async def credentials(self, request: web.Request) -> web.Response:
        """GET /ocpi/<version>/credentials: the credentials the client is using, as the CPO's."""
        spec = self.op.spec
        party: Json = {"business_details": {"name": spec.name}, "party_id": spec.party_id}
        party["country_code"] = spec.country_code
        if self.version == "2.1.1":  # one party, no roles
            return self.respond({"token": spec.token, "url": self.versions_url, **party})
        return self.respond({"token": spec.token, "url": self.versions_url, "roles": [{"role": "CPO", **party}]})

    async def list_module(self, request: web.Request) -> web.Response:
        """GET a module list: filter on last_updated, page, and link to the next page."""
        module = request.match_info["module"]
        query = parse_list_query(request, self.page_limit, require_date_from=module == "sessions")
        return self._page(module, query, request)

    async def hub_page(self, request: web.Request) -> web.Response:
        """GET /hub/page/<token>: a page behind an opaque Link (as a hub rewrites them)."""
        params = decode_page_token(request.match_info["token"])
        module = None if params is None else params.pop("module", None)
        if params is None or module not in MODULES:
            raise OcpiError(2001, "Unknown page", http_status=404)
        query = parse_list_params({k: str(v) for k, v in params.items()}, self.page_limit, module == "sessions")
        return self._page(module, query, request)

    def _page(self, module: str, query: ListQuery, request: web.Request) -> web.Response:
        """One page of a module: filter on last_updated, page, link to the next page (per quirks)."""
        q = self.quirks
        now = self.clock.now_s()
        selection = self.views.module(module).select(now, query.date_from, query.date_to)
        start = 0 if q.ignore_offset else query.offset
        items = selection.items(start, query.limit) if query.limit else []
        if self.version == "2.1.1":
            items = [self._render_211(module, obj, now) for obj in items]
        headers: dict[str, str] = {}
        if q.total_count:
            headers["X-Total-Count"] = str(selection.total)
        if q.x_limit:
            headers["X-Limit"] = str(self.page_limit)
        next_offset = query.offset + len(items)
        if items and next_offset < selection.total and q.links != "none":
            headers["Link"] = f'<{self._next_url(module, query, next_offset, request)}>; rel="next"'
        response = self.respond(items, headers=headers)
        if q.advance_per_page:  # after the page is stamped: the world moves on before the next one
            self.clock.advance(timedelta(seconds=q.advance_per_page))
        return response

    def _next_url(self, module: str, query: ListQuery, offset: int, request: web.Request) -> str:
        """The spec's Link (this URL, next offset, the original filters) or an opaque hub page."""
        dates = [(k, v) for k, v in (("date_from", query.raw_date_from), ("date_to", query.raw_date_to)) if v]
        if self.quirks.links == "opaque":
            token = encode_page_token({"module": module, "offset": offset, "limit": query.limit, **dict(dates)})
            return f"{self.link_origin or self.base_url}/hub/page/{token}"
        params = [("offset", str(offset)), ("limit", str(query.limit)), *dates]
        return str(request.url.with_query(params))

    def _render_211(self, module: str, obj: Json, now: int) -> Json:
        return render_211(module, obj, lambda location_id: self.views.locations.get(location_id, now))

    async def location(self, request: web.Request) -> web.Response:
        """GET one Location, or one of its EVSEs or connectors."""
        info = request.match_info
        now = self.clock.now_s()
        obj = self.views.locations.get(info["location_id"], now)
        if obj is not None and self.version == "2.1.1":
            obj = self._render_211("locations", obj, now)
        if obj is not None and "evse_uid" in info:
            obj = next((e for e in obj["evses"] if e["uid"] == info["evse_uid"]), None)
        if obj is not None and "connector_id" in info:
            obj = next((c for c in obj["connectors"] if c["id"] == info["connector_id"]), None)
        if obj is None:
            raise OcpiError(2003, "Unknown location", http_status=404)
        return self.respond(obj)


class OcpiHub:
    """A second listener on another port standing in for a roaming hub: it serves the server's
    opaque `/hub/page/<token>` Links, which then name the hub's origin instead of the operator's.
    Same middlewares (ids, errors, auth) as the server; start it after the server."""

    def __init__(self, server: OcpiServer, ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.server = server
        self.app = web.Application(middlewares=[server._ids, server._errors, server._auth])
        self.app.router.add_get("/hub/page/{token}", server.hub_page)
        self.listener = Listener(self.app, ssl_context or server.ssl_context, port)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.listener.port}"

    async def start(self) -> None:
        """Serve, and make the server's opaque Links point here."""
        await self.listener.start()
        self.server.link_origin = self.base_url

    async def stop(self) -> None:
        """Stop serving; the server's Links point to itself again."""
        self.server.link_origin = None
        await self.listener.stop()
