"""OCPI 2.2.1 / 2.1.1 Sender interfaces (Locations, Sessions, CDRs, Tariffs): discovery and crawls.

Give it a window [date_from, date_to) and a module; it yields pages of normalised records,
following `Link: rel="next"` as an opaque URL (hubs rewrite it) until there is none. The version is
negotiated (2.2.1, 2.2, then 2.1.1) and both parse into the same records (`adapters.ocpi_parse`).

Production deviations (protocols.md §4.3) are per-operator settings or detected, never a second
adapter:
- settings: the auth header and scheme (`Token`, `Bearer`, `Basic`, or none as in `apikey: KEY`),
  the token raw or base64, and the extra origins a hub may point `Link`s to (`link_origins`);
- detected: a bare body instead of the envelope (a JSON array, `{"data": ...}` or the bare object;
  the server's clock then comes from the HTTP `Date` header), and paging without `Link` or
  `X-Total-Count` (see `OcpiAdapter.crawl`).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from adapters.http import UPSTREAM_PROTOCOL, UPSTREAM_UNAVAILABLE, HttpClient, Response, UpstreamError, server_date
from adapters.model import InvalidRecord, Module, Page
from adapters.ocpi_parse import RecordError, parse_datetime, parse_object

PREFERRED_VERSIONS = ("2.2.1", "2.2", "2.1.1")
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*rel="?next"?', re.IGNORECASE)
_DEFAULT_PORTS = {"https": 443, "http": 80}
TOKEN_ENCODINGS = ("base64", "raw")
# A crawl restarts from its first page when the server's total drops and the next link cannot be
# corrected; bounded so that a server whose count keeps moving cannot keep us busy forever.
MAX_RESTARTS = 3
MAX_PAGES = 100_000


def format_datetime(value: datetime) -> str:
    """OCPI DateTime: UTC with `Z`, whole seconds (every server parses that form)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_link(headers: dict[str, str], current_url: str) -> str | None:
    """The `rel="next"` URL of a Link header, resolved against the current URL, or None."""
    match = _LINK_NEXT.search(headers.get("link", ""))
    return urljoin(current_url, match.group(1).strip()) if match else None


def auth_value(token: str, encoding: str = "base64", scheme: str = "Token") -> str:
    """The auth header value: `<scheme> <credential>`, or the bare credential when `scheme` is "".

    The credential is the token base64-encoded (OCPI 2.2+) or raw. For `Basic` it is RFC 7617's
    base64 of `user:password`: the token when it holds a colon, else `token:` (the key as user, no
    password); with `raw` the token is taken as the finished credential and sent as given.
    """
    if scheme.lower() == "basic" and encoding == "base64":
        credential = base64.b64encode((token if ":" in token else f"{token}:").encode()).decode()
    elif encoding == "base64":
        credential = base64.b64encode(token.encode()).decode()
    else:
        credential = token
    return f"{scheme} {credential}" if scheme else credential


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


