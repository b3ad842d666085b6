"""The GraphQL object types, built from stored rows (`catalog.Row`, plain dicts) by `from_row`.

Related objects come one of two ways (see `resolvers.prefetch`):
- prefetched: a list resolver that knows its page (`locations`) fetches the relations the query
  selects in one batched query each and attaches them (`preloaded_*`); the nested field then
  returns them synchronously, with no task, future or DataLoader per row;
- otherwise (`location(id)`, `evse(id)`, a session's location...): through the per-request
  DataLoaders, which batch whatever the execution asks for in the same tick.
Such a field is a plain (non-async) resolver that returns either the list or an awaitable; the
executor awaits only the latter. Its GraphQL type is given with `graphql_type=`.

Codes that come from operators (EVSE status, connector standard, power type...) are strings, not
enums: OCPI, OICP and home-grown APIs each have their own vocabulary and a new value must not turn
a whole response into an error. Each field's description names the usual values.

Deliberately absent: a session's or CDR's token pseudonym (PERSONAL: never served), an operator's
base URL, poll cadences and agreement (internal configuration), borough boundaries (large; the
map layers come from the GLA directly).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.scalars import JSON

from gateway import catalog, keys, models
from gateway.catalog import Row
from gateway.policy import DataClass
from resolvers.context import RequestContext
from resolvers.permissions import protected

T = TypeVar("T")
Info = strawberry.Info[RequestContext, None]


@dataclass(frozen=True, slots=True)
class Loaded(Generic[T]):
    """A to-one relation already fetched by the parent's list resolver. `Loaded(None)` means
    fetched, and there is no such row; an attribute that is None (no `Loaded`) means not fetched:
    the field then asks the DataLoader."""

    value: T


@strawberry.type(description="Where an operator-sourced record came from and how fresh it is.")
class Provenance:
    operator_id: str = strawberry.field(description="The operator the record was fetched from.")
    protocol: str = strawberry.field(description="The protocol it was fetched with: ocpi, oicp, ...")
    source_id: str = strawberry.field(description="The operator's own identifier of the record.")
    fetched_at: datetime = strawberry.field(description="When the gateway last fetched it.")
    last_updated: datetime = strawberry.field(description="When the operator last changed it.")

    @classmethod
    def of(cls, row: Row) -> Provenance:
        """The provenance columns of any operator-sourced row."""
        return cls(
            operator_id=row["operator_id"],
            protocol=row["protocol"],
            source_id=row["source_id"],
            fetched_at=row["fetched_at"],
            last_updated=row["last_updated"],
        )

    @classmethod
    def of_model(cls, row: models.Provenance) -> Provenance:
        """The provenance of a row read as a model instance (sessions, CDRs)."""
        return cls(
            operator_id=row.operator_id,
            protocol=row.protocol,
            source_id=row.source_id,
            fetched_at=row.fetched_at,
            last_updated=row.last_updated,
        )


@strawberry.type(description="A point in WGS84.")
class Coordinates:
    latitude: float
    longitude: float


@strawberry.type(description="A charge point operator federated by the gateway.")
class Operator:
    id: strawberry.ID
    name: str
    protocol: str = strawberry.field(description="ocpi, oicp, ...")

    @classmethod
    def from_row(cls, row: Row) -> Operator:
        """Build from the stored row (`catalog.OPERATOR_COLUMNS`)."""
        return cls(id=strawberry.ID(row["id"]), name=row["name"], protocol=row["protocol"])


@strawberry.type(description="A London borough.")
class Borough:
    code: str = strawberry.field(description="The ONS GSS code, e.g. E09000023.")
    name: str

    @classmethod
    def from_row(cls, row: Row) -> Borough:
        """Build from the stored row (`catalog.BOROUGH_COLUMNS`)."""
        return cls(code=row["gss_code"], name=row["name"])


@strawberry.type(description="A price list (OCPI Tariff); open data under the 2023 regulations.")
class Tariff:
    id: strawberry.ID
    currency: str
    type: str | None = strawberry.field(description="AD_HOC_PAYMENT, PROFILE_CHEAP, REGULAR, ...")
    alt_text: JSON = strawberry.field(description="Human-readable descriptions: [{language, text}].")
    alt_url: str | None
    min_price_excl_vat: float | None
    max_price_excl_vat: float | None
    elements: JSON = strawberry.field(description="The OCPI tariff elements, as published.")
    start: datetime | None
    end: datetime | None
    energy_mix: JSON | None
    provenance: Provenance

    @classmethod
    def from_row(cls, row: Row) -> Tariff:
        """Build from the stored row (`catalog.TARIFF_COLUMNS`)."""
        return cls(
            id=strawberry.ID(row["id"]),
            currency=row["currency"],
            type=row["type"],
            alt_text=row["alt_text"],
            alt_url=row["alt_url"],
            min_price_excl_vat=row["min_price_excl_vat"],
            max_price_excl_vat=row["max_price_excl_vat"],
            elements=row["elements"],
            start=row["start"],
            end=row["end"],
            energy_mix=row["energy_mix"],
            provenance=Provenance.of(row),
        )


@strawberry.type(description="A plug or socket of an EVSE.")
class Connector:
    id: strawberry.ID
    standard: str = strawberry.field(description="IEC_62196_T2, IEC_62196_T2_COMBO, CHADEMO, DOMESTIC_G, ...")
    # The ratings are nullable because real OCPI payloads omit them; null means "not published".
    format: str | None = strawberry.field(description="SOCKET or CABLE; null when not published.")
    power_type: str | None = strawberry.field(description="AC_1_PHASE, AC_3_PHASE or DC; null when not published.")
    max_voltage: int | None = strawberry.field(description="In volts; null when not published.")
    max_amperage: int | None = strawberry.field(description="In amperes; null when not published.")
    max_power_kw: float | None = strawberry.field(description="In kW; null when not published.")
    provenance: Provenance
    tariff_keys: strawberry.Private[list[str]]
    preloaded_tariffs: strawberry.Private[list[Tariff] | None] = None

    @classmethod
    def from_row(cls, row: Row) -> Connector:
        """Build from the stored row (`catalog.CONNECTOR_COLUMNS`); tariff ids are the operator's,
        keyed like stored tariffs."""
        operator_id = row["operator_id"]
        return cls(
            id=strawberry.ID(row["id"]),
            standard=row["standard"],
            format=row["format"],
            power_type=row["power_type"],
            max_voltage=row["max_voltage"],
            max_amperage=row["max_amperage"],
            max_power_kw=row["max_power_kw"],
            provenance=Provenance.of(row),
            tariff_keys=[keys.record_key(operator_id, tid) for tid in row["tariff_ids"] or ()],
        )

    @strawberry.field(description="The tariffs that apply (those the gateway holds).", graphql_type=list[Tariff])
    def tariffs(self, info: Info) -> list[Tariff] | Awaitable[list[Tariff]]:
        if self.preloaded_tariffs is not None:
            return self.preloaded_tariffs
        return load_tariffs(info, self.tariff_keys)


@strawberry.type(description="A charge point: one vehicle charges at a time.")
class Evse:
    id: strawberry.ID
    uid: str
    evse_id: str | None = strawberry.field(description="The eMI3 EVSE id, e.g. GB*ABC*E123.")
    status: str = strawberry.field(
        description="Live status: AVAILABLE, CHARGING, BLOCKED, RESERVED, INOPERATIVE, OUTOFORDER, "
        "PLANNED, REMOVED or UNKNOWN."
    )
    status_since: datetime = strawberry.field(description="When the current status began.")
    capabilities: list[str]
    floor_level: str | None
    physical_reference: str | None
    coordinates: Coordinates | None
    provenance: Provenance
    location_id: strawberry.Private[str]
    preloaded_connectors: strawberry.Private[list[Connector] | None] = None

    @classmethod
    def from_row(cls, row: Row) -> Evse:
        """Build from the stored row (`catalog.EVSE_COLUMNS`)."""
        latitude, longitude = row["latitude"], row["longitude"]
        has_point = latitude is not None and longitude is not None
        return cls(
            id=strawberry.ID(row["id"]),
            uid=row["uid"],
            evse_id=row["evse_id"],
            status=row["status"],
            status_since=row["status_since"],
            capabilities=list(row["capabilities"] or ()),
            floor_level=row["floor_level"],
            physical_reference=row["physical_reference"],
            coordinates=Coordinates(latitude=latitude, longitude=longitude) if has_point else None,
            provenance=Provenance.of(row),
            location_id=row["location_id"],
        )

    @strawberry.field(description="The EVSE's plugs and sockets.", graphql_type=list[Connector])
    def connectors(self, info: Info) -> list[Connector] | Awaitable[list[Connector]]:
        if self.preloaded_connectors is not None:
            return self.preloaded_connectors
        return load_connectors(info, self.id)

    @strawberry.field(description="The site this EVSE belongs to.")
    async def location(self, info: Info) -> Location | None:
        return await load_location(info, self.location_id)


@strawberry.type(description="A site with one or more EVSEs.")
class Location:
    id: strawberry.ID
    name: str | None
    address: str
    city: str
    postal_code: str | None
    country: str = strawberry.field(description="ISO 3166-1 alpha-3, e.g. GBR.")
    coordinates: Coordinates
    parking_type: str | None
    time_zone: str | None
    opening_times: JSON | None = strawberry.field(description="OCPI Hours, as published.")
    facilities: list[str]
    operator_name: str | None = strawberry.field(description="The operator's name as shown on site.")
    distance_meters: float | None = strawberry.field(
        description="Distance from the `near` point of the search; null without one."
    )
    provenance: Provenance
    operator_id: strawberry.Private[str]
    borough_code: strawberry.Private[str | None]
    duplicate_of_id: strawberry.Private[str | None] = None
    preloaded_evses: strawberry.Private[list[Evse] | None] = None
    preloaded_borough: strawberry.Private[Loaded[Borough | None] | None] = None
    preloaded_operator: strawberry.Private[Loaded[Operator | None] | None] = None

    @classmethod
    def from_row(cls, row: Row, distance_m: float | None = None) -> Location:
        """Build from the stored row (`catalog.LOCATION_COLUMNS`) and the search distance, if any."""
        return cls(
            id=strawberry.ID(row["id"]),
            name=row["name"],
            address=row["address"],
            city=row["city"],
            postal_code=row["postal_code"],
            country=row["country"],
            coordinates=Coordinates(latitude=row["latitude"], longitude=row["longitude"]),
            parking_type=row["parking_type"],
            time_zone=row["time_zone"],
            opening_times=row["opening_times"],
            facilities=list(row["facilities"] or ()),
            operator_name=row["operator_name"],
            distance_meters=distance_m,
            provenance=Provenance.of(row),
            operator_id=row["operator_id"],
            borough_code=row["borough_code"],
            duplicate_of_id=row["duplicate_of"],
        )

    @strawberry.field(
        description="On an aggregator's record (Open Charge Map) of a site that an operator publishes itself "
        "(its nearest published location within 30 m): that location, which is authoritative (live status, "
        "tariffs). `locations` leaves such records out unless `includeDuplicates` is true. Null otherwise."
    )
    async def duplicate_of(self, info: Info) -> Location | None:
        if self.duplicate_of_id is None:
            return None
        return await load_location(info, self.duplicate_of_id)

    @strawberry.field(description="The borough the site lies in; null outside London.", graphql_type=Borough | None)
    def borough(self, info: Info) -> Borough | Awaitable[Borough | None] | None:
        if self.preloaded_borough is not None:
            return self.preloaded_borough.value
        if self.borough_code is None:
            return None
        return load_borough(info, self.borough_code)

    @strawberry.field(description="The operator that publishes the site.", graphql_type=Operator | None)
    def operator(self, info: Info) -> Operator | Awaitable[Operator | None] | None:
        if self.preloaded_operator is not None:
            return self.preloaded_operator.value
        return load_operator(info, self.operator_id)

    @strawberry.field(description="The site's charge points.", graphql_type=list[Evse])
    def evses(self, info: Info) -> list[Evse] | Awaitable[list[Evse]]:
        if self.preloaded_evses is not None:
            return self.preloaded_evses
        return load_evses(info, self.id)


# ---------------------------------------------------------------------------------------------
# Relations through the DataLoaders (when the parent did not prefetch them)
# ---------------------------------------------------------------------------------------------


async def load_location(info: Info, location_id: str | None) -> Location | None:
    """A published location by id (None if absent, unknown or unpublished)."""
    if location_id is None:
        return None
    row = await info.context.loaders.location.load(location_id)
    return Location.from_row(row) if row is not None else None


async def load_evses(info: Info, location_id: str) -> list[Evse]:
    """A location's EVSEs."""
    return [Evse.from_row(row) for row in await info.context.loaders.evses_by_location.load(location_id)]


