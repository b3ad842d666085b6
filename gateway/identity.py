"""Identity: who is calling, and the OAuth 2 endpoints that hand out credentials.

A request carries at most one credential:

- `Authorization: Bearer <JWT>`: a token issued by this gateway at `POST /oauth/token`, or by a
  trusted identity provider (`gateway.tokens`);
- `Authorization: Bearer evg_<prefix>_<secret>` or `X-API-Key: evg_...`: an API key
  (`gateway.credentials`), read from the database on every request so a revoked key fails at once.

No credential: anonymous. A credential that is refused: anonymous with a `credential_error` saying
why (expired, bad signature, wrong audience, unknown key, revoked...), never repeating it, so that
protected fields answer UNAUTHENTICATED with a useful reason.

`POST /oauth/token` implements the client credentials grant (RFC 6749 section 4.4) and nothing
else: client authentication by HTTP Basic or `client_id`/`client_secret` in the form, an optional
`scope` narrowing the client's scopes, errors as RFC 6749 JSON bodies (authlib's error classes).
It is a small handler rather than authlib's `AuthorizationServer`, whose hooks (client lookup,
token saving) are synchronous and framework-bound, while ours are async database reads, and which
brings the authorization-code machinery this gateway does not offer. `GET /.well-known/jwks.json`
publishes the public keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc6749.util import extract_basic_authorization, scope_to_list
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.auth import ANONYMOUS, Principal, bearer_token
from gateway.config import GatewayConfig
from gateway.credentials import CredentialRejected, check_api_key, check_client, looks_like_api_key
from gateway.tokens import TokenRejected, TokenService
from gateway.vault import SecretError

log = logging.getLogger("evgate.identity")

MAX_FORM_BYTES = 8192
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class Identity:
    """Authenticates requests and serves the token and JWKS endpoints of one gateway."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.tokens = TokenService(config)

    async def start(self) -> None:
        """Load the signing key, generating it on the gateway's first start (database open)."""
        if not self.tokens.keys.can_sign:
            log.warning("no secret key configured: /oauth/token is off (API keys and external tokens still work)")
            return
        try:
            await self.tokens.keys.signing_key()
        except SecretError as exc:
            log.error("the token signing key cannot be opened, /oauth/token is off: %s", exc)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The principal of a request, from its `Authorization` or `X-API-Key` header (names in
        lower case, or a case-insensitive mapping such as Starlette's headers)."""
        authorization = (headers.get("authorization") or "").strip()
        api_key = (headers.get("x-api-key") or "").strip()
        if not authorization and not api_key:
            return ANONYMOUS
        if authorization and api_key:
            return Principal(credential_error="send one credential: an Authorization header or X-API-Key, not both")
        try:
            if api_key:
                return await check_api_key(api_key)
            token = bearer_token(authorization)
            if token is None:
                return Principal(credential_error="the Authorization header must be 'Bearer <token>'")
            if looks_like_api_key(token):
                return await check_api_key(token)
            return await self.tokens.verify(token)
        except (CredentialRejected, TokenRejected) as exc:
            return Principal(credential_error=exc.reason)

    async def token_endpoint(self, request: Request) -> Response:
        """`POST /oauth/token`: the client credentials grant."""
        try:
            form = await _form(request)
            grant_type = form.get("grant_type")
            if not grant_type:
                raise InvalidRequestError("grant_type is required")
            if grant_type != "client_credentials":
                raise UnsupportedGrantTypeError(grant_type)
            client_id, secret = _client_credentials(request, form)
            try:
                client, grant = await check_client(client_id, secret)
            except CredentialRejected as exc:
                raise InvalidClientError(description=exc.reason, status_code=401) from None
            requested = scope_to_list(form.get("scope") or "") or []
            if not set(requested) <= set(grant.scopes):
                raise InvalidScopeError("the client may not have the requested scope")
            scopes = frozenset(requested) if requested else frozenset(grant.scopes)
            principal = replace(grant.principal(client.client_id), scopes=scopes)
            try:
                token = await self.tokens.mint(principal)
            except SecretError as exc:
                log.error("cannot sign a token: %s", exc)
                body = {"error": "temporarily_unavailable", "error_description": "the gateway cannot sign tokens"}
                return JSONResponse(body, status_code=503, headers=NO_STORE)
        except OAuth2Error as exc:
            return _error(exc)
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(self.tokens.ttl),
            "scope": " ".join(sorted(scopes)),
        }
        return JSONResponse(body, headers=NO_STORE)

    async def jwks_endpoint(self, request: Request) -> Response:
        """`GET /.well-known/jwks.json`: the public keys the gateway's tokens are signed with."""
        jwks = await self.tokens.keys.jwks()
        return JSONResponse(jwks, headers={"Cache-Control": "public, max-age=300"})


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded body of a token request: bounded, every parameter at most once (RFC 6749 3.2)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise InvalidRequestError("the body must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequestError("the request body is too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequestError("the body is not valid UTF-8") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise InvalidRequestError(f"{name} is given more than once")
        form[name] = value
    return form


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    """(client_id, secret) from HTTP Basic or the form; exactly one method may be used."""
    basic_id, basic_secret = extract_basic_authorization(request.headers)
    in_form = "client_secret" in form
    if basic_id is not None and in_form:
        raise InvalidRequestError("authenticate the client one way: HTTP Basic or the form, not both")
    if basic_id is not None:
        client_id, secret = basic_id, basic_secret
    else:
        client_id, secret = form.get("client_id"), form.get("client_secret")
    if not client_id or not secret:
        raise InvalidClientError(description="client authentication is required", status_code=401)
    return client_id, secret


def _error(exc: OAuth2Error) -> Response:
    """An RFC 6749 error response (401 with a Basic challenge for invalid_client)."""
    headers = {**dict(exc.get_headers()), **NO_STORE}
    headers.pop("Content-Type", None)
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = 'Basic realm="evgate"'
    return JSONResponse(dict(exc.get_body()), status_code=exc.status_code, headers=headers)
