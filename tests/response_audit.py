"""An audit of every gateway response of the whole test run: none may carry a driver's raw token
(PERSONAL data) or an operator credential.

Installed by `tests/conftest.py` for the session: every httpx response from a gateway path is
kept, every secret the simulators generate (drivers' token uids and contract ids, operator tokens,
Open Charge Map keys) is registered as it is made, tests may register their own, and at the end
of the run each body is searched for each secret (`pytest_sessionfinish` fails the run on a find).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

# Paths the gateway serves; simulators (operators) legitimately send credentials back and forth.
GATEWAY_PATHS = ("/graphql", "/oauth", "/.well-known", "/healthz", "/partners")
MIN_SECRET_LENGTH = 6  # shorter strings would match by chance
_WORD = re.compile(rb"[A-Za-z0-9_\-]+")


@dataclass
class ResponseAudit:
    """Gateway response bodies seen, and the secrets none of them may contain."""

    secrets: set[str] = field(default_factory=set)
    bodies: list[tuple[str, bytes]] = field(default_factory=list)

    def register(self, *values: str | None) -> None:
        """Add secrets that must never appear in a gateway response."""
        self.secrets.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)

    def record(self, response: httpx.Response) -> None:
        """Keep the body of a gateway response (streamed, unread responses are skipped)."""
        if not response.request.url.path.startswith(GATEWAY_PATHS):
            return
        try:
            self.bodies.append((str(response.request.url), response.content))
        except httpx.ResponseNotRead:
            pass

    def findings(self) -> Iterator[tuple[str, str]]:
        """(URL, secret) for every body that contains a registered secret as a whole word.

        Secrets are identifiers (hex, base64url, `GB-EVD-C00000001-3`), so in JSON or a header they
        stand between quotes, spaces or punctuation: matching words against a set keeps the scan
        linear in the bodies instead of bodies x tens of thousands of secrets.
        """
        needles = {s.encode(): s for s in self.secrets}
        seen: set[bytes] = set()
        for url, body in self.bodies:
            if body in seen:
                continue
            seen.add(body)
            for word in set(_WORD.findall(body)) & needles.keys():
                yield url, needles[word]


AUDIT = ResponseAudit()


def _wrap(original: Callable[..., Any], after: Callable[[Any, Any], None]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        after(result, (args, kwargs))
        return result

    return wrapper


def install(patch: Callable[[Any, str, Any], None]) -> None:
    """Hook the audit into httpx and the simulators; `patch(obj, name, value)` sets an attribute
    for the session (a pytest MonkeyPatch's `setattr`)."""
    import simulator.data
    import simulator.ocm_server

    sync_send = httpx.Client.send
    async_send = httpx.AsyncClient.send

    def send(self: httpx.Client, *args: Any, **kwargs: Any) -> httpx.Response:
        response = sync_send(self, *args, **kwargs)
        AUDIT.record(response)
        return response

    async def asend(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> httpx.Response:
        response = await async_send(self, *args, **kwargs)
        AUDIT.record(response)
        return response

    patch(httpx.Client, "send", send)
    patch(httpx.AsyncClient, "send", asend)

    def tokens_made(result: Any, _: Any) -> None:
        tokens, _weights = result
        for token in tokens:
            AUDIT.register(token.uid, token.contract_id)

    patch(simulator.data, "make_tokens", _wrap(simulator.data.make_tokens, tokens_made))
    patch(
        simulator.data, "operator_spec", _wrap(simulator.data.operator_spec, lambda spec, _: AUDIT.register(spec.token))
    )
    ocm_init = simulator.ocm_server.OcmServer.__init__

    def ocm_server_init(self: Any, *args: Any, **kwargs: Any) -> None:
        ocm_init(self, *args, **kwargs)
        AUDIT.register(self.api_key)

    patch(simulator.ocm_server.OcmServer, "__init__", ocm_server_init)
