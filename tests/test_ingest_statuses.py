"""Status pulled apart from site data (OICP): an EVSE's data carries no status, the status pull
sets it, and a later data record keeps it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from tortoise.transactions import in_transaction

from adapters.model import EvseRecord, LocationRecord, Page, StatusRecord
from gateway.ingest import Ingestor
from gateway.models import Event, Evse
from gateway.pseudonym import Pseudonymizer
from tests.conftest import TestDb

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _site(updated: datetime) -> LocationRecord:
    evse = EvseRecord("GB*ABC*E1", "GB*ABC*E1", None, [], [], None, None, 51.5, -0.1, updated)
    return LocationRecord(
        "GB*ABC*P1", None, None, True, "Site", "1 High St", "London", None, "GBR", 51.5, -0.1,
        None, None, None, [], "ABC", [evse], updated,
    )  # fmt: skip


async def _ingest(*records: object) -> None:
    ingestor = Ingestor("hub", "oicp", None, Pseudonymizer("k"))
    async with in_transaction() as conn:
        await ingestor.ingest_page(Page(records=list(records)), conn)  # type: ignore[arg-type]


async def test_a_status_pull_sets_what_site_data_leaves_unknown(db: TestDb) -> None:
    await _ingest(_site(AT))
    assert (await Evse.get(uid="GB*ABC*E1")).status == "UNKNOWN"
    # Pulled in the very second the EVSE's data was stamped (a frozen operator clock does that).
    await _ingest(StatusRecord("GB*ABC*E1", "AVAILABLE", AT))
    assert (await Evse.get(uid="GB*ABC*E1")).status == "AVAILABLE"
    await _ingest(StatusRecord("GB*ABC*E1", "CHARGING", AT + timedelta(minutes=1)))
    # A newer data record without status keeps the pulled one.
    await _ingest(replace(_site(AT + timedelta(minutes=2)), name="Renamed"))
    evse = await Evse.get(uid="GB*ABC*E1")
    assert evse.status == "CHARGING" and evse.status_since == AT + timedelta(minutes=1)
    kinds = await Event.filter(kind="evse.status_changed").order_by("id").values_list("payload", flat=True)
    assert [p["status"] for p in kinds] == ["UNKNOWN", "AVAILABLE", "CHARGING"]
