"""Identity: the OAuth 2 token endpoint and JWKS, the gateway's JWTs and an external identity
provider's, API keys, and the `evgate clients` / `evgate keys` commands.

Expired, forged, wrong-audience and `alg: none` tokens are rejected (and so are tokens of an
unknown issuer or key, and HS256 tokens "signed" with our public key); a token with one scope
cannot reach another's data; a revoked API key stops working at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from gateway.app import create_app
from gateway.auth import Role
from gateway.config import GatewayConfig, IdentityProviderConfig
from gateway.credentials import create_client, make_grant, revoke_api_key, revoke_client
from gateway.db import close_db, init_db
from gateway.identity import Identity
from gateway.models import ApiKey, GatewayKey, OAuthClient
from gateway.tokens import ExternalProvider
from gateway.vault import generate_key
from tests import seed
from tests.conftest import TestDb
from tests.support import SECRET_KEYS, issue_api_key, mint_token, serve_tls

HEALTH = "{ syncHealth { operatorId } }"
SESSIONS = """query($from: DateTime!, $to: DateTime!) {
  sessions(from: $from, to: $to) { edges { node { id } } }
}"""
WINDOW = {"from": seed.NOW.isoformat(), "to": (seed.NOW + timedelta(hours=3)).isoformat()}


@pytest.fixture
async def http(gateway_config: GatewayConfig) -> AsyncIterator[httpx.AsyncClient]:
    """The real app over ASGI (the `db` fixture owns the database)."""
    app = create_app(gateway_config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        yield client


async def graphql(http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, **headers: str) -> Any:
    response = await http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def token_request(http: httpx.AsyncClient, data: dict[str, str], auth: tuple[str, str] | None = None) -> Any:
    return await http.post("/oauth/token", data=data, auth=auth)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand (for tokens no honest library would make)."""
    head = _b64(orjson.dumps(header)) + "." + _b64(orjson.dumps(claims))
    return head + "." + _b64(signature)


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def header_of(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    return orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def assert_refused(body: Any, reason: str, credential: str) -> None:
    """syncHealth refused as UNAUTHENTICATED, saying why, without echoing the credential."""
    assert body["data"] == {"syncHealth": None}, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert reason in error["message"], error["message"]
    assert credential not in orjson.dumps(body).decode()


# --- the token endpoint ------------------------------------------------------------------------


async def test_client_credentials_by_basic_and_by_form(db: TestDb, http: httpx.AsyncClient) -> None:
    client_id, secret = await create_client("hub admin", make_grant(Role.ADMIN))
    for response in (
        await token_request(http, {"grant_type": "client_credentials"}, auth=(client_id, secret)),
        await token_request(
            http, {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        ),
    ):
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 900
        claims = claims_of(body["access_token"])
        assert claims["iss"] == claims["aud"] == "evgate" and claims["sub"] == client_id
        assert claims["role"] == "admin" and claims["exp"] - claims["iat"] == 900 and claims["jti"]
        assert header_of(body["access_token"])["alg"] == "ES256"
        health = await graphql(http, HEALTH, authorization=f"Bearer {body['access_token']}")
        assert health == {"data": {"syncHealth": []}}
    assert secret not in str(await OAuthClient.all().values())  # only its hash is stored


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, ("CLIENT", "wrong-secret"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, ("no-such-client", "SECRET"), 401, "invalid_client"),
        (
            {"grant_type": "client_credentials", "client_id": "CLIENT", "client_secret": "x"},
            None,
            401,
            "invalid_client",
        ),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        (
            {"grant_type": "password", "username": "a", "password": "b"},
            ("CLIENT", "SECRET"),
            400,
            "unsupported_grant_type",
        ),
        ({"grant_type": "authorization_code", "code": "x"}, ("CLIENT", "SECRET"), 400, "unsupported_grant_type"),
        ({}, ("CLIENT", "SECRET"), 400, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "sessions:read"}, ("CLIENT", "SECRET"), 400, "invalid_scope"),
    ],
)
async def test_token_endpoint_errors(
    db: TestDb, http: httpx.AsyncClient, data: dict[str, str], auth: tuple[str, str] | None, status: int, error: str
) -> None:
    client_id, secret = await create_client("partner", make_grant(Role.PARTNER, partner_id="p1"))

    def fill(value: str) -> str:
        return value.replace("CLIENT", client_id).replace("SECRET", secret)

    data = {k: fill(v) for k, v in data.items()}
    response = await token_request(http, data, auth=(fill(auth[0]), fill(auth[1])) if auth else None)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert secret not in response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")


