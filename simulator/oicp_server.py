"""One operator's OICP 2.3 EMP pull interface, as Hubject offers it, over HTTPS with mutual TLS.

POST endpoints under `/api/oicp` (JSON bodies, Spring-style `?page=&size=` paging, default size 20,
at most `page_size_max`):
- `evsepull/v23/providers/{providerID}/data-records`: PullEvseData, full or delta (`LastCall`);
- `evsepull/v21/providers/{providerID}/status-records`: PullEvseStatus, its ByID (`EvseID`) and
  ByOperatorID (`OperatorID`) variants, not paginated;
- `cdrmgmt/v22/providers/{providerID}/get-charge-detail-records-request`: GetChargeDetailRecords
  for CDRs last updated in [`From`, `To`).

There are no tokens: the TLS context must demand a client certificate (see
`Pki.mutual_tls_server_context`); the subject CN of the last client seen is kept in
`last_client_cn`. Errors answer an eRoamingAcknowledgement (`Result: false` plus `StatusCode`):
a ProviderID other than ours, in the path or the body, is `017` with HTTP 403 (the status the
OpenAPI documents for "Forbidden", so clients need not parse a 200 to notice); a malformed body
or parameter is `022` with HTTP 400. Unsupported request filters (`SearchCenter`) are refused with
`022` rather than ignored; the other optional filters of PullEvseData are ignored. The `Date`
header is the simulated clock.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Sequence
from datetime import datetime
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

from simulator.clock import SimClock, parse_datetime, to_ts
from simulator.data import OperatorWorld
from simulator.listener import ListenedServer, Listener
from simulator.ocpi_server import Handler, Middleware
from simulator.ocpi_views import Selection, SliceSelection
from simulator.oicp_views import EVSE_STATUS, GEO_FORMATS, OicpViews

log = logging.getLogger(__name__)

ROOT = "/api/oicp"
PROVIDER_ID = "GB-EVG"  # the EMP (the gateway) the simulated operators expect
DEFAULT_PAGE_SIZE = 20
MAX_STATUS_IDS = 100
DESCRIPTIONS = {
    "000": "Success",
    "017": "Unauthorized Access",
    "021": "System error",
    "022": "Data error",
    "320": "Service not available",
}
Json = dict[str, Any]


class OicpError(Exception):
    """A request answered with a failed eRoamingAcknowledgement."""

    def __init__(self, code: str, info: str, http_status: int) -> None:
        super().__init__(info)
        self.code = code
        self.info = info
        self.http_status = http_status


def status_code(code: str = "000", info: str | None = None) -> Json:
    """An OICP StatusCode object."""
    out: Json = {"Code": code, "Description": DESCRIPTIONS[code]}
    if info is not None:
        out["AdditionalInfo"] = info
    return out


def _json(body: Json, http_status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=http_status, content_type="application/json")


def _data_error(info: str) -> OicpError:
    return OicpError("022", info, 400)


def _datetime(body: Json, name: str, required: bool = False) -> int | None:
    """A Date/Time field as whole POSIX seconds rounded up (records have whole seconds)."""
    raw = body.get(name)
    if raw is None:
        if required:
            raise _data_error(f"{name} is mandatory")
        return None
    try:
        return math.ceil(parse_datetime(raw))
    except (TypeError, ValueError):
        raise _data_error(f"invalid {name}: {raw!r}") from None


def _strings(body: Json, name: str) -> list[str] | None:
    """An optional list of strings; an empty list counts as absent."""
    raw = body.get(name)
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise _data_error(f"{name} must be a list of strings")
    return raw


def _paging(request: web.Request, size_max: int) -> tuple[int, int]:
    """`page` (0-based) and `size` (default 20, capped at size_max) from the query string."""
    values = {}
    for name, default in (("page", 0), ("size", DEFAULT_PAGE_SIZE)):
        raw = request.query.get(name)
        try:
            values[name] = default if raw is None else int(raw)
        except ValueError:
            raise _data_error(f"invalid {name}: {raw!r}") from None
    if values["page"] < 0 or values["size"] < 1:
        raise _data_error("page must be >= 0 and size >= 1")
    return values["page"], min(values["size"], size_max)


def page_body(selection: Selection, page: int, size: int, *, spring: bool = False) -> Json:
    """A Spring Data page of `selection` ending with the StatusCode; `spring` adds `pageable` and
    `empty`, which the CDR response lists as well."""
    total = selection.total
    content = selection.items(page * size, size)
    pages = math.ceil(total / size)
    body: Json = {
        "content": content,
        "number": page,
        "size": size,
        "totalElements": total,
        "totalPages": pages,
        "first": page == 0,
        "last": page >= pages - 1,
        "numberOfElements": len(content),
    }
    if spring:
        body["empty"] = not content
        body["pageable"] = {
            "sort": {"sorted": False, "empty": True, "unsorted": True},
            "pageSize": size,
            "pageNumber": page,
            "offset": page * size,
            "paged": True,
            "unpaged": False,
        }
    body["StatusCode"] = status_code()
    return body


def _empty() -> Selection:
    return SliceSelection([], 0, 0, lambda r: r)


def _seconds(value: datetime) -> int:
    ts = to_ts(value)
    assert ts is not None
    return math.ceil(ts)


class OicpServer(ListenedServer):
    """The HTTPS server of one simulated OICP operator, bound to 127.0.0.1."""

    def __init__(
        self,
        op: OperatorWorld,
        clock: SimClock,
        ssl_context: ssl.SSLContext,
        *,
        page_size_max: int = 2000,
        port: int = 0,
        middlewares: Sequence[Middleware] = (),
        provider_id: str = PROVIDER_ID,
    ) -> None:
        self.op = op
        self.clock = clock
        self.views = OicpViews(op)
        self.provider_id = provider_id
        self.page_size_max = page_size_max
        self.port = 0
        self.last_client_cn: str | None = None
        self.app = web.Application(middlewares=[self._stamp, *middlewares, self._errors, self._authorize])
        for path, handler in (
            ("evsepull/v23/providers/{providerID}/data-records", self.pull_evse_data),
            ("evsepull/v21/providers/{providerID}/status-records", self.pull_evse_status),
            ("cdrmgmt/v22/providers/{providerID}/get-charge-detail-records-request", self.get_cdrs),
        ):
            self.app.router.add_post(f"{ROOT}/{path}", handler)
        self.listener = Listener(self.app, ssl_context, port)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}{ROOT}"

    # -- truth and world changes for tests -----------------------------------------------------

    def truth_evse_data(self, last_call: datetime | None = None, geo_format: str = "Google") -> list[Json]:
        """Every record a complete PullEvseData (delta if `last_call`) returns now, in order."""
        selection = self.views.evse_data(
            self.clock.now_s(), None if last_call is None else _seconds(last_call), geo_format
        )
        return selection.items(0, selection.total)

    def truth_statuses(self) -> dict[str, str]:
        """EvseID -> EvseStatus as PullEvseStatus reports them now."""
        return {r["EvseID"]: r["EvseStatus"] for r in self.views.statuses(self.clock.now_s())}

    def truth_cdrs(self, date_from: datetime, date_to: datetime) -> list[Json]:
        """Every ChargeDetailRecord GetChargeDetailRecords returns now for [date_from, date_to)."""
        selection = self.views.cdrs(self.clock.now_s(), _seconds(date_from), _seconds(date_to))
        return selection.items(0, selection.total)

    def remove_evse(self, evse_id: str, at: datetime | None = None) -> None:
        """Decommission an EVSE (OICP EvseID) from `at` on (default: the simulated now)."""
        self.views.remove_evse(evse_id, self.clock.now_s() if at is None else _seconds(at))

    # -- middlewares ---------------------------------------------------------------------------

    @web.middleware
    async def _stamp(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Remember who the client certificate names, and date the response by the simulated clock."""
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:
            names = [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
            self.last_client_cn = names[-1] if names else None
        response = await handler(request)
        response.headers["Date"] = formatdate(self.clock.now_s(), usegmt=True)
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Failed eRoamingAcknowledgements for OicpError and for HTTP errors such as 404 and 405."""
        try:
            return await handler(request)
        except OicpError as exc:
            return _json({"Result": False, "StatusCode": status_code(exc.code, exc.info)}, exc.http_status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _json({"Result": False, "StatusCode": status_code("320", exc.reason)}, exc.status)
        except Exception as exc:  # a simulator bug: log it, and still answer in OICP form
            log.exception("%s %s failed", request.method, request.path_qs)
            return _json({"Result": False, "StatusCode": status_code("021", repr(exc))}, 500)

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """017 unless the path names our EMP."""
        provider = request.match_info.get("providerID")
        if provider is not None and provider != self.provider_id:
            raise OicpError("017", f"unknown ProviderID {provider!r}", 403)
        return await handler(request)

    async def _body(self, request: web.Request) -> Json:
        """The JSON request object; its ProviderID must be the one in the path."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise _data_error("the body is not JSON") from None
        if not isinstance(body, dict):
            raise _data_error("the body must be a JSON object")
        provider = body.get("ProviderID")
        if provider is None:
            raise _data_error("ProviderID is mandatory")
        if provider != request.match_info["providerID"]:
            raise OicpError("017", f"ProviderID {provider!r} does not match the path", 403)
        if body.get("SearchCenter") is not None:
            raise _data_error("SearchCenter is not supported by this operator")
        return body

    # -- handlers ------------------------------------------------------------------------------

    async def pull_evse_data(self, request: web.Request) -> web.Response:
        """eRoamingPullEvseData: a page of EVSE data records, by EvseID."""
        body = await self._body(request)
        page, size = _paging(request, self.page_size_max)
        geo_format = body.get("GeoCoordinatesResponseFormat")
        if geo_format not in GEO_FORMATS:
            raise _data_error(f"GeoCoordinatesResponseFormat must be one of {list(GEO_FORMATS)}")
        last_call = _datetime(body, "LastCall")
        countries, operators = _strings(body, "CountryCodes"), _strings(body, "OperatorIds")
        if last_call is not None and (countries or operators):
            raise _data_error("LastCall cannot be combined with CountryCodes or OperatorIds")
        if (countries and "GBR" not in countries) or (operators and self.views.operator_id not in operators):
            return _json(page_body(_empty(), page, size))
        selection = self.views.evse_data(self.clock.now_s(), last_call, geo_format)
        return _json(page_body(selection, page, size))

    async def pull_evse_status(self, request: web.Request) -> web.Response:
        """eRoamingPullEvseStatus (all, or one status), ByID and ByOperatorID."""
        body = await self._body(request)
        now = self.clock.now_s()
        evse_ids = _strings(body, "EvseID")
        if evse_ids is not None:
            if len(evse_ids) > MAX_STATUS_IDS:
                raise _data_error(f"at most {MAX_STATUS_IDS} EvseIDs per request")
            records = self.views.statuses(now, evse_ids)
            return _json({"EVSEStatusRecords": {"EvseStatusRecord": records}, "StatusCode": status_code()})
        wanted = body.get("EvseStatus")
        if wanted is not None and wanted not in {*EVSE_STATUS.values(), "Unknown"}:
            raise _data_error(f"invalid EvseStatus: {wanted!r}")
        operators = _strings(body, "OperatorID")
        statuses = []
        if operators is None or self.views.operator_id in operators:
            records = [r for r in self.views.statuses(now) if wanted is None or r["EvseStatus"] == wanted]
            statuses.append(
                {"OperatorID": self.views.operator_id, "OperatorName": self.op.spec.name, "EvseStatusRecord": records}
            )
        return _json({"EvseStatuses": {"OperatorEvseStatus": statuses}, "StatusCode": status_code()})

    async def get_cdrs(self, request: web.Request) -> web.Response:
        """eRoamingGetChargeDetailRecords: a page of the CDRs last updated in [From, To)."""
        body = await self._body(request)
        page, size = _paging(request, self.page_size_max)
        date_from = _datetime(body, "From", required=True)
        date_to = _datetime(body, "To", required=True)
        session_ids, operators = _strings(body, "SessionID"), _strings(body, "OperatorID")
        selection = self.views.cdrs(self.clock.now_s(), date_from, date_to)
        if operators is not None and self.views.operator_id not in operators:
            selection = _empty()
        elif session_ids is not None:
            wanted = set(session_ids)
            chosen = [r for r in selection.items(0, selection.total) if r["SessionID"] in wanted]
            selection = SliceSelection(chosen, 0, len(chosen), lambda r: r)
        return _json(page_body(selection, page, size, spring=True))
