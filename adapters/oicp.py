"""OICP 2.3 (Hubject) EMP pull: EVSE data, EVSE status and CDRs, over mutual TLS.

Hubject authenticates partners by their TLS client certificate (no tokens), so the HttpClient given
here must carry one. Every call is a JSON POST; EVSE data and CDRs page with `?page=N&size=S`
(0-based, until `last`). OICP bodies carry no server time, so the operator's clock is the HTTP
`Date` header of its answers. A `StatusCode` other than "000" becomes an UpstreamError with the
catalogue code that tells the scheduler whether to back off (unavailable) or to alert (auth).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from adapters.http import (
    UPSTREAM_AUTH,
    UPSTREAM_PROTOCOL,
    UPSTREAM_UNAVAILABLE,
    HttpClient,
    Response,
    UpstreamError,
    server_date,
)
from adapters.model import Module, Page
from adapters.oicp_parse import RecordError, parse_cdr_page, parse_evse_data_page, parse_status_page

MAX_PAGES = 100_000
CDR_MAX_PAGE_SIZE = 2000  # Hubject's limit for GetChargeDetailRecords
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SUCCESS = "000"
AUTH_CODES = frozenset({"017"})  # Unauthorized Access: certificate and ProviderID do not match
# Hubject or a partner is down: worth retrying later, not a fault in what we sent.
UNAVAILABLE_CODES = frozenset({"001", "002", "009", "021", "300", "310", "320"})
EVSE_DATA = "/evsepull/v23/providers/{provider}/data-records"
EVSE_STATUS = "/evsepull/v21/providers/{provider}/status-records"
CDRS = "/cdrmgmt/v22/providers/{provider}/get-charge-detail-records-request"
STATUS_KEYS = ("EvseStatuses", "EVSEStatusRecords")


def format_datetime(value: datetime) -> str:
    """OICP Date/Time: UTC with milliseconds and `Z`, as Hubject's own examples write it."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_code(body: Any) -> str | None:
    """The `StatusCode.Code` of an OICP answer as a 3-character string, or None when absent."""
    status = body.get("StatusCode") if isinstance(body, dict) else None
    code = status.get("Code") if isinstance(status, dict) else status
    if isinstance(code, bool) or code in (None, ""):
        return None
    return f"{code:03d}" if isinstance(code, int) else str(code).strip()


def error_for(code: str | None, body: Any, url: str) -> UpstreamError:
    """The UpstreamError for a failed OICP answer: 017 auth, Hubject outages unavailable, else protocol."""
    status = body.get("StatusCode") if isinstance(body, dict) else None
    detail = ""
    if isinstance(status, dict):
        detail = " ".join(str(status[k]) for k in ("Description", "AdditionalInfo") if status.get(k))
    message = f"{url}: OICP status {code} {detail}".strip()
    if code in AUTH_CODES:
        return UpstreamError(UPSTREAM_AUTH, message)
    if code in UNAVAILABLE_CODES:
        return UpstreamError(UPSTREAM_UNAVAILABLE, message)
    return UpstreamError(UPSTREAM_PROTOCOL, message)


def check_response(resp: Response, *payload_keys: str) -> dict[str, Any]:
    """The body of a successful OICP answer that carries one of `payload_keys`; raises otherwise.

    Tolerated: `StatusCode` absent or null when the payload is there (Hubject's
    GetChargeDetailRecords example answers `"StatusCode": null` on success). An
    eRoamingAcknowledgement with `Result: false` is a failure whatever its code says.
    """
    body = resp.body
    if not isinstance(body, dict):
        raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: not an OICP answer (a JSON {type(body).__name__})")
    code = status_code(body)
    if str(body.get("Result")).lower() == "false":  # a JSON false or the string "false"
        error = error_for(code, body, resp.url)
        if code in (None, SUCCESS):
            error = UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: eRoamingAcknowledgement with Result false")
        raise error
    if code is not None and code != SUCCESS:
        raise error_for(code, body, resp.url)
    if not any(key in body for key in payload_keys):
        raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: answer has none of {list(payload_keys)}")
    return body


def _is_last(body: dict[str, Any], number: int) -> bool:
    last = body.get("last")
    if isinstance(last, bool):
        return last
    if isinstance(last, str) and last.lower() in ("true", "false"):
        return last.lower() == "true"
    total_pages = body.get("totalPages")
    return isinstance(total_pages, int) and number + 1 >= total_pages