async def test_a_revoked_client_gets_no_token_and_its_tokens_stop_working(db: TestDb, http: httpx.AsyncClient) -> None:
    client_id, secret = await create_client("admin", make_grant(Role.ADMIN))
    token = (await token_request(http, {"grant_type": "client_credentials"}, (client_id, secret))).json()[
        "access_token"
    ]
    assert (await graphql(http, HEALTH, authorization=f"Bearer {token}"))["data"] == {"syncHealth": []}
    assert await revoke_client(client_id)
    refused = await token_request(http, {"grant_type": "client_credentials"}, (client_id, secret))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert_refused(await graphql(http, HEALTH, authorization=f"Bearer {token}"), "revoked", token)


async def test_scope_narrows_the_clients_scopes(db: TestDb, http: httpx.AsyncClient) -> None:
    grant = make_grant(Role.PARTNER, partner_id="p1", scopes=["sessions:read", "webhooks"])
    client_id, secret = await create_client("partner", grant)
    whole = await token_request(http, {"grant_type": "client_credentials"}, (client_id, secret))
    assert whole.json()["scope"] == "sessions:read webhooks"
    narrow = await token_request(http, {"grant_type": "client_credentials", "scope": "webhooks"}, (client_id, secret))
    assert narrow.json()["scope"] == "webhooks" and claims_of(narrow.json()["access_token"])["scope"] == "webhooks"
    principal = await Identity(GatewayConfig(database_url="", pseudonym_key="k")).authenticate(
        {"authorization": f"Bearer {narrow.json()['access_token']}"}
    )
    assert principal.role is Role.PARTNER and principal.partner_id == "p1" and principal.scopes == {"webhooks"}
    wider = await token_request(
        http, {"grant_type": "client_credentials", "scope": "webhooks admin"}, (client_id, secret)
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


async def test_jwks_serves_the_public_key_only(db: TestDb, http: httpx.AsyncClient) -> None:
    client_id, secret = await create_client("admin", make_grant(Role.ADMIN))
    token = (await token_request(http, {"grant_type": "client_credentials"}, (client_id, secret))).json()[
        "access_token"
    ]
    response = await http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    (jwk,) = response.json()["keys"]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256" and jwk["use"] == "sig"
    assert not {"d", "p", "q", "k"} & set(jwk)
    public = ECKey.import_key(jwk)
    assert jwk["kid"] == public.thumbprint() == header_of(token)["kid"]  # RFC 7638
    assert jwt.decode(token, public, algorithms=["ES256"]).claims["sub"] == client_id
    (row,) = await GatewayKey.all()
    assert "PRIVATE KEY" not in row.ciphertext and "d" not in row.public_jwk  # stored encrypted


async def test_the_signing_key_is_generated_once_and_kept(db: TestDb, gateway_config: GatewayConfig) -> None:
    first = Identity(gateway_config)
    await first.start()
    second = Identity(gateway_config)  # a restart: the same key, decrypted from the database
    assert (await first.tokens.keys.signing_key())[0] == (await second.tokens.keys.signing_key())[0]
    assert await GatewayKey.all().count() == 1


# --- bad tokens --------------------------------------------------------------------------------


async def _public_jwk_and_pem(config: GatewayConfig) -> tuple[str, dict[str, Any], bytes]:
    kid, key = await Identity(config).tokens.keys.signing_key()
    public = ECKey.import_key(key.as_dict(private=False))
    return kid, public.as_dict(private=False), public.as_pem(private=False)


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = (_b64(orjson.dumps(header)) + "." + _b64(orjson.dumps(claims))).encode()
    return signing_input.decode() + "." + _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())


