"""The OCPI adapter against a scripted operator on real TLS: paging, Link, envelope codes, auth header.

Each test sets how the operator answers (its pages, headers and status codes) and checks what the
adapter makes of it: which URLs it asks for, which records it yields, which error code it raises.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from adapters.http import HttpClient, UpstreamError
from adapters.ocpi import OcpiAdapter
from tests.support import ocpi_envelope, serve_tls, shared_path

TARIFF = orjson.loads(shared_path("fixtures", "ocpi", "2.2.1", "tariff_1_simple_2hour.json").read_bytes())
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)


def tariff(i: int) -> dict[str, Any]:
    return {**TARIFF, "id": f"T{i}"}


@dataclass
class Script:
    """How the scripted operator answers `GET /tariffs...`: a function of the request and call number."""

    answer: Callable[[web.Request, int], web.Response] | None = None
    requests: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)


@pytest.fixture
async def operator(tmp_path: Path) -> AsyncIterator[tuple[Script, str, str]]:
    script = Script()
    base: dict[str, str] = {}
    app = web.Application()

    async def versions(request: web.Request) -> web.Response:
        script.auth.append(request.headers.get("Authorization", ""))
        return ocpi_envelope([{"version": "2.1.1", "url": "/old"}, {"version": "2.2.1", "url": f"{base['url']}/2.2.1"}])

    async def details(_: web.Request) -> web.Response:
        eps = [
            {"identifier": "tariffs", "role": "SENDER", "url": f"{base['url']}/tariffs"},
            {"identifier": "tariffs", "role": "RECEIVER", "url": f"{base['url']}/wrong"},
        ]
        return ocpi_envelope({"version": "2.2.1", "endpoints": eps})

    async def tariffs(request: web.Request) -> web.Response:
        script.requests.append(request.path_qs)
        assert script.answer is not None
        return script.answer(request, len(script.requests))

    app.router.add_get("/versions", versions)
    app.router.add_get("/2.2.1", details)
    app.router.add_get("/tariffs", tariffs)
    app.router.add_get("/tariffs/page/{n}", tariffs)
    async for url, ca in serve_tls(app, tmp_path / "pki"):
        base["url"] = url
        yield script, url, ca


async def crawl(url: str, ca: str, **kwargs: Any) -> list[Any]:
    async with HttpClient(ca_bundle=ca, timeout=5) as http:
        adapter = OcpiAdapter(http, versions_url=f"{url}/versions", token="tok-en", **kwargs)
        return [page async for page in adapter.crawl("tariffs", T0, T1)]


async def test_offset_paging_follows_link_and_passes_the_window(operator: tuple[Script, str, str]) -> None:
    script, url, ca = operator

    def answer(request: web.Request, n: int) -> web.Response:
        offset = int(request.query["offset"])
        assert (
            request.query["date_from"] == "2026-01-01T00:00:00Z" and request.query["date_to"] == "2026-01-02T00:00:00Z"
        )
        items = [tariff(i) for i in range(offset, min(offset + 2, 5))]
        headers = {"X-Total-Count": "5", "X-Limit": "2"}
        if offset + 2 < 5:
            query = request.query_string.replace(f"offset={offset}", f"offset={offset + 2}")
            headers["Link"] = f'<{url}/tariffs?{query}>; rel="next"'
        return ocpi_envelope(items, headers=headers)

    script.answer = answer
    pages = await crawl(url, ca, page_limit=100)
    assert [r.source_id for p in pages for r in p.records] == ["T0", "T1", "T2", "T3", "T4"]
    assert [p.total_count for p in pages] == [5, 5, 5]
    assert len(script.requests) == 3 and "limit=100" in script.requests[0]
    assert script.auth[0] == "Token " + base64.b64encode(b"tok-en").decode()


async def test_link_is_followed_as_an_opaque_url(operator: tuple[Script, str, str]) -> None:
    """A hub rewrites Link to its own scheme (OCN: /page/2); the adapter must not rebuild it."""
    script, url, ca = operator

    def answer(request: web.Request, n: int) -> web.Response:
        if n == 1:
            return ocpi_envelope([tariff(1)], headers={"Link": f'<{url}/tariffs/page/2>; rel="next"'})
        assert request.path == "/tariffs/page/2" and not request.query
        return ocpi_envelope([tariff(2)])

    script.answer = answer
    pages = await crawl(url, ca)
    assert [r.source_id for p in pages for r in p.records] == ["T1", "T2"]
    assert script.requests[1] == "/tariffs/page/2"


async def test_dropping_total_count_lowers_the_next_offset(operator: tuple[Script, str, str]) -> None:
    """Spec advice: when X-Total-Count drops between pages, redo with the offset lowered by the drop."""
    script, url, ca = operator
    data = [tariff(i) for i in range(6)]

    def answer(request: web.Request, n: int) -> web.Response:
        offset, limit = int(request.query["offset"]), 2
        if n == 2:
            del data[0]  # T0 was updated out of the window after the first page was served
        items = data[offset : offset + limit]
        headers = {"X-Total-Count": str(len(data))}
        if offset + limit < len(data):
            headers["Link"] = f'<{url}/tariffs?offset={offset + limit}&limit={limit}>; rel="next"'
        return ocpi_envelope(items, headers=headers)

    script.answer = answer
    pages = await crawl(url, ca, page_limit=2)
    seen = [r.source_id for p in pages for r in p.records]
    # without the correction T2 would be skipped (it moved from offset 2 to 1 before page 2)
    assert set(seen) == {f"T{i}" for i in range(6)}
    assert "offset=2" in script.requests[1] and "offset=1" in script.requests[2]


async def test_bare_array_without_envelope_is_accepted(operator: tuple[Script, str, str]) -> None:
    script, url, ca = operator
    script.answer = lambda r, n: web.Response(body=orjson.dumps([tariff(7)]), content_type="application/json")
    pages = await crawl(url, ca)
    assert [r.source_id for p in pages for r in p.records] == ["T7"]


async def test_raw_token_encoding(operator: tuple[Script, str, str]) -> None:
    script, url, ca = operator
    script.answer = lambda r, n: ocpi_envelope([])
    await crawl(url, ca, token_encoding="raw")
    assert script.auth == ["Token tok-en"]


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (lambda r, n: ocpi_envelope(None, status_code=2001), "UPSTREAM_PROTOCOL"),
        (lambda r, n: ocpi_envelope(None, status_code=3000), "UPSTREAM_UNAVAILABLE"),
        (lambda r, n: web.Response(status=401), "UPSTREAM_AUTH"),
        (lambda r, n: web.Response(status=503), "UPSTREAM_HTTP"),
        (lambda r, n: web.Response(status=429, headers={"Retry-After": "7"}), "UPSTREAM_RATE_LIMITED"),
        (lambda r, n: web.Response(body=b'{"data": [', content_type="application/json"), "UPSTREAM_PROTOCOL"),
        (lambda r, n: ocpi_envelope({"not": "a list"}), "UPSTREAM_PROTOCOL"),
        (
            lambda r, n: ocpi_envelope([tariff(1)], headers={"Link": '<https://127.0.0.2:1/steal>; rel="next"'}),
            "UPSTREAM_PROTOCOL",
        ),
    ],
    ids=[
        "ocpi-2001",
        "ocpi-3000",
        "http-401",
        "http-503",
        "http-429",
        "truncated-json",
        "object-not-list",
        "foreign-link",
    ],
)
async def test_failures_map_to_catalogue_codes(operator: tuple[Script, str, str], answer: Any, code: str) -> None:
    script, url, ca = operator
    script.answer = answer
    with pytest.raises(UpstreamError) as err:
        await crawl(url, ca)
    assert err.value.code == code
    if code == "UPSTREAM_RATE_LIMITED":
        assert err.value.retry_after == 7.0


async def test_plain_http_is_refused() -> None:
    async with HttpClient(timeout=5) as http:
        adapter = OcpiAdapter(http, versions_url="http://127.0.0.1:9/versions", token="t")
        with pytest.raises(UpstreamError) as err:
            await adapter.discover()
    assert err.value.code == "UPSTREAM_TLS" and "plain HTTP" in err.value.message
