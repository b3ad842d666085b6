"""Normalised records to stored rows: pure mappings, one per table, with keys and provenance.

Rows are plain dicts with every column of their table (what `gateway.bulk` writes). Deciding
*whether* to write a row is `gateway.ingest`'s job; this module only says *what* the row is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from adapters.model import (
    CdrRecord,
    ConnectorRecord,
    EvseRecord,
    InvalidRecord,
    LocationRecord,
    SessionRecord,
    TariffRecord,
)
from gateway import keys
from gateway.personal import redact
from gateway.pseudonym import Pseudonymizer

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a page came from: the operator, its protocol, when it was fetched, how tokens are hidden."""

    operator_id: str
    protocol: str
    fetched_at: datetime
    pseudonymize: Pseudonymizer

    def provenance(self, source_id: str, last_updated: datetime) -> Row:
        """The provenance columns every operator-sourced row carries."""
        return {
            "operator_id": self.operator_id,
            "protocol": self.protocol,
            "source_id": source_id,
            "fetched_at": self.fetched_at,
            "last_updated": last_updated,
        }

    def pseudonym(self, token_uid: str | None) -> str | None:
        """The keyed pseudonym of a session's token (the raw token is never stored)."""
        return self.pseudonymize(self.operator_id, token_uid)


def location_row(src: Source, key: str, loc: LocationRecord, borough: str | None) -> Row:
    """A location (without its EVSEs)."""
    return {
        "id": key,
        **src.provenance(loc.source_id, loc.last_updated),
        "country_code": loc.country_code,
        "party_id": loc.party_id,
        "publish": loc.publish,
        "name": loc.name,
        "address": loc.address,
        "city": loc.city,
        "postal_code": loc.postal_code,
        "country": loc.country,
        "latitude": loc.latitude,
        "longitude": loc.longitude,
        "borough_code": borough,
        "parking_type": loc.parking_type,
        "time_zone": loc.time_zone,
        "opening_times": loc.opening_times,
        "facilities": loc.facilities,
        "operator_name": loc.operator_name,
        "duplicate_of": None,  # decided after ingest by gateway.dedupe
    }


def evse_row(src: Source, key: str, location_key: str, evse: EvseRecord, status: str, status_since: datetime) -> Row:
    """An EVSE with its live status and since when it has held it."""
    return {
        "id": key,
        **src.provenance(evse.uid, evse.last_updated),
        "location_id": location_key,
        "uid": evse.uid,
        "evse_id": evse.evse_id,
        "status": status,
        "status_since": status_since,
        "capabilities": evse.capabilities,
        "floor_level": evse.floor_level,
        "physical_reference": evse.physical_reference,
        "latitude": evse.latitude,
        "longitude": evse.longitude,
    }


def connector_row(src: Source, evse_key: str, con: ConnectorRecord) -> Row:
    """A connector of an EVSE."""
    return {
        "id": keys.connector_key(evse_key, con.source_id),
        **src.provenance(con.source_id, con.last_updated),
        "evse_id": evse_key,
        "standard": con.standard,
        "format": con.format,
        "power_type": con.power_type,
        "max_voltage": con.max_voltage,
        "max_amperage": con.max_amperage,
        "max_power_kw": con.max_power_kw,
        "tariff_ids": con.tariff_ids,
    }


# (location, EVSE, connector) stored keys of a session or CDR; any may be unknown.
Place = tuple[str | None, str | None, str | None]


def place_of(operator_id: str, rec: SessionRecord | CdrRecord, evse_locations: dict[str, str]) -> Place:
    """Where a session or CDR happened, as stored keys.

    OCPI names the location; OICP names only the EVSE, whose location is looked up among the
    stored EVSEs (`evse_locations`: EVSE uid -> location key) and stays unknown until it is known.
    """
    if rec.location_source_id is not None:
        lkey: str | None = keys.location_key(operator_id, rec.location_source_id)
    else:
        lkey = evse_locations.get(rec.evse_uid) if rec.evse_uid else None
    ekey = keys.evse_key(lkey, rec.evse_uid) if lkey and rec.evse_uid else None
    ckey = keys.connector_key(ekey, rec.connector_source_id) if ekey and rec.connector_source_id else None
    return lkey, ekey, ckey