class OicpAdapter:
    """One Hubject connection (as EMP `provider_id`), reached at `base_url` (up to `/api/oicp`)."""

    protocol = "oicp"

    def __init__(self, http: HttpClient, *, base_url: str, provider_id: str, page_size: int = 100) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._provider = provider_id
        self._page_size = max(1, page_size)
        self.last_server_time: datetime | None = None

    def _url(self, template: str) -> str:
        return self._base + template.format(provider=quote(self._provider, safe=""))

    async def _post(self, url: str, body: dict[str, Any]) -> Response:
        resp = await self._http.post_json(url, body, {"Accept": "application/json"})
        date = server_date(resp)
        if date is not None:
            self.last_server_time = date
        return resp

    async def server_now(self) -> datetime | None:
        """The operator's clock, from the `Date` of a cheap call (a status pull for no EVSE).

        The answer's body does not matter, except that Hubject refusing our certificate (017) is
        worth knowing before any window is crawled.
        """
        self.last_server_time = None
        resp = await self._post(self._url(EVSE_STATUS), {"ProviderID": self._provider, "EvseID": []})
        code = status_code(resp.body)
        if code in AUTH_CODES:
            raise error_for(code, resp.body, resp.url)
        return self.last_server_time

    async def crawl(self, module: Module, date_from: datetime | None, date_to: datetime) -> AsyncIterator[Page]:
        """The pages of one module for the window [date_from, date_to).

        locations: a delta PullEvseData since `date_from` (`LastCall`; everything when None);
        statuses: one PullEvseStatus page; cdrs: GetChargeDetailRecords `From`/`To` the window.
        """
        if module == "locations":
            body: dict[str, Any] = {"ProviderID": self._provider, "GeoCoordinatesResponseFormat": "DecimalDegree"}
            if date_from is not None:
                body["LastCall"] = format_datetime(date_from)
            async for resp, payload in self._pages(EVSE_DATA, body, self._page_size):
                page = parse_evse_data_page(payload["content"], server_date(resp) or date_to)
                yield self._finish(page, resp, payload)
        elif module == "statuses":
            resp = await self._post(self._url(EVSE_STATUS), {"ProviderID": self._provider})
            payload = check_response(resp, *STATUS_KEYS)
            try:
                page = parse_status_page(payload, server_date(resp) or date_to)
            except RecordError as exc:
                raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: {exc}") from exc
            page.total_count = len(page.records) + len(page.invalid)
            yield self._finish(page, resp, payload)
        elif module == "cdrs":
            body = {
                "ProviderID": self._provider,
                "From": format_datetime(date_from or EPOCH),
                "To": format_datetime(date_to),
            }
            seen: set[str] = set()
            async for resp, payload in self._pages(CDRS, body, min(self._page_size, CDR_MAX_PAGE_SIZE)):
                yield self._finish(parse_cdr_page(payload["content"], seen), resp, payload)
        else:
            raise UpstreamError(UPSTREAM_PROTOCOL, f"OICP has no {module} module")

    def _finish(self, page: Page, resp: Response, payload: dict[str, Any]) -> Page:
        total = payload.get("totalElements")
        if isinstance(total, int) and not isinstance(total, bool):
            page.total_count = total
        page.server_time = server_date(resp)
        return page

    async def _pages(
        self, template: str, body: dict[str, Any], size: int
    ) -> AsyncIterator[tuple[Response, dict[str, Any]]]:
        """Each page of a paginated call, until `last` (or an empty page, or MAX_PAGES)."""
        base = self._url(template)
        for number in range(MAX_PAGES):
            resp = await self._post(f"{base}?page={number}&size={size}", body)
            payload = check_response(resp, "content")
            content = payload["content"]
            if content is None:
                content = payload["content"] = []
            if not isinstance(content, list):
                raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: content is a {type(content).__name__}")
            served = payload.get("number")
            if isinstance(served, int) and not isinstance(served, bool) and served != number:
                # A server that ignores `page` would serve page 0 forever.
                raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: asked for page {number}, got page {served}")
            yield resp, payload
            if not content or _is_last(payload, number):
                return
        raise UpstreamError(UPSTREAM_PROTOCOL, f"more than {MAX_PAGES} pages in one window")
