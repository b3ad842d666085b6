"""Geography: which borough a point lies in (shapely STRtree), and distance bounds for radius search.

Boroughs are loaded once from a GeoJSON file (GLA boundaries, GSS codes) into the `borough` table and
into an in-memory index used at ingest. Distances use the haversine formula on a 6,371 km sphere:
good to well under a metre at London scale, which is all a "chargers near me" query needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import orjson
from shapely import STRtree
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class BoroughShape:
    """One borough: GSS code, name, boundary."""

    gss_code: str
    name: str
    geometry: BaseGeometry
    geojson: dict


class BoroughIndex:
    """Point-in-polygon lookup over a set of boroughs."""

    def __init__(self, boroughs: list[BoroughShape]) -> None:
        self.boroughs = boroughs
        self._tree = STRtree([b.geometry for b in boroughs])

    @classmethod
    def from_geojson(cls, path: Path) -> BoroughIndex:
        """Load a FeatureCollection whose features carry `GSS_CODE` and `NAME` properties."""
        doc = orjson.loads(Path(path).read_bytes())
        boroughs = [
            BoroughShape(
                gss_code=f["properties"]["GSS_CODE"],
                name=f["properties"]["NAME"],
                geometry=shape(f["geometry"]),
                geojson=f["geometry"],
            )
            for f in doc["features"]
        ]
        return cls(boroughs)

    def locate(self, longitude: float, latitude: float) -> str | None:
        """The GSS code of the borough containing the point, or None outside all of them."""
        point = Point(longitude, latitude)
        for i in self._tree.query(point, predicate="intersects"):
            return self.boroughs[int(i)].gss_code
        return None


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def bounding_box(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lat, min_lon, max_lat, max_lon) enclosing a circle: an index-friendly prefilter."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    dlon = math.degrees(radius_m / (EARTH_RADIUS_M * max(math.cos(math.radians(lat)), 1e-6)))
    return lat - dlat, lon - dlon, lat + dlat, lon + dlon
