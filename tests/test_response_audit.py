"""The response audit itself: it finds a registered secret in a gateway response, ignores other
paths, and really sees the responses of this run and the secrets the simulators make."""

from __future__ import annotations

import httpx

import simulator.data
from tests.response_audit import AUDIT, ResponseAudit


def _response(url: str, body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, request=httpx.Request("POST", url))


def test_a_secret_in_a_gateway_response_is_found_and_operator_traffic_ignored() -> None:
    audit = ResponseAudit()
    audit.register("cpo-token-0123456789", "abc")  # too short to search for: ignored
    audit.record(_response("http://127.0.0.1:1/graphql", b'{"data": {"x": "cpo-token-0123456789"}}'))
    audit.record(_response("http://127.0.0.1:1/graphql", b'{"data": {"x": "abc"}}'))
    audit.record(_response("https://127.0.0.1:2/ocpi/2.2.1/credentials", b'{"token": "cpo-token-0123456789"}'))
    assert list(audit.findings()) == [("http://127.0.0.1:1/graphql", "cpo-token-0123456789")]


def test_the_session_audit_is_installed(response_audit: ResponseAudit) -> None:
    assert response_audit is AUDIT
    tokens, _ = simulator.data.make_tokens(7, 3)  # as the simulated world makes them
    assert {t.uid for t in tokens} | {t.contract_id for t in tokens} <= AUDIT.secrets
    before = len(AUDIT.bodies)
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"ok": 1}))) as client:
        client.post("http://127.0.0.1:9/graphql", json={"query": "{ x }"})
    assert len(AUDIT.bodies) == before + 1
    AUDIT.bodies.pop()  # not a real gateway response
