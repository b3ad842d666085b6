"""`partnerEvents`: the partner event feed (`gateway.partners`) through GraphQL, as PULL serves it.

Not `@protected` as a whole: status changes are OPEN, session events USAGE. The resolver applies
the same rule as `GET /partners/v1/events`: credentials needed (UNAUTHENTICATED), a partner must be
registered, active and have accepted the licence (FORBIDDEN), and session events appear only when
the caller's USAGE row scope admits their operator and borough.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from gateway.errors import EvgateError, bad_input
from gateway.partners import DEFAULT_PULL_LIMIT, MAX_PULL_LIMIT, entitlement, parse_cursor, visible_events
from gateway.streams import settled_position
from resolvers.context import RequestContext


@strawberry.type(description="One event of the partner feed (the webhook body has the same fields).")
class PartnerEvent:
    id: strawberry.ID = strawberry.field(description="Monotonic event id: the cursor, and the key to deduplicate on.")
    kind: str = strawberry.field(description="evse.status_changed, session.started / updated / completed / aborted.")
    operator_id: str
    borough_code: str | None = strawberry.field(description="GSS code of the borough, when known.")
    subject_id: str = strawberry.field(description="The EVSE or session the event is about.")
    payload: JSON = strawberry.field(description="What happened (never a cost or a token).")
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PartnerEvent:
        """From an event row (`gateway.partners.EVENT_COLUMNS`)."""
        return cls(
            id=strawberry.ID(str(row["id"])),
            kind=row["kind"],
            operator_id=row["operator_id"],
            borough_code=row["borough_code"],
            subject_id=row["subject_id"],
            payload=row["payload"],
            created_at=row["created_at"],
        )


@strawberry.type(description="A page of the partner feed: pass `next` as `after` to continue.")
class PartnerEventPage:
    events: list[PartnerEvent]
    next: strawberry.ID = strawberry.field(description="The cursor after this page (unchanged when it is empty).")


async def partner_events(
    context: RequestContext, after: strawberry.ID | None, limit: int = DEFAULT_PULL_LIMIT
) -> PartnerEventPage:
    """The resolver's body (see the module docstring)."""
    decision = await entitlement(context.principal)
    if not decision:
        assert decision.code is not None
        raise EvgateError(decision.code, decision.reason)
    try:
        cursor = parse_cursor(after)
    except ValueError:
        raise bad_input("after must be an event id (the `next` of a previous page)") from None
    if not 1 <= limit <= MAX_PULL_LIMIT:
        raise bad_input(f"limit must be from 1 to {MAX_PULL_LIMIT}")
    agreements = await context.load_agreements()
    request = context.request
    hub = getattr(request.app.state, "hub", None) if request is not None else None
    until = await settled_position(hub)
    rows, cursor = await visible_events(context.principal, cursor, limit, agreements, until=until)
    return PartnerEventPage(events=[PartnerEvent.from_row(r) for r in rows], next=strawberry.ID(str(cursor)))