BAD_TOKENS = ["expired", "forged", "wrong_audience", "wrong_issuer", "alg_none", "hs256_public_pem", "hs256_public_jwk"]
BAD_TOKENS += ["unknown_kid", "garbage", "no_exp", "unknown_role", "role_without_its_scope"]


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_bad_tokens_are_refused_with_a_reason(
    db: TestDb, http: httpx.AsyncClient, gateway_config: GatewayConfig, kind: str
) -> None:
    good = await mint_token(gateway_config, Role.ADMIN, client_id="admin-client")
    assert (await graphql(http, HEALTH, authorization=f"Bearer {good}"))["data"] == {"syncHealth": []}
    kid, jwk, pem = await _public_jwk_and_pem(gateway_config)
    claims = claims_of(good)
    header = {"alg": "ES256", "kid": kid, "typ": "JWT"}
    other = ECKey.generate_key("P-256", private=True)
    if kind == "expired":
        token = await mint_token(gateway_config, client_id="admin-client", issued_at=time.time() - 3600, ttl=900)
        reason = "expired"
    elif kind == "forged":
        token = jwt.encode(header, {**claims, "role": "admin"}, other, algorithms=["ES256"])
        reason = "signature is not valid"
    elif kind == "wrong_audience":
        token = await mint_token(gateway_config, client_id="admin-client", audience="another-api")
        reason = "audience"
    elif kind == "wrong_issuer":
        token = jwt.encode(header, {**claims, "iss": "https://evil.example"}, other, algorithms=["ES256"])
        reason = "issuer is not trusted"
    elif kind == "alg_none":
        token = unsigned({"alg": "none", "typ": "JWT"}, claims)
        reason = "alg 'none'"
    elif kind == "hs256_public_pem":  # key confusion: the public key used as an HMAC secret
        token = _hs256({"alg": "HS256", "kid": kid, "typ": "JWT"}, claims, pem)
        reason = "algorithm is not accepted"
    elif kind == "hs256_public_jwk":
        token = _hs256({"alg": "HS256", "kid": kid, "typ": "JWT"}, claims, orjson.dumps(jwk))
        reason = "algorithm is not accepted"
    elif kind == "unknown_kid":
        token = jwt.encode({**header, "kid": other.thumbprint()}, claims, other, algorithms=["ES256"])
        reason = "unknown signing key"
    elif kind == "garbage":
        token = "not-a-jwt-at-all"
        reason = "not a valid JWT"
    else:  # validly signed, but with claims that do not add up
        _, key = await Identity(gateway_config).tokens.keys.signing_key()
        changed = {
            "no_exp": {k: v for k, v in claims.items() if k != "exp"},
            "unknown_role": {**claims, "role": "superuser"},
            "role_without_its_scope": {**claims, "role": "borough", "boroughs": []},
        }[kind]
        token = jwt.encode(header, changed, key, algorithms=["ES256"])
        reason = {"no_exp": "'exp'", "unknown_role": "unknown role", "role_without_its_scope": "borough"}[kind]
    assert_refused(await graphql(http, HEALTH, authorization=f"Bearer {token}"), reason, token)


async def test_malformed_authorization_headers(db: TestDb, http: httpx.AsyncClient) -> None:
    assert_refused(await graphql(http, HEALTH, authorization="Token abc"), "must be 'Bearer <token>'", "abc")
    assert_refused(await graphql(http, HEALTH, authorization="Bearer"), "must be 'Bearer <token>'", "Bearer x")
    body = await graphql(http, HEALTH, authorization="Bearer x", **{"x-api-key": "evg_abcdefghij_secret"})
    assert_refused(body, "not both", "evg_abcdefghij_secret")


# --- scoping -----------------------------------------------------------------------------------


