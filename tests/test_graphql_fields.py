"""What each field costs the executor: open fields run on strawberry's fast path (no field extension,
no per-field middleware); only protected fields carry the policy check."""

from __future__ import annotations

from strawberry.extensions import SchemaExtension

from resolvers.permissions import PolicyExtension
from resolvers.schema import schema

# Every object type of the open read path (a 100-location page completes thousands of their fields).
OPEN_TYPES = (
    "Query",
    "LocationConnection",
    "LocationEdge",
    "TariffConnection",
    "TariffEdge",
    "PageInfo",
    "Location",
    "Evse",
    "Connector",
    "Tariff",
    "Provenance",
    "Coordinates",
    "Borough",
    "Operator",
)
PROTECTED_ROOT_FIELDS = {"sessions", "cdrs", "sync_health", "quarantined_records"}


def test_open_fields_have_no_field_extensions() -> None:
    for type_name in OPEN_TYPES:
        definition = schema.get_type_by_name(type_name)
        assert definition is not None, type_name
        for field in definition.fields:
            if type_name == "Query" and field.python_name in PROTECTED_ROOT_FIELDS:
                assert [type(e) for e in field.extensions] == [PolicyExtension]
                continue
            assert field.extensions == [], (type_name, field.python_name, field.extensions)
            if field.base_resolver is None:
                # Resolved by attribute, without building an Info or running extensions.
                assert field.is_basic_field, (type_name, field.python_name)


def test_no_schema_extension_wraps_every_field() -> None:
    # A schema extension that implements `resolve` becomes middleware around every field.
    wrapping = [type(e).__name__ for e in schema.get_extensions() if type(e).resolve is not SchemaExtension.resolve]
    assert wrapping == []


def test_validation_rules_are_the_same_classes_for_every_request() -> None:
    # ValidationCache keys on the rule classes: new classes per request would defeat it.
    def rules() -> list[type]:
        return [rule for ext in schema.get_extensions() for rule in getattr(ext, "validation_rules", ())]

    first, second = rules(), rules()
    assert len(first) == 2 and first == second
