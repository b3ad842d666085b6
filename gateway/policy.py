"""Who may read which class of data: the one policy decision behind the `@protected` directive.

The schema declares a data class on each protected field or type; `resolvers.permissions` asks
`allowed()` before resolving it. This module is the only place that knows the rules, so the full
access model (boroughs, partners, operators, data-sharing agreements) replaces just this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.auth import Principal, Role
from gateway.errors import ErrorCode


class DataClass(StrEnum):
    """How sensitive a piece of data is (DESIGN.md, access control)."""

    OPEN = "OPEN"  # locations, status, tariffs: public under the 2023 regulations
    USAGE = "USAGE"  # sessions, utilisation per charge point
    COMMERCIAL = "COMMERCIAL"  # costs, revenue
    PERSONAL = "PERSONAL"  # token ids: never served, only a keyed pseudonym is stored
    OPERATIONS = "OPERATIONS"  # sync health, quarantined records: the gateway's operators only


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a policy check: allowed, or denied with a catalogue code and a reason."""

    allowed: bool
    code: ErrorCode | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOW = Decision(True)


def allowed(principal: Principal, data_class: DataClass, operator_id: str | None = None) -> Decision:
    """May `principal` read data of `data_class` (of `operator_id`, when the row is known)?

    `operator_id` is unused for now; the full model checks it against each operator's
    data-sharing agreement.
    """
    if data_class is DataClass.OPEN:
        return ALLOW
    if data_class is DataClass.PERSONAL:
        # Never served to anyone, administrators included: only pseudonyms are stored anyway.
        return Decision(False, ErrorCode.FORBIDDEN, "personal data is never served")
    if principal.role is Role.ADMIN:
        return ALLOW
    if not principal.authenticated:
        reason = principal.credential_error or f"{data_class.value} data needs credentials"
        return Decision(False, ErrorCode.UNAUTHENTICATED, reason)
    return Decision(False, ErrorCode.FORBIDDEN, f"{data_class.value} data is not available to this caller")