async def test_a_token_with_one_scope_cannot_reach_anothers_data(
    db: TestDb, http: httpx.AsyncClient, gateway_config: GatewayConfig
) -> None:
    from gateway.models import Operator

    await seed.operators("op-a", "op-b")
    await Operator.all().update(agreement={"USAGE": ["borough", "partner"]})
    await seed.boroughs(seed.CAMDEN, seed.ISLINGTON)
    a_camden, a_islington, b_camden = await seed.sites(
        [
            seed.Site("op-a", "L1", *seed.CENTRE, borough_code=seed.CAMDEN[0]),
            seed.Site("op-a", "L2", *seed.offset(100, 0), borough_code=seed.ISLINGTON[0]),
            seed.Site("op-b", "L3", *seed.offset(200, 0), borough_code=seed.CAMDEN[0]),
        ]
    )
    end = seed.NOW + timedelta(hours=1)
    await seed.session("op-a", "S1", a_camden, seed.NOW, end, borough_code=seed.CAMDEN[0])
    await seed.session("op-a", "S2", a_islington, seed.NOW, end, borough_code=seed.ISLINGTON[0])
    await seed.session("op-b", "S3", b_camden, seed.NOW, end, borough_code=seed.CAMDEN[0])

    async def visible(**headers: str) -> set[str]:
        body = await graphql(http, SESSIONS, WINDOW, **headers)
        sessions = body["data"]["sessions"]
        return {edge["node"]["id"] for edge in sessions["edges"]} if sessions else set()

    op_a = await mint_token(gateway_config, Role.OPERATOR, operator_id="op-a")
    op_b = await mint_token(gateway_config, Role.OPERATOR, operator_id="op-b")
    camden = await mint_token(gateway_config, Role.BOROUGH, boroughs=[seed.CAMDEN[0]])
    islington_key = await issue_api_key(Role.BOROUGH, boroughs=[seed.ISLINGTON[0]])
    admin_key = await issue_api_key(Role.ADMIN)
    assert await visible(authorization=f"Bearer {admin_key}") == {"op-a/S1", "op-a/S2", "op-b/S3"}
    assert await visible(authorization=f"Bearer {op_a}") == {"op-a/S1", "op-a/S2"}
    assert await visible(authorization=f"Bearer {op_b}") == {"op-b/S3"}
    assert await visible(authorization=f"Bearer {camden}") == {"op-a/S1", "op-b/S3"}
    assert await visible(**{"x-api-key": islington_key}) == {"op-a/S2"}
    for token in (op_a, camden):  # and none of them is an administrator
        body = await graphql(http, HEALTH, authorization=f"Bearer {token}")
        assert body["data"]["syncHealth"] is None or all(r["operatorId"] == "op-a" for r in body["data"]["syncHealth"])


# --- API keys ----------------------------------------------------------------------------------


async def test_api_keys_by_bearer_and_header_and_revoked_at_once(db: TestDb, http: httpx.AsyncClient) -> None:
    key = await issue_api_key(Role.ADMIN, name="ops laptop")
    prefix = key.split("_")[1]
    assert 8 <= len(prefix) <= 12
    assert await graphql(http, HEALTH, authorization=f"Bearer {key}") == {"data": {"syncHealth": []}}
    assert await graphql(http, HEALTH, **{"x-api-key": key}) == {"data": {"syncHealth": []}}
    (row,) = await ApiKey.all()
    assert row.prefix == prefix and key.split("_", 2)[2] not in str(await ApiKey.all().values())
    assert row.last_used_at is not None

    assert await revoke_api_key(prefix)
    assert_refused(await graphql(http, HEALTH, authorization=f"Bearer {key}"), "revoked", key)
    assert_refused(await graphql(http, HEALTH, **{"x-api-key": key}), "revoked", key)
    assert not await revoke_api_key(prefix)  # already revoked

    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert_refused(await graphql(http, HEALTH, **{"x-api-key": wrong_secret}), "not valid", wrong_secret)
    assert_refused(await graphql(http, HEALTH, **{"x-api-key": "evg_x_y"}), "malformed", "evg_x_y")


async def test_api_key_over_websocket_init(db: TestDb, gateway_config: GatewayConfig) -> None:
    key = await issue_api_key(Role.ADMIN)
    identity = Identity(gateway_config)
    assert (await identity.authenticate({"authorization": f"Bearer {key}"})).role is Role.ADMIN
    assert (await identity.authenticate({})).role is Role.ANONYMOUS


# --- an external identity provider -------------------------------------------------------------

IDP = "https://idp.example.test/"


