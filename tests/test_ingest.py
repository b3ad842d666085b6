"""Ingest rules: newer wins, older never overwrites, replays change nothing, events say what changed."""

from __future__ import annotations

import copy

import orjson
import pytest
from tortoise.transactions import in_transaction

from adapters.model import Page
from adapters.ocpi_parse import parse_object
from gateway.ingest import Ingestor, session_event_kinds
from gateway.models import Event, Evse, Location, Session, StatusObservation
from gateway.pseudonym import Pseudonymizer
from tests.conftest import TestDb
from tests.support import shared_path

FIXTURES = shared_path("fixtures", "ocpi", "2.2.1")


def _fixture(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())


async def _ingest(ingestor: Ingestor, module: str, *objs: dict):
    page = Page(records=[parse_object(module, o) for o in objs])
    async with in_transaction() as conn:
        return await ingestor.ingest_page(page, conn)


@pytest.fixture
def ingestor() -> Ingestor:
    return Ingestor("op", "ocpi", None, Pseudonymizer("key"))


async def test_older_session_never_overwrites_newer(db: TestDb, ingestor: Ingestor) -> None:
    done = _fixture("session_example_2_short_finished.json")
    running = copy.deepcopy(done)
    running.update(status="ACTIVE", kwh=1.0, last_updated="2015-06-29T22:00:00Z")
    running.pop("end_date_time")
    await _ingest(ingestor, "sessions", done)
    result = await _ingest(ingestor, "sessions", running)  # arrives late, e.g. from a replayed window
    assert result.written == 0 and result.events == 0
    stored = await Session.get(id="op/101")
    assert stored.status == "COMPLETED" and stored.kwh == pytest.approx(done["kwh"]) and stored.end is not None


async def test_newer_session_replaces_and_emits_its_events(db: TestDb, ingestor: Ingestor) -> None:
    done = _fixture("session_example_2_short_finished.json")
    running = copy.deepcopy(done)
    running.update(status="ACTIVE", kwh=1.0, last_updated="2015-06-29T22:00:00Z")
    running.pop("end_date_time")
    first = await _ingest(ingestor, "sessions", running)
    assert first.by_kind == {"session.started": 1}
    second = await _ingest(ingestor, "sessions", done)
    assert second.by_kind == {"session.completed": 1}
    assert (await Session.get(id="op/101")).status == "COMPLETED"
    kinds = await Event.all().order_by("id").values_list("kind", flat=True)
    assert kinds == ["session.started", "session.completed"]
    ids = await Event.all().order_by("id").values_list("id", flat=True)
    assert ids == sorted(ids) and len(set(ids)) == 2


def test_session_event_kinds() -> None:
    assert session_event_kinds(None, "ACTIVE") == ["session.started"]
    assert session_event_kinds(None, "COMPLETED") == ["session.started", "session.completed"]
    assert session_event_kinds("ACTIVE", "ACTIVE") == ["session.updated"]
    assert session_event_kinds("ACTIVE", "COMPLETED") == ["session.completed"]
    assert session_event_kinds("PENDING", "INVALID") == ["session.aborted"]
    assert session_event_kinds("PENDING", "ACTIVE") == ["session.updated"]


async def test_status_history_and_events_only_on_change(db: TestDb, ingestor: Ingestor) -> None:
    loc = _fixture("location_example.json")
    await _ingest(ingestor, "locations", loc)
    assert await StatusObservation.all().count() == 2
    # a newer location version where only the first EVSE changes status
    newer = copy.deepcopy(loc)
    newer["last_updated"] = "2015-07-01T00:00:00Z"
    newer["evses"][0].update(status="CHARGING", last_updated="2015-07-01T00:00:00Z")
    result = await _ingest(ingestor, "locations", newer)
    assert result.by_kind == {"evse.status_changed": 1}
    evse = await Evse.get(id="op/LOC1/3256")
    assert evse.status == "CHARGING" and evse.status_since.isoformat().startswith("2015-07-01T00:00:00")
    unchanged = await Evse.get(id="op/LOC1/3257")
    assert unchanged.status_since < evse.status_since
    history = await StatusObservation.filter(evse_id="op/LOC1/3256").order_by("since").values_list("status", flat=True)
    assert history == ["AVAILABLE", "CHARGING"]
    # replaying either version changes nothing
    for version in (loc, newer):
        again = await _ingest(ingestor, "locations", version)
        assert again.written == 0 and again.events == 0
    assert await StatusObservation.all().count() == 3
    stored = await Location.get(id="op/LOC1")
    assert stored.last_updated.isoformat().startswith("2015-07-01")


async def test_a_page_repeating_an_object_keeps_its_newest_version(db: TestDb, ingestor: Ingestor) -> None:
    done = _fixture("session_example_2_short_finished.json")
    running = copy.deepcopy(done)
    running.update(status="ACTIVE", last_updated="2015-06-29T22:00:00Z")
    await _ingest(ingestor, "sessions", done, running)
    assert (await Session.get(id="op/101")).status == "COMPLETED"
