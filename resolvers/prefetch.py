"""Prefetch a page's nested data: one batched query per selected relation, attached to the objects.

A list resolver that knows its whole page (`locations`) calls `prefetch_locations` with the
selection set of its nodes. For each relation the query selects (EVSEs, their connectors, the
connectors' tariffs, the borough, the operator) it runs one `IN (...)` query for the whole page
and attaches the results to the objects (`preloaded_*`), so that the nested fields resolve
synchronously. That matters: an async field costs graphql-core a coroutine, an awaitable check,
a gather and a DataLoader future per row, which for 100 locations with their EVSEs and connectors
was most of the time of the query.

Relations the query does not select are not fetched. The selection analysis may over-fetch (a
field under `@skip`, a fragment on another branch) but never under-fetch silently: a relation left
unattached (`preloaded_*` is None) is resolved through the DataLoaders as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from strawberry.types.nodes import SelectedField, Selection

from gateway import catalog
from resolvers.types import Borough, Connector, Evse, Loaded, Location, Operator, Tariff


def subselection(selections: Iterable[Selection], *path: str) -> list[Selection]:
    """The merged sub-selections of the fields at `path` (field names, through fragments).

    Empty when no field at `path` is selected; an object-typed field, which every name on a path
    here is, always has a non-empty sub-selection when selected.
    """
    current = list(selections)
    for name in path:
        found: list[Selection] = []
        pending = current
        while pending:
            selection = pending.pop()
            if isinstance(selection, SelectedField):
                if selection.name == name:
                    found.extend(selection.selections)
            else:  # a fragment spread or inline fragment: look inside it
                pending.extend(selection.selections)
        current = found
    return current


def selects(selections: Iterable[Selection], name: str) -> bool:
    """Whether `name` (an object-typed field) is selected among `selections`."""
    return bool(subselection(selections, name))


async def prefetch_locations(locations: Sequence[Location], selections: Sequence[Selection]) -> None:
    """Attach to each location the relations selected by `selections` (the node's selection set)."""
    if not locations:
        return
    if selects(selections, "borough"):
        await _attach_boroughs(locations)
    if selects(selections, "operator"):
        await _attach_operators(locations)
    evse_selections = subselection(selections, "evses")
    if evse_selections:
        rows = await catalog.evses_by_location_ids([location.id for location in locations])
        evses: list[Evse] = []
        for location in locations:
            location.preloaded_evses = [Evse.from_row(row) for row in rows.get(location.id, ())]
            evses.extend(location.preloaded_evses)
        await prefetch_evses(evses, evse_selections)


async def prefetch_evses(evses: Sequence[Evse], selections: Sequence[Selection]) -> None:
    """Attach to each EVSE its connectors (and what they select), if `selections` asks for them."""
    connector_selections = subselection(selections, "connectors")
    if not evses or not connector_selections:
        return
    rows = await catalog.connectors_by_evse_ids([evse.id for evse in evses])
    connectors: list[Connector] = []
    for evse in evses:
        evse.preloaded_connectors = [Connector.from_row(row) for row in rows.get(evse.id, ())]
        connectors.extend(evse.preloaded_connectors)
    if selects(connector_selections, "tariffs"):
        await _attach_tariffs(connectors)


async def _attach_tariffs(connectors: Sequence[Connector]) -> None:
    """Each connector's stored tariffs, in its own order; one Tariff object per tariff, shared."""
    keys = list(dict.fromkeys(key for connector in connectors for key in connector.tariff_keys))
    rows = await catalog.tariffs_by_keys(keys) if keys else {}
    tariffs = {key: Tariff.from_row(row) for key, row in rows.items()}
    for connector in connectors:
        connector.preloaded_tariffs = [tariffs[key] for key in connector.tariff_keys if key in tariffs]


async def _attach_boroughs(locations: Sequence[Location]) -> None:
    codes = list(dict.fromkeys(loc.borough_code for loc in locations if loc.borough_code is not None))
    rows = await catalog.boroughs_by_codes(codes) if codes else {}
    boroughs = {code: Borough.from_row(row) for code, row in rows.items()}
    for location in locations:
        code = location.borough_code
        location.preloaded_borough = Loaded(boroughs.get(code) if code is not None else None)


async def _attach_operators(locations: Sequence[Location]) -> None:
    rows = await catalog.operators_by_ids(list(dict.fromkeys(loc.operator_id for loc in locations)))
    operators = {operator_id: Operator.from_row(row) for operator_id, row in rows.items()}
    for location in locations:
        location.preloaded_operator = Loaded(operators.get(location.operator_id))
