"""The GraphQL object types, built from stored rows by `from_row`, related rows via DataLoaders.

Codes that come from operators (EVSE status, connector standard, power type...) are strings, not
enums: OCPI, OICP and home-grown APIs each have their own vocabulary and a new value must not turn
a whole response into an error. Each field's description names the usual values.

Deliberately absent: a session's or CDR's token pseudonym (PERSONAL: never served), an operator's
base URL, poll cadences and agreement (internal configuration), borough boundaries (large; the
map layers come from the GLA directly).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.scalars import JSON

from gateway import catalog, keys, models
from gateway.policy import DataClass
from resolvers.context import RequestContext
from resolvers.permissions import protected

T = TypeVar("T")
Info = strawberry.Info[RequestContext, None]


@strawberry.type(description="Where an operator-sourced record came from and how fresh it is.")
class Provenance:
    operator_id: str = strawberry.field(description="The operator the record was fetched from.")
    protocol: str = strawberry.field(description="The protocol it was fetched with: ocpi, oicp, ...")
    source_id: str = strawberry.field(description="The operator's own identifier of the record.")
    fetched_at: datetime = strawberry.field(description="When the gateway last fetched it.")
    last_updated: datetime = strawberry.field(description="When the operator last changed it.")

    @classmethod
    def of(cls, row: models.Provenance) -> Provenance:
        """The provenance columns of any operator-sourced row."""
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
    def from_row(cls, row: models.Operator) -> Operator:
        """Build from the stored row."""
        return cls(id=strawberry.ID(row.id), name=row.name, protocol=row.protocol)


@strawberry.type(description="A London borough.")
class Borough:
    code: str = strawberry.field(description="The ONS GSS code, e.g. E09000023.")
    name: str

    @classmethod
    def from_row(cls, row: models.Borough) -> Borough:
        """Build from the stored row."""
        return cls(code=row.gss_code, name=row.name)


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
    def from_row(cls, row: models.Tariff) -> Tariff:
        """Build from the stored row."""
        return cls(
            id=strawberry.ID(row.id),
            currency=row.currency,
            type=row.type,
            alt_text=row.alt_text,
            alt_url=row.alt_url,
            min_price_excl_vat=row.min_price_excl_vat,
            max_price_excl_vat=row.max_price_excl_vat,
            elements=row.elements,
            start=row.start,
            end=row.end,
            energy_mix=row.energy_mix,
            provenance=Provenance.of(row),
        )


@strawberry.type(description="A plug or socket of an EVSE.")
class Connector:
    id: strawberry.ID
    standard: str = strawberry.field(description="IEC_62196_T2, IEC_62196_T2_COMBO, CHADEMO, DOMESTIC_G, ...")
    format: str = strawberry.field(description="SOCKET or CABLE.")
    power_type: str = strawberry.field(description="AC_1_PHASE, AC_3_PHASE or DC.")
    max_voltage: int
    max_amperage: int
    max_power_kw: float
    provenance: Provenance
    tariff_keys: strawberry.Private[list[str]]

    @classmethod
    def from_row(cls, row: models.Connector) -> Connector:
        """Build from the stored row; tariff ids are the operator's, keyed like stored tariffs."""
        return cls(
            id=strawberry.ID(row.id),
            standard=row.standard,
            format=row.format,
            power_type=row.power_type,
            max_voltage=row.max_voltage,
            max_amperage=row.max_amperage,
            max_power_kw=row.max_power_kw,
            provenance=Provenance.of(row),
            tariff_keys=[keys.record_key(row.operator_id, tid) for tid in row.tariff_ids or ()],
        )

    @strawberry.field(description="The tariffs that apply (those the gateway holds).")
    async def tariffs(self, info: Info) -> list[Tariff]:
        rows = await info.context.loaders.tariff.load_many(self.tariff_keys)
        return [Tariff.from_row(row) for row in rows if row is not None]


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

    @classmethod
    def from_row(cls, row: models.Evse) -> Evse:
        """Build from the stored row."""
        has_point = row.latitude is not None and row.longitude is not None
        return cls(
            id=strawberry.ID(row.id),
            uid=row.uid,
            evse_id=row.evse_id,
            status=row.status,
            status_since=row.status_since,
            capabilities=list(row.capabilities or ()),
            floor_level=row.floor_level,
            physical_reference=row.physical_reference,
            coordinates=Coordinates(latitude=row.latitude, longitude=row.longitude) if has_point else None,
            provenance=Provenance.of(row),
            location_id=row.location_id,
        )

    @strawberry.field(description="The EVSE's plugs and sockets.")
    async def connectors(self, info: Info) -> list[Connector]:
        rows = await info.context.loaders.connectors_by_evse.load(str(self.id))
        return [Connector.from_row(row) for row in rows]

    @strawberry.field(description="The site this EVSE belongs to.")
    async def location(self, info: Info) -> Location | None:
        row = await info.context.loaders.location.load(self.location_id)
        return Location.from_row(row) if row is not None else None


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

    @classmethod
    def from_row(cls, row: models.Location, distance_m: float | None = None) -> Location:
        """Build from the stored row (and the search distance, if any)."""
        return cls(
            id=strawberry.ID(row.id),
            name=row.name,
            address=row.address,
            city=row.city,
            postal_code=row.postal_code,
            country=row.country,
            coordinates=Coordinates(latitude=row.latitude, longitude=row.longitude),
            parking_type=row.parking_type,
            time_zone=row.time_zone,
            opening_times=row.opening_times,
            facilities=list(row.facilities or ()),
            operator_name=row.operator_name,
            distance_meters=distance_m,
            provenance=Provenance.of(row),
            operator_id=row.operator_id,
            borough_code=row.borough_code,
        )

    @strawberry.field(description="The borough the site lies in; null outside London.")
    async def borough(self, info: Info) -> Borough | None:
        if self.borough_code is None:
            return None
        row = await info.context.loaders.borough.load(self.borough_code)
        return Borough.from_row(row) if row is not None else None

    @strawberry.field(description="The operator that publishes the site.")
    async def operator(self, info: Info) -> Operator | None:
        row = await info.context.loaders.operator.load(self.operator_id)
        return Operator.from_row(row) if row is not None else None

    @strawberry.field(description="The site's charge points.")
    async def evses(self, info: Info) -> list[Evse]:
        rows = await info.context.loaders.evses_by_location.load(str(self.id))
        return [Evse.from_row(row) for row in rows]


