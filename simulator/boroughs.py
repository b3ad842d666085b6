"""London borough polygons (GLA boundaries, WGS84) and uniform point sampling inside them.

The simulator places every location inside a known borough, so the borough is ground truth that
tests can compare the gateway's point-in-polygon lookup against.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True, slots=True)
class Borough:
    """One borough: GSS code, name, inner/outer London, area and its (prepared) polygon."""

    gss_code: str
    name: str
    inner: bool
    hectares: float
    geometry: BaseGeometry


def default_boroughs_path() -> Path:
    """The shared GLA borough file: `$EVGATE_SHARED/data/...`, else `../shared/data/...`."""
    shared = os.environ.get("EVGATE_SHARED") or str(Path(__file__).resolve().parents[1].parent / "shared")
    return Path(shared) / "data" / "london_boroughs_gla_wgs84.geojson"


@lru_cache(maxsize=4)
def load_boroughs(path: Path) -> tuple[Borough, ...]:
    """The boroughs in a GeoJSON file (properties NAME, GSS_CODE), sorted by GSS code."""
    with Path(path).open(encoding="utf-8") as f:
        collection = json.load(f)
    boroughs = []
    for feature in collection["features"]:
        props = feature["properties"]
        geometry = shape(feature["geometry"])
        shapely.prepare(geometry)
        boroughs.append(
            Borough(
                gss_code=props["GSS_CODE"],
                name=props["NAME"],
                inner=props.get("ONS_INNER") == "T",
                hectares=float(props.get("HECTARES") or geometry.area),
                geometry=geometry,
            )
        )
    return tuple(sorted(boroughs, key=lambda b: b.gss_code))


def sample_point(borough: Borough, rng: random.Random, decimals: int = 6) -> tuple[float, float]:
    """A (latitude, longitude) drawn uniformly inside the borough (rejection sampling on its
    bounding box), rounded to `decimals` and still inside after rounding."""
    min_x, min_y, max_x, max_y = borough.geometry.bounds
    for _ in range(10_000):
        lon = round(rng.uniform(min_x, max_x), decimals)
        lat = round(rng.uniform(min_y, max_y), decimals)
        if shapely.contains_xy(borough.geometry, lon, lat):
            return lat, lon
    raise RuntimeError(f"could not sample a point inside {borough.name}")


def weight(borough: Borough) -> float:
    """How many locations a borough attracts relative to others: grows with area, and inner
    London is denser in on-street charge points."""
    return math.sqrt(borough.hectares) * (1.5 if borough.inner else 1.0)
