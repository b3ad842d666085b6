"""Who may read which class of data: the one policy decision behind the `@protected` directive.

The schema declares a data class on each protected field or type; `resolvers.permissions` asks
`allowed()` before resolving it, and the list resolvers hand `row_scope()` to the catalogue, which
turns it into SQL so that rows the caller may not see are absent (and counts agree). This module is
the only place that knows the rules (DESIGN.md, access control):

- OPEN: everyone. PERSONAL: no one, administrators included.
- Anonymous callers get nothing else: UNAUTHENTICATED. An authenticated caller that is refused
  gets FORBIDDEN.
- OPERATIONS (sync health, quarantined records): administrators; an operator for its own rows.
- USAGE and COMMERCIAL: administrators everything; an operator its own operator's rows only;
  a partner the rows of the operators whose agreement grants partners that class; a borough the
  rows of the operators whose agreement grants boroughs that class *and* whose `borough_code` is
  one of the borough principal's GSS codes (per-charge-point data of another borough is never
  visible, whatever the agreement).

Each operator's data-sharing agreement (`OperatorConfig.agreement`, stored in `Operator.agreement`)
names the roles, among `borough` and `partner`, that get its USAGE and COMMERCIAL data; without one
nothing is shared beyond the operator itself and administrators.

Everything here is pure (no I/O): the agreements are loaded by the caller (`gateway.catalog.
sharing_agreements`, once per request) and passed in. The same two functions serve a query, a
subscription event or a webhook delivery: for an event of operator O in borough B of class C,
`allowed(principal, C, O, B, agreements)` says whether it may be delivered, and
`row_scope(principal, C, agreements).admits(O, B)` says the same for a whole stream's filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.auth import Principal, Role
from gateway.errors import ErrorCode


class DataClass(StrEnum):
    """How sensitive a piece of data is (DESIGN.md, access control)."""

    OPEN = "OPEN"  # locations, status, tariffs: public under the 2023 regulations
    USAGE = "USAGE"  # sessions, utilisation per charge point
    COMMERCIAL = "COMMERCIAL"  # costs, revenue
    PERSONAL = "PERSONAL"  # token ids: never served, only a keyed pseudonym is stored
    OPERATIONS = "OPERATIONS"  # sync health, quarantined records: administrators and the operator itself


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a policy check: allowed, or denied with a catalogue code and a reason."""

    allowed: bool
    code: ErrorCode | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOW = Decision(True)

# ---------------------------------------------------------------------------------------------
# Data-sharing agreements
# ---------------------------------------------------------------------------------------------

# What an agreement can share, and with whom: an operator always sees its own data and
# administrators see everything, so only these are the agreement's to grant.
SHAREABLE_CLASSES: tuple[DataClass, ...] = (DataClass.USAGE, DataClass.COMMERCIAL)
SHARING_ROLES: tuple[Role, ...] = (Role.BOROUGH, Role.PARTNER)


@dataclass(frozen=True, slots=True)
class Agreement:
    """One operator's data-sharing agreement: the roles granted each shareable data class."""

    grants: Mapping[DataClass, frozenset[Role]]

    def grants_to(self, role: Role, data_class: DataClass) -> bool:
        """Whether `role` gets this operator's `data_class` data."""
        return role in self.grants.get(data_class, frozenset())

    def as_json(self) -> dict[str, list[str]]:
        """The stored form (`Operator.agreement`): {"USAGE": ["borough", "partner"], ...}."""
        return {dc.value: sorted(r.value for r in roles) for dc, roles in sorted(self.grants.items()) if roles}


NO_AGREEMENT = Agreement({})


def parse_agreement(raw: Mapping[str, Any] | None, where: str = "agreement") -> Agreement:
    """Validate an agreement as written in configuration or stored: keys among USAGE and
    COMMERCIAL, each a list of roles among "borough" and "partner". ValueError otherwise."""
    if not raw:
        return NO_AGREEMENT
    if not isinstance(raw, Mapping):
        raise ValueError(f'{where}: must be a table like {{ USAGE = ["borough"] }}, got {raw!r}')
    classes = {dc.value: dc for dc in SHAREABLE_CLASSES}
    roles = {r.value: r for r in SHARING_ROLES}
    grants: dict[DataClass, frozenset[Role]] = {}
    for key, value in raw.items():
        if key not in classes:
            raise ValueError(f"{where}: can share only {sorted(classes)}, not {key!r}")
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ValueError(f"{where}.{key}: must be a list of roles among {sorted(roles)}")
        unknown = sorted(str(v) for v in value if v not in roles)
        if unknown:
            raise ValueError(f"{where}.{key}: can be granted only to {sorted(roles)}, not {unknown}")
        grants[classes[key]] = frozenset(roles[v] for v in value)
    return Agreement(grants)


