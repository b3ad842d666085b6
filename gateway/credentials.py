"""Stored credentials: OAuth clients (the token endpoint) and API keys, kept only as hashes.

Every secret is `secrets.token_urlsafe(32)`: 256 random bits. Only its SHA-256 is stored, and a
presented secret is hashed and compared with `hmac.compare_digest`. A slow password hash (bcrypt,
scrypt, Argon2) exists to make guessing *low-entropy* passwords from a leaked hash expensive; a
256-bit random secret cannot be guessed whatever the speed of the hash, so a fast hash loses nothing
and keeps the check on every API request (keys are looked up each time, never cached) cheap.

An API key reads `evg_<prefix>_<secret>`: the prefix (10 characters, public: listings, logs) is the
primary key of its row, the secret is what proves possession. Revoking sets `revoked_at`; the row
stays, so the key stops working at the next request and its prefix is never reused.

What a credential may see travels with it as a `Grant`: its role and what the role is scoped to
(a borough's GSS codes, an operator id, a partner id) plus OAuth-style scopes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.auth import Principal, Role
from gateway.models import ApiKey, OAuthClient

API_KEY_MARK = "evg"
PREFIX_LENGTH = 10
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_PREFIX = re.compile(r"^[a-z0-9]{8,12}$")
GSS_CODE = re.compile(r"^[ENSW]\d{8}$")
# RFC 6749 section 3.3: a scope token is one or more of %x21 / %x23-5B / %x5D-7E.
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
LAST_USED_EVERY = timedelta(minutes=5)  # how stale `last_used_at` may get (a write per request is too many)


class CredentialError(ValueError):
    """A credential cannot be created as asked (a role without what it is scoped to, say)."""


class CredentialRejected(Exception):
    """A presented credential is refused; `reason` says why without repeating the credential."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """What a credential lets its holder see: a role and what that role is scoped to."""

    role: Role
    boroughs: tuple[str, ...] = ()
    operator_id: str | None = None
    partner_id: str | None = None
    scopes: tuple[str, ...] = ()

    def principal(self, subject: str) -> Principal:
        """The principal of a request made with this grant."""
        return Principal(
            role=self.role,
            subject=subject,
            boroughs=frozenset(self.boroughs),
            operator_id=self.operator_id,
            partner_id=self.partner_id,
            scopes=frozenset(self.scopes),
        )


def make_grant(
    role: Role | str,
    boroughs: Iterable[str] = (),
    operator_id: str | None = None,
    partner_id: str | None = None,
    scopes: Iterable[str] = (),
) -> Grant:
    """A validated grant: each role carries exactly what it is scoped to (a borough its GSS codes,
    an operator its id, a partner its id; an administrator nothing)."""
    try:
        role = Role(role)
    except ValueError:
        known = ", ".join(r.value for r in Role if r is not Role.ANONYMOUS)
        raise CredentialError(f"unknown role; known: {known}") from None
    if role is Role.ANONYMOUS:
        raise CredentialError("a credential cannot be anonymous")
    codes = tuple(sorted(set(boroughs)))
    scope_list = tuple(sorted(set(scopes)))
    if any(not isinstance(c, str) or not GSS_CODE.match(c) for c in codes):
        raise CredentialError("boroughs must be GSS codes such as E09000007")
    if any(not isinstance(s, str) or not SCOPE_TOKEN.match(s) for s in scope_list):
        raise CredentialError("a scope is a short word without spaces, quotes or backslashes")
    for value in (operator_id, partner_id):
        if value is not None and (not isinstance(value, str) or not IDENTIFIER.match(value)):
            raise CredentialError("operator and partner ids are short identifiers (letters, digits, . _ : -)")
    if (role is Role.BOROUGH) != bool(codes):
        raise CredentialError("borough credentials, and only they, name at least one borough")
    if (role is Role.OPERATOR) != (operator_id is not None):
        raise CredentialError("operator credentials, and only they, name an operator")
    if (role is Role.PARTNER) != (partner_id is not None):
        raise CredentialError("partner credentials, and only they, name a partner")
    return Grant(role, codes, operator_id, partner_id, scope_list)


def _grant_of(row: OAuthClient | ApiKey) -> Grant:
    return Grant(Role(row.role), tuple(row.boroughs or ()), row.operator_id, row.partner_id, tuple(row.scopes or ()))


def hash_secret(secret: str) -> str:
    """The stored form of a secret (hex SHA-256; see the module docstring for why not a slow KDF)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret).encode(), stored_hash.encode())


def _now() -> datetime:
    return datetime.now(UTC)


# --- OAuth clients ---------------------------------------------------------------------------


