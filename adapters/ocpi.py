"""OCPI 2.2.1 Sender interfaces (Locations, Sessions, CDRs, Tariffs): discovery and windowed crawls.

Give it a window [date_from, date_to) and a module; it yields pages of normalised records,
following `Link: rel="next"` as an opaque URL (hubs rewrite it) until there is none. Per-operator
quirks are configuration (`token_encoding`) or detected (a bare JSON array instead of the envelope).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from adapters.http import UPSTREAM_PROTOCOL, UPSTREAM_UNAVAILABLE, HttpClient, Response, UpstreamError
from adapters.model import InvalidRecord, Module, Page
from adapters.ocpi_parse import RecordError, parse_datetime, parse_object

PREFERRED_VERSIONS = ("2.2.1", "2.2", "2.1.1")
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*rel="?next"?', re.IGNORECASE)
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


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _lower_offset(url: str, by: int) -> str | None:
    """The same URL with its `offset` lowered by `by`, or None when the URL has no offset."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k == "offset" for k, _ in query):
        return None
    query = [(k, str(max(0, int(v) - by)) if k == "offset" else v) for k, v in query]
    return urlunsplit(parts._replace(query=urlencode(query)))


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
        page_limit: int = 100,
    ) -> None:
        self._http = http
        self._versions_url = versions_url
        encoded = base64.b64encode(token.encode()).decode() if token_encoding == "base64" else token  # noqa: S105
        self._auth = f"Token {encoded}"
        self._page_limit = page_limit
        self._endpoints: dict[str, str] | None = None
        self.version: str | None = None
        self.last_server_time: datetime | None = None

    async def _get(self, url: str) -> Response:
        headers = {
            "Authorization": self._auth,
            "X-Request-ID": str(uuid.uuid4()),
            "X-Correlation-ID": str(uuid.uuid4()),
            "Accept": "application/json",
        }
        return await self._http.get_json(url, headers)

    def _unwrap(self, resp: Response) -> Any:
        """The `data` of an OCPI envelope (or a bare body), raising on a non-1xxx status."""
        body = resp.body
        if isinstance(body, list):  # some servers send the bare array without the envelope
            return body
        if not isinstance(body, dict) or "status_code" not in body:
            raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: not an OCPI response envelope")
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
        """The operator's current time, read from the envelope of a fresh versions call.

        Windows must end at the operator's "now", not ours: a record stamped later than our window
        end but committed before it would otherwise fall between two windows.
        """
        self.last_server_time = None
        self._unwrap(await self._get(self._versions_url))
        return self.last_server_time

    async def crawl(self, module: Module, date_from: datetime | None, date_to: datetime) -> AsyncIterator[Page]:
        """Every page of a module in [date_from, date_to), in server order.

        When `X-Total-Count` drops between pages, objects moved out of the window and the rest
        shifted down; as the specification advises, the page is requested again with its offset
        lowered by the drop, or, when the link is opaque, the window is crawled again from its
        start (ingest is idempotent, so seeing a record twice is harmless; missing one is not).
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
        url: str | None = first_url
        last_total: int | None = None
        restarts = 0
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
            page = self._parse_page(module, data)
            page.total_count = total
            page.server_time = self.last_server_time
            yield page
            following = next_link(resp.headers, url)
            if following is not None and not _same_origin(following, url):
                raise UpstreamError(UPSTREAM_PROTOCOL, f"next link leaves the operator's origin: {following}")
            if last_total is not None and total is not None and total < last_total:
                # Objects before this page left the window, so this page started too far on: the
                # specification says to redo it with the offset lowered by the drop.
                redo = _lower_offset(url, last_total - total)
                if redo is None:  # an opaque link: only the first URL is known to be ours to rebuild
                    restarts += 1
                    if restarts > MAX_RESTARTS:
                        raise UpstreamError(UPSTREAM_PROTOCOL, "X-Total-Count kept dropping; window not stable")
                    redo, total = first_url, None
                following = redo
            last_total = total
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


def _int_header(headers: dict[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None