@pytest.fixture
async def idp(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """An identity provider serving its JWKS over HTTPS on loopback; counts the fetches."""
    key = RSAKey.generate_key(2048, private=True, parameters={"kid": "idp-key-1"})
    state: dict[str, Any] = {"key": key, "fetches": 0}

    async def jwks(_: web.Request) -> web.Response:
        state["fetches"] += 1
        public = {**key.as_dict(private=False), "kid": "idp-key-1", "use": "sig"}
        # A symmetric key in a JWKS is never taken: it would let anyone who reads it sign tokens.
        oct_key = {"kty": "oct", "kid": "idp-hmac", "k": _b64(b"published-secret")}
        return web.json_response({"keys": [public, oct_key]})

    app = web.Application()
    app.router.add_get("/jwks.json", jwks)
    async for url, ca in serve_tls(app, tmp_path / "idp-pki"):
        state["provider"] = IdentityProviderConfig(
            issuer=IDP,
            audience="evgate-api",
            jwks_url=f"{url}/jwks.json",
            ca_bundle=ca,
            role_claim="https://evgate/role",
            boroughs_claim="gss",
            scope_claim="scp",
        )
        yield state


def idp_token(key: Any, claims: dict[str, Any], kid: str = "idp-key-1", alg: str = "RS256") -> str:
    now = int(time.time())
    body = {"iss": IDP, "aud": ["evgate-api", "other"], "sub": "officer@camden", "iat": now, "exp": now + 300}
    return jwt.encode({"alg": alg, "kid": kid}, {**body, **claims}, key, algorithms=[alg])


async def test_external_provider_tokens(db: TestDb, gateway_config: GatewayConfig, idp: dict[str, Any]) -> None:
    config = GatewayConfig(
        database_url=db.url, pseudonym_key="k", secret_keys=SECRET_KEYS, identity_providers=[idp["provider"]]
    )
    identity = Identity(config)
    clock = [0.0]
    identity.tokens.providers[IDP]._clock = lambda: clock[0]
    key = idp["key"]
    borough = idp_token(key, {"https://evgate/role": "borough", "gss": ["E09000007"], "scp": ["read", "export"]})
    principal = await identity.authenticate({"authorization": f"Bearer {borough}"})
    assert principal.credential_error is None, principal.credential_error
    assert principal.role is Role.BOROUGH and principal.subject == "officer@camden"
    assert principal.boroughs == {"E09000007"} and principal.scopes == {"read", "export"}
    assert idp["fetches"] == 1

    async def refused(token: str, reason: str) -> None:
        principal = await identity.authenticate({"authorization": f"Bearer {token}"})
        assert principal.role is Role.ANONYMOUS and reason in (principal.credential_error or ""), principal

    other = RSAKey.generate_key(2048, private=True)
    admin_claims = {"https://evgate/role": "admin"}
    clock[0] += ExternalProvider.MIN_REFETCH
    await refused(idp_token(other, admin_claims, kid="rotated-away"), "does not publish")
    assert idp["fetches"] == 2  # an unknown kid refetches the JWKS once...
    await refused(idp_token(other, admin_claims, kid="rotated-away-2"), "does not publish")
    assert idp["fetches"] == 2  # ...and not again for a while, whatever kids tokens name
    await refused(idp_token(other, admin_claims), "signature is not valid")
    await refused(idp_token(key, {**admin_claims, "iss": "https://other-idp.test/"}), "issuer is not trusted")
    await refused(idp_token(key, {**admin_claims, "aud": "someone-else"}), "audience")
    await refused(idp_token(key, {**admin_claims, "exp": int(time.time()) - 600}), "expired")
    await refused(idp_token(key, {"https://evgate/role": "emperor"}), "unknown role")
    await refused(_hs256({"alg": "HS256", "kid": "idp-hmac"}, {"iss": IDP}, b"published-secret"), "not accepted")
    await refused(unsigned({"alg": "none"}, {"iss": IDP, **admin_claims}), "alg 'none'")
    es = ECKey.generate_key("P-256", private=True)
    # ES256 is allowed for this provider, but the key it names is an RSA key: no algorithm confusion.
    await refused(idp_token(es, admin_claims, alg="ES256"), "does not match its key")

    # Through the real app: an administrator of the provider reads sync health.
    app = create_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        body = await graphql(http, HEALTH, authorization=f"Bearer {idp_token(key, admin_claims)}")
        assert body == {"data": {"syncHealth": []}}


async def test_provider_jwks_cache_expires(idp: dict[str, Any]) -> None:
    now = [1000.0]
    provider = ExternalProvider(idp["provider"], clock=lambda: now[0])
    assert await provider._key("idp-key-1") is not None and idp["fetches"] == 1
    assert await provider._key("idp-key-1") is not None and idp["fetches"] == 1  # cached
    now[0] += idp["provider"].jwks_ttl + 1
    assert await provider._key("idp-key-1") is not None and idp["fetches"] == 2  # refreshed after its TTL


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"jwks_url": "http://idp.test/jwks.json"}, "https://"),
        ({"algorithms": ["HS256"]}, "refused"),
        ({"algorithms": ["none"]}, "refused"),
        ({"algorithms": ["RS256", "HS512"]}, "refused"),
        ({"audiences": "x"}, "unknown settings"),
    ],
)
def test_provider_configuration_is_validated(settings: dict[str, Any], message: str) -> None:
    raw = {"issuer": IDP, "audience": "a", "jwks_url": "https://idp.test/jwks.json", **settings}
    with pytest.raises(ValueError, match=message):
        GatewayConfig(pseudonym_key="k", identity_providers=[raw])


