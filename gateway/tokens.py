"""JSON Web Tokens: those the gateway issues at /oauth/token, and those of trusted identity providers.

The gateway signs with ES256 (ECDSA P-256). Its key is generated on first need (start, or the first
token) and kept in `gateway_key`: the public JWK in the clear (verification, `/.well-known/jwks.json`),
the private key as PEM encrypted with the gateway's `secret_keys` (`gateway.vault`). The key id is
the RFC 7638 thumbprint. Several gateway processes on one database may each generate a key at the
very first start; all are published and verify, and each signs with the oldest.

Verification routes a token by its (unverified) `iss` to the one verifier for that issuer, which then
checks everything itself: the algorithm against a fixed allow-list (ES256 for ours, the configured
asymmetric ones for a provider; never `none`, never HMAC, so a public key can never be used as an
HMAC secret), the signature with a key chosen by `kid` from that issuer's keys only, then `iss`,
`aud`, `exp` (required), `nbf` and `iat` with LEEWAY seconds of clock skew, and finally the role
claims. Tokens of ours whose client has since been revoked are refused too.

JOSE is done with joserfc, the JOSE library of Authlib's authors that Authlib itself depends on and
directs to (its own `authlib.jose` is deprecated and warns on import).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, JWKRegistry

from adapters.http import make_ssl_context
from gateway.auth import Principal
from gateway.config import GatewayConfig, IdentityProviderConfig
from gateway.credentials import CredentialError, client_is_active, make_grant
from gateway.models import GatewayKey
from gateway.vault import SecretError, SecretStore

log = logging.getLogger("evgate.tokens")

ALGORITHM = "ES256"
LEEWAY = 30  # seconds of clock skew tolerated on exp, nbf and iat
MAX_TOKEN_CHARS = 8192
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}  # algorithm family -> JWK kty
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
AnyKey = Any  # a joserfc key (RSAKey, ECKey, OKPKey)


class TokenRejected(Exception):
    """A bearer token is refused; `reason` is safe to show (it never repeats the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClaimNames:
    """Which claims carry the role and its scoping (ours, or as an identity provider names them)."""

    role: str = "role"
    boroughs: str = "boroughs"
    operator: str = "operator"
    partner: str = "partner"
    scope: str = "scope"


OUR_CLAIMS = ClaimNames()


def _b64_json(part: str) -> dict[str, Any]:
    value = orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a compact JWS, NOT verified: only to pick who verifies it."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN_CHARS or len(parts) != 3:
        raise TokenRejected("the bearer token is not a valid JWT")
    try:
        return _b64_json(parts[0]), _b64_json(parts[1])
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise TokenRejected("the bearer token is not a valid JWT") from None


def principal_from_claims(claims: Mapping[str, Any], names: ClaimNames) -> Principal:
    """The principal a verified token speaks for; TokenRejected if its role claims do not add up."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenRejected("the token has no subject")
    boroughs = claims.get(names.boroughs) or []
    scope = claims.get(names.scope) or []
    try:
        grant = make_grant(
            claims.get(names.role),  # type: ignore[arg-type]  # validated there
            [boroughs] if isinstance(boroughs, str) else boroughs,
            claims.get(names.operator) or None,
            claims.get(names.partner) or None,
            scope.split() if isinstance(scope, str) else scope,
        )
    except (CredentialError, TypeError) as exc:
        raise TokenRejected(f"the token's role claims are not valid: {exc}") from None
    return grant.principal(subject)


def verify_signed(token: str, key: AnyKey, algorithms: list[str], issuer: str, audience: str) -> dict[str, Any]:
    """The claims of a token signed by `key` with one of `algorithms`, for `audience`, from `issuer`."""
    try:
        claims = jwt.decode(token, key, algorithms=algorithms).claims
    except BadSignatureError:
        raise TokenRejected("the token's signature is not valid") from None
    except (JoseError, ValueError, TypeError):
        raise TokenRejected("the token cannot be verified (malformed, or signed in a way not accepted)") from None
    registry = jwt.JWTClaimsRegistry(
        leeway=LEEWAY,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        sub={"essential": True},
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise TokenRejected("the token has expired") from None
    except MissingClaimError as exc:
        raise TokenRejected(f"the token lacks the {exc.claim!r} claim") from None
    except InvalidClaimError as exc:
        reason = {
            "aud": "the token is not for this audience",
            "iss": "the token's issuer is not trusted",
            "nbf": "the token is not valid yet",
        }.get(exc.claim, f"the token's {exc.claim!r} claim is not valid")
        raise TokenRejected(reason) from None
    except JoseError:
        raise TokenRejected("the token's claims are not valid") from None
    iat = claims.get("iat")
    if isinstance(iat, int | float) and iat > time.time() + LEEWAY:
        raise TokenRejected("the token was issued in the future")
    return claims


def _check_alg(header: Mapping[str, Any], allowed: tuple[str, ...] | list[str]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise TokenRejected("unsigned tokens (alg 'none') are not accepted")
    if alg not in allowed:
        raise TokenRejected(f"the token's signature algorithm is not accepted (only {', '.join(allowed)})")
    return alg


class SigningKeys:
    """The gateway's ES256 keys in `gateway_key`: the oldest signs, any verifies."""

    def __init__(self, secret_keys: list[str]) -> None:
        self._store = SecretStore(secret_keys) if secret_keys else None
        self._signing: tuple[str, ECKey] | None = None
        self._public: dict[str, ECKey] = {}
        self._lock = asyncio.Lock()

    @property
    def can_sign(self) -> bool:
        """Whether a secret key is configured to keep the private key with."""
        return self._store is not None

    async def signing_key(self) -> tuple[str, ECKey]:
        """(kid, private key), generating and storing the key if the gateway has none yet."""
        if self._signing is not None:
            return self._signing
        if self._store is None:
            raise SecretError("no secret key configured (secret_keys): the gateway cannot keep a signing key")
        async with self._lock:
            if self._signing is None:
                row = await GatewayKey.filter(algorithm=ALGORITHM).order_by("created_at", "kid").first()
                if row is None:
                    await self._generate(self._store)
                    row = await GatewayKey.filter(algorithm=ALGORITHM).order_by("created_at", "kid").first()
                    assert row is not None
                pem = self._store.decrypt(row.ciphertext)
                self._signing = (row.kid, ECKey.import_key(pem, {"kid": row.kid}))
        return self._signing

    @staticmethod
    async def _generate(store: SecretStore) -> None:
        key = ECKey.generate_key("P-256", private=True)
        kid = key.thumbprint()
        public = {**key.as_dict(private=False), "kid": kid, "use": "sig", "alg": ALGORITHM}
        pem = key.as_pem(private=True).decode()
        await GatewayKey.create(kid=kid, algorithm=ALGORITHM, public_jwk=public, ciphertext=store.encrypt(pem))
        log.info("generated the gateway's token signing key %s", kid)

    async def public_key(self, kid: object) -> ECKey | None:
        """The public key of `kid`, from memory or the database (a miss costs one primary-key read)."""
        if not isinstance(kid, str) or len(kid) > 64:
            return None
        key = self._public.get(kid)
        if key is None:
            row = await GatewayKey.get_or_none(kid=kid, algorithm=ALGORITHM)
            if row is None:
                return None
            key = ECKey.import_key(row.public_jwk, {"kid": kid})
            if len(self._public) < 32:  # the gateway has a handful of keys: the bound is never reached
                self._public[kid] = key
        return key

    async def jwks(self) -> dict[str, Any]:
        """The public keys, as a JWK Set."""
        rows = await GatewayKey.filter(algorithm=ALGORITHM).order_by("created_at", "kid")
        return {"keys": [{k: v for k, v in row.public_jwk.items() if k not in _PRIVATE_MEMBERS} for row in rows]}


class ExternalProvider:
    """A trusted identity provider: its JWKS fetched over HTTPS, cached, refreshed on an unknown kid."""

    MIN_REFETCH = 10.0  # seconds between fetches forced by unknown key ids (tokens are attacker-chosen)
    MAX_KEYS = 50
    MAX_JWKS_BYTES = 512 * 1024

    def __init__(self, config: IdentityProviderConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.names = ClaimNames(
            config.role_claim, config.boroughs_claim, config.operator_claim, config.partner_claim, config.scope_claim
        )
        self._clock = clock
        self._keys: dict[str, AnyKey] = {}
        self._fetched = -math.inf  # last successful fetch
        self._attempted = -math.inf  # last attempt
        self._lock = asyncio.Lock()

    async def verify(self, token: str, header: Mapping[str, Any]) -> Principal:
        """The principal of a token of this provider, or TokenRejected."""
        alg = _check_alg(header, self.config.algorithms)
        key = await self._key(header.get("kid"))
        if key is None:
            raise TokenRejected("the token names a signing key its issuer does not publish")
        if key.key_type != _KEY_TYPES.get(alg[:2]):
            raise TokenRejected("the token's algorithm does not match its key")
        claims = verify_signed(token, key, [alg], self.config.issuer, self.config.audience)
        return principal_from_claims(claims, self.names)

    async def _key(self, kid: object) -> AnyKey | None:
        now = self._clock()
        if now - self._fetched > self.config.jwks_ttl and now - self._attempted >= self.MIN_REFETCH:
            await self._refresh()
        key = self._lookup(kid)
        if key is None and self._clock() - self._attempted >= self.MIN_REFETCH:
            await self._refresh()  # the provider may have rotated its keys
            key = self._lookup(kid)
        return key

    def _lookup(self, kid: object) -> AnyKey | None:
        if kid is None and len(self._keys) == 1:  # a provider with a single key may leave kid out
            return next(iter(self._keys.values()))
        return self._keys.get(kid) if isinstance(kid, str) else None

    async def _refresh(self) -> None:
        started = self._clock()
        async with self._lock:
            if self._attempted >= started:
                return  # another request refreshed while this one waited
            self._attempted = self._clock()
            try:
                self._keys = await self._fetch()
                self._fetched = self._clock()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                # Keep the keys we had: a provider briefly down must not log everybody out.
                log.warning("identity provider %s: JWKS not refreshed: %s", self.config.issuer, exc)

    async def _fetch(self) -> dict[str, AnyKey]:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        connector = aiohttp.TCPConnector(ssl=make_ssl_context(self.config.ca_bundle))
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
            session.get(self.config.jwks_url, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await response.content.read(self.MAX_JWKS_BYTES + 1)
        if len(body) > self.MAX_JWKS_BYTES:
            raise ValueError("JWKS too large")
        document = orjson.loads(body)
        keys: dict[str, AnyKey] = {}
        for item in (document.get("keys") if isinstance(document, dict) else None) or []:
            if not isinstance(item, dict) or item.get("kty") not in ("RSA", "EC", "OKP") or item.get("use") == "enc":
                continue  # symmetric ("oct") keys are never taken from a JWKS
            public = {k: v for k, v in item.items() if k not in _PRIVATE_MEMBERS}
            try:
                key = JWKRegistry.import_key(public)
            except (JoseError, ValueError, TypeError):
                continue
            keys[str(item.get("kid") or key.thumbprint())] = key
            if len(keys) >= self.MAX_KEYS:
                break
        return keys


class TokenService:
    """Issues the gateway's tokens and verifies bearer JWTs (ours and the identity providers')."""

    def __init__(self, config: GatewayConfig) -> None:
        self.keys = SigningKeys(config.secret_keys)
        self.issuer = config.token_issuer
        self.audience = config.token_audience
        self.ttl = config.token_ttl
        self.providers = {p.issuer: ExternalProvider(p) for p in config.identity_providers}

    async def mint(
        self,
        principal: Principal,
        *,
        ttl: float | None = None,
        issued_at: float | None = None,
        audience: str | None = None,
    ) -> str:
        """A signed token for `principal` (its subject is the client id). `issued_at` and `audience`
        exist for tests (expired tokens, tokens for another audience)."""
        kid, key = await self.keys.signing_key()
        now = int(time.time() if issued_at is None else issued_at)
        claims = {
            "iss": self.issuer,
            "aud": audience or self.audience,
            "sub": principal.subject,
            "iat": now,
            "exp": now + int(self.ttl if ttl is None else ttl),
            "jti": secrets.token_urlsafe(16),
            "role": principal.role.value,
            "boroughs": sorted(principal.boroughs),
            "operator": principal.operator_id,
            "partner": principal.partner_id,
            "scope": " ".join(sorted(principal.scopes)),
        }
        return jwt.encode({"alg": ALGORITHM, "kid": kid, "typ": "JWT"}, claims, key, algorithms=[ALGORITHM])

    async def verify(self, token: str) -> Principal:
        """The principal of a bearer JWT, or TokenRejected saying why."""
        header, claims = unverified_parts(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenRejected("unsigned tokens (alg 'none') are not accepted")
        issuer = claims.get("iss")
        if issuer == self.issuer:
            return await self._verify_own(token, header)
        provider = self.providers.get(issuer) if isinstance(issuer, str) else None
        if provider is None:
            raise TokenRejected("the token's issuer is not trusted")
        return await provider.verify(token, header)

    async def _verify_own(self, token: str, header: Mapping[str, Any]) -> Principal:
        _check_alg(header, [ALGORITHM])
        key = await self.keys.public_key(header.get("kid"))
        if key is None:
            raise TokenRejected("the token names an unknown signing key")
        claims = verify_signed(token, key, [ALGORITHM], self.issuer, self.audience)
        principal = principal_from_claims(claims, OUR_CLAIMS)
        if not await client_is_active(principal.subject):
            raise TokenRejected("the client this token was issued to is revoked")
        return principal
