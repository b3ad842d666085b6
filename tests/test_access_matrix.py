"""Every role against every protected field, generated from the schema.

`TARGETS` is computed from the served schema: every field that carries `@protected` itself, belongs
to a type that carries it, or returns such a type, with the shortest path from the Query root to it.
A new protected field therefore gets its cases without anyone writing them, and
`test_the_matrix_covers_every_protected_field` checks the list against an independent reading of
the committed `schema.graphql`.

For each role (tests/access.py: anonymous, admin, an operator, a partner, a Camden officer) and
each target, a query reaching it is sent through the real app in five forms: the plain nested
path, through a named fragment, through an inline fragment, with every step aliased, and with the
arguments passed as variables. The response is checked against what the role may see, written by
hand in `tests.access.VISIBLE` (not computed by `gateway.policy`): rows it may not see are absent
(and not counted by totalCount), a field it may not read is null with an error coded FORBIDDEN at
exactly that path, and anonymous callers get UNAUTHENTICATED; no other error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from graphql import (
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
    get_named_type,
    is_non_null_type,
    is_object_type,
    is_required_argument,
)

from gateway.policy import DataClass
from resolvers.export import SCHEMA_PATH
from resolvers.permissions import PolicyExtension
from resolvers.schema import schema
from tests import access
from tests.access import VISIBLE, WINDOW, Row, World

Field = tuple[str, str]  # (type name, field name) in GraphQL spelling

# Values for the arguments a path must pass (required ones): by argument name.
ARGUMENT_VALUES: dict[str, Any] = {"from": WINDOW["from"], "to": WINDOW["to"]}
VARIANTS = ("plain", "named_fragment", "inline_fragment", "aliases", "variables")


# ---------------------------------------------------------------------------------------------
# What the schema protects
# ---------------------------------------------------------------------------------------------


def enforced_protection(core: GraphQLSchema) -> dict[Field, frozenset[DataClass]]:
    """The data classes the PolicyExtension of each field checks (the enforcement, as built)."""
    out: dict[Field, frozenset[DataClass]] = {}
    for type_name, graphql_type in core.type_map.items():
        if type_name.startswith("__") or not isinstance(graphql_type, GraphQLObjectType):
            continue
        for field_name, field in graphql_type.fields.items():
            definition = field.extensions.get("strawberry-definition")
            extensions = [e for e in getattr(definition, "extensions", ()) if isinstance(e, PolicyExtension)]
            if extensions:
                out[(type_name, field_name)] = frozenset(extensions[0].data_classes)
    return out


def declared_protection(sdl: str) -> dict[Field, frozenset[DataClass]]:
    """The data classes each field needs according to the SDL's `@protected` directives: its own,
    its type's, and those of the type it returns (independent of the code that enforces them)."""
    core = build_schema(sdl)

    def directive_classes(node: Any) -> set[DataClass]:
        found = set()
        for directive in getattr(node, "directives", None) or ():
            if directive.name.value == "protected":
                (argument,) = directive.arguments
                found.add(DataClass(argument.value.value))
        return found - {DataClass.OPEN}

    out: dict[Field, frozenset[DataClass]] = {}
    for type_name, graphql_type in core.type_map.items():
        if type_name.startswith("__") or not isinstance(graphql_type, GraphQLObjectType):
            continue
        owner = directive_classes(graphql_type.ast_node)
        for field_name, field in graphql_type.fields.items():
            returned = get_named_type(field.type)
            classes = owner | directive_classes(field.ast_node)
            if is_object_type(returned):
                classes |= directive_classes(returned.ast_node)
            if classes:
                out[(type_name, field_name)] = frozenset(classes)
    return out


def shortest_paths(core: GraphQLSchema) -> dict[str, list[Field]]:
    """For each object type reachable from Query, the fields leading to it (breadth first)."""
    assert core.query_type is not None
    paths: dict[str, list[Field]] = {core.query_type.name: []}
    queue = [core.query_type]
    while queue:
        current = queue.pop(0)
        for field_name, field in current.fields.items():
            returned = get_named_type(field.type)
            if is_object_type(returned) and returned.name not in paths:
                paths[returned.name] = [*paths[current.name], (current.name, field_name)]
                queue.append(returned)
    return paths


CORE = schema._schema
PROTECTED = enforced_protection(CORE)
# Types whose every field is protected: their instances are the rows (they carry the operator).
ROW_TYPES = {
    name
    for name, t in CORE.type_map.items()
    if isinstance(t, GraphQLObjectType) and not name.startswith("__") and all((name, f) in PROTECTED for f in t.fields)
}
_PATHS = shortest_paths(CORE)
# Live streams: the Subscription root and the types only it returns cannot be reached by a query;
# tests/test_subscriptions.py covers them (anonymous refused, rows outside the scope never sent).
STREAMED = {field for field in PROTECTED if field[0] not in _PATHS}
TARGETS: dict[Field, list[Field]] = {
    field: [*_PATHS[field[0]], field] for field in sorted(PROTECTED) if field not in STREAMED
}


