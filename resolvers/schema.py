"""The strawberry schema: the Query root, request limits, policy enforcement and error codes.

Limits bound the work one request can ask for before any resolver runs (a public endpoint must
not let a single document fan out without bound): depth (the deepest useful query, locations ->
evses -> connectors -> tariffs -> provenance, is 8), aliases (each alias can repeat a costly
field), tokens (parsing itself costs), and the cost of the answer (`resolvers.cost`: fields times
the list sizes above them, checked at execution time because it depends on variables). Parsed
and validated documents are cached (LRU, bounded) because clients send the same few queries again
and again. Extensions are passed as classes or factories, never instances, so that no state is
shared between concurrent requests; the depth and alias rules, which hold no state, are built once
(see `LIMIT_RULES`).
"""

from __future__ import annotations

import functools

from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
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

from gateway.limits import AdmissionExtension
from resolvers.context import FreshLoaders
from resolvers.cost import CostLimit
from resolvers.errors import code_errors
from resolvers.permissions import protect_fields
from resolvers.queries import Query
from resolvers.subscriptions import Subscription

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
# Production mode (`GatewayConfig.production`) also refuses introspection (`__schema`, `__type`;
# `__typename` stays allowed).
PRODUCTION_RULES = (*LIMIT_RULES, NoSchemaIntrospectionCustomRule)


class EvgateSchema(Schema):
    """A strawberry Schema whose fields get the `@protected` policy and whose errors get codes."""

    def get_fields(self, type_definition: StrawberryObjectDefinition) -> list[StrawberryField]:
        """Strawberry's per-type hook at build time: attach the policy check to protected fields."""
        return protect_fields(super().get_fields(type_definition), type_definition)

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Code (and, for unexpected errors, mask and log) every error of every phase."""
        code_errors(errors, execution_context)


def build_schema(*, introspection: bool = True) -> EvgateSchema:
    """A new schema instance (the module-level `schema` is the one the app serves; without
    introspection, `production_schema()`)."""
    rules = LIMIT_RULES if introspection else PRODUCTION_RULES
    return EvgateSchema(
        query=Query,
        subscription=Subscription,
        config=StrawberryConfig(auto_camel_case=True),
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: ParserCache(maxsize=CACHE_SIZE),
            lambda: AddValidationRules(list(rules)),
            lambda: ValidationCache(maxsize=CACHE_SIZE),
            AdmissionExtension,  # after ValidationCache: its refusal replaces the validation result
            CostLimit,
            FreshLoaders,
        ],
    )


schema = build_schema()


@functools.cache
def production_schema() -> EvgateSchema:
    """The schema served in production mode: introspection refused (built once, on first use)."""
    return build_schema(introspection=False)


def sdl() -> str:
    """The schema in SDL, as committed in `schema.graphql`."""
    return schema.as_str().rstrip("\n") + "\n"
