"""Give every GraphQL error an `extensions.code` from `gateway.errors`, and mask the unexpected ones.

`EvgateSchema.process_errors` calls `code_errors` on every error list strawberry produces (parse,
validation, execution), before the response is built. It does the work of strawberry's
`MaskErrors` too: that extension is not used because it runs in `on_operation`, which a parse
error raised by `ParserCache` skips, so a syntax error would go out uncoded.

Classification:
- a GraphQLSyntaxError (including "too many tokens") -> GRAPHQL_PARSE_FAILED;
- an `EvgateError` raised by a resolver, the catalogue or the policy -> its own code and message;
- an error about the document found before execution (validation rules, depth and alias limits)
  -> GRAPHQL_VALIDATION_FAILED;
- an error about the document outside any field during execution (variable values that do not
  coerce) -> BAD_USER_INPUT;
- anything else -> INTERNAL_SERVER_ERROR with a generic message: the original (which may hold SQL,
  file paths or a stack trace) is only logged.
"""

from __future__ import annotations

import logging

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.types import ExecutionContext

from gateway.errors import ErrorCode, EvgateError

log = logging.getLogger("evgate.graphql")

INTERNAL_MESSAGE = "Internal server error."
_CODES = frozenset(code.value for code in ErrorCode)


def classify(error: GraphQLError, execution_context: ExecutionContext | None) -> tuple[ErrorCode, str]:
    """The code of an error and the message the client may see."""
    existing = (error.extensions or {}).get("code")
    if existing in _CODES:  # already coded (validation results are cached and seen again)
        return ErrorCode(existing), error.message
    original = error.original_error
    if isinstance(original, EvgateError):
        internal = original.code is ErrorCode.INTERNAL_SERVER_ERROR
        return original.code, INTERNAL_MESSAGE if internal else original.message
    if isinstance(error, GraphQLSyntaxError):
        return ErrorCode.GRAPHQL_PARSE_FAILED, error.message
    # Before execution, rule violations have no original error (or point at the document);
    # an error made from a stray exception (a bug in an extension) has one and no nodes.
    executed = execution_context is not None and execution_context.result is not None
    if not executed and (original is None or error.nodes):
        return ErrorCode.GRAPHQL_VALIDATION_FAILED, error.message
    if error.nodes and executed and error.path is None:
        # graphql-core reports variables that do not coerce before resolving any field.
        return ErrorCode.BAD_USER_INPUT, error.message
    return ErrorCode.INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE


def code_errors(errors: list[GraphQLError], execution_context: ExecutionContext | None) -> None:
    """Replace each error, in place, by a copy carrying its code (and a masked message if internal).

    Unexpected errors are logged here with their traceback; expected ones at debug level.
    """
    for i, error in enumerate(errors):
        code, message = classify(error, execution_context)
        if code is ErrorCode.INTERNAL_SERVER_ERROR:
            log.error("unexpected error at %s: %s", error.path, error.message, exc_info=error.original_error)
        else:
            log.debug("%s at %s: %s", code.value, error.path, message)
        if (error.extensions or {}).get("code") == code.value and message == error.message:
            continue
        errors[i] = GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            # Kept only for errors the client may read; internal ones drop it so nothing downstream
            # can format it into the response.
            original_error=None if code is ErrorCode.INTERNAL_SERVER_ERROR else error.original_error,
            extensions={**(error.extensions or {}), "code": code.value}
            if code is not ErrorCode.INTERNAL_SERVER_ERROR
            else {"code": code.value},
        )