def test_the_matrix_covers_every_protected_field() -> None:
    declared = declared_protection(SCHEMA_PATH.read_text(encoding="utf-8"))
    # The directive as printed for clients, and the checks as enforced, agree field by field...
    assert declared == PROTECTED
    # ...and every protected field has a path from the root, so the matrix below reaches it.
    assert set(TARGETS) == set(declared) - STREAMED
    assert {field[0] for field in STREAMED} == {"Subscription", "SessionEvent"}
    for field, path in TARGETS.items():
        assert path[0][0] == "Query" and path[-1] == field
    # A few we know about (the list is generated: it only ever grows with the schema).
    assert {("Query", "sessions"), ("Query", "cdrs"), ("Query", "syncHealth"), ("Query", "quarantinedRecords")} <= set(
        TARGETS
    )
    assert PROTECTED[("Session", "totalCostExclVat")] == {DataClass.USAGE, DataClass.COMMERCIAL}
    assert PROTECTED[("Cdr", "location")] == {DataClass.USAGE}
    assert {"Session", "Cdr", "ModuleSyncHealth", "QuarantinedRecord"} <= ROW_TYPES


# ---------------------------------------------------------------------------------------------
# Queries reaching a field
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One document reaching a target, with its variables and the response keys of its path."""

    text: str
    variables: dict[str, Any]
    keys: list[str]


def _literal(value: Any) -> str:
    return "null" if value is None else orjson.dumps(value).decode()


def build_query(path: list[Field], variant: str) -> Query:
    """A query reaching the last field of `path` from the root, in the form `variant` names."""
    definitions: list[str] = []
    variables: dict[str, Any] = {}
    keys: list[str] = []
    opening: list[str] = []
    for i, (type_name, field_name) in enumerate(path):
        field: GraphQLField = CORE.type_map[type_name].fields[field_name]  # type: ignore[union-attr]
        arguments = []
        for arg_name, arg in field.args.items():
            required = is_required_argument(arg)
            if required and arg_name not in ARGUMENT_VALUES:
                raise AssertionError(f"{type_name}.{field_name}: add a test value for argument {arg_name!r}")
            # Required arguments always; with variables, the nullable optional ones too (as null).
            if not required and (variant != "variables" or is_non_null_type(arg.type)):
                continue
            value = ARGUMENT_VALUES[arg_name] if required else None
            if variant == "variables":
                name = f"v{i}_{arg_name}"
                definitions.append(f"${name}: {arg.type}")
                variables[name] = value
                arguments.append(f"{arg_name}: ${name}")
            else:
                arguments.append(f"{arg_name}: {_literal(value)}")
        key = f"a{i}" if variant == "aliases" else field_name
        keys.append(key)
        head = f"{key}: {field_name}" if variant == "aliases" else field_name
        opening.append(head + (f"({', '.join(arguments)})" if arguments else ""))

    target_type, target_field = path[-1]
    returned = get_named_type(CORE.type_map[target_type].fields[target_field].type)  # type: ignore[union-attr]
    leaf = ""
    if is_object_type(returned):
        leaf = " { totalCount }" if "totalCount" in returned.fields else " { __typename }"
    innermost = opening[-1] + leaf
    fragments = ""
    if variant == "named_fragment":
        fragments = f"\nfragment Target on {target_type} {{ {innermost} }}"
        innermost = "...Target"
    elif variant == "inline_fragment":
        innermost = f"... on {target_type} {{ {innermost} }}"
    body = innermost
    for head in reversed(opening[:-1]):
        body = f"{head} {{ {body} }}"
    header = f"query Matrix({', '.join(definitions)})" if definitions else "query Matrix"
    return Query(f"{header} {{ {body} }}{fragments}", variables, keys)


def test_queries_are_built_for_every_variant() -> None:
    path = TARGETS[("Session", "totalCostExclVat")]
    assert [build_query(path, "plain").text] == [
        f"query Matrix {{ sessions(from: {_literal(WINDOW['from'])}, to: {_literal(WINDOW['to'])}) "
        "{ edges { node { totalCostExclVat } } } }"
    ]
    aliased = build_query(path, "aliases")
    assert aliased.keys == ["a0", "a1", "a2", "a3"] and "a3: totalCostExclVat" in aliased.text
    with_variables = build_query(path, "variables")
    assert with_variables.variables["v0_from"] == WINDOW["from"] and "$v0_to: DateTime!" in with_variables.text
    assert "fragment Target on Session { totalCostExclVat }" in build_query(path, "named_fragment").text
    assert "... on Session { totalCostExclVat }" in build_query(path, "inline_fragment").text


# ---------------------------------------------------------------------------------------------
# What a role should get
# ---------------------------------------------------------------------------------------------


def root_rows(world: World, root_field: str) -> tuple[list[Row], DataClass]:
    """The seeded rows a protected root list serves, and the data class that scopes them."""
    return {
        "sessions": (world.sessions, DataClass.USAGE),
        "cdrs": (world.cdrs, DataClass.USAGE),
        "syncHealth": (world.sync_states, DataClass.OPERATIONS),
        "quarantinedRecords": (world.quarantined, DataClass.OPERATIONS),
    }[root_field]


def _visible(role: str, data_class: DataClass, row: Row) -> bool:
    return (row.operator_id, row.borough_code) in VISIBLE[role][data_class]


def expected_refusal(role: str, classes: frozenset[DataClass], row: Row | None) -> str | None:
    """The error code a field of these classes gets (on `row`, or above any row), or None."""
    if not classes:
        return None
    if role == "anonymous":
        return "UNAUTHENTICATED"
    for data_class in classes:
        if data_class is DataClass.PERSONAL:
            return "FORBIDDEN"
        if row is None and not VISIBLE[role][data_class]:
            return "FORBIDDEN"
        if row is not None and not _visible(role, data_class, row):
            return "FORBIDDEN"
    return None


def check_response(role: str, world: World, path: list[Field], query: Query, body: dict[str, Any]) -> list[str]:
    """What is wrong with `body` for `role` (empty: as the policy says)."""
    problems: list[str] = []
    expected_errors: set[tuple[tuple[Any, ...], str]] = set()
    root_field = path[0][1]
    rows, row_class = root_rows(world, root_field)
    visible_rows = [r for r in rows if _visible(role, row_class, r)] if role != "anonymous" else []

    def walk(parent: Any, i: int, response_path: tuple[Any, ...], row: Row | None, in_rows: bool) -> None:
        type_name = path[i][0]
        key = query.keys[i]
        here = (*response_path, key)
        if not isinstance(parent, dict) or key not in parent:
            problems.append(f"{'.'.join(map(str, here))} missing from the response")
            return
        value = parent[key]
        source_row = row if type_name in ROW_TYPES else None
        code = expected_refusal(role, PROTECTED.get(path[i], frozenset()), source_row)
        if code is not None:
            expected_errors.add((here, code))
            if value is not None:
                problems.append(f"{'.'.join(map(str, here))} should be null ({code}), got {value!r}")
            return
        if i == len(path) - 1:
            if DataClass.COMMERCIAL in PROTECTED.get(path[i], ()) and value is None:
                problems.append(f"{'.'.join(map(str, here))} should have its value")
            if isinstance(value, dict) and "totalCount" in value and i == 0:
                if value["totalCount"] != len(visible_rows):
                    problems.append(f"{key}.totalCount is {value['totalCount']}, expected {len(visible_rows)}")
            return
        if value is None:
            problems.append(f"{'.'.join(map(str, here))} is null without an error")
            return
        if isinstance(value, list):
            if not in_rows:  # the first list of the path lists the rows: only the visible ones
                if len(value) != len(visible_rows):
                    problems.append(f"{'.'.join(map(str, here))} lists {len(value)} rows, expected {len(visible_rows)}")
                    return
                for j, item in enumerate(value):
                    walk_into(item, i, (*here, j), visible_rows[j], True)
            else:
                for j, item in enumerate(value):
                    walk_into(item, i, (*here, j), row, True)
        else:
            walk_into(value, i, here, row, in_rows)

    def walk_into(value: Any, i: int, here: tuple[Any, ...], row: Row | None, in_rows: bool) -> None:
        walk(value, i + 1, here, row, in_rows)

    walk(body.get("data") or {}, 0, (), None, False)
    actual_errors = {
        (tuple(e.get("path") or ()), (e.get("extensions") or {}).get("code")) for e in body.get("errors", [])
    }
    if actual_errors != expected_errors:
        problems.append(
            f"errors {sorted(actual_errors, key=str)} != expected {sorted(expected_errors, key=str)}"
            f" ({[e.get('message') for e in body.get('errors', [])][:3]})"
        )
    return problems


# ---------------------------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def post(db: Any) -> AsyncIterator[access.Post]:
    async for poster in access.client_for(access.config_for(db.url)):
        yield poster


@pytest.mark.parametrize("role", sorted(access.PRINCIPALS))
async def test_every_role_against_every_protected_field(role: str, post: access.Post) -> None:
    world = await access.seed_world()
    principal = access.PRINCIPALS[role]
    problems: list[str] = []
    for field, path in TARGETS.items():
        for variant in VARIANTS:
            query = build_query(path, variant)
            body = await post(query.text, query.variables, principal)
            for problem in check_response(role, world, path, query, body):
                problems.append(f"{role} {'.'.join(field)} [{variant}]: {problem}")
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} problems)"


async def test_the_matrix_sees_rows_and_refusals(post: access.Post) -> None:
    """The checker itself: a partner's sessions are op-a's and op-b's, with op-b's costs refused."""
    world = await access.seed_world()
    path = TARGETS[("Session", "totalCostExclVat")]
    query = build_query(path, "plain")
    body = await post(query.text, query.variables, access.PARTNER)
    costs = [edge["node"]["totalCostExclVat"] for edge in body["data"]["sessions"]["edges"]]
    assert costs == [5.63, 5.63, 5.63, None, None]
    assert check_response("partner", world, path, query, body) == []
    # A body that leaked op-c's rows would be caught.
    leaked = {"data": {"sessions": {"edges": [*body["data"]["sessions"]["edges"], {"node": {"totalCostExclVat": 1}}]}}}
    assert check_response("partner", world, path, query, leaked)