def _query_int(url: str, name: str) -> int | None:
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key == name:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _with_offset(url: str, offset: int) -> str:
    parts = urlsplit(url)
    query = [
        (k, str(max(0, offset)) if k == "offset" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _lower_offset(url: str, by: int) -> str | None:
    """The same URL with its `offset` lowered by `by`, or None when the URL has no offset."""
    offset = _query_int(url, "offset")
    return None if offset is None else _with_offset(url, offset - by)


def _ids(data: list[Any]) -> list[Any]:
    return [obj.get("id") if isinstance(obj, dict) else None for obj in data]


def _repeats(ids: list[Any], before: list[Any]) -> bool:
    """Whether a page lists the same objects as the page before it (ids known, in order)."""
    return bool(ids) and ids == before and any(i is not None for i in ids)


class OcpiAdapter:
    """One OCPI operator's Sender interfaces, reached from its versions URL."""

    protocol = "ocpi"

    def __init__(
        self,
        http: HttpClient,
        *,
        versions_url: str,
        token: str,
        token_encoding: str = "base64",  # noqa: S107 - an encoding name, not a secret
        auth_header: str = "Authorization",
        auth_scheme: str = "Token",
        link_origins: tuple[str, ...] | list[str] = (),
        page_limit: int = 100,
    ) -> None:
        if token_encoding not in TOKEN_ENCODINGS:
            raise ValueError(f"token_encoding must be one of {TOKEN_ENCODINGS}, not {token_encoding!r}")
        for allowed in link_origins:
            if not urlsplit(allowed).scheme or not urlsplit(allowed).hostname:
                raise ValueError(f"link_origins: {allowed!r} is not an origin such as https://hub.example.com")
        self._http = http
        self._versions_url = versions_url
        self._auth_header = auth_header
        self._auth = auth_value(token, token_encoding, auth_scheme)
        self._link_origins = {origin(o) for o in link_origins}
        self._page_limit = page_limit
        self._endpoints: dict[str, str] | None = None
        self.version: str | None = None
        self.last_server_time: datetime | None = None

    async def _get(self, url: str) -> Response:
        headers = {
            self._auth_header: self._auth,
            "X-Request-ID": str(uuid.uuid4()),
            "X-Correlation-ID": str(uuid.uuid4()),
            "Accept": "application/json",
        }
        return await self._http.get_json(url, headers)

    def _unwrap(self, resp: Response) -> Any:
        """The `data` of an OCPI envelope (or of a bare body), raising on a non-1xxx status.

        Without an envelope (a bare array or object, or `{"data": ...}` without a status) there is
        no timestamp: the server's clock is then read from its `Date` header.
        """
        body = resp.body
        self.last_server_time = server_date(resp)
        if isinstance(body, list):  # some servers send the bare array without the envelope
            return body
        if not isinstance(body, dict):
            raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: not an OCPI response")
        if "status_code" not in body:  # no envelope: callers check the shape of what they get
            return body["data"] if "data" in body else body
        if body.get("timestamp"):
            try:
                self.last_server_time = parse_datetime(body["timestamp"], "timestamp")
            except RecordError:
                pass  # a bad timestamp on the envelope does not invalidate its data
        code = body.get("status_code")
        if not isinstance(code, int) or not 1000 <= code < 2000:
            message = body.get("status_message") or ""
            error = UPSTREAM_PROTOCOL if isinstance(code, int) and 2000 <= code < 3000 else UPSTREAM_UNAVAILABLE
            raise UpstreamError(error, f"{resp.url}: OCPI status {code} {message}".strip())
        return body.get("data")

    async def discover(self) -> dict[str, str]:
        """Module identifier -> Sender URL, from the versions and version details endpoints."""
        if self._endpoints is not None:
            return self._endpoints
        versions = self._unwrap(await self._get(self._versions_url))
        if not isinstance(versions, list):
            raise UpstreamError(UPSTREAM_PROTOCOL, "versions endpoint did not return a list")
        offered = {str(v.get("version")): v.get("url") for v in versions if isinstance(v, dict)}
        chosen = next((v for v in PREFERRED_VERSIONS if offered.get(v)), None)
        if chosen is None:
            raise UpstreamError(UPSTREAM_PROTOCOL, f"no supported OCPI version offered (got {sorted(offered)})")
        details = self._unwrap(await self._get(urljoin(self._versions_url, offered[chosen])))
        if not isinstance(details, dict) or not isinstance(details.get("endpoints"), list):
            raise UpstreamError(UPSTREAM_PROTOCOL, "version details carry no endpoints")
        endpoints: dict[str, str] = {}
        for ep in details["endpoints"]:
            if not isinstance(ep, dict) or not ep.get("identifier") or not ep.get("url"):
                continue
            if ep.get("role", "SENDER") == "SENDER":  # 2.1.1 has no role
                endpoints[str(ep["identifier"])] = str(ep["url"])
        self.version = chosen
        self._endpoints = endpoints
        return endpoints

    async def server_now(self) -> datetime | None:
        """The operator's current time, read from the envelope of a fresh versions call (or from
        its `Date` header when it sends no envelope).

        Windows must end at the operator's "now", not ours: a record stamped later than our window
        end but committed before it would otherwise fall between two windows.
        """
        self.last_server_time = None
        self._unwrap(await self._get(self._versions_url))
        return self.last_server_time

    async def crawl(self, module: Module, date_from: datetime | None, date_to: datetime) -> AsyncIterator[Page]:
        """Every page of a module in [date_from, date_to), in server order.

        Paging: the `Link` rel="next" is followed, as an opaque URL, while the server sends one; it
        must stay on the module's origin or one of `link_origins` (UPSTREAM_PROTOCOL otherwise).
        A server that has sent no `Link` in this crawl is paged by offset from our own URL: up to
        `X-Total-Count` when it sends one; else until an empty page, or a short one when it declared
        its page size (`X-Limit`) - without that a short page may be a silent cap, so one more is
        asked for. A page repeating the ids of the one before means the server ignores `offset`:
        the crawl ends cleanly when that page was short (it held everything), and fails with
        UPSTREAM_PROTOCOL when it was full (the rest is unreachable; a larger `page_limit` may help).

        When `X-Total-Count` drops between pages, objects moved out of the window and the rest
        shifted down; as the specification advises, the page is requested again with its offset
        lowered by the drop, or, when the link is opaque, the window is crawled again from its
        start (ingest is idempotent, so seeing a record twice is harmless; missing one is not).
        Without `X-Total-Count` no drop can be seen, so none is corrected.
        """
        endpoints = await self.discover()
        base = endpoints.get(module)
        if base is None:
            raise UpstreamError(UPSTREAM_PROTOCOL, f"operator offers no {module} Sender endpoint")
        params: dict[str, str] = {
            "date_to": format_datetime(date_to),
            "offset": "0",
            "limit": str(self._page_limit),
        }
        if date_from is not None:
            params["date_from"] = format_datetime(date_from)
        first_url = f"{base}{'&' if '?' in base else '?'}{urlencode(params)}"
        allowed = {origin(base), *self._link_origins}
        url: str | None = first_url
        last_total: int | None = None
        last_ids: list[Any] = []
        restarts = 0
        links_seen = redo = False
        for _ in range(MAX_PAGES):
            if url is None:
                return
            resp = await self._get(url)
            data = self._unwrap(resp)
            if data is None:
                data = []
            if not isinstance(data, list):
                raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: a list endpoint returned {type(data).__name__}")
            total = _int_header(resp.headers, "x-total-count")
            server_limit = _int_header(resp.headers, "x-limit")
            if server_limit and 0 < server_limit < self._page_limit:
                self._page_limit = server_limit  # ask for what the server will give from the next window on
            ids = _ids(data)
            if not redo and _repeats(ids, last_ids):
                asked = _query_int(url, "limit") or self._page_limit
                if len(data) < min(asked, server_limit or asked):
                    return  # a short page again: the server sent everything at once, twice
                raise UpstreamError(
                    UPSTREAM_PROTOCOL, f"{resp.url}: the server ignores offset (the same page again); raise page_limit"
                )
            page = self._parse_page(module, data)
            page.total_count = total
            page.server_time = self.last_server_time
            yield page
            following = next_link(resp.headers, url)
            if following is not None:
                links_seen = True
                if origin(following) not in allowed:
                    raise UpstreamError(UPSTREAM_PROTOCOL, f"next link leaves the operator's origin: {following}")
            elif not links_seen:
                following = _next_by_offset(url, len(data), total, server_limit)
            redo = False
            if last_total is not None and total is not None and total < last_total:
                # Objects before this page left the window, so this page started too far on: the
                # specification says to redo it with the offset lowered by the drop.
                following = _lower_offset(url, last_total - total)
                if following is None:  # an opaque link: only the first URL is known to be ours to rebuild
                    restarts += 1
                    if restarts > MAX_RESTARTS:
                        raise UpstreamError(UPSTREAM_PROTOCOL, "X-Total-Count kept dropping; window not stable")
                    following, total = first_url, None
                redo = True
            last_total, last_ids = total, ids
            url = following
        raise UpstreamError(UPSTREAM_PROTOCOL, f"more than {MAX_PAGES} pages in one window")

    def _parse_page(self, module: Module, data: list[Any]) -> Page:
        page = Page()
        for obj in data:
            try:
                page.records.append(parse_object(module, obj))
            except RecordError as exc:
                source_id = obj.get("id") if isinstance(obj, dict) else None
                page.invalid.append(
                    InvalidRecord(
                        module=module,
                        reason=str(exc),
                        raw=obj,
                        source_id=None if source_id is None else str(source_id),
                    )
                )
        return page


def _next_by_offset(url: str, count: int, total: int | None, server_limit: int | None) -> str | None:
    """The next page of a server that sends no Link: our URL with the offset moved past this page,
    or None when this page was the last (see `OcpiAdapter.crawl`)."""
    offset = _query_int(url, "offset")
    if offset is None or count == 0:
        return None
    if total is not None:
        return _with_offset(url, offset + count) if offset + count < total else None
    asked = _query_int(url, "limit")
    if server_limit and asked and count < min(asked, server_limit):
        return None
    return _with_offset(url, offset + count)


def _int_header(headers: dict[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None
