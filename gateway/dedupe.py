"""Mark an aggregator's POIs (Open Charge Map) that describe an operator's own site as its duplicates.

An aggregator lists the same chargers the operators publish themselves. The operator's record is
authoritative (live status, tariffs), so an aggregator POI lying within `radius_m` of a published
operator location gets `duplicate_of` = that location's id, and `locations` leaves it out by
default; a POI no longer near any such location is reset to NULL. Marks are recomputed from the
stored rows, so a run is idempotent and repairs whatever an earlier run or an ingest (which writes
`duplicate_of` NULL with every new version of a POI) left behind.

Two scopes:
- full (default): every aggregator POI. One query for the aggregator operators, one for their
  rows, one per BATCH POIs for the operator sites near them (an OR of small bounding boxes: the
  indexed latitude/longitude columns do the search, haversine in Python decides), one batched
  UPDATE of what changed. About a second for 10,000 POIs among 30,000 sites: run it at start and
  now and then, not after every window.
- `changed_since=t`: only what rows written since `t` (their `fetched_at`) can have changed: those
  aggregator POIs, the ones marked against a changed operator site, and the ones near a changed
  operator site's new position. A few small queries after a window of ordinary size.

The statements are plain SQL with bound values, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from gateway.db import as_utc, connection
from gateway.geo import bounding_box, haversine_m

AGGREGATOR_PROTOCOLS = ("ocm",)
# Boxes per query: four bound values each keeps a statement under the 999 variables of older SQLite
# builds, and an OR of 200 terms well under its expression depth limit (1000).
BATCH = 200
# Ids per IN (...) list and rows per batched UPDATE.
ID_BATCH = 500
# OCM coordinates are crowd-sourced, often placed by hand on a map: candidates whose distances differ
# by less than this are equally near as far as the data can tell, and the postcode or operator name
# decides between them.
EQUAL_M = 5.0
ROW_COLUMNS = '"id", "operator_id", "protocol", "latitude", "longitude", "postal_code", "operator_name", "duplicate_of"'


@dataclass(slots=True)
class Site:
    """A location as matching needs it: where it is and what may corroborate a match."""

    id: str
    latitude: float
    longitude: float
    postcode: str  # upper case, no spaces
    operator: str  # case-folded letters and digits

    @classmethod
    def of(cls, row: dict[str, Any]) -> Site:
        """From a row with id, latitude, longitude, postal_code and operator_name."""
        return cls(
            id=row["id"],
            latitude=float(row["latitude"]),
            longitude=float(row["longitude"]),
            postcode=re.sub(r"\s+", "", row["postal_code"] or "").upper(),
            operator=re.sub(r"[^0-9a-z]+", "", (row["operator_name"] or "").casefold()),
        )


class _Sql:
    """Bound values and their placeholders, in the dialect's style ($n or ?)."""

    def __init__(self, conn: BaseDBAsyncClient) -> None:
        self.postgres = conn.capabilities.dialect == "postgres"
        self.params: list[Any] = []

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}" if self.postgres else "?"

    def bind_all(self, values: Iterable[Any]) -> str:
        return ", ".join(self.bind(v) for v in values)

    def boxes(self, sites: Iterable[Site], radius_m: float) -> str:
        """An OR of the bounding boxes of circles of `radius_m` around `sites`."""
        boxes = dict.fromkeys(bounding_box(s.latitude, s.longitude, radius_m) for s in sites)
        return " OR ".join(
            f'("latitude" BETWEEN {self.bind(a)} AND {self.bind(c)} AND "longitude" BETWEEN {self.bind(b)} '
            f"AND {self.bind(d)})"
            for a, b, c, d in boxes
        )


@dataclass(frozen=True, slots=True)
class _Aggregators:
    """Which rows are an aggregator's: stored with its protocol, or from an operator registered with it."""

    protocols: tuple[str, ...]
    operators: tuple[str, ...]

    def owns(self, row: dict[str, Any]) -> bool:
        return row["protocol"] in self.protocols or row["operator_id"] in self.operators

    def where(self, sql: _Sql, *, negate: bool = False) -> str:
        """SQL for "is an aggregator's row" (or, negated, "is not"), binding into `sql`."""
        terms = []
        if self.protocols:
            terms.append(f'"protocol" {"NOT " if negate else ""}IN ({sql.bind_all(self.protocols)})')
        if self.operators:
            terms.append(f'"operator_id" {"NOT " if negate else ""}IN ({sql.bind_all(self.operators)})')
        if not terms:
            return "1 = 1" if negate else "1 = 0"
        return "(" + (" AND " if negate else " OR ").join(terms) + ")"


def _corroboration(poi: Site, candidate: Site) -> int:
    """2 when the postcodes agree, 1 when the operator names do (one contains the other), else 0."""
    if poi.postcode and poi.postcode == candidate.postcode:
        return 2
    a, b = poi.operator, candidate.operator
    return 1 if a and b and (a in b or b in a) else 0


def best_match(poi: Site, candidates: Sequence[Site], radius_m: float) -> str | None:
    """The id of the operator location `poi` duplicates: the nearest within the radius; among
    equally near ones (EQUAL_M) the one whose postcode, else operator name, agrees; then by id."""
    near = [
        (d, c)
        for c in candidates
        if (d := haversine_m(poi.latitude, poi.longitude, c.latitude, c.longitude)) <= radius_m
    ]
    if not near:
        return None
    nearest = min(d for d, _ in near)
    tied = [(d, c) for d, c in near if d - nearest < EQUAL_M]
    return min(tied, key=lambda dc: (-_corroboration(poi, dc[1]), dc[0], dc[1].id))[1].id


