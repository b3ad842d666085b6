"""Authentication, the policy decision, and its enforcement by the `@protected` directive."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gateway.auth import ANONYMOUS, Principal, Role, authenticate
from gateway.errors import DESCRIPTIONS, ErrorCode, EvgateError
from gateway.policy import DataClass, Decision, allowed
from resolvers import context as context_module
from resolvers.context import RequestContext
from resolvers.permissions import PolicyExtension
from resolvers.schema import schema
from tests import seed

ADMIN = Principal(role=Role.ADMIN, subject="admin")
PARTNER = Principal(role=Role.PARTNER, subject="partner-1")

SESSIONS = """query($from: DateTime!, $to: DateTime!) {
  sessions(from: $from, to: $to) { edges { node { id kwh totalCostExclVat totalCostInclVat } } }
}"""
WINDOW = {"from": seed.NOW.isoformat(), "to": (seed.NOW + timedelta(hours=3)).isoformat()}


def test_every_error_code_is_documented() -> None:
    assert set(DESCRIPTIONS) == set(ErrorCode)
    assert all(code.description for code in ErrorCode)
    assert EvgateError("UPSTREAM_TLS", "x").code is ErrorCode.UPSTREAM_TLS


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ANONYMOUS),
        ("", ANONYMOUS),
        ("Bearer s3cret", ADMIN),
        ("bearer   s3cret  ", ADMIN),
        ("Bearer s3cret2", Principal(credential_error="the bearer token is not valid")),
        ("Bearer", Principal(credential_error="the Authorization header must be 'Bearer <token>'")),
        ("Token s3cret", Principal(credential_error="the Authorization header must be 'Bearer <token>'")),
    ],
)
def test_authenticate(header: str | None, expected: Principal) -> None:
    assert authenticate(header, "s3cret") == expected


def test_nobody_is_admin_without_a_configured_token() -> None:
    assert not authenticate("Bearer ", None).authenticated
    assert not authenticate("Bearer anything", None).authenticated
    assert not authenticate("Bearer anything", "").authenticated


@pytest.mark.parametrize(
    ("principal", "data_class", "code"),
    [
        (ANONYMOUS, DataClass.OPEN, None),
        (ANONYMOUS, DataClass.USAGE, ErrorCode.UNAUTHENTICATED),
        (ANONYMOUS, DataClass.COMMERCIAL, ErrorCode.UNAUTHENTICATED),
        (PARTNER, DataClass.OPEN, None),
        (PARTNER, DataClass.USAGE, ErrorCode.FORBIDDEN),
        (PARTNER, DataClass.COMMERCIAL, ErrorCode.FORBIDDEN),
        (ADMIN, DataClass.USAGE, None),
        (ADMIN, DataClass.COMMERCIAL, None),
        (ADMIN, DataClass.PERSONAL, ErrorCode.FORBIDDEN),
        (ANONYMOUS, DataClass.PERSONAL, ErrorCode.FORBIDDEN),
    ],
)
def test_policy(principal: Principal, data_class: DataClass, code: ErrorCode | None) -> None:
    decision = allowed(principal, data_class, "op-a")
    assert bool(decision) is (code is None)
    assert decision.code == code


def test_a_rejected_token_says_why() -> None:
    decision = allowed(Principal(credential_error="the bearer token is not valid"), DataClass.USAGE)
    assert decision.code is ErrorCode.UNAUTHENTICATED and "not valid" in decision.reason


def test_every_field_of_protected_types_and_every_edge_into_them_is_guarded() -> None:
    def classes(type_name: str, field_name: str) -> set[DataClass]:
        definition = schema.get_type_by_name(type_name)
        field = next(f for f in definition.fields if f.graphql_name == field_name or f.python_name == field_name)
        ext = [e for e in field.extensions if isinstance(e, PolicyExtension)]
        return set(ext[0].data_classes) if ext else set()

    for type_name in ("Session", "Cdr"):
        definition = schema.get_type_by_name(type_name)
        for field in definition.fields:
            assert DataClass.USAGE in classes(type_name, field.python_name), (type_name, field.python_name)
        assert classes(type_name, "total_cost_excl_vat") == {DataClass.USAGE, DataClass.COMMERCIAL}
    assert classes("Query", "sessions") == {DataClass.USAGE}
    assert classes("Query", "cdrs") == {DataClass.USAGE}
    assert classes("SessionEdge", "node") == {DataClass.USAGE}
    assert classes("Query", "locations") == set()
    assert classes("LocationEdge", "node") == set()  # generic Edge[T] fields are not shared
    assert classes("Location", "evses") == set()


async def test_a_non_admin_principal_is_forbidden_without_touching_the_database() -> None:
    # No `db` fixture: a refused field must not run its resolver at all.
    result = await schema.execute(SESSIONS, variable_values=WINDOW, context_value=RequestContext(principal=PARTNER))
    assert result.data == {"sessions": None}
    assert [e.extensions["code"] for e in result.errors] == ["FORBIDDEN"]


async def test_field_level_directive_nulls_only_the_commercial_fields(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller with USAGE but not COMMERCIAL access (the future borough officer) sees sessions
    without their cost: one error per refused field, the rest of the row intact."""
    await seed.operators("op-a")
    (loc,) = await seed.sites([seed.Site("op-a", "L1", *seed.CENTRE)])
    await seed.session("op-a", "S1", loc, seed.NOW, seed.NOW + timedelta(hours=1))
    await seed.session("op-a", "S2", loc, seed.NOW, seed.NOW + timedelta(hours=2))

    def usage_only(principal: Principal, data_class: DataClass, operator_id: str | None = None) -> Decision:
        if data_class is DataClass.USAGE:
            return Decision(True)
        return Decision(False, ErrorCode.FORBIDDEN, "no commercial access")

    monkeypatch.setattr(context_module, "allowed", usage_only)
    result = await schema.execute(SESSIONS, variable_values=WINDOW, context_value=RequestContext(principal=PARTNER))
    nodes = [edge["node"] for edge in result.data["sessions"]["edges"]]
    assert [n["id"] for n in nodes] == ["op-a/S1", "op-a/S2"]
    assert all(n["kwh"] == 12.5 and n["totalCostExclVat"] is None and n["totalCostInclVat"] is None for n in nodes)
    assert len(result.errors) == 4
    assert {e.extensions["code"] for e in result.errors} == {"FORBIDDEN"}
    assert sorted(tuple(e.path) for e in result.errors)[0] == ("sessions", "edges", 0, "node", "totalCostExclVat")
