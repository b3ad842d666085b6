"""The per-request GraphQL context: who is asking, and that operation's DataLoaders.

Built by the ASGI app for each HTTP request or WebSocket connection. Policy decisions are cached
per context: a list of 100 sessions asks the same question once, not once per row and field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from strawberry.extensions import SchemaExtension

from gateway.auth import Principal
from gateway.policy import DataClass, Decision, allowed
from resolvers.dataloaders import Loaders, create_loaders


@dataclass
class RequestContext:
    """What every resolver can reach through `info.context`."""

    principal: Principal
    loaders: Loaders = field(default_factory=create_loaders)
    request: Any = None  # the Starlette Request or WebSocket
    response: Any = None
    connection_params: dict[str, Any] | None = None  # graphql-transport-ws connection_init payload
    _decisions: dict[tuple[DataClass, str | None], Decision] = field(default_factory=dict, repr=False)

    def decide(self, data_class: DataClass, operator_id: str | None = None) -> Decision:
        """The policy decision for this principal (memoised for the lifetime of the context)."""
        key = (data_class, operator_id)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decisions[key] = allowed(self.principal, data_class, operator_id)
        return decision

    def set_principal(self, principal: Principal) -> None:
        """Change who is asking (WebSocket connection_init credentials) and forget old decisions."""
        self.principal = principal
        self._decisions.clear()


class FreshLoaders(SchemaExtension):
    """Give each operation new DataLoaders.

    An HTTP request is one operation, but a WebSocket connection keeps one context for all of its
    operations; without this, a long-lived connection would keep serving the rows it cached first.
    """

    def on_operation(self) -> Iterator[None]:
        """Swap in empty loaders before the operation runs."""
        context = self.execution_context.context
        if isinstance(context, RequestContext):
            context.loaders = create_loaders()
        yield
