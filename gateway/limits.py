"""Per-request admission: the per-principal rate limit and the persisted-query safelist.

Rate limit: a token bucket per principal, in process memory. The key is the principal's role and
subject when it is authenticated, else the client's IP address (so anonymous callers behind one
NAT or proxy share a bucket; uvicorn takes the client address from X-Forwarded-For only for the
proxies in its `forwarded_allow_ips`). A bucket holds `burst` requests and refills at
`per_minute / 60` a second; a request finding it empty is refused with HTTP 429, a `Retry-After`
header and the GraphQL error RATE_LIMITED with `extensions.retryAfter` (whole seconds). Buckets
are kept for at most `MAX_KEYS` principals, least recently seen dropped first (a dropped one
starts full again). Each process has its own buckets: with N replicas the real limit is N times
the configured one.

Safelist (`persisted_queries = "safelist"`): only the queries listed in `persisted_queries_file`
run, identified by the SHA-256 of their text. A request may send the text, or only
`extensions.persistedQuery.sha256Hash` (as Apollo clients do). An unknown hash gets
PERSISTED_QUERY_NOT_FOUND, a text not on the list PERSISTED_QUERY_NOT_ALLOWED. With persisted
queries "off" any text runs, and a request sending only a hash gets PERSISTED_QUERY_NOT_FOUND
(an Apollo client then sends the text).

Over HTTP, `GatewayGraphQL.execute_single` admits each request before the response cache (cache
hits count too); operations over a WebSocket are admitted by `AdmissionExtension`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from gateway.auth import Principal
from gateway.errors import ErrorCode

MAX_KEYS = 100_000
PERSISTED_MODES = ("off", "safelist")


def sha256_hex(text: str) -> str:
    """The hex SHA-256 of a query text, as persisted-query clients compute it."""
    return hashlib.sha256(text.encode()).hexdigest()


class Refused(Exception):
    """A request refused before it runs: the GraphQL error to answer with, and the HTTP status."""

    def __init__(self, error: GraphQLError, status: int = 200, retry_after: int | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status
        self.retry_after = retry_after


def _refusal(code: ErrorCode, message: str) -> Refused:
    return Refused(GraphQLError(message, extensions={"code": code.value}))


def switched_off(value: object) -> bool:
    """Whether a setting says "off" (also false, 0, "no", "0")."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value <= 0
    return str(value).strip().lower() in ("off", "false", "no", "0", "")


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets by key: `burst` requests at once, refilled at `per_minute` a minute."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("rate_limit_per_minute must be positive and rate_limit_burst at least 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def acquire(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0 if admitted, else the seconds until it may retry."""
        now = self.clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        self._buckets[key] = bucket  # most recently seen last
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def rate_key(principal: Principal | None, client_host: str | None) -> str:
    """Whose bucket a request takes from: an authenticated subject, else the client's address."""
    if principal is not None and principal.authenticated and principal.subject:
        return f"{principal.role.value}:{principal.subject}"
    return f"ip:{client_host or 'unknown'}"


def load_safelist(path: str | Path) -> dict[str, str]:
    """The safelisted queries by SHA-256: a JSON object {hash: query} (each hash checked against
    its text) or a directory of `.graphql` files (each registered as is and whitespace-stripped)."""
    source = Path(path)
    queries: dict[str, str] = {}
    if source.is_dir():
        for file in sorted(source.rglob("*.graphql")):
            text = file.read_text()
            for variant in (text, text.strip()):
                queries[sha256_hex(variant)] = variant
    elif source.is_file():
        raw = orjson.loads(source.read_bytes())
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: a persisted query file is a JSON object {{sha256: query}}")
        for digest, text in raw.items():
            if not isinstance(text, str) or sha256_hex(text) != str(digest).lower():
                raise ValueError(f"{source}: the query listed under {digest} does not have that SHA-256")
            queries[str(digest).lower()] = text
    else:
        raise ValueError(f"persisted_queries_file {source} does not exist")
    if not queries:
        raise ValueError(f"{source}: no persisted queries found")
    return queries


class Admission:
    """What a request must pass before it runs: the rate limit, then the persisted-query rules."""

    def __init__(self, limiter: RateLimiter | None = None, safelist: Mapping[str, str] | None = None) -> None:
        self.limiter = limiter
        self.safelist = safelist

    @classmethod
    def of(
        cls, per_minute: Any, burst: Any, persisted_queries: str = "off", persisted_queries_file: str | None = None
    ) -> Admission:
        """From the gateway's settings (`GatewayConfig.rate_limit_*`, `persisted_queries*`)."""
        limiter = None if switched_off(per_minute) else RateLimiter(float(per_minute), int(burst))
        mode = str(persisted_queries).strip().lower()
        if mode not in PERSISTED_MODES:
            raise ValueError(f"persisted_queries must be one of {list(PERSISTED_MODES)}, got {persisted_queries!r}")
        safelist = None
        if mode == "safelist":
            if not persisted_queries_file:
                raise ValueError('persisted_queries = "safelist" needs persisted_queries_file')
            safelist = load_safelist(persisted_queries_file)
        return cls(limiter, safelist)

    def admit(
        self, principal: Principal | None, client_host: str | None, query: str | None, extensions: Any
    ) -> str | None:
        """The query text to run, or `Refused`. (No text and no hash: None, strawberry answers.)"""
        if self.limiter is not None:
            wait = self.limiter.acquire(rate_key(principal, client_host))
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                error = GraphQLError(
                    f"Too many requests: retry after {seconds} s.",
                    extensions={"code": ErrorCode.RATE_LIMITED.value, "retryAfter": seconds},
                )
                raise Refused(error, status=429, retry_after=seconds)
        digest = _persisted_hash(extensions)
        if self.safelist is None:
            if query is None and digest is not None:
                raise _refusal(
                    ErrorCode.PERSISTED_QUERY_NOT_FOUND,
                    "PersistedQueryNotFound: no persisted queries here.",
                )
            return query
        if query is None:
            if digest is None:
                return None
            known = self.safelist.get(digest.lower())
            if known is None:
                raise _refusal(ErrorCode.PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound: no query has this hash.")
            return known
        if digest is not None and digest.lower() != sha256_hex(query):
            raise _refusal(ErrorCode.BAD_REQUEST, "The persisted query hash does not match the query text.")
        if sha256_hex(query) not in self.safelist:
            raise _refusal(ErrorCode.PERSISTED_QUERY_NOT_ALLOWED, "Only persisted (safelisted) queries may run here.")
        return query


def _persisted_hash(extensions: Any) -> str | None:
    """`extensions.persistedQuery.sha256Hash` of a request, if it sends one."""
    if not isinstance(extensions, dict):
        return None
    persisted = extensions.get("persistedQuery")
    if not isinstance(persisted, dict):
        return None
    digest = persisted.get("sha256Hash")
    return digest if isinstance(digest, str) and digest else None


class AdmissionExtension(SchemaExtension):
    """Admit operations sent over a WebSocket (HTTP requests are admitted by the view, before the
    response cache). The app's `Admission` is found on the Starlette app's state. It runs in the
    validation step, listed after `ValidationCache`, so that a refusal replaces the errors that step
    found (raising earlier would end the WebSocket's worker task instead of answering); over a
    WebSocket the query text is always sent."""

    def on_validate(self) -> Iterator[None]:
        """Refuse by making the refusal the operation's only pre-execution error."""
        context = self.execution_context.context
        connection = getattr(context, "request", None)
        scope = getattr(connection, "scope", None)
        admission = None
        if isinstance(scope, dict) and scope.get("type") == "websocket":
            admission = getattr(getattr(scope.get("app"), "state", None), "admission", None)
        if not isinstance(admission, Admission):
            yield
            return
        client = scope.get("client")
        try:
            admission.admit(
                getattr(context, "principal", None),
                client[0] if client else None,
                self.execution_context.query,
                self.execution_context.operation_extensions,
            )
        except Refused as refused:
            # A new list (the one there may be the validation cache's own); validation is skipped.
            self.execution_context.pre_execution_errors = [refused.error]
        yield
