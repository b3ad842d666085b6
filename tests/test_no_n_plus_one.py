"""Nested data costs one query per relation, however many rows: the `locations` page prefetches the
relations its query selects, and every other entry point batches through the DataLoaders.

Queries are counted by wrapping the execute methods of the real tortoise client for the duration
of the request (instrumentation: every statement still runs against the database).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gateway.db import connection
from tests import seed

pytestmark = pytest.mark.usefixtures("db")

EXECUTE_METHODS = ("execute_query", "execute_query_dict", "execute_insert", "execute_many", "execute_script")
_inside = contextvars.ContextVar("inside_execute", default=False)

QUERY = """
query($first: Int!) {
  locations(first: $first) {
    edges { node {
      id name
      borough { code name }
      operator { id name }
      provenance { operatorId sourceId lastUpdated }
      evses {
        id status statusSince
        connectors { id standard maxPowerKw tariffs { id currency } }
      }
    } }
  }
}
"""


@contextmanager
def count_queries() -> Iterator[list[str]]:
    """Record the SQL of every statement sent through the default connection."""
    client = connection()
    statements: list[str] = []

    def wrap(name: str) -> Any:
        original = getattr(client, name)

        @functools.wraps(original)
        async def counted(query: str, *args: Any, **kwargs: Any) -> Any:
            if _inside.get():  # one method delegating to another is still one statement
                return await original(query, *args, **kwargs)
            statements.append(query)
            token = _inside.set(True)
            try:
                return await original(query, *args, **kwargs)
            finally:
                _inside.reset(token)

        return counted

    for name in EXECUTE_METHODS:
        setattr(client, name, wrap(name))
    try:
        yield statements
    finally:
        for name in EXECUTE_METHODS:
            delattr(client, name)  # back to the class's methods


async def seed_sites(count: int) -> None:
    await seed.operators("op-a", "op-b", "op-c")
    await seed.boroughs(seed.WESTMINSTER, seed.CAMDEN)
    for op in ("op-a", "op-b", "op-c"):
        await seed.tariffs(op, "STD", "NIGHT")
    sites = [
        seed.Site(
            ("op-a", "op-b", "op-c")[i % 3],
            f"L{i:04d}",
            *seed.offset(i * 10, -i * 7),
            borough_code=(seed.WESTMINSTER[0], seed.CAMDEN[0], None)[i % 3],
            evses=3,
            connectors=2,
            tariff_ids=("STD", "NIGHT"),
        )
        for i in range(count)
    ]
    await seed.sites(sites)


async def run(graphql: Any, first: int) -> tuple[dict[str, Any], list[str]]:
    with count_queries() as statements:
        body = await graphql(QUERY, {"first": first})
    assert "errors" not in body, body
    return body, statements


async def test_nested_locations_cost_a_constant_number_of_queries(graphql: Any, db: Any) -> None:
    await seed_sites(120)

    small, small_sql = await run(graphql, 20)
    large, large_sql = await run(graphql, 100)

    edges = large["data"]["locations"]["edges"]
    assert len(edges) == 100
    assert all(len(e["node"]["evses"]) == 3 for e in edges)
    assert all(len(c["tariffs"]) == 2 for e in edges for ev in e["node"]["evses"] for c in ev["connectors"])
    assert sum(len(ev["connectors"]) for e in edges for ev in e["node"]["evses"]) == 600
    assert len(small["data"]["locations"]["edges"]) == 20

    # locations, evses, connectors, tariffs, boroughs, operators: one statement each.
    print(f"[{db.kind}] queries for 20 locations: {len(small_sql)}, for 100: {len(large_sql)}")
    assert len(large_sql) <= 6, large_sql
    assert len(large_sql) == len(small_sql), (small_sql, large_sql)


FRAGMENTS = """
query($first: Int!) {
  locations(first: $first) {
    edges { node { ...Site } }
  }
}
fragment Site on Location {
  id name
  ... on Location { borough { code name } operator { id name } }
  provenance { operatorId sourceId lastUpdated }
  evses { ...Point }
}
fragment Point on Evse {
  id status statusSince
  connectors { id standard maxPowerKw ... { tariffs { id currency } } }
}
"""


async def test_relations_selected_through_fragments_are_prefetched_too(graphql: Any, db: Any) -> None:
    await seed_sites(30)
    plain, plain_sql = await run(graphql, 30)
    with count_queries() as fragment_sql:
        body = await graphql(FRAGMENTS, {"first": 30})
    assert body == plain
    assert len(fragment_sql) == len(plain_sql) <= 6, fragment_sql


async def test_relations_not_selected_are_not_fetched(graphql: Any, db: Any) -> None:
    await seed_sites(30)
    with count_queries() as statements:
        body = await graphql("{ locations(first: 30) { edges { node { id provenance { sourceId } } } } }")
    assert "errors" not in body and len(body["data"]["locations"]["edges"]) == 30
    assert len(statements) == 1, statements
    with count_queries() as statements:
        body = await graphql("{ locations(first: 30) { edges { node { id evses { id } } } } }")
    assert all(len(e["node"]["evses"]) == 3 for e in body["data"]["locations"]["edges"])
    assert len(statements) == 2, statements  # locations, evses: not their connectors or tariffs


async def test_entry_points_without_a_page_batch_through_the_dataloaders(graphql: Any, db: Any) -> None:
    await seed_sites(12)
    nested = "{ id borough { code } operator { id } evses { id location { id } connectors { id tariffs { id } } } }"
    sites = [f's{i}: location(id: "op-{"abc"[i % 3]}/L{i:04d}") {nested}' for i in range(12)]
    points = [f'e{i}: evse(id: "op-{"abc"[i % 3]}/L{i:04d}/E1") {{ id location {{ id }} }}' for i in range(3)]
    with count_queries() as statements:
        body = await graphql("{ " + " ".join(sites[:3] + points) + " }")
    assert "errors" not in body, body
    few = len(statements)
    with count_queries() as statements:
        body = await graphql("{ " + " ".join(sites + points) + " }")
    assert "errors" not in body, body
    assert all(len(body["data"][f"s{i}"]["evses"]) == 3 for i in range(12))
    assert body["data"]["e2"]["location"]["id"] == "op-c/L0002"
    assert len(statements) == few, statements
