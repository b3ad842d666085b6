"""The per-request GraphQL context: who is asking, and that operation's DataLoaders.

Built by the ASGI app for each HTTP request or WebSocket connection. Policy decisions are cached
per operation: a list of 100 sessions asks the same question once per (operator, borough), not once
per row and field. The operators' data-sharing agreements are read at most once per operation, and
only when a partner or borough asks for USAGE or COMMERCIAL data (`gateway.policy.needs_agreements`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from strawberry.extensions import SchemaExtension

from gateway import catalog
from gateway.auth import Principal
from gateway.policy import Agreements, DataClass, Decision, RowScope, allowed, needs_agreements, row_scope
from resolvers.dataloaders import Loaders, create_loaders


@dataclass
class RequestContext:
    """What every resolver can reach through `info.context`."""

    principal: Principal
    loaders: Loaders = field(default_factory=create_loaders)
    request: Any = None  # the Starlette Request or WebSocket
    response: Any = None
    connection_params: dict[str, Any] | None = None  # graphql-transport-ws connection_init payload
    _decisions: dict[tuple[DataClass, str | None, str | None], Decision] = field(default_factory=dict, repr=False)
    _agreements: Agreements | None = field(default=None, repr=False)
    _agreements_task: asyncio.Future[Agreements] | None = field(default=None, repr=False)

    def needs_agreements(self, data_classes: Iterable[DataClass]) -> bool:
        """Whether deciding on `data_classes` for this principal needs agreements not loaded yet."""
        return self._agreements is None and any(needs_agreements(self.principal, dc) for dc in data_classes)

    async def load_agreements(self) -> Agreements:
        """The operators' agreements, read once per operation (concurrent fields share the read)."""
        if self._agreements is None:
            if self._agreements_task is None:
                self._agreements_task = asyncio.ensure_future(catalog.sharing_agreements())
            # Shielded: one field being cancelled must not cancel the read the others await.
            self._agreements = await asyncio.shield(self._agreements_task)
        return self._agreements

    def decide(
        self, data_class: DataClass, operator_id: str | None = None, borough_code: str | None = None
    ) -> Decision:
        """The policy decision for this principal on `data_class` (of a row of `operator_id` in
        `borough_code`, or of no particular row), memoised for the operation. For partners and
        boroughs the agreements must have been loaded (`load_agreements`) first: until then
        nothing is shared, so a forgotten load refuses rather than leaks."""
        key = (data_class, operator_id, borough_code)
        decision = self._decisions.get(key)
        if decision is None:
            decision = allowed(self.principal, data_class, operator_id, borough_code, self._agreements)
            if self._agreements is not None or not needs_agreements(self.principal, data_class):
                self._decisions[key] = decision  # never memoise a refusal made without the agreements
        return decision

    async def row_scope(self, data_class: DataClass) -> RowScope:
        """The rows of `data_class` this principal may see (`gateway.policy.row_scope`): what a
        list resolver passes to the catalogue, which turns it into SQL."""
        agreements = await self.load_agreements() if needs_agreements(self.principal, data_class) else {}
        return row_scope(self.principal, data_class, agreements)

    def forget_decisions(self) -> None:
        """Drop memoised decisions and agreements (a new operation, or a new principal)."""
        self._decisions.clear()
        self._agreements = None
        self._agreements_task = None

    def set_principal(self, principal: Principal) -> None:
        """Change who is asking (WebSocket connection_init credentials) and forget old decisions."""
        self.principal = principal
        self.forget_decisions()


class FreshLoaders(SchemaExtension):
    """Give each operation new DataLoaders.

    An HTTP request is one operation, but a WebSocket connection keeps one context for all of its
    operations; without this, a long-lived connection would keep serving the rows it cached first.
    Policy decisions and agreements are forgotten too, so an agreement changed since the last
    operation applies to the next one.
    """

    def on_operation(self) -> Iterator[None]:
        """Swap in empty loaders before the operation runs."""
        context = self.execution_context.context
        if isinstance(context, RequestContext):
            context.loaders = create_loaders()
            context.forget_decisions()
        yield