def test_identity_settings_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        """
[gateway]
pseudonym_key = "k"
token_issuer = "https://evgate.example"
token_ttl = 300

[[gateway.identity_providers]]
issuer = "https://login.example/"
audience = "evgate"
jwks_url = "https://login.example/keys"
algorithms = ["RS256"]
role_claim = "roles"
"""
    )
    cfg = GatewayConfig.load(path)
    assert cfg.token_issuer == "https://evgate.example" and cfg.token_ttl == 300
    (provider,) = cfg.identity_providers
    assert provider.algorithms == ("RS256",) and provider.role_claim == "roles" and provider.jwks_ttl == 300
    path.write_text('[gateway]\npseudonym_key = "k"\nadmin_token = "old"\n')
    with pytest.raises(ValueError, match="unknown settings"):
        GatewayConfig.load(path)


# --- the command line --------------------------------------------------------------------------


def _evgate(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_clients_and_keys_commands(tmp_path: Path) -> None:
    database = tmp_path / "cli.sqlite3"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndatabase_url = "sqlite://{database}"\n')
    env = {"EVGATE_PSEUDONYM_KEY": "k", "EVGATE_SECRET_KEYS": generate_key()}
    conf = ["--config", str(config)]

    created = _evgate(
        ["clients", "create", *conf, "--name", "Camden", "--role", "borough", "--borough", "E09000007"], env
    )
    assert created.returncode == 0, created.stderr
    lines = dict(line.split(":", 1) for line in created.stdout.splitlines() if line.startswith("client_"))
    client_id, secret = lines["client_id"].strip(), lines["client_secret"].strip()
    assert len(secret) >= 40
    key_out = _evgate(["keys", "create", *conf, "--name", "Fleet 7", "--role", "partner", "--partner", "fleet"], env)
    assert key_out.returncode == 0, key_out.stderr
    (key,) = [line.split()[1] for line in key_out.stdout.splitlines() if line.startswith("api_key:")]
    prefix = key.split("_")[1]

    listed = _evgate(["clients", "list", *conf], env)
    keys_listed = _evgate(["keys", "list", *conf], env)
    assert client_id in listed.stdout and "E09000007" in listed.stdout and "active" in listed.stdout
    assert f"evg_{prefix}" in keys_listed.stdout and "Fleet 7" in keys_listed.stdout
    for output in (listed.stdout + listed.stderr, keys_listed.stdout + keys_listed.stderr):
        assert secret not in output and key.split("_", 2)[2] not in output

    bad = _evgate(["clients", "create", *conf, "--name", "x", "--role", "borough"], env)
    assert bad.returncode != 0 and "borough" in bad.stderr and "Traceback" not in bad.stderr

    async def use(expect_ok: bool) -> None:
        gw = GatewayConfig(
            database_url=f"sqlite://{database}", pseudonym_key="k", secret_keys=[env["EVGATE_SECRET_KEYS"]]
        )
        await init_db(gw.database_url)
        try:
            app = create_app(gw)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
                got = await token_request(http, {"grant_type": "client_credentials"}, (client_id, secret))
                assert got.status_code == (200 if expect_ok else 401), got.text
                principal = await app_identity(app).authenticate({"x-api-key": key})
                assert (principal.role is Role.PARTNER) is expect_ok, principal
        finally:
            await close_db()

    import asyncio

    asyncio.run(use(True))
    revoked = _evgate(["clients", "revoke", *conf, client_id], env)
    revoked_key = _evgate(["keys", "revoke", *conf, prefix], env)
    assert revoked.returncode == 0 and revoked_key.returncode == 0, revoked.stderr + revoked_key.stderr
    asyncio.run(use(False))
    assert "revoked" in _evgate(["keys", "list", *conf], env).stdout
    assert _evgate(["keys", "revoke", *conf, prefix], env).returncode != 0  # nothing left to revoke


def app_identity(app: Any) -> Identity:
    """The Identity of an app made by `create_app`."""
    route = next(r for r in app.routes if getattr(r, "path", None) == "/graphql" and hasattr(r.endpoint, "identity"))
    return route.endpoint.identity
