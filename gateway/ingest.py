"""Idempotent upsert of normalised pages, with change detection feeding the event log.

For each page: read the stored `last_updated` of the page's keys in one query, keep only records
that are new or strictly newer (so replaying a window changes nothing and an older version never
overwrites a newer one), write them in bulk, and append events and status history for what really
changed. Everything runs on the caller's connection, inside the caller's transaction, so a window's
records and its cursor commit together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model

from adapters.model import (
    CdrRecord,
    InvalidRecord,
    LocationRecord,
    Page,
    Record,
    SessionRecord,
    TariffRecord,
)
from gateway import keys
from gateway.bulk import BulkWriter, fetch_by_ids
from gateway.geo import BoroughIndex
from gateway.models import (
    Cdr,
    Connector,
    Event,
    Evse,
    Location,
    QuarantinedRecord,
    Session,
    StatusObservation,
    Tariff,
)
from gateway.pseudonym import Pseudonymizer

SESSION_FINAL = {"COMPLETED": "session.completed", "INVALID": "session.aborted"}


@dataclass
class IngestResult:
    """What one page did: rows written (new or newer), rows quarantined, events appended."""

    written: int = 0
    quarantined: int = 0
    events: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, other: IngestResult) -> None:
        """Accumulate another page's result into this one."""
        self.written += other.written
        self.quarantined += other.quarantined
        self.events += other.events
        for kind, n in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n


# One prepared writer per table. Locations, EVSEs and connectors are replaced whenever the
# location is newer (an EVSE's own last_updated may lag its location's), so they are unguarded;
# sessions, CDRs and tariffs are guarded by last_updated in the database itself.
WRITERS: dict[type[Model], BulkWriter] = {
    Location: BulkWriter(Location, upsert=True),
    Evse: BulkWriter(Evse, upsert=True, guard=None),
    Connector: BulkWriter(Connector, upsert=True, guard=None),
    Session: BulkWriter(Session, upsert=True),
    Cdr: BulkWriter(Cdr, upsert=True),
    Tariff: BulkWriter(Tariff, upsert=True),
    StatusObservation: BulkWriter(StatusObservation, upsert=False),
    Event: BulkWriter(Event, upsert=False),
    QuarantinedRecord: BulkWriter(QuarantinedRecord, upsert=False),
}


async def upsert(model: type[Model], rows: Sequence[dict[str, Any]], conn: BaseDBAsyncClient) -> None:
    """Write rows of `model` (dicts of field values) with its prepared writer."""
    await WRITERS[model].write(rows, conn)


async def _stored_versions(model: type[Model], ids: Iterable[str], conn: BaseDBAsyncClient) -> dict[str, dict]:
    """id -> stored row (as a dict of a few columns) for the ids that exist."""
    ids = list(ids)
    if not ids:
        return {}
    cols = ["id", "last_updated"] + (["status"] if model is Session else [])
    rows = await fetch_by_ids(model, ids, cols, conn, datetimes=["last_updated"])
    return {r["id"]: r for r in rows}


def _newest(records: Iterable[Record], key_of: Any) -> dict[str, Record]:
    """One record per key, the one with the latest last_updated (a page may repeat an object)."""
    out: dict[str, Record] = {}
    for rec in records:
        k = key_of(rec)
        if k not in out or rec.last_updated > out[k].last_updated:
            out[k] = rec
    return out


def _is_newer(rec: Record, stored: dict | None) -> bool:
    return stored is None or rec.last_updated > stored["last_updated"]


def session_event_kinds(previous: str | None, status: str) -> list[str]:
    """The events a new session version means: started, updated, completed or aborted.

    A session first seen already finished (after an outage, say) yields both its start and its
    end, so that a partner following the stream still sees every session begin.
    """
    final = SESSION_FINAL.get(status)
    if previous is None:
        return ["session.started", final] if final else ["session.started"]
    if previous != status and final:
        return [final]
    return ["session.updated"]


def quarantine_id(operator_id: str, module: str, raw: Any) -> str:
    """Digest identifying a quarantined record, so the same bad record is kept once."""
    body = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(f"{operator_id}\x00{module}\x00".encode() + body).hexdigest()


