"""The one catalogue of error codes, shared by the GraphQL API and the adapter layer.

Every GraphQL error carries one of these in `extensions.code`, and the scheduler records the
upstream ones per operator and module, so clients, dashboards and logs all speak the same words.
A code is a stable contract: add new ones, never rename or reuse one.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """A stable, documented error code; `description` says when it is used."""

    # The request itself.
    BAD_REQUEST = "BAD_REQUEST"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    # Abuse limits.
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    RATE_LIMITED = "RATE_LIMITED"
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    PERSISTED_QUERY_NOT_ALLOWED = "PERSISTED_QUERY_NOT_ALLOWED"
    # Access control.
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    # Our own failures, always masked.
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    # Talking to operators (raised by adapters, recorded in SyncState.last_error_code).
    UPSTREAM_TLS = "UPSTREAM_TLS"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_HTTP = "UPSTREAM_HTTP"
    UPSTREAM_AUTH = "UPSTREAM_AUTH"
    UPSTREAM_PROTOCOL = "UPSTREAM_PROTOCOL"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_RATE_LIMITED = "UPSTREAM_RATE_LIMITED"
    RECORD_INVALID = "RECORD_INVALID"

    @property
    def description(self) -> str:
        """One line on when this code is used."""
        return DESCRIPTIONS[self]


DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: (
        "The HTTP request is not a usable GraphQL request (body not JSON, no query, a mutation "
        "over GET, an unsupported content type)."
    ),
    ErrorCode.GRAPHQL_PARSE_FAILED: "The request is not syntactically valid GraphQL (or is too long).",
    ErrorCode.GRAPHQL_VALIDATION_FAILED: (
        "The request does not validate against the schema (unknown field, wrong argument type, "
        "too deep, too many aliases)."
    ),
    ErrorCode.BAD_USER_INPUT: (
        "An argument or variable has an unacceptable value (inverted bounding box, radius out of "
        "range, page size over the cap, malformed cursor)."
    ),
    ErrorCode.QUERY_TOO_COMPLEX: (
        "The estimated cost of the query (fields times the list sizes above them) is over the limit; "
        "`extensions.cost` and `extensions.maxCost` give both."
    ),
    ErrorCode.RATE_LIMITED: (
        "The caller (its subject, or its IP address when anonymous) sent too many requests; HTTP 429, "
        "retry after `extensions.retryAfter` seconds (also the Retry-After header)."
    ),
    ErrorCode.PERSISTED_QUERY_NOT_FOUND: (
        "The request sent only a persisted query hash, and no query with that hash is known "
        "(or persisted queries are off): send the query text."
    ),
    ErrorCode.PERSISTED_QUERY_NOT_ALLOWED: "Safelist mode: only the persisted (safelisted) queries may run.",
    ErrorCode.UNAUTHENTICATED: "The field needs credentials and none (or invalid ones) were given.",
    ErrorCode.FORBIDDEN: "The caller is authenticated but not allowed to read this field.",
    ErrorCode.INTERNAL_SERVER_ERROR: "An unexpected failure; the details are logged, never returned.",
    ErrorCode.UPSTREAM_TLS: "The operator's TLS handshake or certificate failed verification.",
    ErrorCode.UPSTREAM_TIMEOUT: "The operator did not answer in time.",
    ErrorCode.UPSTREAM_HTTP: "The operator answered with an unexpected HTTP status.",
    ErrorCode.UPSTREAM_AUTH: "The operator refused our credentials (HTTP 401/403).",
    ErrorCode.UPSTREAM_PROTOCOL: (
        "The operator's answer breaks the protocol (bad JSON, envelope, paging, OCPI 2xxx: our request refused)."
    ),
    ErrorCode.UPSTREAM_UNAVAILABLE: "The operator could not be reached or reported itself down (OCPI 3xxx/4xxx).",
    ErrorCode.UPSTREAM_RATE_LIMITED: "The operator asked us to slow down (HTTP 429).",
    ErrorCode.RECORD_INVALID: "One operator record failed validation and was quarantined.",
}

# Codes whose message is written for the client and safe to return as is.
CLIENT_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.BAD_REQUEST,
        ErrorCode.GRAPHQL_PARSE_FAILED,
        ErrorCode.GRAPHQL_VALIDATION_FAILED,
        ErrorCode.BAD_USER_INPUT,
        ErrorCode.QUERY_TOO_COMPLEX,
        ErrorCode.RATE_LIMITED,
        ErrorCode.PERSISTED_QUERY_NOT_FOUND,
        ErrorCode.PERSISTED_QUERY_NOT_ALLOWED,
        ErrorCode.UNAUTHENTICATED,
        ErrorCode.FORBIDDEN,
    }
)


class EvgateError(Exception):
    """An expected failure with a catalogue code and a message fit for the caller."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __repr__(self) -> str:
        return f"EvgateError({self.code.value}, {self.message!r})"


def bad_input(message: str) -> EvgateError:
    """A BAD_USER_INPUT error: the caller sent a value we refuse."""
    return EvgateError(ErrorCode.BAD_USER_INPUT, message)