async def create_client(
    name: str, grant: Grant, *, client_id: str | None = None, secret: str | None = None
) -> tuple[str, str]:
    """Register an OAuth client; (client_id, secret). The secret is returned only here.

    `client_id`/`secret` may be given to register a known pair (the demo does, idempotently: an
    existing client of that id is replaced, un-revoked).
    """
    client_id = client_id or f"evc-{secrets.token_hex(8)}"
    if not IDENTIFIER.match(client_id):
        raise CredentialError("a client id is a short identifier (letters, digits, . _ : -)")
    secret = secret or secrets.token_urlsafe(32)
    await OAuthClient.update_or_create(client_id=client_id, defaults=_stored(name, grant, secret))
    return client_id, secret


def _stored(name: str, grant: Grant, secret: str) -> dict[str, Any]:
    """The columns a client and an API key share: the secret's hash and the grant (un-revoked)."""
    return {
        "secret_hash": hash_secret(secret),
        "name": name,
        "role": grant.role.value,
        "boroughs": list(grant.boroughs),
        "operator_id": grant.operator_id,
        "partner_id": grant.partner_id,
        "scopes": list(grant.scopes),
        "revoked_at": None,
    }


async def list_clients() -> list[OAuthClient]:
    """Every client, revoked ones included (their rows hold no secret, only a hash)."""
    return await OAuthClient.all().order_by("created_at", "client_id")


async def revoke_client(client_id: str) -> bool:
    """Revoke a client: no new tokens, and its tokens still unexpired are refused. Whether it existed."""
    return bool(await OAuthClient.filter(client_id=client_id, revoked_at__isnull=True).update(revoked_at=_now()))


async def check_client(client_id: str, secret: str) -> tuple[OAuthClient, Grant]:
    """The client whose id and secret these are, with its grant, or CredentialRejected."""
    row = await OAuthClient.get_or_none(client_id=client_id) if IDENTIFIER.match(client_id) else None
    if row is None or not _matches(secret, row.secret_hash):
        raise CredentialRejected("unknown client or wrong secret")
    if row.revoked_at is not None:
        raise CredentialRejected("the client is revoked")
    return row, _grant_of(row)


async def client_is_active(client_id: str | None) -> bool:
    """Whether a client exists and is not revoked (checked for every token the gateway issued)."""
    if not client_id:
        return False
    return await OAuthClient.filter(client_id=client_id, revoked_at__isnull=True).exists()


# --- API keys -------------------------------------------------------------------------------


def new_api_key() -> str:
    """A fresh key `evg_<prefix>_<secret>` (not stored: see `create_api_key`)."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return f"{API_KEY_MARK}_{prefix}_{secrets.token_urlsafe(32)}"


def looks_like_api_key(value: str) -> bool:
    """Whether a bearer credential is meant as an API key (rather than a JWT)."""
    return value.startswith(API_KEY_MARK + "_")


def parse_api_key(value: str) -> tuple[str, str]:
    """(prefix, secret) of a key, or CredentialRejected if it is not shaped like one."""
    mark, _, rest = value.partition("_")
    prefix, _, secret = rest.partition("_")
    if mark != API_KEY_MARK or not _PREFIX.match(prefix) or len(secret) < 16:
        raise CredentialRejected("the API key is malformed")
    return prefix, secret


async def create_api_key(name: str, grant: Grant, *, key: str | None = None) -> str:
    """Store a key (a new one unless `key` is given) and return it: the only time it is shown."""
    key = key or new_api_key()
    try:
        prefix, secret = parse_api_key(key)
    except CredentialRejected:
        raise CredentialError("an API key reads evg_<prefix>_<secret>") from None
    await ApiKey.update_or_create(prefix=prefix, defaults=_stored(name, grant, secret))
    return key


async def list_api_keys() -> list[ApiKey]:
    """Every key (prefix, name, grant, dates), revoked ones included."""
    return await ApiKey.all().order_by("created_at", "prefix")


async def revoke_api_key(prefix: str) -> bool:
    """Revoke a key (by its public prefix, or the whole key): it fails from the next request on."""
    if looks_like_api_key(prefix):
        prefix = prefix.split("_")[1]
    return bool(await ApiKey.filter(prefix=prefix, revoked_at__isnull=True).update(revoked_at=_now()))


async def check_api_key(value: str) -> Principal:
    """The principal of a presented key, read from the database on every call, or CredentialRejected."""
    prefix, secret = parse_api_key(value)
    row = await ApiKey.get_or_none(prefix=prefix)
    if row is None or not _matches(secret, row.secret_hash):
        raise CredentialRejected("the API key is not valid")
    if row.revoked_at is not None:
        raise CredentialRejected("the API key is revoked")
    now = _now()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
        await ApiKey.filter(prefix=prefix).update(last_used_at=now)
    return _grant_of(row).principal(f"key:{prefix}")