class Ingestor:
    """Stores pages for one operator; holds what ingest needs to know about the world."""

    def __init__(
        self, operator_id: str, protocol: str, boroughs: BoroughIndex | None, pseudonymize: Pseudonymizer
    ) -> None:
        self.operator_id = operator_id
        self.protocol = protocol
        self.boroughs = boroughs
        self.pseudonymize = pseudonymize

    def _prov(self, source_id: str, last_updated: datetime, fetched_at: datetime) -> dict[str, Any]:
        return {
            "operator_id": self.operator_id,
            "protocol": self.protocol,
            "source_id": source_id,
            "fetched_at": fetched_at,
            "last_updated": last_updated,
        }

    def _event(
        self, kind: str, subject: str, borough: str | None, payload: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        return dict(
            kind=kind,
            operator_id=self.operator_id,
            borough_code=borough,
            subject_id=subject,
            payload=payload,
            created_at=now,
        )

    async def ingest_page(
        self, page: Page, conn: BaseDBAsyncClient, fetched_at: datetime | None = None
    ) -> IngestResult:
        """Store one page's records and quarantine its invalid ones, on `conn`."""
        fetched_at = fetched_at or datetime.now(UTC)
        result = IngestResult()
        result.quarantined = await self.quarantine(page.invalid, conn, fetched_at)
        by_type: dict[type, list[Record]] = {}
        for rec in page.records:
            by_type.setdefault(type(rec), []).append(rec)
        handlers = {
            LocationRecord: self._locations,
            SessionRecord: self._sessions,
            CdrRecord: self._cdrs,
            TariffRecord: self._tariffs,
        }
        for rtype, recs in by_type.items():
            result.add(await handlers[rtype](recs, conn, fetched_at))
        return result

    async def quarantine(self, invalid: Sequence[InvalidRecord], conn: BaseDBAsyncClient, fetched_at: datetime) -> int:
        """Keep invalid records with their reason and raw JSON; returns how many were new."""
        if not invalid:
            return 0
        rows = {
            qid: dict(
                id=qid,
                operator_id=self.operator_id,
                module=bad.module,
                source_id=bad.source_id,
                code=bad.code,
                reason=bad.reason,
                raw_json=orjson.dumps(bad.raw).decode(),
                fetched_at=fetched_at,
            )
            for bad in invalid
            if (qid := quarantine_id(self.operator_id, bad.module, bad.raw))
        }
        existing = {r["id"] for r in await fetch_by_ids(QuarantinedRecord, list(rows), ["id"], conn)}
        fresh = [row for qid, row in rows.items() if qid not in existing]
        if fresh:
            await upsert(QuarantinedRecord, fresh, conn)
        return len(fresh)

    async def _locations(self, recs: list[Record], conn: BaseDBAsyncClient, now: datetime) -> IngestResult:
        result = IngestResult()
        latest = _newest(recs, lambda r: keys.location_key(self.operator_id, r.source_id))
        stored = await _stored_versions(Location, latest, conn)
        todo: dict[str, LocationRecord] = {k: r for k, r in latest.items() if _is_newer(r, stored.get(k))}  # type: ignore[misc]
        if not todo:
            return result
        locations, evses, connectors = [], [], []
        for key, loc in todo.items():
            borough = self.boroughs.locate(loc.longitude, loc.latitude) if self.boroughs else None
            locations.append(
                dict(
                    id=key,
                    **self._prov(loc.source_id, loc.last_updated, now),
                    country_code=loc.country_code,
                    party_id=loc.party_id,
                    publish=loc.publish,
                    name=loc.name,
                    address=loc.address,
                    city=loc.city,
                    postal_code=loc.postal_code,
                    country=loc.country,
                    latitude=loc.latitude,
                    longitude=loc.longitude,
                    borough_code=borough,
                    parking_type=loc.parking_type,
                    time_zone=loc.time_zone,
                    opening_times=loc.opening_times,
                    facilities=loc.facilities,
                    operator_name=loc.operator_name,
                )
            )
            for evse in loc.evses:
                ekey = keys.evse_key(key, evse.uid)
                evses.append((ekey, key, borough, evse))
                for con in evse.connectors:
                    connectors.append(
                        dict(
                            id=keys.connector_key(ekey, con.source_id),
                            **self._prov(con.source_id, con.last_updated, now),
                            evse_id=ekey,
                            standard=con.standard,
                            format=con.format,
                            power_type=con.power_type,
                            max_voltage=con.max_voltage,
                            max_amperage=con.max_amperage,
                            max_power_kw=con.max_power_kw,
                            tariff_ids=con.tariff_ids,
                        )
                    )
        old_evses = {
            r["id"]: r
            for r in await fetch_by_ids(
                Evse,
                [e[0] for e in evses],
                ["id", "status", "status_since", "last_updated"],
                conn,
                datetimes=["status_since", "last_updated"],
            )
        }
        evse_rows, history, events = [], [], []
        for ekey, lkey, borough, evse in evses:
            old = old_evses.get(ekey)
            if old is not None and evse.last_updated < old["last_updated"]:
                continue  # an older EVSE version inside a newer location: keep what we have
            changed = old is None or old["status"] != evse.status
            since = evse.last_updated if changed else old["status_since"]  # type: ignore[index]
            evse_rows.append(
                dict(
                    id=ekey,
                    **self._prov(evse.uid, evse.last_updated, now),
                    location_id=lkey,
                    uid=evse.uid,
                    evse_id=evse.evse_id,
                    status=evse.status,
                    status_since=since,
                    capabilities=evse.capabilities,
                    floor_level=evse.floor_level,
                    physical_reference=evse.physical_reference,
                    latitude=evse.latitude,
                    longitude=evse.longitude,
                )
            )
            if changed:
                history.append(dict(evse_id=ekey, status=evse.status, since=evse.last_updated))
                events.append(
                    self._event(
                        "evse.status_changed",
                        ekey,
                        borough,
                        {
                            "evse": ekey,
                            "location": lkey,
                            "status": evse.status,
                            "previous": None if old is None else old["status"],
                            "at": evse.last_updated.isoformat(),
                        },
                        now,
                    )
                )
        await upsert(Location, locations, conn)
        await upsert(Evse, evse_rows, conn)
        await upsert(Connector, connectors, conn)
        if history:
            await upsert(StatusObservation, history, conn)
        await self._append_events(events, conn, result)
        result.written = len(locations)
        return result

    async def _append_events(self, events: list[dict[str, Any]], conn: BaseDBAsyncClient, result: IngestResult) -> None:
        if not events:
            return
        await upsert(Event, events, conn)
        result.events += len(events)
        for ev in events:
            result.by_kind[ev["kind"]] = result.by_kind.get(ev["kind"], 0) + 1

    async def _borough_of_locations(self, location_keys: set[str], conn: BaseDBAsyncClient) -> dict[str, str | None]:
        rows = await fetch_by_ids(Location, list(location_keys), ["id", "borough_code"], conn)
        return {r["id"]: r["borough_code"] for r in rows}

    async def _sessions(self, recs: list[Record], conn: BaseDBAsyncClient, now: datetime) -> IngestResult:
        result = IngestResult()
        latest = _newest(recs, lambda r: keys.record_key(self.operator_id, r.source_id))
        stored = await _stored_versions(Session, latest, conn)
        todo: dict[str, SessionRecord] = {k: r for k, r in latest.items() if _is_newer(r, stored.get(k))}  # type: ignore[misc]
        if not todo:
            return result
        loc_keys = {keys.location_key(self.operator_id, s.location_source_id) for s in todo.values()}
        boroughs = await self._borough_of_locations(loc_keys, conn)
        rows, events = [], []
        for key, s in todo.items():
            lkey = keys.location_key(self.operator_id, s.location_source_id)
            ekey = keys.evse_key(lkey, s.evse_uid) if s.evse_uid else None
            borough = boroughs.get(lkey)
            rows.append(
                dict(
                    id=key,
                    **self._prov(s.source_id, s.last_updated, now),
                    location_id=lkey,
                    evse_id=ekey,
                    connector_id=keys.connector_key(ekey, s.connector_source_id)
                    if ekey and s.connector_source_id
                    else None,
                    borough_code=borough,
                    start=s.start,
                    end=s.end,
                    kwh=s.kwh,
                    status=s.status,
                    auth_method=s.auth_method,
                    token_pseudonym=self.pseudonymize(self.operator_id, s.token_uid),
                    currency=s.currency,
                    total_cost_excl_vat=s.total_cost.excl_vat if s.total_cost else None,
                    total_cost_incl_vat=s.total_cost.incl_vat if s.total_cost else None,
                )
            )
            # The payload carries only what the event is about; cost and token stay in the table,
            # behind the access policy.
            payload = {
                "session": key,
                "location": lkey,
                "evse": ekey,
                "status": s.status,
                "start": s.start.isoformat(),
                "end": s.end.isoformat() if s.end else None,
                "kwh": s.kwh,
            }
            kinds = session_event_kinds(stored.get(key, {}).get("status"), s.status)
            events.extend(self._event(kind, key, borough, payload, now) for kind in kinds)
        await upsert(Session, rows, conn)
        await self._append_events(events, conn, result)
        result.written = len(rows)
        return result

    async def _cdrs(self, recs: list[Record], conn: BaseDBAsyncClient, now: datetime) -> IngestResult:
        result = IngestResult()
        latest = _newest(recs, lambda r: keys.record_key(self.operator_id, r.source_id))
        stored = await _stored_versions(Cdr, latest, conn)
        todo: dict[str, CdrRecord] = {k: r for k, r in latest.items() if _is_newer(r, stored.get(k))}  # type: ignore[misc]
        if not todo:
            return result
        loc_keys = {keys.location_key(self.operator_id, c.location_source_id) for c in todo.values()}
        boroughs = await self._borough_of_locations(loc_keys, conn)
        rows = []
        for key, c in todo.items():
            lkey = keys.location_key(self.operator_id, c.location_source_id)
            ekey = keys.evse_key(lkey, c.evse_uid) if c.evse_uid else None
            rows.append(
                dict(
                    id=key,
                    **self._prov(c.source_id, c.last_updated, now),
                    session_id=keys.record_key(self.operator_id, c.session_source_id) if c.session_source_id else None,
                    location_id=lkey,
                    evse_id=ekey,
                    connector_id=keys.connector_key(ekey, c.connector_source_id)
                    if ekey and c.connector_source_id
                    else None,
                    borough_code=boroughs.get(lkey),
                    start=c.start,
                    end=c.end,
                    total_energy=c.total_energy,
                    total_time=c.total_time,
                    total_parking_time=c.total_parking_time,
                    currency=c.currency,
                    total_cost_excl_vat=c.total_cost.excl_vat,
                    total_cost_incl_vat=c.total_cost.incl_vat,
                    credit=c.credit,
                    credit_reference_id=c.credit_reference_id,
                    auth_method=c.auth_method,
                    token_pseudonym=self.pseudonymize(self.operator_id, c.token_uid),
                    tariff_ids=c.tariff_ids,
                )
            )
        await upsert(Cdr, rows, conn)
        result.written = len(rows)
        return result

    async def _tariffs(self, recs: list[Record], conn: BaseDBAsyncClient, now: datetime) -> IngestResult:
        result = IngestResult()
        latest = _newest(recs, lambda r: keys.record_key(self.operator_id, r.source_id))
        stored = await _stored_versions(Tariff, latest, conn)
        rows = [
            dict(
                id=key,
                **self._prov(t.source_id, t.last_updated, now),
                currency=t.currency,
                type=t.type,
                alt_text=t.alt_text,
                alt_url=t.alt_url,
                min_price_excl_vat=t.min_price.excl_vat if t.min_price else None,
                max_price_excl_vat=t.max_price.excl_vat if t.max_price else None,
                elements=t.elements,
                start=t.start,
                end=t.end,
                energy_mix=t.energy_mix,
            )
            for key, t in latest.items()
            if _is_newer(t, stored.get(key)) and isinstance(t, TariffRecord)
        ]
        await upsert(Tariff, rows, conn)
        result.written = len(rows)
        return result
