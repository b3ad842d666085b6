"""The Query root: thin resolvers that validate arguments, call `gateway.catalog`, wrap the rows.

Access control is not decided here: `sessions` and `cdrs` are marked `@protected(dataClass: USAGE)`
and `resolvers.permissions` enforces that for every field of the schema; the protected lists pass
the caller's row scope (`gateway.policy.row_scope`, through `info.context.row_scope`) to the
catalogue, which requires it, so that rows the caller may not see are absent and not counted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from gateway import catalog, health
from gateway.policy import DataClass
from resolvers.filters import LocationFilter, RecordFilter
from resolvers.partner_events import PartnerEventPage, partner_events
from resolvers.permissions import protected
from resolvers.prefetch import prefetch_locations, subselection
from resolvers.sync_health import ModuleSyncHealth, QuarantinedRecord, QuarantinedRecordConnection
from resolvers.types import (
    Borough,
    Cdr,
    CdrConnection,
    Evse,
    Info,
    Location,
    LocationConnection,
    Operator,
    Session,
    SessionConnection,
    Tariff,
    TariffConnection,
    connection_of,
    load_location,
)

DEFAULT_FIRST = catalog.DEFAULT_PAGE_SIZE
First = Annotated[int, strawberry.argument(description=f"Page size, 1 to {catalog.MAX_PAGE_SIZE}.")]
After = Annotated[str | None, strawberry.argument(description="The endCursor of the previous page.")]
From = Annotated[datetime, strawberry.argument(name="from", description="Inclusive; without an offset, UTC.")]
To = Annotated[datetime, strawberry.argument(description="Exclusive; without an offset, UTC.")]
EventCursor = Annotated[strawberry.ID | None, strawberry.argument(description="The `next` of the previous page.")]


@strawberry.type
class Query:
    @strawberry.field(description="Every operator the gateway federates.")
    async def operators(self) -> list[Operator]:
        return [Operator.from_row(row) for row in await catalog.operators()]

    @strawberry.field(description="Every London borough (GSS code and name).")
    async def boroughs(self) -> list[Borough]:
        return [Borough.from_row(row) for row in await catalog.boroughs()]

    @strawberry.field(description="Published locations matching the filter: by id, or nearest first with `near`.")
    async def locations(
        self,
        info: Info,
        filter: LocationFilter | None = None,
        first: First = DEFAULT_FIRST,
        after: After = None,
    ) -> LocationConnection:
        query = filter.to_query() if filter is not None else catalog.LocationQuery()
        page = await catalog.search_locations(query, first, after)
        connection = connection_of(page, lambda hit: Location.from_row(hit.location, hit.distance_m))
        # The page is known here: fetch the nested data it selects in one query per relation.
        node_selections = subselection(info.selected_fields, "locations", "edges", "node")
        await prefetch_locations([edge.node for edge in connection.edges], node_selections)
        return connection

    @strawberry.field(description="One published location by id.")
    async def location(self, info: Info, id: strawberry.ID) -> Location | None:
        return await load_location(info, str(id))

    @strawberry.field(description="One EVSE (of a published location) by id.")
    async def evse(self, info: Info, id: strawberry.ID) -> Evse | None:
        row = await info.context.loaders.evse.load(str(id))
        return Evse.from_row(row) if row is not None else None

    @strawberry.field(description="An operator's tariffs, ordered by id.")
    async def tariffs(self, operator_id: str, first: First = DEFAULT_FIRST, after: After = None) -> TariffConnection:
        page = await catalog.tariffs_of_operator(operator_id, first, after)
        return connection_of(page, Tariff.from_row)

    @strawberry.field(
        description="Sessions active at some time in [from, to) (ongoing ones included), by start.",
        directives=protected(DataClass.USAGE),
    )
    async def sessions(
        self,
        info: Info,
        from_: From,
        to: To,
        filter: RecordFilter | None = None,
        first: First = DEFAULT_FIRST,
        after: After = None,
    ) -> SessionConnection | None:
        window = catalog.Window(from_, to)
        query = filter.to_query() if filter is not None else None
        scope = await info.context.row_scope(DataClass.USAGE)
        page = await catalog.sessions_in_window(window, query, first, after, scope=scope)
        return connection_of(page, Session.from_row)

    @strawberry.field(
        description="CDRs of sessions active at some time in [from, to), by start.",
        directives=protected(DataClass.USAGE),
    )
    async def cdrs(
        self,
        info: Info,
        from_: From,
        to: To,
        filter: RecordFilter | None = None,
        first: First = DEFAULT_FIRST,
        after: After = None,
    ) -> CdrConnection | None:
        window = catalog.Window(from_, to)
        query = filter.to_query() if filter is not None else None
        scope = await info.context.row_scope(DataClass.USAGE)
        page = await catalog.cdrs_in_window(window, query, first, after, scope=scope)
        return connection_of(page, Cdr.from_row)

    @strawberry.field(
        description="Per operator and module: cursor, lag, last success, errors, counts (administrators; "
        "an operator sees its own).",
        directives=protected(DataClass.OPERATIONS),
    )
    async def sync_health(self, info: Info, operator_id: str | None = None) -> list[ModuleSyncHealth] | None:
        ids = None if operator_id is None else [operator_id]
        scope = await info.context.row_scope(DataClass.OPERATIONS)
        return [ModuleSyncHealth.of(h) for h in await health.sync_health(ids, scope=scope)]

    @strawberry.field(
        description="Records quarantined at ingest, with their reason (administrators; an operator sees its own).",
        directives=protected(DataClass.OPERATIONS),
    )
    async def quarantined_records(
        self,
        info: Info,
        operator_id: str | None = None,
        module: str | None = None,
        first: First = DEFAULT_FIRST,
        after: After = None,
    ) -> QuarantinedRecordConnection | None:
        scope = await info.context.row_scope(DataClass.OPERATIONS)
        page = await health.quarantined(operator_id, module, first, after, scope=scope)
        return connection_of(page, QuarantinedRecord.from_row)

    @strawberry.field(
        description="The partner event feed after a cursor, oldest first (as GET /partners/v1/events): status "
        "changes, and session events of the operators whose agreement shares USAGE data with the caller."
    )
    async def partner_events(
        self,
        info: Info,
        after: EventCursor = None,
        limit: Annotated[int, strawberry.argument(description="Page size, 1 to 1000.")] = 100,
    ) -> PartnerEventPage | None:
        return await partner_events(info.context, after, limit)