async def load_connectors(info: Info, evse_id: str) -> list[Connector]:
    """An EVSE's connectors."""
    return [Connector.from_row(row) for row in await info.context.loaders.connectors_by_evse.load(evse_id)]


async def load_tariffs(info: Info, tariff_keys: list[str]) -> list[Tariff]:
    """The stored tariffs among `tariff_keys` (those the gateway does not hold are left out)."""
    rows = await info.context.loaders.tariff.load_many(tariff_keys)
    return [Tariff.from_row(row) for row in rows if row is not None]


async def load_borough(info: Info, code: str) -> Borough | None:
    """A borough by GSS code."""
    row = await info.context.loaders.borough.load(code)
    return Borough.from_row(row) if row is not None else None


async def load_operator(info: Info, operator_id: str) -> Operator | None:
    """An operator by id."""
    row = await info.context.loaders.operator.load(operator_id)
    return Operator.from_row(row) if row is not None else None


@strawberry.type(
    description="A charging session (USAGE data). The token is never exposed: only a keyed "
    "pseudonym is stored, and it is PERSONAL data.",
    directives=protected(DataClass.USAGE),
)
class Session:
    id: strawberry.ID
    location_id: str | None = strawberry.field(
        description="Null until the EVSE is known (protocols whose sessions name only the EVSE)."
    )
    evse_id: str | None
    connector_id: str | None
    borough_code: str | None
    start: datetime
    end: datetime | None
    kwh: float = strawberry.field(description="Energy delivered so far, in kWh.")
    status: str = strawberry.field(description="ACTIVE, COMPLETED, INVALID, PENDING or RESERVATION.")
    auth_method: str | None
    currency: str | None
    total_cost_excl_vat: float | None = strawberry.field(directives=protected(DataClass.COMMERCIAL))
    total_cost_incl_vat: float | None = strawberry.field(directives=protected(DataClass.COMMERCIAL))
    provenance: Provenance
    operator_id: strawberry.Private[str]

    @classmethod
    def from_row(cls, row: models.Session) -> Session:
        """Build from the stored row (never reading its token pseudonym)."""
        return cls(
            id=strawberry.ID(row.id),
            location_id=row.location_id,
            evse_id=row.evse_id,
            connector_id=row.connector_id,
            borough_code=row.borough_code,
            start=row.start,
            end=row.end,
            kwh=row.kwh,
            status=row.status,
            auth_method=row.auth_method,
            currency=row.currency,
            total_cost_excl_vat=row.total_cost_excl_vat,
            total_cost_incl_vat=row.total_cost_incl_vat,
            provenance=Provenance.of_model(row),
            operator_id=row.operator_id,
        )

    @strawberry.field(description="The site of the charge (null if no longer published).")
    async def location(self, info: Info) -> Location | None:
        return await load_location(info, self.location_id)


