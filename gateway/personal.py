"""PERSONAL data in operator records: which fields identify a driver, and how they are removed.

The gateway keeps a driver's token only as a keyed pseudonym (`gateway.pseudonym`). Records kept
raw (quarantined ones) pass through `redact` before they are stored, so no token identifier is
at rest or served anywhere, administrators included.
"""

from __future__ import annotations

from typing import Any

# Containers whose every value identifies a driver (OCPI cdr_token / 2.1.1 auth_id, OICP
# Identification), and single fields that do.
PERSONAL_CONTAINERS = frozenset({"cdr_token", "Identification", "token"})
PERSONAL_FIELDS = frozenset({"auth_id", "authorization_reference", "contract_id", "visual_number"})
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    """A copy of a JSON value with driver-identifying fields replaced by "[redacted]"."""
    if isinstance(value, list):
        return [redact(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in PERSONAL_FIELDS and item is not None:
            out[key] = REDACTED
        elif key in PERSONAL_CONTAINERS and item is not None:
            out[key] = _redact_all(item)
        else:
            out[key] = redact(item)
    return out


def _redact_all(value: Any) -> Any:
    if isinstance(value, dict):
        # The kind of token is not personal and helps to read the record; its values are.
        return {k: (v if k == "type" else _redact_all(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_all(v) for v in value]
    return REDACTED
