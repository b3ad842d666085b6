"""Per-request DataLoaders: nested fields cost one query per level of the query, not one per row.

They serve the relations that no parent prefetched (`resolvers.prefetch` covers the `locations`
page): `location(id)`, `evse(id)`, a session's or CDR's location and tariffs, and anything nested
under those. However many rows ask, each relation costs one batched `IN (...)` query per tick.
Loaders are created fresh for every operation (never shared between requests: their cache would
serve one caller's rows to another and grow without bound). They hold plain rows (`catalog.Row`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from strawberry.dataloader import DataLoader

from gateway import catalog
from gateway.catalog import Row

V = TypeVar("V")


def _one(fetch: Callable[[Sequence[str]], Awaitable[Mapping[str, V]]]) -> DataLoader[str, V | None]:
    async def load(keys: list[str]) -> list[V | None]:
        found = await fetch(keys)
        return [found.get(key) for key in keys]

    return DataLoader(load_fn=load)


def _many(fetch: Callable[[Sequence[str]], Awaitable[Mapping[str, list[V]]]]) -> DataLoader[str, list[V]]:
    async def load(keys: list[str]) -> list[list[V]]:
        found = await fetch(keys)
        return [found.get(key, []) for key in keys]

    return DataLoader(load_fn=load)


@dataclass(frozen=True, slots=True)
class Loaders:
    """The DataLoaders of one operation."""

    location: DataLoader[str, Row | None]
    evse: DataLoader[str, Row | None]
    evses_by_location: DataLoader[str, list[Row]]
    connectors_by_evse: DataLoader[str, list[Row]]
    tariff: DataLoader[str, Row | None]
    operator: DataLoader[str, Row | None]
    borough: DataLoader[str, Row | None]


def create_loaders() -> Loaders:
    """A fresh, empty set of loaders."""
    return Loaders(
        location=_one(catalog.locations_by_ids),
        evse=_one(catalog.evses_by_ids),
        evses_by_location=_many(catalog.evses_by_location_ids),
        connectors_by_evse=_many(catalog.connectors_by_evse_ids),
        tariff=_one(catalog.tariffs_by_keys),
        operator=_one(catalog.operators_by_ids),
        borough=_one(catalog.boroughs_by_codes),
    )
