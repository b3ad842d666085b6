"""The strawberry schema: the Query root, request limits, policy enforcement and error codes.

Limits bound the work one request can ask for before any resolver runs (a public endpoint must
not let a single document fan out without bound): depth (the deepest useful query, locations ->
evses -> connectors -> tariffs -> provenance, is 8), aliases (each alias can repeat a costly
field), tokens (parsing itself costs). Parsed and validated documents are cached (LRU, bounded)
because clients send the same few queries again and again. Extensions are passed as classes or
factories, never instances, so that no state is shared between concurrent requests; the depth and
alias rules, which hold no state, are built once (see `LIMIT_RULES`).
"""

from __future__ import annotations

from graphql import GraphQLError
from strawberry import Schema
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField

from resolvers.context import FreshLoaders
from resolvers.errors import code_errors
from resolvers.permissions import protect_fields
from resolvers.queries import Query

MAX_DEPTH = 10
MAX_ALIASES = 15
MAX_TOKENS = 2000  # GraphiQL's introspection query is about 300 tokens
CACHE_SIZE = 256

# The depth and alias validation rules, built once. ValidationCache keys on the document *and the
# rule classes*, and every QueryDepthLimiter or MaxAliasesLimiter instance builds new classes: made
# per request, they made every request miss the cache and validate the whole document again.
LIMIT_RULES = (
    *QueryDepthLimiter(max_depth=MAX_DEPTH).validation_rules,
    *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
)


class EvgateSchema(Schema):
    """A strawberry Schema whose fields get the `@protected` policy and whose errors get codes."""

    def get_fields(self, type_definition: StrawberryObjectDefinition) -> list[StrawberryField]:
        """Strawberry's per-type hook at build time: attach the policy check to protected fields."""
        return protect_fields(super().get_fields(type_definition), type_definition)

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Code (and, for unexpected errors, mask and log) every error of every phase."""
        code_errors(errors, execution_context)


def build_schema() -> EvgateSchema:
    """A new schema instance (the module-level `schema` is the one the app serves)."""
    return EvgateSchema(
        query=Query,
        config=StrawberryConfig(auto_camel_case=True),
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: ParserCache(maxsize=CACHE_SIZE),
            lambda: AddValidationRules(list(LIMIT_RULES)),
            lambda: ValidationCache(maxsize=CACHE_SIZE),
            FreshLoaders,
        ],
    )


schema = build_schema()


def sdl() -> str:
    """The schema in SDL, as committed in `schema.graphql`."""
    return schema.as_str().rstrip("\n") + "\n"
