"""Keyed pseudonyms for session auth tokens: the raw token (PERSONAL data) is never stored.

HMAC-SHA256 under a configured key: the same token maps to the same pseudonym (so repeat use can
be counted), but without the key a leaked database cannot be matched against known token ids,
which a plain hash of a short RFID uid would allow by brute force.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymizer:
    """Maps (operator, token uid) to a stable, keyed, one-way identifier."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("a non-empty pseudonym key is required")
        self._key = key.encode()

    def __call__(self, operator_id: str, token_uid: str | None) -> str | None:
        """The pseudonym, or None when the operator sent no token."""
        if not token_uid:
            return None
        msg = f"{operator_id}\x00{token_uid}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()