Agreements = Mapping[str, Agreement]
"""Every registered operator's agreement, by operator id (a missing operator shares nothing)."""

# ---------------------------------------------------------------------------------------------
# Row scopes and decisions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowScope:
    """The rows of one data class a principal may see: those of `operator_ids` (None: every
    operator) whose borough is in `borough_codes` (None: any borough, or none). The catalogue
    turns it into a WHERE clause; `admits` is the same test for one row or event."""

    operator_ids: frozenset[str] | None = None
    borough_codes: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        """No restriction at all."""
        return self.operator_ids is None and self.borough_codes is None

    @property
    def nothing(self) -> bool:
        """No row can match."""
        return self.operator_ids == frozenset() or self.borough_codes == frozenset()

    def admits(self, operator_id: str | None, borough_code: str | None) -> bool:
        """Whether the row (or event) of `operator_id` in `borough_code` is in scope. A row with no
        borough is outside every borough-restricted scope."""
        if self.operator_ids is not None and operator_id not in self.operator_ids:
            return False
        return self.borough_codes is None or borough_code in self.borough_codes


ALL_ROWS = RowScope()
NO_ROWS = RowScope(operator_ids=frozenset())


def row_scope(principal: Principal, data_class: DataClass, agreements: Agreements) -> RowScope:
    """The rows of `data_class` that `principal` may see (see the module docstring for the rules)."""
    if data_class is DataClass.OPEN:
        return ALL_ROWS
    if data_class is DataClass.PERSONAL or not principal.authenticated:
        return NO_ROWS
    role = principal.role
    if role is Role.ADMIN:
        return ALL_ROWS
    if role is Role.OPERATOR:
        # Operators see all of their own data (USAGE, COMMERCIAL, OPERATIONS) and nothing of others'.
        if principal.operator_id is None:
            return NO_ROWS
        return RowScope(operator_ids=frozenset({principal.operator_id}))
    if data_class not in SHAREABLE_CLASSES or role not in SHARING_ROLES:
        return NO_ROWS
    operators = frozenset(op for op, agreement in agreements.items() if agreement.grants_to(role, data_class))
    if role is Role.BOROUGH:
        return RowScope(operator_ids=operators, borough_codes=frozenset(principal.boroughs))
    return RowScope(operator_ids=operators)


def allowed(
    principal: Principal,
    data_class: DataClass,
    operator_id: str | None = None,
    borough_code: str | None = None,
    agreements: Agreements | None = None,
) -> Decision:
    """May `principal` read data of `data_class`?

    With `operator_id` (a row or event of that operator, in `borough_code`, None when it has no
    borough): may it read that row's data. Without (a field above any row, such as `sessions`):
    may it read any data of that class at all; the rows it may not see are then left out by
    `row_scope`. `agreements` are needed only for partners and boroughs (None: nothing shared).
    """
    if data_class is DataClass.OPEN:
        return ALLOW
    if data_class is DataClass.PERSONAL:
        # Never served to anyone, administrators included: only pseudonyms are stored anyway.
        return Decision(False, ErrorCode.FORBIDDEN, "personal data is never served")
    if not principal.authenticated:
        reason = principal.credential_error or f"{data_class.value} data needs credentials"
        return Decision(False, ErrorCode.UNAUTHENTICATED, reason)
    scope = row_scope(principal, data_class, agreements or {})
    if scope.everything:
        return ALLOW
    if operator_id is None:
        if not scope.nothing:
            return ALLOW
        return Decision(False, ErrorCode.FORBIDDEN, f"{data_class.value} data is not available to this caller")
    if scope.admits(operator_id, borough_code):
        return ALLOW
    return Decision(
        False, ErrorCode.FORBIDDEN, f"{data_class.value} data of this record is not shared with this caller"
    )


def needs_agreements(principal: Principal, data_class: DataClass) -> bool:
    """Whether deciding for `principal` on `data_class` depends on the operators' agreements (so
    the caller need not load them for anonymous callers, administrators and operators)."""
    return principal.role in SHARING_ROLES and data_class in SHAREABLE_CLASSES
