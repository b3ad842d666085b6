"""GraphQL filter inputs, turned into catalogue queries.

`to_query()` builds the `gateway.catalog` value, which validates it: a refused value (a bounding
box whose minimum exceeds its maximum, a radius of 0 or over 50 km, a latitude of 91) becomes a
BAD_USER_INPUT error naming the argument, before any SQL runs.
"""

from __future__ import annotations

import strawberry

from gateway import catalog


@strawberry.input(description="A latitude/longitude rectangle (WGS84); min must not exceed max.")
class BoundingBox:
    min_latitude: float
    min_longitude: float
    max_latitude: float
    max_longitude: float

    def to_query(self) -> catalog.BoundingBox:
        """The validated catalogue value."""
        return catalog.BoundingBox(self.min_latitude, self.min_longitude, self.max_latitude, self.max_longitude)


@strawberry.input(description="A circle around a point: results are ordered nearest first.")
class Near:
    latitude: float
    longitude: float
    radius_meters: float = strawberry.field(description="Greater than 0, at most 50000.")

    def to_query(self) -> catalog.Near:
        """The validated catalogue value."""
        return catalog.Near(self.latitude, self.longitude, self.radius_meters)


@strawberry.input(description="Every given criterion must hold. An empty list matches nothing.")
class LocationFilter:
    operator_ids: list[str] | None = None
    borough_codes: list[str] | None = strawberry.field(default=None, description="GSS codes.")
    bbox: BoundingBox | None = None
    near: Near | None = None
    include_duplicates: bool | None = strawberry.field(
        default=False,
        description="Also list aggregator records (Open Charge Map) that duplicate an operator's own "
        "location (see `Location.duplicateOf`); left out by default.",
    )

    def to_query(self) -> catalog.LocationQuery:
        """The validated catalogue value."""
        return catalog.LocationQuery(
            operator_ids=tuple(self.operator_ids) if self.operator_ids is not None else None,
            borough_codes=tuple(self.borough_codes) if self.borough_codes is not None else None,
            bbox=self.bbox.to_query() if self.bbox is not None else None,
            near=self.near.to_query() if self.near is not None else None,
            include_duplicates=bool(self.include_duplicates),  # null: the default
        )


@strawberry.input(description="Every given criterion must hold. An empty list matches nothing.")
class RecordFilter:
    operator_ids: list[str] | None = None
    borough_codes: list[str] | None = strawberry.field(default=None, description="GSS codes.")

    def to_query(self) -> catalog.RecordQuery:
        """The validated catalogue value."""
        return catalog.RecordQuery(
            operator_ids=tuple(self.operator_ids) if self.operator_ids is not None else None,
            borough_codes=tuple(self.borough_codes) if self.borough_codes is not None else None,
        )
