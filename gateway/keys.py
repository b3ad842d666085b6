"""Deterministic row keys: the operator id joined to the operator's own identifiers.

(operator, source id) is unique by construction, so upserts need no lookup of generated ids.
"""

from __future__ import annotations

SEP = "/"


def location_key(operator_id: str, location_id: str) -> str:
    """The stored id of an operator's location."""
    return f"{operator_id}{SEP}{location_id}"


def evse_key(location: str, evse_uid: str) -> str:
    """The stored id of an EVSE, under its location's stored id."""
    return f"{location}{SEP}{evse_uid}"


def connector_key(evse: str, connector_id: str) -> str:
    """The stored id of a connector, under its EVSE's stored id."""
    return f"{evse}{SEP}{connector_id}"


def record_key(operator_id: str, source_id: str) -> str:
    """The stored id of a session, CDR or tariff."""
    return f"{operator_id}{SEP}{source_id}"
