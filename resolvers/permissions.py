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
The extension asks `gateway.policy.allowed` and, when refused, raises an `EvgateError` with the
decision's code: the field is null and the error carries `extensions.code`. Every applicable data
class must be allowed (a COMMERCIAL cost field of a USAGE session needs both).
"""

from __future__ import annotations

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
    description="How sensitive data is: OPEN (public), USAGE (sessions), COMMERCIAL (costs), PERSONAL (never served).",
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
    """Refuses a field unless the request's principal may read all of its data classes."""

    def __init__(self, data_classes: Iterable[DataClass]) -> None:
        super().__init__()
        self.data_classes = tuple(sorted(set(data_classes)))

    def _check(self, source: Any, info: strawberry.Info) -> None:
        # The row's operator lets the full access model apply each operator's data-sharing
        # agreement; top-level fields have no row yet.
        operator_id = getattr(source, "operator_id", None)
        for data_class in self.data_classes:
            decision = info.context.decide(data_class, operator_id)
            if not decision:
                raise EvgateError(decision.code, f"{info.field_name}: {decision.reason}")

    def resolve(self, next_: SyncExtensionResolver, source: Any, info: strawberry.Info, **kwargs: Any) -> Any:
        """Check, then resolve (synchronous fields)."""
        self._check(source, info)
        return next_(source, info, **kwargs)

    async def resolve_async(
        self, next_: AsyncExtensionResolver, source: Any, info: strawberry.Info, **kwargs: Any
    ) -> Any:
        """Check before the resolver runs, so a refused field never reads the database."""
        self._check(source, info)
        return await next_(source, info, **kwargs)


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