@strawberry.type(
    description="A charging session (USAGE data). The token is never exposed: only a keyed "
    "pseudonym is stored, and it is PERSONAL data.",
    directives=protected(DataClass.USAGE),
)
class Session:
    id: strawberry.ID
    location_id: str
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
            provenance=Provenance.of(row),
            operator_id=row.operator_id,
        )

    @strawberry.field(description="The site of the charge (null if no longer published).")
    async def location(self, info: Info) -> Location | None:
        row = await info.context.loaders.location.load(self.location_id)
        return Location.from_row(row) if row is not None else None


@strawberry.type(
    description="A charge detail record: the final, priced session (USAGE data; credit CDRs "
    "included). The token is never exposed.",
    directives=protected(DataClass.USAGE),
)
class Cdr:
    id: strawberry.ID
    session_id: str | None
    location_id: str
    evse_id: str | None
    connector_id: str | None
    borough_code: str | None
    start: datetime
    end: datetime
    total_energy: float = strawberry.field(description="Energy delivered, in kWh.")
    total_time: float = strawberry.field(description="Duration of the session, in hours.")
    total_parking_time: float | None = strawberry.field(description="Time parked without charging, in hours.")
    currency: str
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
            provenance=Provenance.of(row),
            operator_id=row.operator_id,
            tariff_keys=[keys.record_key(row.operator_id, tid) for tid in row.tariff_ids or ()],
        )

    @strawberry.field(description="The site of the charge (null if no longer published).")
    async def location(self, info: Info) -> Location | None:
        row = await info.context.loaders.location.load(self.location_id)
        return Location.from_row(row) if row is not None else None

    @strawberry.field(description="The tariffs the CDR was priced with (those the gateway holds).")
    async def tariffs(self, info: Info) -> list[Tariff]:
        rows = await info.context.loaders.tariff.load_many(self.tariff_keys)
        return [Tariff.from_row(row) for row in rows if row is not None]


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
