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
    StatusRecord,
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
from gateway.rows import (
    Row,
    Source,
    cdr_row,
    connector_row,
    event_row,
    evse_row,
    location_row,
    place_of,
    quarantine_row,
    session_payload,
    session_row,
    tariff_row,
)

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
    rows = await fetch_by_ids(model, ids, cols, conn)
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


@dataclass
class Changes:
    """The records to write (key -> record) and the stored versions they were compared with."""

    todo: dict[str, Any]
    stored: dict[str, dict[str, Any]]


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

    async def ingest_page(
        self, page: Page, conn: BaseDBAsyncClient, fetched_at: datetime | None = None
    ) -> IngestResult:
        """Store one page's records and quarantine its invalid ones, on `conn`."""
        src = Source(self.operator_id, self.protocol, fetched_at or datetime.now(UTC), self.pseudonymize)
        result = IngestResult()
        result.quarantined = await self._quarantine(src, page.invalid, conn)
        by_type: dict[type, list[Record]] = {}
        for rec in page.records:
            by_type.setdefault(type(rec), []).append(rec)
        handlers = {
            LocationRecord: self._locations,
            SessionRecord: self._sessions,
            CdrRecord: self._cdrs,
            TariffRecord: self._tariffs,
            StatusRecord: self._statuses,
        }
        for rtype, recs in by_type.items():
            result.add(await handlers[rtype](src, recs, conn))
        return result

    async def _changed(self, model: type[Model], recs: list[Any], key_of: Any, conn: BaseDBAsyncClient) -> Changes:
        """The records of a page that are new or newer than what is stored, and what is stored."""
        latest = _newest(recs, key_of)
        stored = await _stored_versions(model, latest, conn)
        return Changes({k: r for k, r in latest.items() if _is_newer(r, stored.get(k))}, stored)

    def _record_key(self, rec: Any) -> str:
        return keys.record_key(self.operator_id, rec.source_id)

    async def _quarantine(self, src: Source, invalid: Sequence[InvalidRecord], conn: BaseDBAsyncClient) -> int:
        """Keep invalid records with their reason and raw JSON; returns how many were new."""
        if not invalid:
            return 0
        rows = {
            qid: quarantine_row(src, qid, bad)
            for bad in invalid
            if (qid := quarantine_id(src.operator_id, bad.module, bad.raw))
        }
        existing = {r["id"] for r in await fetch_by_ids(QuarantinedRecord, list(rows), ["id"], conn)}
        fresh = [row for qid, row in rows.items() if qid not in existing]
        await upsert(QuarantinedRecord, fresh, conn)
        return len(fresh)

    async def _locations(self, src: Source, recs: list[LocationRecord], conn: BaseDBAsyncClient) -> IngestResult:
        """Locations replace their EVSEs and connectors; EVSE status changes become history and events.

        A location that is not newer than the stored one is not rewritten, but its EVSEs still are
        where they are new or newer: protocols without a site hierarchy (OICP) send a site's EVSEs
        as separate records, possibly on different pages, each with its own `lastUpdate`.
        """
        result = IngestResult()
        latest = _newest(recs, lambda r: keys.location_key(self.operator_id, r.source_id))
        stored_locations = await _stored_versions(Location, latest, conn)
        locations, connectors, evses = [], [], []
        for key, loc in latest.items():
            newer = _is_newer(loc, stored_locations.get(key))
            borough = self.boroughs.locate(loc.longitude, loc.latitude) if self.boroughs else None
            if newer:
                locations.append(location_row(src, key, loc, borough))
            for evse in loc.evses:
                evses.append((keys.evse_key(key, evse.uid), key, borough, evse, newer))
        if not evses and not locations:
            return result
        stored = await fetch_by_ids(
            Evse,
            [e[0] for e in evses],
            ["id", "status", "status_since", "last_updated"],
            conn,
        )
        old_evses = {r["id"]: r for r in stored}
        evse_rows, history, events = [], [], []
        evses_alone = 0  # EVSEs written without their location (it was not newer)
        for ekey, lkey, borough, evse, location_newer in evses:
            old = old_evses.get(ekey)
            if old is not None and (
                evse.last_updated < old["last_updated"]
                or (not location_newer and evse.last_updated == old["last_updated"])
            ):
                continue  # an older (or, outside a newer location, the same) EVSE version: keep ours
            # A protocol that sends status apart from site data leaves it None: keep the stored one.
            status = evse.status or (old["status"] if old is not None else "UNKNOWN")
            changed = old is None or old["status"] != status
            evse_rows.append(
                evse_row(src, ekey, lkey, evse, status, evse.last_updated if changed else old["status_since"])
            )
            connectors.extend(connector_row(src, ekey, con) for con in evse.connectors)
            evses_alone += not location_newer
            if changed:
                history.append({"evse_id": ekey, "status": status, "since": evse.last_updated})
                previous = None if old is None else old["status"]
                events.append(self._status_event(src, ekey, lkey, borough, status, previous, evse.last_updated))
        await upsert(Location, locations, conn)
        await upsert(Evse, evse_rows, conn)
        await upsert(Connector, connectors, conn)
        await upsert(StatusObservation, history, conn)
        await self._append_events(events, conn, result)
        result.written = len(locations) + evses_alone
        return result

    @staticmethod
    def _status_event(
        src: Source, ekey: str, lkey: str, borough: str | None, status: str, previous: str | None, at: datetime
    ) -> Row:
        payload = {"evse": ekey, "location": lkey, "status": status, "previous": previous, "at": at.isoformat()}
        return event_row(src, "evse.status_changed", ekey, borough, payload)

    async def _statuses(self, src: Source, recs: list[StatusRecord], conn: BaseDBAsyncClient) -> IngestResult:
        """Live statuses pulled apart from site data (OICP): history and events for what changed.

        A status for an EVSE whose data has not arrived yet is skipped: status pulls are full
        snapshots, so the next one brings it again once the EVSE is known.
        """
        result = IngestResult()
        latest: dict[str, StatusRecord] = {}
        for rec in recs:
            if rec.evse_uid not in latest or rec.last_updated > latest[rec.evse_uid].last_updated:
                latest[rec.evse_uid] = rec
        if not latest:
            return result
        stored = (
            await Evse.filter(operator_id=self.operator_id, uid__in=list(latest))
            .using_db(conn)
            .values("id", "uid", "location_id", "status", "status_since")
        )
        changed = [
            (row, latest[row["uid"]])
            for row in stored
            if row["status"] != latest[row["uid"]].status and latest[row["uid"]].last_updated >= row["status_since"]
        ]
        if not changed:
            return result
        boroughs = {
            r["id"]: r["borough_code"]
            for r in await fetch_by_ids(
                Location, list({row["location_id"] for row, _ in changed}), ["id", "borough_code"], conn
            )
        }
        by_update: dict[tuple[str, datetime], list[str]] = {}
        history, events = [], []
        for row, rec in changed:
            by_update.setdefault((rec.status, rec.last_updated), []).append(row["id"])
            history.append({"evse_id": row["id"], "status": rec.status, "since": rec.last_updated})
            borough = boroughs.get(row["location_id"])
            events.append(
                self._status_event(
                    src, row["id"], row["location_id"], borough, rec.status, row["status"], rec.last_updated
                )
            )
        # One UPDATE per (status, time) pair: a pull stamps all its statuses with one time.
        for (status, since), ids in by_update.items():
            await Evse.filter(id__in=ids).using_db(conn).update(status=status, status_since=since)
        await upsert(StatusObservation, history, conn)
        await self._append_events(events, conn, result)
        result.written = len(changed)
        return result

    async def _evse_locations(
        self, recs: Iterable[SessionRecord | CdrRecord], conn: BaseDBAsyncClient
    ) -> dict[str, str]:
        """EVSE uid -> stored location key, for the records that name only their EVSE."""
        uids = {r.evse_uid for r in recs if r.location_source_id is None and r.evse_uid}
        if not uids:
            return {}
        rows = (
            await Evse.filter(operator_id=self.operator_id, uid__in=list(uids))
            .using_db(conn)
            .values("uid", "location_id")
        )
        return {r["uid"]: r["location_id"] for r in rows}

    async def _append_events(self, events: list[Row], conn: BaseDBAsyncClient, result: IngestResult) -> None:
        await upsert(Event, events, conn)
        result.events += len(events)
        for ev in events:
            result.by_kind[ev["kind"]] = result.by_kind.get(ev["kind"], 0) + 1

    async def _boroughs_of(self, location_keys: Iterable[str | None], conn: BaseDBAsyncClient) -> dict[str, str | None]:
        """Stored location key -> borough, for the location keys a page refers to."""
        wanted = {k for k in location_keys if k is not None}
        rows = await fetch_by_ids(Location, list(wanted), ["id", "borough_code"], conn)
        return {r["id"]: r["borough_code"] for r in rows}

    async def _sessions(self, src: Source, recs: list[SessionRecord], conn: BaseDBAsyncClient) -> IngestResult:
        """Sessions, with started / updated / completed / aborted events for what changed."""
        result = IngestResult()
        changes = await self._changed(Session, recs, self._record_key, conn)
        if not changes.todo:
            return result
        evse_locations = await self._evse_locations(changes.todo.values(), conn)
        places = {k: place_of(self.operator_id, s, evse_locations) for k, s in changes.todo.items()}
        boroughs = await self._boroughs_of((p[0] for p in places.values()), conn)
        rows, events = [], []
        for key, s in changes.todo.items():
            place = places[key]
            row = session_row(src, key, s, place, boroughs.get(place[0]) if place[0] else None)
            rows.append(row)
            payload = session_payload(row)
            previous = changes.stored.get(key, {}).get("status")
            events.extend(
                event_row(src, kind, key, row["borough_code"], payload)
                for kind in session_event_kinds(previous, s.status)
            )
        await upsert(Session, rows, conn)
        await self._append_events(events, conn, result)
        result.written = len(rows)
        return result

    async def _cdrs(self, src: Source, recs: list[CdrRecord], conn: BaseDBAsyncClient) -> IngestResult:
        """CDRs (immutable upstream; a correction is a new credit CDR)."""
        todo = (await self._changed(Cdr, recs, self._record_key, conn)).todo
        if not todo:
            return IngestResult()
        evse_locations = await self._evse_locations(todo.values(), conn)
        places = {k: place_of(self.operator_id, c, evse_locations) for k, c in todo.items()}
        boroughs = await self._boroughs_of((p[0] for p in places.values()), conn)
        rows = [
            cdr_row(src, key, c, places[key], boroughs.get(places[key][0]) if places[key][0] else None)
            for key, c in todo.items()
        ]
        await upsert(Cdr, rows, conn)
        return IngestResult(written=len(rows))

    async def _tariffs(self, src: Source, recs: list[TariffRecord], conn: BaseDBAsyncClient) -> IngestResult:
        """Tariffs."""
        todo = (await self._changed(Tariff, recs, self._record_key, conn)).todo
        rows = [tariff_row(src, key, t) for key, t in todo.items()]
        await upsert(Tariff, rows, conn)
        return IngestResult(written=len(rows))
