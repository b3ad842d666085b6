"""Open Charge Map API v3 (`GET /poi`): an aggregator's sites as locations, crawled by keyset.

OCM has no pagination envelope: `/poi` returns a bare JSON array of at most `maxresults` POIs.
A window [date_from, date_to) is crawled with `sortby=modified_asc&modifiedsince=T`, where the
server keeps POIs with `DateLastStatusUpdate >= T` (inclusive) and sorts by that timestamp alone, so
POIs sharing a timestamp come in no stable order. Each next page therefore asks again from the last
timestamp of the page (floored to the second, the precision we send) and drops the POIs already
yielded at or after it, keyed by (ID, timestamp): ties across a page boundary are neither lost nor
looped over, and a POI edited again during the crawl comes back with its new timestamp. When a full
page does not get past its first second (more POIs share it than a page holds), `modifiedsince`
cannot move on: the rest of the window is walked by ID instead (`sortby=id_asc&greaterthanid=N`,
still from T), which is stable whatever the timestamps. A first run (no date_from) walks by ID from
the start: the canonical way to mirror OCM, and it includes POIs without a DateLastStatusUpdate.

POIs stamped at or after date_to are left to the next window (which asks from date_to, inclusive),
so a window holds exactly its records and the crawl stops as soon as the timestamps pass its end.
A server that ignores the requested order would make keyset paging lose records silently; that is
detected and raised as UPSTREAM_PROTOCOL. Paging stops at a short page, so `page_size` must not
exceed what the server is willing to return per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any
from urllib.parse import urlencode

from adapters.http import UPSTREAM_PROTOCOL, HttpClient, Response, UpstreamError, server_date
from adapters.model import InvalidRecord, Module, Page
from adapters.ocm_parse import parse_poi, poi_id, poi_timestamp
from adapters.ocpi_parse import RecordError

MAX_PAGES = 100_000
USER_AGENT = "evgate/0.1"  # OCM asks API users to identify their application

Key = tuple[int | None, datetime | None]
"""What identifies one version of a POI in a crawl: (ID, DateLastStatusUpdate)."""


def format_datetime(value: datetime) -> str:
    """`modifiedsince`: UTC with `Z`, whole seconds (the server compares inclusively)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _floor_second(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


class OcmAdapter:
    """The Open Charge Map POI feed of one area (bounding box and/or country), as locations."""

    protocol = "ocm"

    def __init__(
        self,
        http: HttpClient,
        *,
        base_url: str,
        api_key: str,
        bounding_box: str | None = None,
        page_size: int = 100,
        country_code: str | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._http = http
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._area: dict[str, str] = {}
        if bounding_box:
            self._area["boundingbox"] = bounding_box  # "(lat,lng),(lat2,lng2)", passed as configured
        if country_code:
            self._area["countrycode"] = country_code
        self._page_size = page_size

    async def _get(self, params: dict[str, str]) -> Response:
        # The key goes in a header, never in the URL: URLs end up in logs and error messages.
        headers = {"X-API-Key": self._api_key, "Accept": "application/json", "User-Agent": USER_AGENT}
        return await self._http.get_json(f"{self._base}/poi?{urlencode(params)}", headers)

    async def server_now(self) -> datetime | None:
        """OCM's clock, from the Date header of the cheapest POI request there is."""
        resp = await self._get({"output": "json", "maxresults": "1", "compact": "true", "verbose": "false"})
        return server_date(resp)

    async def _fetch(self, **query: str) -> tuple[Response, list[Any]]:
        params = {
            "output": "json",
            "verbose": "false",
            "compact": "false",  # reference data inline: operator and country names, status ids
            "camelcase": "false",
            "includecomments": "false",
            "maxresults": str(self._page_size),
            **self._area,
            **query,
        }
        resp = await self._get(params)
        if not isinstance(resp.body, list):
            raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: expected a JSON array of POIs")
        return resp, resp.body

    async def crawl(self, module: Module, date_from: datetime | None, date_to: datetime) -> AsyncIterator[Page]:
        """Every POI modified in [date_from, date_to), as pages of locations (see the module doc)."""
        if module != "locations":
            raise UpstreamError(UPSTREAM_PROTOCOL, f"Open Charge Map offers no {module} module")
        if date_from is None:
            async for page in self._walk_by_id(None, date_to, set()):
                yield page
            return
        cursor = _floor_second(date_from)
        seen: set[Key] = set()
        for _ in range(MAX_PAGES):
            resp, items = await self._fetch(sortby="modified_asc", modifiedsince=format_datetime(cursor))
            keys = [(poi_id(item), poi_timestamp(item)) for item in items]
            stamps = [ts for _, ts in keys if ts is not None]
            if (stamps and stamps[0] < cursor) or any(b < a for a, b in pairwise(stamps)):
                raise UpstreamError(
                    UPSTREAM_PROTOCOL,
                    f"{resp.url}: POIs not in DateLastStatusUpdate order from modifiedsince (paging would lose some)",
                )
            page = self._page(resp, items, keys, seen, date_to)
            if page.records or page.invalid:
                yield page
            if len(items) < self._page_size or (stamps and stamps[-1] >= date_to):
                return  # the last page, or everything further belongs to later windows
            seen.update(keys)
            last = _floor_second(stamps[-1]) if stamps else cursor
            if last <= cursor:
                # A full page within one second: modifiedsince cannot get past it. Walk the rest by
                # ID (every POI modified since `cursor`), skipping what this window already yielded.
                async for page in self._walk_by_id(cursor, date_to, seen):
                    yield page
                return
            cursor = last
            # Only POIs stamped at or after the new cursor can come again: the rest is forgotten.
            seen = {k for k in seen if k[1] is not None and k[1] >= cursor}
        raise UpstreamError(UPSTREAM_PROTOCOL, f"more than {MAX_PAGES} pages in one window")

    async def _walk_by_id(self, since: datetime | None, date_to: datetime, seen: set[Key]) -> AsyncIterator[Page]:
        """Every POI (modified since `since`, if given) in ID order, by `greaterthanid` keyset."""
        after: int | None = None
        for _ in range(MAX_PAGES):
            query = {"sortby": "id_asc"}
            if since is not None:
                query["modifiedsince"] = format_datetime(since)
            if after is not None:
                query["greaterthanid"] = str(after)
            resp, items = await self._fetch(**query)
            keys = [(poi_id(item), poi_timestamp(item)) for item in items]
            ids = [i for i, _ in keys if i is not None]
            if any(b <= a for a, b in pairwise(ids)) or (ids and after is not None and ids[0] <= after):
                raise UpstreamError(
                    UPSTREAM_PROTOCOL, f"{resp.url}: POIs not in ascending ID order after greaterthanid"
                )
            page = self._page(resp, items, keys, seen, date_to)
            if page.records or page.invalid:
                yield page
            if len(items) < self._page_size:
                return
            if not ids:
                raise UpstreamError(UPSTREAM_PROTOCOL, f"{resp.url}: a full page of POIs without an ID")
            after = ids[-1]
        raise UpstreamError(UPSTREAM_PROTOCOL, f"more than {MAX_PAGES} pages in one window")

    def _page(self, resp: Response, items: list[Any], keys: list[Key], seen: set[Key], date_to: datetime) -> Page:
        """The POIs of a response not yielded yet in this window and stamped before its end."""
        page = Page(server_time=server_date(resp))
        for item, key in zip(items, keys, strict=True):
            stamp = key[1]
            if key in seen or (stamp is not None and stamp >= date_to):
                continue
            try:
                page.records.append(parse_poi(item))
            except RecordError as exc:
                page.invalid.append(
                    InvalidRecord(
                        module="locations",
                        reason=str(exc),
                        raw=item,
                        source_id=None if key[0] is None else str(key[0]),
                    )
                )
        return page
