"""Authentication, the policy decision, and its enforcement by the `@protected` directive."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gateway import catalog
from gateway.auth import ANONYMOUS, Principal, Role
from gateway.cache import data_version
from gateway.config import OperatorConfig
from gateway.errors import DESCRIPTIONS, ErrorCode, EvgateError
from gateway.models import Operator
from gateway.policy import ALL_ROWS, DataClass, RowScope, allowed, parse_agreement, row_scope
from gateway.runtime import register_operator
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


# Authentication (credentials -> Principal) is tested in tests/test_identity.py.


BOROUGH = Principal(role=Role.BOROUGH, subject="camden", boroughs=frozenset({"E09000007"}))
OPERATOR = Principal(role=Role.OPERATOR, subject="op-a", operator_id="op-a")
AGREEMENTS = {
    "op-a": parse_agreement({"USAGE": ["borough", "partner"], "COMMERCIAL": ["partner"]}),
    "op-b": parse_agreement({}),
}


@pytest.mark.parametrize(
    ("principal", "data_class", "code"),
    [
        (ANONYMOUS, DataClass.OPEN, None),
        (ANONYMOUS, DataClass.USAGE, ErrorCode.UNAUTHENTICATED),
        (ANONYMOUS, DataClass.COMMERCIAL, ErrorCode.UNAUTHENTICATED),
        (ANONYMOUS, DataClass.OPERATIONS, ErrorCode.UNAUTHENTICATED),
        (PARTNER, DataClass.OPEN, None),
        (PARTNER, DataClass.USAGE, ErrorCode.FORBIDDEN),  # no agreements given: nothing shared
        (PARTNER, DataClass.COMMERCIAL, ErrorCode.FORBIDDEN),
        (ADMIN, DataClass.USAGE, None),
        (ADMIN, DataClass.COMMERCIAL, None),
        (ADMIN, DataClass.OPERATIONS, None),
        (ADMIN, DataClass.PERSONAL, ErrorCode.FORBIDDEN),
        (ANONYMOUS, DataClass.PERSONAL, ErrorCode.FORBIDDEN),
        (OPERATOR, DataClass.PERSONAL, ErrorCode.FORBIDDEN),
    ],
)
def test_policy(principal: Principal, data_class: DataClass, code: ErrorCode | None) -> None:
    decision = allowed(principal, data_class, "op-a")
    assert bool(decision) is (code is None)
    assert decision.code == code


@pytest.mark.parametrize(
    ("principal", "data_class", "operator_id", "borough", "ok"),
    [
        # Operators: all of their own data, nothing of others'.
        (OPERATOR, DataClass.USAGE, "op-a", "E09000019", True),
        (OPERATOR, DataClass.COMMERCIAL, "op-a", None, True),
        (OPERATOR, DataClass.OPERATIONS, "op-a", None, True),
        (OPERATOR, DataClass.USAGE, "op-b", "E09000007", False),
        (OPERATOR, DataClass.OPERATIONS, "op-b", None, False),
        (OPERATOR, DataClass.OPERATIONS, None, None, True),  # may see some (its own) rows
        # Partners: what each agreement grants partners.
        (PARTNER, DataClass.USAGE, "op-a", "E09000019", True),
        (PARTNER, DataClass.COMMERCIAL, "op-a", None, True),
        (PARTNER, DataClass.USAGE, "op-b", "E09000007", False),
        (PARTNER, DataClass.OPERATIONS, None, None, False),
        (PARTNER, DataClass.USAGE, None, None, True),
        # Boroughs: what agreements grant boroughs, and only in their own boroughs.
        (BOROUGH, DataClass.USAGE, "op-a", "E09000007", True),
        (BOROUGH, DataClass.USAGE, "op-a", "E09000019", False),
        (BOROUGH, DataClass.USAGE, "op-a", None, False),
        (BOROUGH, DataClass.COMMERCIAL, "op-a", "E09000007", False),
        (BOROUGH, DataClass.USAGE, "op-b", "E09000007", False),
        (BOROUGH, DataClass.COMMERCIAL, None, None, False),
        (BOROUGH, DataClass.OPERATIONS, None, None, False),
        (ADMIN, DataClass.COMMERCIAL, "op-b", None, True),
    ],
)
def test_policy_with_agreements(
    principal: Principal, data_class: DataClass, operator_id: str | None, borough: str | None, ok: bool
) -> None:
    decision = allowed(principal, data_class, operator_id, borough, AGREEMENTS)
    assert bool(decision) is ok
    assert decision.code == (None if ok else ErrorCode.FORBIDDEN)
    scope = row_scope(principal, data_class, AGREEMENTS)
    if operator_id is not None:
        assert scope.admits(operator_id, borough) is ok  # rows and fields agree
    else:
        assert scope.nothing is not ok


def test_row_scopes() -> None:
    assert row_scope(ADMIN, DataClass.USAGE, AGREEMENTS) == ALL_ROWS
    assert row_scope(ANONYMOUS, DataClass.USAGE, AGREEMENTS).nothing
    assert row_scope(ADMIN, DataClass.PERSONAL, AGREEMENTS).nothing
    assert row_scope(ANONYMOUS, DataClass.OPEN, AGREEMENTS) == ALL_ROWS
    assert row_scope(OPERATOR, DataClass.USAGE, AGREEMENTS) == RowScope(operator_ids=frozenset({"op-a"}))
    assert row_scope(PARTNER, DataClass.COMMERCIAL, AGREEMENTS) == RowScope(operator_ids=frozenset({"op-a"}))
    assert row_scope(BOROUGH, DataClass.USAGE, AGREEMENTS) == RowScope(
        operator_ids=frozenset({"op-a"}), borough_codes=frozenset({"E09000007"})
    )
    assert row_scope(BOROUGH, DataClass.COMMERCIAL, AGREEMENTS).nothing
    # An operator principal that names no operator, a borough with no boroughs: nothing.
    assert row_scope(Principal(role=Role.OPERATOR, subject="x"), DataClass.USAGE, AGREEMENTS).nothing
    assert row_scope(Principal(role=Role.BOROUGH, subject="x"), DataClass.USAGE, AGREEMENTS).nothing
    # No agreements at all (the default): nothing shared with partners or boroughs.
    assert row_scope(PARTNER, DataClass.USAGE, {}).nothing


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"PERSONAL": ["partner"]}, "can share only"),
        ({"OPERATIONS": ["partner"]}, "can share only"),
        ({"USAGE": ["operator"]}, "can be granted only"),
        ({"USAGE": ["admin"]}, "can be granted only"),
        ({"USAGE": "partner"}, "must be a list"),
    ],
)
def test_agreements_are_validated(raw: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_agreement(raw)
    with pytest.raises(ValueError, match=error):
        OperatorConfig.from_dict({"id": "op-x", "name": "X", "url": "https://x.test", "agreement": raw})


def test_agreement_in_configuration() -> None:
    default = OperatorConfig(id="op-x", name="X", url="https://x.test")
    assert default.agreement == {}
    op = OperatorConfig.from_dict(
        {
            "id": "op-x",
            "name": "X",
            "url": "https://x.test",
            "agreement": {"USAGE": ["partner", "borough"], "COMMERCIAL": ["partner"]},
        }
    )
    assert op.agreement == {"COMMERCIAL": ["partner"], "USAGE": ["borough", "partner"]}


async def test_register_operator_stores_the_agreement(db: Any) -> None:
    op = OperatorConfig(id="op-x", name="X", url="https://x.test", agreement={"USAGE": ["borough"]})
    version = data_version()
    await register_operator(op)
    assert data_version() > version  # responses cached under the old agreement are not served
    agreements = await catalog.sharing_agreements()
    assert agreements["op-x"].grants_to(Role.BOROUGH, DataClass.USAGE)
    assert not agreements["op-x"].grants_to(Role.PARTNER, DataClass.USAGE)
    # A stored agreement edited into something invalid shares nothing (fails closed).
    await Operator.filter(id="op-x").update(agreement={"USAGE": ["everyone"]})
    assert (await catalog.sharing_agreements()) == {}


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


@pytest.mark.parametrize(
    ("principal", "code"),
    [(ANONYMOUS, "UNAUTHENTICATED"), (Principal(role=Role.OPERATOR, subject="no-operator"), "FORBIDDEN")],
)
async def test_a_refused_principal_is_refused_without_touching_the_database(principal: Principal, code: str) -> None:
    # No `db` fixture: a refused field must not run its resolver at all, and callers whose
    # decision does not depend on agreements do not read them.
    result = await schema.execute(SESSIONS, variable_values=WINDOW, context_value=RequestContext(principal=principal))
    assert result.data == {"sessions": None}
    assert [e.extensions["code"] for e in result.errors] == [code]


async def test_a_partner_without_any_agreement_is_forbidden(db: Any) -> None:
    await seed.operators("op-a")
    result = await schema.execute(SESSIONS, variable_values=WINDOW, context_value=RequestContext(principal=PARTNER))
    assert result.data == {"sessions": None}
    assert [e.extensions["code"] for e in result.errors] == ["FORBIDDEN"]


async def test_field_level_directive_nulls_only_the_commercial_fields(db: Any) -> None:
    """A caller with USAGE but not COMMERCIAL access (a partner whose agreement shares only usage)
    sees sessions without their cost: one error per refused field, the rest of the row intact."""
    await seed.operators("op-a")
    await Operator.filter(id="op-a").update(agreement={"USAGE": ["partner"]})
    (loc,) = await seed.sites([seed.Site("op-a", "L1", *seed.CENTRE)])
    await seed.session("op-a", "S1", loc, seed.NOW, seed.NOW + timedelta(hours=1))
    await seed.session("op-a", "S2", loc, seed.NOW, seed.NOW + timedelta(hours=2))

    result = await schema.execute(SESSIONS, variable_values=WINDOW, context_value=RequestContext(principal=PARTNER))
    nodes = [edge["node"] for edge in result.data["sessions"]["edges"]]
    assert [n["id"] for n in nodes] == ["op-a/S1", "op-a/S2"]
    assert all(n["kwh"] == 12.5 and n["totalCostExclVat"] is None and n["totalCostInclVat"] is None for n in nodes)
    assert len(result.errors) == 4
    assert {e.extensions["code"] for e in result.errors} == {"FORBIDDEN"}
    assert sorted(tuple(e.path) for e in result.errors)[0] == ("sessions", "edges", 0, "node", "totalCostExclVat")


async def test_agreements_are_read_once_per_operation(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    await seed.operators("op-a")
    await Operator.filter(id="op-a").update(agreement={"USAGE": ["partner"]})
    reads = 0
    original = catalog.sharing_agreements

    async def counted() -> Any:
        nonlocal reads
        reads += 1
        return await original()

    monkeypatch.setattr(catalog, "sharing_agreements", counted)
    query = """query($from: DateTime!, $to: DateTime!) {
      a: sessions(from: $from, to: $to) { totalCount edges { node { id } } }
      b: cdrs(from: $from, to: $to) { totalCount edges { node { id } } }
    }"""
    context = RequestContext(principal=PARTNER)
    result = await schema.execute(query, variable_values=WINDOW, context_value=context)
    assert result.errors is None and reads == 1
    await schema.execute(query, variable_values=WINDOW, context_value=context)  # a new operation reads again
    assert reads == 2
