"""Sync health: how far each operator's modules have got, what went wrong, what was quarantined.

Read services for the admin-only part of the API. Quarantined records are shown with their raw
JSON so an operator's mistake can be reported back to it; their token fields were redacted before
they were stored (`gateway.personal`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.catalog import Page, Row, by_id_page, scoped
from gateway.models import QuarantinedRecord, SyncError, SyncState
from gateway.policy import RowScope

RECENT_ERRORS = 10


@dataclass(frozen=True, slots=True)
class ModuleHealth:
    """One operator module's sync state and its recent errors (newest first)."""

    state: SyncState
    recent_errors: list[SyncError]

    @property
    def lag_seconds(self) -> float | None:
        """How far the cursor is behind the operator's clock now (None before the first window)."""
        if self.state.cursor is None:
            return None
        operator_now = datetime.now(UTC).timestamp() + (self.state.clock_offset or 0.0)
        return max(0.0, operator_now - self.state.cursor.timestamp())

    @property
    def healthy(self) -> bool:
        """Whether the last attempt succeeded."""
        return self.state.consecutive_failures == 0 and self.state.last_success is not None


async def sync_health(operator_ids: Sequence[str] | None = None, *, scope: RowScope) -> list[ModuleHealth]:
    """Every module's health within `scope` (OPERATIONS rows the caller may see), by operator and
    module; two queries whatever the number of modules."""
    states = scoped(SyncState.all(), scope, borough_column=None).order_by("operator_id", "module")
    if operator_ids is not None:
        states = states.filter(operator_id__in=list(operator_ids))
    rows = await states
    errors: dict[tuple[str, str], list[SyncError]] = {}
    if rows:
        recent = SyncError.filter(operator_id__in=list({r.operator_id for r in rows})).order_by("-id")
        # Kept trimmed to scheduler.ERRORS_KEPT per module, so this read is bounded.
        for err in await recent:
            kept = errors.setdefault((err.operator_id, err.module), [])
            if len(kept) < RECENT_ERRORS:
                kept.append(err)
    return [ModuleHealth(r, errors.get((r.operator_id, r.module), [])) for r in rows]


QUARANTINE_COLUMNS = ("id", "operator_id", "module", "source_id", "code", "reason", "raw_json", "fetched_at")


async def quarantined(
    operator_id: str | None, module: str | None, first: int, after: str | None, *, scope: RowScope
) -> Page[Row]:
    """Quarantined records within `scope`, filtered by operator and module, a page at a time."""
    qs = scoped(QuarantinedRecord.all(), scope, borough_column=None)
    if operator_id is not None:
        qs = qs.filter(operator_id=operator_id)
    if module is not None:
        qs = qs.filter(module=module)
    return await by_id_page(qs, "quarantined", first, after, QUARANTINE_COLUMNS)


def raw_of(row: Row) -> Any:
    """The stored raw JSON of a quarantined record (redacted when it was stored)."""
    return orjson.loads(row["raw_json"])
