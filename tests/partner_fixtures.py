"""Shared by the partner tests: two operators (one sharing USAGE with partners, one not) and a
mixed event log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.models import Event, Operator

SHARING = "sharing-op"  # agreement grants partners USAGE data
PRIVATE = "private-op"  # no agreement: its session events stay with it and administrators
AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def operators_with_agreements() -> None:
    """The two operators, with their agreements."""
    await Operator.create(
        id=SHARING, name="Sharing", protocol="ocpi", base_url="https://s.test", agreement={"USAGE": ["partner"]}
    )
    await Operator.create(id=PRIVATE, name="Private", protocol="ocpi", base_url="https://p.test", agreement={})


async def event_log(per_kind: int = 3) -> dict[str, list[int]]:
    """For each operator, `per_kind` status changes and `per_kind` session starts, interleaved;
    the ids by (operator, class): keys "SHARING/OPEN", "SHARING/USAGE", "PRIVATE/OPEN", "PRIVATE/USAGE"."""
    out: dict[str, list[int]] = {}
    n = 0
    for i in range(per_kind):
        for op, label in ((SHARING, "SHARING"), (PRIVATE, "PRIVATE")):
            for kind, cls in (("evse.status_changed", "OPEN"), ("session.started", "USAGE")):
                n += 1
                ev = await Event.create(
                    kind=kind,
                    operator_id=op,
                    borough_code="E09000033",
                    subject_id=f"{op}:{kind}:{i}",
                    payload={"n": n, "status": "CHARGING"},
                    created_at=AT + timedelta(seconds=n),
                )
                out.setdefault(f"{label}/{cls}", []).append(ev.id)
    return out


def visible_to_partner(ids: dict[str, list[int]]) -> list[int]:
    """What a partner may see: every status change, and session events of the sharing operator."""
    return sorted(ids["SHARING/OPEN"] + ids["PRIVATE/OPEN"] + ids["SHARING/USAGE"])
