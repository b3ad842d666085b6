"""GraphQL types of sync health and quarantined records (OPERATIONS data: administrators, and each
operator for its own).

Operator credentials never appear here: they live encrypted in the vault, which no type reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from gateway import health
from gateway.catalog import Row
from gateway.models import SyncError as SyncErrorRow
from gateway.policy import DataClass
from resolvers.permissions import protected
from resolvers.types import Connection


@strawberry.type(description="One failed attempt, or one window that quarantined records.")
class SyncError:
    code: str = strawberry.field(description="A code of the error catalogue (README), e.g. UPSTREAM_TLS.")
    message: str
    at: datetime
    retry_after: float | None = strawberry.field(description="The operator's Retry-After, in seconds.")

    @classmethod
    def from_row(cls, row: SyncErrorRow) -> SyncError:
        return cls(code=row.code, message=row.message, at=row.at, retry_after=row.retry_after)


@strawberry.type(
    description="How far one operator module has synchronised, and what went wrong lately.",
    directives=protected(DataClass.OPERATIONS),
)
class ModuleSyncHealth:
    operator_id: str
    module: str
    cursor: datetime | None = strawberry.field(
        description="End of the last window ingested whole (operator clock); the next run resumes here."
    )
    lag_seconds: float | None = strawberry.field(description="How far the cursor is behind the operator's now.")
    healthy: bool = strawberry.field(description="Whether the last attempt succeeded.")
    last_attempt: datetime | None
    last_success: datetime | None
    last_error: SyncError | None = strawberry.field(
        description="The latest error; still shown after a recovery (compare with lastSuccess)."
    )
    consecutive_failures: int
    next_attempt: datetime | None = strawberry.field(description="When backoff or Retry-After allows a retry.")
    clock_offset_seconds: float | None = strawberry.field(description="The operator's clock minus ours.")
    records_ingested: int
    records_quarantined: int
    recent_errors: list[SyncError] = strawberry.field(description="Up to ten, newest first.")

    @classmethod
    def of(cls, h: health.ModuleHealth) -> ModuleSyncHealth:
        s = h.state
        last_error = None
        if s.last_error_code is not None and s.last_error_at is not None:
            last_error = SyncError(
                code=s.last_error_code,
                message=s.last_error_message or "",
                at=s.last_error_at,
                retry_after=s.retry_after,
            )
        return cls(
            operator_id=s.operator_id,
            module=s.module,
            cursor=s.cursor,
            lag_seconds=h.lag_seconds,
            healthy=h.healthy,
            last_attempt=s.last_attempt,
            last_success=s.last_success,
            last_error=last_error,
            consecutive_failures=s.consecutive_failures,
            next_attempt=s.next_attempt,
            clock_offset_seconds=s.clock_offset,
            records_ingested=s.records_ingested,
            records_quarantined=s.records_quarantined,
            recent_errors=[SyncError.from_row(e) for e in h.recent_errors],
        )


@strawberry.type(
    description="An operator record that could not be normalised, kept with its reason (never dropped).",
    directives=protected(DataClass.OPERATIONS),
)
class QuarantinedRecord:
    id: strawberry.ID
    operator_id: str
    module: str
    source_id: str | None = strawberry.field(description="The operator's id of the record, when readable.")
    code: str
    reason: str
    fetched_at: datetime
    raw: JSON = strawberry.field(description="The record as received, with token fields redacted (PERSONAL).")

    @classmethod
    def from_row(cls, row: Row) -> QuarantinedRecord:
        raw: Any = health.raw_of(row)
        return cls(
            id=strawberry.ID(row["id"]),
            operator_id=row["operator_id"],
            module=row["module"],
            source_id=row["source_id"],
            code=row["code"],
            reason=row["reason"],
            fetched_at=row["fetched_at"],
            raw=raw,
        )


QuarantinedRecordConnection = Connection[QuarantinedRecord]
