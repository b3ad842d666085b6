"""Aggregator POIs (Open Charge Map) that duplicate an operator's site: marked, unmarked, hidden from lists.

On SQLite and PostgreSQL: `mark_duplicates` on seeded rows, then the GraphQL `locations` and
`location` fields over the real app.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from adapters.model import Page
from adapters.ocm_parse import parse_poi
from gateway.dedupe import BATCH, mark_duplicates
from gateway.geo import haversine_m
from gateway.ingest import Ingestor
from gateway.models import Location, Operator
from gateway.pseudonym import Pseudonymizer
from tests import seed
from tests.test_no_n_plus_one import count_queries

pytestmark = pytest.mark.usefixtures("db")

SITE = "op-a/SITE"
NEAR, FAR, ALONE = "ocm/1001", "ocm/1002", "ocm/1003"

LOCATIONS = """
query($filter: LocationFilter) {
  locations(filter: $filter, first: 100) {
    totalCount
    edges { node { id duplicateOf { id name } } }
  }
}
"""


async def ocm_operator(operator_id: str = "ocm") -> None:
    await Operator.create(id=operator_id, name="Open Charge Map", protocol="ocm", base_url="https://ocm.test/v3")


async def scene() -> None:
    """An operator site at the centre; OCM POIs 10 m and 200 m from it, and one 3.6 km away."""
    await seed.operators("op-a")
    await ocm_operator()
    await seed.sites(
        [
            seed.Site("op-a", "SITE", *seed.CENTRE),
            seed.Site("ocm", "1001", *seed.offset(6, 8)),
            seed.Site("ocm", "1002", *seed.offset(200, 0)),
            seed.Site("ocm", "1003", *seed.offset(-3000, 2000), evses=0),
        ]
    )


async def marks() -> dict[str, str | None]:
    return dict(await Location.all().order_by("id").values_list("id", "duplicate_of"))


async def move(location_id: str, north_m: float, east_m: float, *, written: datetime | None = None) -> None:
    """Move a location, as a new version of it written at `written` (ingest sets fetched_at)."""
    lat, lon = seed.offset(north_m, east_m)
    extra = {"fetched_at": written} if written is not None else {}
    await Location.filter(id=location_id).update(latitude=lat, longitude=lon, **extra)


async def test_marks_exactly_the_poi_near_an_operator_site() -> None:
    await scene()
    lat, lon = seed.offset(6, 8)
    assert 9.9 < haversine_m(*seed.CENTRE, lat, lon) < 10.1

    assert await mark_duplicates() == 1
    assert await marks() == {NEAR: SITE, FAR: None, ALONE: None, SITE: None}

    # Idempotent: the same answer, and nothing written when nothing changed.
    with count_queries() as statements:
        assert await mark_duplicates() == 1
    assert await marks() == {NEAR: SITE, FAR: None, ALONE: None, SITE: None}
    assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE")], statements


async def test_moving_the_operator_site_away_unmarks_and_near_another_marks() -> None:
    await scene()
    await mark_duplicates()

    await move(SITE, 5000, 0)
    assert await mark_duplicates() == 0
    assert await marks() == {NEAR: None, FAR: None, ALONE: None, SITE: None}

    await move(SITE, 190, 5)  # now about 11 m from the POI that was 200 m away
    assert await mark_duplicates() == 1
    assert await marks() == {NEAR: None, FAR: SITE, ALONE: None, SITE: None}


async def test_equally_near_candidates_are_decided_by_postcode_then_operator_name() -> None:
    await seed.operators("op-a", "op-b")
    await ocm_operator()
    await seed.sites(
        [
            seed.Site("op-a", "A", *seed.offset(0, -10)),
            seed.Site("op-b", "B", *seed.offset(0, 10.5)),  # half a metre further: equally near
            seed.Site("ocm", "1", *seed.CENTRE),
        ]
    )
    await Location.all().update(postal_code=None)  # seeded sites all share one postcode
    assert await mark_duplicates() == 1
    assert (await marks())["ocm/1"] == "op-a/A"  # the nearer, nothing else to tell them apart

    await Location.filter(id="op-b/B").update(operator_name="Pod Point")
    await Location.filter(id="ocm/1").update(operator_name="POD Point (UK)")
    await mark_duplicates()
    assert (await marks())["ocm/1"] == "op-b/B"  # the operator names agree

    await Location.filter(id="op-a/A").update(postal_code="sw1a 2aa")
    await Location.filter(id="ocm/1").update(postal_code="SW1A2AA")
    await mark_duplicates()
    assert (await marks())["ocm/1"] == "op-a/A"  # the postcodes agree, which weighs more

    await move("op-b/B", 0, 3)  # clearly nearer now: distance wins over corroboration
    await mark_duplicates()
    assert (await marks())["ocm/1"] == "op-b/B"


async def test_only_published_operator_sites_and_only_aggregator_rows_count() -> None:
    await seed.operators("op-a", "op-b")
    await seed.sites(
        [
            seed.Site("op-a", "HIDDEN", *seed.CENTRE, publish=False),
            seed.Site("op-b", "OTHER", *seed.offset(5, 0)),  # an ordinary operator: never marked
            seed.Site("ocm-x", "1", *seed.offset(0, 5)),  # no operator row: known by its protocol
        ]
    )
    await Location.filter(operator_id="ocm-x").update(protocol="ocm")
    await Location.filter(id="op-b/OTHER").update(duplicate_of="stale/value")  # left by an earlier run
    assert await mark_duplicates() == 1
    assert await marks() == {"op-a/HIDDEN": None, "op-b/OTHER": None, "ocm-x/1": "op-b/OTHER"}

    await Location.filter(id="op-b/OTHER").update(publish=False)
    assert await mark_duplicates() == 0
    assert (await marks())["ocm-x/1"] is None

    assert await mark_duplicates(aggregator_protocols=()) == 0  # no aggregators: nothing marked


async def test_graphql_hides_duplicates_unless_asked_and_links_them(graphql: Any) -> None:
    await scene()
    await mark_duplicates()

    body = await graphql(LOCATIONS)
    assert "errors" not in body, body
    listed = {e["node"]["id"]: e["node"]["duplicateOf"] for e in body["data"]["locations"]["edges"]}
    assert listed == {SITE: None, FAR: None, ALONE: None}
    assert body["data"]["locations"]["totalCount"] == 3

    body = await graphql(LOCATIONS, {"filter": {"includeDuplicates": True}})
    listed = {e["node"]["id"]: e["node"]["duplicateOf"] for e in body["data"]["locations"]["edges"]}
    assert listed[NEAR] == {"id": SITE, "name": "Site SITE"} and len(listed) == 4
    assert body["data"]["locations"]["totalCount"] == 4

    near = {"latitude": seed.CENTRE[0], "longitude": seed.CENTRE[1], "radiusMeters": 500}
    body = await graphql(LOCATIONS, {"filter": {"near": near}})
    assert [e["node"]["id"] for e in body["data"]["locations"]["edges"]] == [SITE, FAR]
    body = await graphql(LOCATIONS, {"filter": {"near": near, "includeDuplicates": True}})
    assert [e["node"]["id"] for e in body["data"]["locations"]["edges"]] == [SITE, NEAR, FAR]

    body = await graphql('{ location(id: "ocm/1001") { id duplicateOf { id operator { id } } } }')
    assert body["data"]["location"] == {"id": NEAR, "duplicateOf": {"id": SITE, "operator": {"id": "op-a"}}}


async def test_duplicate_of_is_batched_not_one_query_per_row(graphql: Any) -> None:
    await seed.operators("op-a")
    await ocm_operator()
    await seed.sites(
        [seed.Site("op-a", f"S{i}", *seed.offset(i * 100, 0), evses=0) for i in range(20)]
        + [seed.Site("ocm", f"{i}", *seed.offset(i * 100, 5), evses=0) for i in range(20)]
    )
    assert await mark_duplicates() == 20
    with count_queries() as statements:
        body = await graphql(LOCATIONS, {"filter": {"includeDuplicates": True}})
    assert sum(1 for e in body["data"]["locations"]["edges"] if e["node"]["duplicateOf"]) == 20
    assert len(statements) <= 3, statements  # the page, its count, the duplicates' targets


async def test_a_bounded_number_of_queries_for_hundreds_of_pois() -> None:
    n = 500
    await seed.operators("op-a")
    await ocm_operator()
    # Operator sites on a 100 m grid; each OCM POI 8 m from one (even) or 60 m from all (odd).
    operator_sites = [
        seed.Site("op-a", f"S{i}", *seed.offset((i // 25) * 100, (i % 25) * 100), evses=0) for i in range(n)
    ]
    pois = [
        seed.Site(
            "ocm",
            f"{i}",
            *seed.offset((i // 25) * 100 + (8 if i % 2 == 0 else 50), (i % 25) * 100 + (0 if i % 2 == 0 else 50)),
            evses=0,
        )
        for i in range(n)
    ]
    await seed.sites(operator_sites + pois)

    with count_queries() as statements:
        assert await mark_duplicates() == n // 2
    stored = await marks()
    assert all(stored[f"ocm/{i}"] == (f"op-a/S{i}" if i % 2 == 0 else None) for i in range(n))
    # operators, aggregator rows, one candidate query per BATCH POIs, one batched UPDATE.
    assert len(statements) <= 2 + -(-n // BATCH) + 1, statements

    with count_queries() as statements:
        assert await mark_duplicates() == n // 2
    assert len(statements) <= 2 + -(-n // BATCH), statements  # nothing changed: no UPDATE


async def test_changed_since_looks_only_at_what_was_written_and_agrees_with_a_full_run() -> None:
    await scene()
    assert await mark_duplicates() == 1
    since = datetime.now(UTC)

    with count_queries() as statements:  # nothing written since: a few small queries, no UPDATE
        assert await mark_duplicates(changed_since=since) == 1
    assert len(statements) == 3, statements  # aggregator operators, changed rows, the count

    # The operator site moves next to the far POI: the near one is unmarked (it pointed at the
    # site), the far one marked (it lies near the site's new position).
    await move(SITE, 190, 5, written=since + timedelta(seconds=1))
    assert await mark_duplicates(changed_since=since) == 1
    assert await marks() == {NEAR: None, FAR: SITE, ALONE: None, SITE: None}

    # A new version of an aggregator POI (ingest writes it unmarked) next to the site.
    await move(ALONE, 195, 0, written=since + timedelta(seconds=2))
    assert await mark_duplicates(changed_since=since + timedelta(seconds=2)) == 2
    assert (await marks())[ALONE] == SITE


async def test_changed_since_after_random_moves_matches_a_full_recompute() -> None:
    rng = random.Random(5)
    await seed.operators("op-a", "op-b")
    await ocm_operator()
    spot = [seed.offset(rng.uniform(0, 400), rng.uniform(0, 400)) for _ in range(60)]
    await seed.sites(
        [seed.Site(("op-a", "op-b")[i % 2], f"S{i}", *spot[i], evses=0) for i in range(30)]
        + [
            seed.Site("ocm", f"{i}", spot[i % 30][0] + rng.uniform(-2e-4, 2e-4), spot[i % 30][1], evses=0)
            for i in range(60)
        ]
    )
    await mark_duplicates()
    for round_ in range(4):
        since = datetime.now(UTC) + timedelta(minutes=round_)
        ids = [f"op-{'ab'[i % 2]}/S{i}" for i in rng.sample(range(30), 4)] + [
            f"ocm/{i}" for i in rng.sample(range(60), 6)
        ]
        for location_id in ids:
            await move(location_id, rng.uniform(0, 400), rng.uniform(0, 400), written=since)
        await Location.filter(id__in=[i for i in ids if i.startswith("ocm/")]).update(duplicate_of=None)  # as ingest
        incremental = await mark_duplicates(changed_since=since)
        assert 0 < incremental < 60
        after_incremental = await marks()
        assert await mark_duplicates() == incremental
        assert await marks() == after_incremental, round_


async def test_marks_commit_with_an_ingested_ocm_window() -> None:
    await seed.operators("op-a")
    await ocm_operator()
    await seed.sites([seed.Site("op-a", "SITE", *seed.CENTRE)])
    lat, lon = seed.offset(4, -3)
    raw = {
        "ID": 4242,
        "AddressInfo": {"Title": "Trafalgar", "Town": "London", "Latitude": lat, "Longitude": lon},
        "Connections": [{"ID": 1, "ConnectionTypeID": 33, "Quantity": 2}],
        "DateLastStatusUpdate": "2026-01-01T00:00:00Z",
    }
    ingestor = Ingestor("ocm", "ocm", None, Pseudonymizer("key"))
    for version in range(2):  # each new version is written unmarked, and marked again in its window
        raw["DateLastStatusUpdate"] = f"2026-01-0{version + 1}T00:00:00Z"
        started = datetime.now(UTC)
        async with in_transaction() as conn:
            await ingestor.ingest_page(Page(records=[parse_poi(raw)]), conn)
            assert await mark_duplicates(conn, changed_since=started) == 1
        assert (await marks())["ocm/4242"] == SITE
