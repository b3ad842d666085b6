"""Authentication: turn the credentials of a request into a Principal.

For now there are two kinds of caller: anonymous, and the hub administrator, who presents
`Authorization: Bearer <GatewayConfig.admin_token>`. OAuth client credentials, external JWTs and
partner API keys (DESIGN.md) will be added here, producing the other roles.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """The kind of caller. Only ANONYMOUS and ADMIN are issued today; the others arrive with the
    full access model (and `gateway.policy` already refuses them protected data until then)."""

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
ADMIN_SUBJECT = "admin"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(authorization: str | None, admin_token: str | None) -> Principal:
    """The principal for an Authorization header value.

    No header: anonymous. A header that is not a bearer token, or a token we do not know:
    anonymous with a `credential_error`, so that protected fields answer UNAUTHENTICATED with a
    useful reason instead of silently treating a typo as "no credentials".
    """
    if authorization is None or not authorization.strip():
        return ANONYMOUS
    token = bearer_token(authorization)
    if token is None:
        return Principal(credential_error="the Authorization header must be 'Bearer <token>'")
    # Compare in constant time so the token cannot be guessed byte by byte from response times;
    # with no admin token configured nobody is an administrator.
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(role=Role.ADMIN, subject=ADMIN_SUBJECT)
    return Principal(credential_error="the bearer token is not valid")