async def mark_duplicates(
    conn: BaseDBAsyncClient | None = None,
    *,
    radius_m: float = 30.0,
    aggregator_protocols: Sequence[str] = AGGREGATOR_PROTOCOLS,
    changed_since: datetime | None = None,
) -> int:
    """Set `duplicate_of` on aggregator locations near a published operator location, reset it on
    the others; returns how many locations are marked in all.

    Aggregator locations are those of an operator registered with an aggregator protocol, or stored
    with one. With `changed_since`, only what rows written since then can have changed is looked at
    (pass the time the window started); without, everything, which also clears marks left on rows
    that are no longer an aggregator's. Pass the window's connection to run inside its transaction,
    so that the marks commit with the rows they describe; without one, the default connection.
    """
    conn = conn or connection()
    aggregators = await _aggregators(conn, aggregator_protocols)
    if changed_since is None:
        sql = _Sql(conn)
        rows = await conn.execute_query_dict(
            f'SELECT {ROW_COLUMNS} FROM "location" WHERE "duplicate_of" IS NOT NULL OR {aggregators.where(sql)}',
            sql.params,
        )
    else:
        rows = await _affected(conn, aggregators, as_utc(changed_since), radius_m)
    marks = {r["id"]: None for r in rows}  # a marked row that is not an aggregator's is reset
    pois = sorted((Site.of(r) for r in rows if aggregators.owns(r)), key=lambda s: s.latitude)
    for i in range(0, len(pois), BATCH):
        batch = pois[i : i + BATCH]
        candidates = await _operator_sites_near(conn, aggregators, batch, radius_m)
        latitudes = [c.latitude for c in candidates]
        for poi in batch:
            min_lat, min_lon, max_lat, max_lon = bounding_box(poi.latitude, poi.longitude, radius_m)
            window = candidates[bisect.bisect_left(latitudes, min_lat) : bisect.bisect_right(latitudes, max_lat)]
            marks[poi.id] = best_match(poi, [c for c in window if min_lon <= c.longitude <= max_lon], radius_m)

    stored = {r["id"]: r["duplicate_of"] for r in rows}
    changes = [[mark, row_id] for row_id, mark in marks.items() if mark != stored[row_id]]
    if changes:
        mark_p, id_p = ("$1", "$2") if conn.capabilities.dialect == "postgres" else ("?", "?")
        statement = f'UPDATE "location" SET "duplicate_of" = {mark_p} WHERE "id" = {id_p}'
        for i in range(0, len(changes), ID_BATCH):
            await conn.execute_many(statement, changes[i : i + ID_BATCH])
    if changed_since is None:
        return sum(1 for mark in marks.values() if mark is not None)
    counted = await conn.execute_query_dict('SELECT COUNT(*) AS "n" FROM "location" WHERE "duplicate_of" IS NOT NULL')
    return int(counted[0]["n"])


async def _aggregators(conn: BaseDBAsyncClient, protocols: Sequence[str]) -> _Aggregators:
    protocols = tuple(dict.fromkeys(protocols))
    if not protocols:
        return _Aggregators((), ())
    sql = _Sql(conn)
    rows = await conn.execute_query_dict(
        f'SELECT "id" FROM "operator" WHERE "protocol" IN ({sql.bind_all(protocols)})', sql.params
    )
    return _Aggregators(protocols, tuple(r["id"] for r in rows))


async def _affected(
    conn: BaseDBAsyncClient, aggregators: _Aggregators, since: datetime, radius_m: float
) -> list[dict[str, Any]]:
    """The aggregator rows whose mark rows written since `since` may have changed."""
    sql = _Sql(conn)
    # fetched_at is not indexed (ingest writes it tens of thousands of times a second): one scan.
    changed = await conn.execute_query_dict(
        f'SELECT {ROW_COLUMNS}, "publish" FROM "location" WHERE "fetched_at" >= {sql.bind(since)}', sql.params
    )
    rows = {r["id"]: r for r in changed if aggregators.owns(r)}
    sites = [r for r in changed if not aggregators.owns(r)]
    # Marked against a changed operator site: it may have moved away or been unpublished.
    ids = [r["id"] for r in sites]
    for i in range(0, len(ids), ID_BATCH):
        sql = _Sql(conn)
        found = await conn.execute_query_dict(
            f'SELECT {ROW_COLUMNS} FROM "location" WHERE "duplicate_of" IN ({sql.bind_all(ids[i : i + ID_BATCH])})',
            sql.params,
        )
        rows.update((r["id"], r) for r in found)
    # Near a changed operator site's new position: it may now be their nearest.
    published = [Site.of(r) for r in sites if r["publish"]]
    for i in range(0, len(published), BATCH):
        sql = _Sql(conn)
        boxes = sql.boxes(published[i : i + BATCH], radius_m)
        found = await conn.execute_query_dict(
            f'SELECT {ROW_COLUMNS} FROM "location" WHERE ({boxes}) AND {aggregators.where(sql)}', sql.params
        )
        rows.update((r["id"], r) for r in found)
    return list(rows.values())


async def _operator_sites_near(
    conn: BaseDBAsyncClient, aggregators: _Aggregators, pois: Sequence[Site], radius_m: float
) -> list[Site]:
    """The published non-aggregator locations in the bounding box of any of `pois`, by latitude."""
    sql = _Sql(conn)
    boxes = sql.boxes(pois, radius_m)
    # Only published operator sites count: the copy is hidden because the operator's own record is
    # served instead, which an unpublished one is not.
    rows = await conn.execute_query_dict(
        'SELECT "id", "latitude", "longitude", "postal_code", "operator_name" FROM "location" '
        f'WHERE ({boxes}) AND "publish" = {sql.bind(True)} AND {aggregators.where(sql, negate=True)}',
        sql.params,
    )
    return sorted((Site.of(r) for r in rows), key=lambda s: s.latitude)
