"""The one HTTP client every adapter uses: TLS policy, timeouts and the upstream error taxonomy.

TLS is always verified against the system trust store plus an optional per-operator CA bundle, with
TLS 1.2 as the minimum; plain `http://` is refused unless the operator is explicitly marked insecure
(local testing only). Every failure becomes an `UpstreamError` with a stable code, so the scheduler
can record it per operator and module and decide how long to back off.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from cryptography.hazmat.primitives import serialization

# Codes of the upstream part of the error catalogue (gateway/errors.py lists all codes).
UPSTREAM_TLS = "UPSTREAM_TLS"
UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
UPSTREAM_HTTP = "UPSTREAM_HTTP"
UPSTREAM_AUTH = "UPSTREAM_AUTH"
UPSTREAM_PROTOCOL = "UPSTREAM_PROTOCOL"
UPSTREAM_RATE_LIMITED = "UPSTREAM_RATE_LIMITED"


class UpstreamError(Exception):
    """A failure talking to an operator, with a catalogue code and, for 429/503, a retry hint."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(slots=True)
class Response:
    """What adapters need of a response: status, headers and the decoded JSON body."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: Any
    url: str


# A client certificate: the certificate's PEM file and the key, as a PEM file path or as PEM bytes
# (decrypted from the secret store, never written to disk in the clear).
ClientCert = tuple[str, str | bytes]


def _load_key_from_memory(ctx: ssl.SSLContext, certfile: str, key_pem: bytes) -> None:
    """Load a private key held in memory: `ssl` only reads files, so the key goes through a
    temporary file encrypted under a one-off password, deleted as soon as it is loaded."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    password = secrets.token_bytes(32)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.NamedTemporaryFile(prefix="evgate-key-", suffix=".pem") as fh:  # created 0600
        fh.write(encrypted)
        fh.flush()
        ctx.load_cert_chain(certfile=certfile, keyfile=fh.name, password=password)


def make_ssl_context(ca_bundle: str | None = None, client_cert: ClientCert | None = None) -> ssl.SSLContext:
    """A verifying client context: system trust plus `ca_bundle`, TLS >= 1.2, optional client cert."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle:
        ctx.load_verify_locations(cafile=ca_bundle)
    if client_cert:
        certfile, key = client_cert
        if isinstance(key, bytes):
            _load_key_from_memory(ctx, certfile, key)
        else:
            ctx.load_cert_chain(certfile=certfile, keyfile=key)
    return ctx


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date; the scheduler's own backoff applies


class HttpClient:
    """A pooled aiohttp session bound to one operator's TLS settings."""

    def __init__(
        self,
        *,
        ca_bundle: str | None = None,
        timeout: float = 30.0,
        insecure_http: bool = False,
        client_cert: ClientCert | None = None,
    ) -> None:
        self._ssl = make_ssl_context(ca_bundle, client_cert)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._insecure_http = insecure_http
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=8)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, json_serialize=lambda o: orjson.dumps(o).decode()
            )
        return self._session

    async def close(self) -> None:
        """Release the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_json(self, url: str, headers: dict[str, str] | None = None) -> Response:
        """GET a URL and decode its JSON body, mapping every failure to an UpstreamError."""
        return await self.request_json("GET", url, headers)

    async def post_json(self, url: str, body: Any, headers: dict[str, str] | None = None) -> Response:
        """POST a JSON body (OICP) and decode the JSON answer, failures mapped as for GET."""
        return await self.request_json("POST", url, headers, body)

    async def request_json(
        self, method: str, url: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> Response:
        """Send one request and decode its JSON body, mapping every failure to an UpstreamError."""
        if url.startswith("http://") and not self._insecure_http:
            raise UpstreamError(UPSTREAM_TLS, f"refusing plain HTTP to {url}: TLS is required")
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers = {**(headers or {}), "Content-Type": "application/json"}
        try:
            async with self._get_session().request(
                method, url, headers=headers, data=data, allow_redirects=False
            ) as resp:
                raw = await resp.read()
                hdrs = {k.lower(): v for k, v in resp.headers.items()}
                status = resp.status
        except aiohttp.ClientConnectorCertificateError as exc:
            raise UpstreamError(UPSTREAM_TLS, f"certificate not trusted for {url}: {exc.certificate_error}") from exc
        except aiohttp.ClientSSLError as exc:
            raise UpstreamError(UPSTREAM_TLS, f"TLS handshake with {url} failed: {exc}") from exc
        except ssl.SSLError as exc:
            raise UpstreamError(UPSTREAM_TLS, f"TLS failure with {url}: {exc}") from exc
        except TimeoutError as exc:
            raise UpstreamError(UPSTREAM_TIMEOUT, f"no answer from {url} within {self._timeout.total}s") from exc
        except aiohttp.ClientConnectorError as exc:
            # A server that speaks only TLS 1.0/1.1 may drop the handshake without an alert: a
            # reset while connecting over TLS is a TLS failure, not an outage (which is refused).
            if url.startswith("https://") and isinstance(exc.os_error, ConnectionResetError | ConnectionAbortedError):
                raise UpstreamError(UPSTREAM_TLS, f"{url} closed the connection during the TLS handshake") from exc
            raise UpstreamError(UPSTREAM_UNAVAILABLE, f"cannot connect to {url}: {exc}") from exc
        except aiohttp.ClientConnectionError as exc:
            raise UpstreamError(UPSTREAM_UNAVAILABLE, f"cannot connect to {url}: {exc}") from exc
        except asyncio.CancelledError:
            raise
        except aiohttp.ClientError as exc:
            raise UpstreamError(UPSTREAM_HTTP, f"HTTP failure with {url}: {exc}") from exc

        if status in (401, 403):
            raise UpstreamError(UPSTREAM_AUTH, f"{url} refused our credentials (HTTP {status})")
        if status == 429:
            raise UpstreamError(
                UPSTREAM_RATE_LIMITED,
                f"{url} asks us to slow down (HTTP 429)",
                _retry_after(hdrs.get("retry-after")),
            )
        if status >= 400:
            raise UpstreamError(UPSTREAM_HTTP, f"{url} answered HTTP {status}", _retry_after(hdrs.get("retry-after")))
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(UPSTREAM_PROTOCOL, f"{url} did not return valid JSON: {exc}") from exc
        return Response(status=status, headers=hdrs, body=body, url=url)


def server_date(resp: Response) -> datetime | None:
    """The server's clock from its `Date` header (RFC 9110), for protocols without a timestamp
    in the body; None when absent or unreadable."""
    value = resp.headers.get("date")
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
