"""Seed the stored model directly (no adapters), with the same keys ingest would write.

Coordinates are placed by metres from a centre point, so that tests can reason about distances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway import keys
from gateway.geo import EARTH_RADIUS_M
from gateway.models import Borough, Cdr, Connector, Evse, Location, Operator, Session, Tariff

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
# Trafalgar Square, Westminster.
CENTRE = (51.50809, -0.12804)
WESTMINSTER = ("E09000033", "Westminster")
CAMDEN = ("E09000007", "Camden")
ISLINGTON = ("E09000019", "Islington")


def offset(north_m: float, east_m: float, origin: tuple[float, float] = CENTRE) -> tuple[float, float]:
    """The point `north_m` metres north and `east_m` metres east of `origin` (small distances)."""
    lat, lon = origin
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def provenance(operator_id: str, source_id: str, updated: datetime = NOW) -> dict[str, Any]:
    """The provenance columns of an operator-sourced row."""
    return {
        "operator_id": operator_id,
        "protocol": "ocpi",
        "source_id": source_id,
        "fetched_at": updated + timedelta(seconds=30),
        "last_updated": updated,
    }


async def operators(*ids: str) -> None:
    """Register operators by id."""
    await Operator.bulk_create(
        [Operator(id=i, name=f"Operator {i}", protocol="ocpi", base_url=f"https://{i}.test/ocpi") for i in ids]
    )


async def boroughs(*pairs: tuple[str, str]) -> None:
    """Store boroughs (code, name) with a placeholder geometry."""
    await Borough.bulk_create(
        [Borough(gss_code=code, name=name, geometry={"type": "Polygon", "coordinates": []}) for code, name in pairs]
    )


@dataclass(frozen=True)
class Site:
    """What to seed for one location."""

    operator_id: str
    source_id: str
    latitude: float
    longitude: float
    borough_code: str | None = WESTMINSTER[0]
    evses: int = 2
    connectors: int = 2
    tariff_ids: tuple[str, ...] = ("STD",)
    publish: bool = True

    @property
    def key(self) -> str:
        """The stored location id."""
        return keys.location_key(self.operator_id, self.source_id)


async def sites(items: Sequence[Site]) -> list[str]:
    """Store locations with their EVSEs and connectors, in bulk; returns the location ids."""
    locations, evses, connectors = [], [], []
    for site in items:
        locations.append(
            Location(
                id=site.key,
                **provenance(site.operator_id, site.source_id),
                country_code="GB",
                party_id="ABC",
                publish=site.publish,
                name=f"Site {site.source_id}",
                address=f"{site.source_id} Test Street",
                city="London",
                postal_code="WC2N 5DN",
                country="GBR",
                latitude=site.latitude,
                longitude=site.longitude,
                borough_code=site.borough_code,
                parking_type="ON_STREET",
                time_zone="Europe/London",
                opening_times={"twentyfourseven": True},
                facilities=["CAFE"],
                operator_name=f"Operator {site.operator_id}",
            )
        )
        for e in range(site.evses):
            evse_key = keys.evse_key(site.key, f"E{e}")
            evses.append(
                Evse(
                    id=evse_key,
                    **provenance(site.operator_id, f"E{e}"),
                    location_id=site.key,
                    uid=f"E{e}",
                    evse_id=f"GB*ABC*E{site.source_id}{e}",
                    status="AVAILABLE" if e % 2 == 0 else "CHARGING",
                    status_since=NOW - timedelta(minutes=e),
                    capabilities=["RFID_READER"],
                )
            )
            for c in range(site.connectors):
                connectors.append(
                    Connector(
                        id=keys.connector_key(evse_key, str(c + 1)),
                        **provenance(site.operator_id, str(c + 1)),
                        evse_id=evse_key,
                        standard="IEC_62196_T2" if c % 2 == 0 else "IEC_62196_T2_COMBO",
                        format="SOCKET" if c % 2 == 0 else "CABLE",
                        power_type="AC_3_PHASE" if c % 2 == 0 else "DC",
                        max_voltage=400,
                        max_amperage=32 if c % 2 == 0 else 125,
                        max_power_kw=22.0 if c % 2 == 0 else 50.0,
                        tariff_ids=list(site.tariff_ids),
                    )
                )
    await Location.bulk_create(locations)
    await Evse.bulk_create(evses)
    await Connector.bulk_create(connectors)
    return [site.key for site in items]


async def tariffs(operator_id: str, *source_ids: str) -> None:
    """Store simple per-kWh tariffs."""
    await Tariff.bulk_create(
        [
            Tariff(
                id=keys.record_key(operator_id, sid),
                **provenance(operator_id, sid),
                currency="GBP",
                type="REGULAR",
                alt_text=[{"language": "en", "text": f"{sid}: 45p/kWh"}],
                elements=[{"price_components": [{"type": "ENERGY", "price": 0.45, "step_size": 1}]}],
            )
            for sid in source_ids
        ]
    )


async def session(
    operator_id: str,
    source_id: str,
    location_id: str,
    start: datetime,
    end: datetime | None,
    *,
    kwh: float = 12.5,
    cost: float | None = 5.63,
    borough_code: str | None = WESTMINSTER[0],
) -> str:
    """Store one charging session; returns its id."""
    key = keys.record_key(operator_id, source_id)
    await Session.create(
        id=key,
        **provenance(operator_id, source_id),
        location_id=location_id,
        evse_id=keys.evse_key(location_id, "E0"),
        connector_id=keys.connector_key(keys.evse_key(location_id, "E0"), "1"),
        borough_code=borough_code,
        start=start,
        end=end,
        kwh=kwh,
        status="COMPLETED" if end else "ACTIVE",
        auth_method="WHITELIST",
        token_pseudonym="pseudonym-must-never-be-served",
        currency="GBP",
        total_cost_excl_vat=cost,
        total_cost_incl_vat=cost * 1.2 if cost is not None else None,
    )
    return key


async def cdr(
    operator_id: str,
    source_id: str,
    location_id: str,
    start: datetime,
    end: datetime,
    *,
    borough_code: str | None = WESTMINSTER[0],
) -> str:
    """Store one CDR; returns its id."""
    key = keys.record_key(operator_id, source_id)
    await Cdr.create(
        id=key,
        **provenance(operator_id, source_id),
        session_id=keys.record_key(operator_id, f"S-{source_id}"),
        location_id=location_id,
        borough_code=borough_code,
        start=start,
        end=end,
        total_energy=20.0,
        total_time=(end - start).total_seconds() / 3600,
        currency="GBP",
        total_cost_excl_vat=9.0,
        total_cost_incl_vat=10.8,
        token_pseudonym="pseudonym-must-never-be-served",
        tariff_ids=["STD"],
    )
    return key
