"""The `@protected(dataClass: ...)` directive: access control declared in the schema, enforced once.

Types and fields say what class of data they are (`directives=protected(DataClass.USAGE)`); the
directive is printed in `schema.graphql`, so clients and reviewers see the policy. Enforcement is
not written in any resolver: when the schema is built, `protect_fields` (called from
`EvgateSchema.get_fields`, which strawberry calls for every object type) attaches a
`PolicyExtension` to every field that
- carries `@protected` itself,
- belongs to a type that carries it (every field of a protected type), or
- returns (a list of, a nullable) protected type, so that access is refused once at the edge
  rather than on every field of every row.
The extension asks `gateway.policy.allowed` (through `RequestContext.decide`, for the row's
operator and borough when the source is a row) and, when refused, raises an `EvgateError` with the
decision's code: the field is null and the error carries `extensions.code`. Every applicable data
class must be allowed (a COMMERCIAL cost field of a USAGE session needs both).

Rows are the other half of the same policy: a protected list resolver passes
`info.context.row_scope(data_class)` (`gateway.policy.row_scope`) to the catalogue, which requires
it and turns it into SQL, so that a row the caller may not see is absent, whatever the filter, and
`totalCount` agrees. A new protected list must do the same (tests/test_borough_scope.py fails
until its way into USAGE data is listed there).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import strawberry
from strawberry.extensions import FieldExtension
from strawberry.schema_directive import Location
from strawberry.types.base import StrawberryContainer, StrawberryObjectDefinition, has_object_definition
from strawberry.types.field import StrawberryField
from strawberry.types.lazy_type import LazyType

from gateway.errors import EvgateError
from gateway.policy import DataClass

if TYPE_CHECKING:
    from strawberry.extensions.field_extension import AsyncExtensionResolver, SyncExtensionResolver

DataClassEnum = strawberry.enum(
    DataClass,
    name="DataClass",
    description="How sensitive data is: OPEN (public), USAGE (sessions), COMMERCIAL (costs), PERSONAL (never "
    "served), OPERATIONS (sync health: administrators and the operator itself).",
)


@strawberry.schema_directive(
    name="protected",
    locations=[Location.FIELD_DEFINITION, Location.OBJECT],
    description="Reading this field, or any field of this type, needs access to the data class; "
    "when refused the value is null and the error says why (UNAUTHENTICATED or FORBIDDEN).",
)
class Protected:
    """The schema directive itself (a marker; `PolicyExtension` enforces it)."""

    data_class: DataClass


def protected(data_class: DataClass) -> list[object]:
    """The `directives=` value that marks a field or type as `data_class` data."""
    return [Protected(data_class=data_class)]


def _data_classes(directives: Iterable[object]) -> set[DataClass]:
    return {d.data_class for d in directives if isinstance(d, Protected) and d.data_class is not DataClass.OPEN}


def _returned_definition(field: StrawberryField) -> StrawberryObjectDefinition | None:
    """The object type a field returns, through lists, optionals and lazy references."""
    field_type: Any = field.type
    while True:
        if isinstance(field_type, StrawberryContainer):  # list, optional
            field_type = field_type.of_type
        elif isinstance(field_type, LazyType):
            field_type = field_type.resolve_type()
        else:
            break
    return field_type.__strawberry_definition__ if has_object_definition(field_type) else None


class PolicyExtension(FieldExtension):
    """Refuses a field unless the request's principal may read all of its data classes.

    On a row (a source with `operator_id`, and `borough_code` when it has one) the decision is
    for that row: a field of another operator's or another borough's row is refused. Above any row
    (a root field, an edge) it is whether the principal may read any data of the class at all; the
    rows it may not see are then absent, by the row scope the list resolver passes to the
    catalogue (`RequestContext.row_scope`). The operators' agreements, when the decision needs
    them, are read before the first check of the operation (a synchronous field then returns an
    awaitable, which the executor awaits).
    """

    def __init__(self, data_classes: Iterable[DataClass]) -> None:
        super().__init__()
        self.data_classes = tuple(sorted(set(data_classes)))

    def _check(self, source: Any, info: strawberry.Info) -> None:
        operator_id = getattr(source, "operator_id", None)
        borough_code = getattr(source, "borough_code", None)
        for data_class in self.data_classes:
            decision = info.context.decide(data_class, operator_id, borough_code)
            if not decision:
                raise EvgateError(decision.code, f"{info.field_name}: {decision.reason}")

    def resolve(self, next_: SyncExtensionResolver, source: Any, info: strawberry.Info, **kwargs: Any) -> Any:
        """Check, then resolve (synchronous fields)."""
        if info.context.needs_agreements(self.data_classes):
            return self._load_then_resolve(next_, source, info, kwargs)
        self._check(source, info)
        return next_(source, info, **kwargs)

    async def _load_then_resolve(
        self, next_: SyncExtensionResolver, source: Any, info: strawberry.Info, kwargs: dict[str, Any]
    ) -> Any:
        await info.context.load_agreements()
        self._check(source, info)
        result = next_(source, info, **kwargs)
        return await result if inspect.isawaitable(result) else result

    async def resolve_async(
        self, next_: AsyncExtensionResolver, source: Any, info: strawberry.Info, **kwargs: Any
    ) -> Any:
        """Check before the resolver runs, so a refused field never reads the database."""
        if info.context.needs_agreements(self.data_classes):
            await info.context.load_agreements()
        self._check(source, info)
        result = next_(source, info, **kwargs)
        # A subscription's resolver returns its async generator, which is not to be awaited.
        return await result if inspect.isawaitable(result) else result


def protect_fields(fields: list[StrawberryField], owner: StrawberryObjectDefinition) -> list[StrawberryField]:
    """Attach a PolicyExtension to each field that is protected (see the module docstring).

    Idempotent: building the schema twice does not stack checks.
    """
    if owner.is_input:
        return fields
    owner_classes = _data_classes(owner.directives or ())
    for field in fields:
        classes = owner_classes | _data_classes(field.directives)
        returned = _returned_definition(field)
        if returned is not None:
            classes |= _data_classes(returned.directives or ())
        if not classes:
            continue
        existing = next((e for e in field.extensions if isinstance(e, PolicyExtension)), None)
        if existing is not None:
            existing.data_classes = tuple(sorted(set(existing.data_classes) | classes))
        else:
            # First in the chain, so that no other extension runs for a refused field.
            field.extensions.insert(0, PolicyExtension(classes))
    return fields
