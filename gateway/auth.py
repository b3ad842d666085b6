"""Who is calling: the Principal of a request and its Role.

The credentials themselves (OAuth client credentials and the gateway's JWTs, external identity
providers' JWTs, API keys) are checked by `gateway.identity`, which turns them into a Principal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """The kind of caller (DESIGN.md, access control); what each may read is `gateway.policy`'s."""

    ANONYMOUS = "anonymous"
    BOROUGH = "borough"
    PARTNER = "partner"
    OPERATOR = "operator"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request. `credential_error` is set when credentials were presented but
    rejected: the caller is then treated as anonymous, and protected fields say why.

    What a role is scoped to travels with it: a borough's GSS codes, an operator's id, a partner's
    id; `scopes` are the OAuth scopes (or API key scopes) granted.
    """

    role: Role = Role.ANONYMOUS
    subject: str | None = None
    credential_error: str | None = None
    boroughs: frozenset[str] = frozenset()  # BOROUGH: the GSS codes it answers for
    operator_id: str | None = None  # OPERATOR: the operator whose data it is
    partner_id: str | None = None  # PARTNER: the partner (its agreements, later its webhooks)
    scopes: frozenset[str] = frozenset()

    @property
    def authenticated(self) -> bool:
        """True for any principal whose credentials were accepted."""
        return self.role is not Role.ANONYMOUS


ANONYMOUS = Principal()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