@strawberry.type(
    description="A charge detail record: the final, priced session (USAGE data; credit CDRs "
    "included). The token is never exposed.",
    directives=protected(DataClass.USAGE),
)
class Cdr:
    id: strawberry.ID
    session_id: str | None
    location_id: str | None = strawberry.field(
        description="Null until the EVSE is known (protocols whose CDRs name only the EVSE)."
    )
    evse_id: str | None
    connector_id: str | None
    borough_code: str | None
    start: datetime
    end: datetime
    total_energy: float = strawberry.field(description="Energy delivered, in kWh.")
    total_time: float = strawberry.field(description="Duration of the session, in hours.")
    total_parking_time: float | None = strawberry.field(description="Time parked without charging, in hours.")
    currency: str | None = strawberry.field(description="Null when the protocol's CDRs carry no price (OICP).")
    # Nullable like every protected field: a refused value is null, not an error that nulls the row.
    total_cost_excl_vat: float | None = strawberry.field(directives=protected(DataClass.COMMERCIAL))
    total_cost_incl_vat: float | None = strawberry.field(directives=protected(DataClass.COMMERCIAL))
    credit: bool = strawberry.field(description="True for a credit CDR, which cancels an earlier one.")
    credit_reference_id: str | None
    auth_method: str | None
    provenance: Provenance
    operator_id: strawberry.Private[str]
    tariff_keys: strawberry.Private[list[str]]

    @classmethod
    def from_row(cls, row: models.Cdr) -> Cdr:
        """Build from the stored row (never reading its token pseudonym)."""
        return cls(
            id=strawberry.ID(row.id),
            session_id=row.session_id,
            location_id=row.location_id,
            evse_id=row.evse_id,
            connector_id=row.connector_id,
            borough_code=row.borough_code,
            start=row.start,
            end=row.end,
            total_energy=row.total_energy,
            total_time=row.total_time,
            total_parking_time=row.total_parking_time,
            currency=row.currency,
            total_cost_excl_vat=row.total_cost_excl_vat,
            total_cost_incl_vat=row.total_cost_incl_vat,
            credit=row.credit,
            credit_reference_id=row.credit_reference_id,
            auth_method=row.auth_method,
            provenance=Provenance.of_model(row),
            operator_id=row.operator_id,
            tariff_keys=[keys.record_key(row.operator_id, tid) for tid in row.tariff_ids or ()],
        )

    @strawberry.field(description="The site of the charge (null if no longer published).")
    async def location(self, info: Info) -> Location | None:
        return await load_location(info, self.location_id)

    @strawberry.field(description="The tariffs the CDR was priced with (those the gateway holds).")
    async def tariffs(self, info: Info) -> list[Tariff]:
        return await load_tariffs(info, self.tariff_keys)


# ---------------------------------------------------------------------------------------------
# Connections (cursor pagination)
# ---------------------------------------------------------------------------------------------


@strawberry.type(description="Where a page ends and whether another follows.")
class PageInfo:
    has_next_page: bool
    end_cursor: str | None = strawberry.field(description="Pass as `after` to get the next page.")


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    page: strawberry.Private[catalog.Page]

    @strawberry.field(description="How many items match across all pages (costs one more query).")
    async def total_count(self) -> int:
        return await self.page.total_count()


def connection_of(page: catalog.Page[Any], node: Callable[[Any], T]) -> Connection[T]:
    """Wrap a catalogue page, converting each row with `node(row)`."""
    edges = [Edge(cursor=e.cursor, node=node(e.node)) for e in page.edges]
    return Connection(
        edges=edges, page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor), page=page
    )


LocationConnection = Connection[Location]
TariffConnection = Connection[Tariff]
SessionConnection = Connection[Session]
CdrConnection = Connection[Cdr]
