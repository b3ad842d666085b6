"""The cost limit: an estimate of how many field values a query asks for, refused above `MAX_COST`.

Depth, aliases and tokens bound the *document*; the cost bounds the *answer*. A field costs the
number of times it is resolved: the product of the sizes of the lists above it. A list's size is
- for a paged field (one with a `first` argument, a connection), `first` as sent (a literal or a
  variable), its default (`DEFAULT_PAGE_SIZE`) when absent, capped at `MAX_PAGE_SIZE`; it applies
  to the connection's `edges`, not to `totalCount` or `pageInfo`;
- for an unpaged list of objects (a location's EVSEs, an EVSE's connectors, their tariffs),
  an estimate: `LIST_SIZES` for the lists we know, else `UNPAGED_LIST_SIZE`.
Lists of scalars (`facilities`) count once per parent. Fragments and inline fragments are counted
where they are spread, `@skip`/`@include` are ignored (the estimate assumes the worst), and
introspection fields count 1 each whatever they select (bounded by the size of the schema).

The check runs at execution time (`CostLimit.on_execute`), after validation, because validation
does not see variable values and a `first: $first` must be counted at its value; validation results
are cached per document, so a variable-dependent answer could not be a validation rule anyway.
An unusable `first` (not an integer) counts as the cap: execution refuses it anyway.
A query over the limit is refused with QUERY_TOO_COMPLEX, its cost and the limit, before any
resolver runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_operation_ast,
)
from strawberry.extensions import SchemaExtension

from gateway.catalog import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from gateway.errors import ErrorCode

# A page of 100 locations with every scalar field of the locations, their EVSEs and connectors, and
# the connectors' tariff ids, costs about 69 000; the same with every tariff field about 165 000.
# The limit takes the first and refuses the second (at `first: 50` it runs), and anything that
# repeats such subtrees through aliases or fragments.
MAX_COST = 100_000
UNPAGED_LIST_SIZE = 10
# Estimates for unpaged lists whose real sizes are known to be small (London data: a site has a
# few EVSEs, an EVSE one to three connectors, a connector one or two tariffs).
LIST_SIZES: dict[tuple[str, str], int] = {
    ("Location", "evses"): 10,
    ("Evse", "connectors"): 3,
    ("Connector", "tariffs"): 2,
    ("Cdr", "tariffs"): 2,
    ("Session", "tariffs"): 2,
    ("PartnerEventPage", "events"): 1000,  # partnerEvents(limit:), at most 1000
}

_Parent = GraphQLObjectType | GraphQLInterfaceType


def _is_list(field: GraphQLField) -> bool:
    type_ = field.type
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


def _page_size(
    field_node: FieldNode, field: GraphQLField, variables: Mapping[str, Any], defaults: Mapping[str, Any]
) -> int:
    """The `first` of a paged field as this request will run it, clamped to [1, MAX_PAGE_SIZE]."""
    value: Any = None
    node = next((a.value for a in field_node.arguments or () if a.name.value == "first"), None)
    if node is None:
        argument = field.args["first"]
        value = argument.default_value if isinstance(argument.default_value, int) else DEFAULT_PAGE_SIZE
    elif isinstance(node, IntValueNode):
        value = int(node.value)
    elif isinstance(node, VariableNode):
        name = node.name.value
        value = variables[name] if name in variables else defaults.get(name, DEFAULT_PAGE_SIZE)
    if not isinstance(value, int) or isinstance(value, bool):
        return MAX_PAGE_SIZE
    return min(max(value, 1), MAX_PAGE_SIZE)


class _Estimator:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode, variables: Mapping[str, Any]) -> None:
        self.schema = schema
        self.variables = variables
        self.defaults: dict[str, Any] = {}
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}

    def selections(
        self, selection_set: SelectionSetNode, parent: _Parent, seen: frozenset[str]
    ) -> Iterator[tuple[FieldNode, _Parent]]:
        """The fields of a selection set with the type each is selected on, fragments expanded."""
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection, parent
                continue
            if isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue
                condition, inner, seen = fragment.type_condition, fragment.selection_set, seen | {name}
            elif isinstance(selection, InlineFragmentNode):
                condition, inner = selection.type_condition, selection.selection_set
            else:  # pragma: no cover - no other selection kinds exist
                continue
            type_ = self.schema.get_type(condition.name.value) if condition is not None else parent
            if isinstance(type_, GraphQLObjectType | GraphQLInterfaceType):
                yield from self.selections(inner, type_, seen)

    def cost(
        self,
        selection_set: SelectionSetNode,
        parent: _Parent,
        times: int,
        page: int | None,
        seen: frozenset[str] = frozenset(),
    ) -> int:
        """The cost of a selection set resolved `times` times; `page` is the size of the page its
        list field holds (under a connection), else None."""
        total = 0
        for node, on in self.selections(selection_set, parent, seen):
            name = node.name.value
            total += times
            if name.startswith("__") or node.selection_set is None:
                continue
            field = on.fields.get(name)
            if field is None:
                continue  # validation refused it already
            child = get_named_type(field.type)
            if not isinstance(child, GraphQLObjectType | GraphQLInterfaceType):
                continue
            if "first" in field.args:
                size = _page_size(node, field, self.variables, self.defaults)
                total += self.cost(node.selection_set, child, times, size)
            elif _is_list(field):
                size = page if page is not None else LIST_SIZES.get((on.name, name), UNPAGED_LIST_SIZE)
                total += self.cost(node.selection_set, child, times * size, None)
            else:
                total += self.cost(node.selection_set, child, times, None)
        return total


def estimate_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
) -> int:
    """The cost of the operation the request runs (0 when it cannot be told: execution refuses it)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    estimator = _Estimator(schema, document, variables or {})
    for definition in operation.variable_definitions or ():
        if isinstance(definition.default_value, IntValueNode):
            estimator.defaults[definition.variable.name.value] = int(definition.default_value.value)
    return estimator.cost(operation.selection_set, root, 1, None)


def too_complex(cost: int, limit: int = MAX_COST) -> GraphQLError:
    """The QUERY_TOO_COMPLEX error for a query of `cost`."""
    return GraphQLError(
        f"Query cost {cost} exceeds the limit of {limit}: ask for smaller pages (first) or fewer nested fields.",
        extensions={"code": ErrorCode.QUERY_TOO_COMPLEX.value, "cost": cost, "maxCost": limit},
    )


class CostLimit(SchemaExtension):
    """Refuse an operation whose estimated cost is over `MAX_COST`, before any resolver runs."""

    max_cost = MAX_COST

    def on_execute(self) -> Iterator[None]:
        """Estimate with this request's variables; an answer set here replaces execution."""
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.result is None:
            variables = context.variables if isinstance(context.variables, dict) else {}
            cost = estimate_cost(context.schema._schema, document, variables, context.operation_name)
            if cost > self.max_cost:
                context.result = ExecutionResult(data=None, errors=[too_complex(cost, self.max_cost)])
        yield