def session_row(src: Source, key: str, s: SessionRecord, place: Place, borough: str | None) -> Row:
    """A session: usage, its cost (COMMERCIAL) and only a pseudonym of its token."""
    lkey, ekey, ckey = place
    return {
        "id": key,
        **src.provenance(s.source_id, s.last_updated),
        "location_id": lkey,
        "evse_id": ekey,
        "connector_id": ckey,
        "borough_code": borough,
        "start": s.start,
        "end": s.end,
        "kwh": s.kwh,
        "status": s.status,
        "auth_method": s.auth_method,
        "token_pseudonym": src.pseudonym(s.token_uid),
        "currency": s.currency,
        "total_cost_excl_vat": s.total_cost.excl_vat if s.total_cost else None,
        "total_cost_incl_vat": s.total_cost.incl_vat if s.total_cost else None,
    }


def session_payload(row: Row) -> Row:
    """What a session event says: what happened where and when, never cost or token (those stay in
    the table, behind the access policy)."""
    return {
        "session": row["id"],
        "location": row["location_id"],
        "evse": row["evse_id"],
        "status": row["status"],
        "start": row["start"].isoformat(),
        "end": row["end"].isoformat() if row["end"] else None,
        "kwh": row["kwh"],
    }


def cdr_row(src: Source, key: str, c: CdrRecord, place: Place, borough: str | None) -> Row:
    """A charge detail record."""
    lkey, ekey, ckey = place
    return {
        "id": key,
        **src.provenance(c.source_id, c.last_updated),
        "session_id": keys.record_key(src.operator_id, c.session_source_id) if c.session_source_id else None,
        "location_id": lkey,
        "evse_id": ekey,
        "connector_id": ckey,
        "borough_code": borough,
        "start": c.start,
        "end": c.end,
        "total_energy": c.total_energy,
        "total_time": c.total_time,
        "total_parking_time": c.total_parking_time,
        "currency": c.currency,
        "total_cost_excl_vat": c.total_cost.excl_vat if c.total_cost else None,
        "total_cost_incl_vat": c.total_cost.incl_vat if c.total_cost else None,
        "credit": c.credit,
        "credit_reference_id": c.credit_reference_id,
        "auth_method": c.auth_method,
        "token_pseudonym": src.pseudonym(c.token_uid),
        "tariff_ids": c.tariff_ids,
    }


def tariff_row(src: Source, key: str, t: TariffRecord) -> Row:
    """A tariff."""
    return {
        "id": key,
        **src.provenance(t.source_id, t.last_updated),
        "currency": t.currency,
        "type": t.type,
        "alt_text": t.alt_text,
        "alt_url": t.alt_url,
        "min_price_excl_vat": t.min_price.excl_vat if t.min_price else None,
        "max_price_excl_vat": t.max_price.excl_vat if t.max_price else None,
        "elements": t.elements,
        "start": t.start,
        "end": t.end,
        "energy_mix": t.energy_mix,
    }


def event_row(src: Source, kind: str, subject: str, borough: str | None, payload: Row) -> Row:
    """An event log entry (its id, monotonic, is the database's)."""
    return {
        "kind": kind,
        "operator_id": src.operator_id,
        "borough_code": borough,
        "subject_id": subject,
        "payload": payload,
        "created_at": src.fetched_at,
    }


def quarantine_row(src: Source, qid: str, bad: InvalidRecord) -> Row:
    """An invalid operator record with its reason and raw JSON (driver tokens redacted)."""
    return {
        "id": qid,
        "operator_id": src.operator_id,
        "module": bad.module,
        "source_id": bad.source_id,
        "code": bad.code,
        "reason": bad.reason,
        "raw_json": orjson.dumps(redact(bad.raw)).decode(),
        "fetched_at": src.fetched_at,
    }
