"""The simulation's admin endpoint: read, replace and clear each operator's faults at run time.

    GET    /admin/faults                  every operator's plan, states and fired counters
    GET    /admin/faults/{operator_id}    one operator's
    PUT    /admin/faults/{operator_id}    replace its plan: a JSON list of faults or {"faults": [...]}
    DELETE /admin/faults/{operator_id}    clear it

Every request needs `Authorization: Bearer <admin token>` (compared in constant time; 401
otherwise); an invalid plan is a 400 whose JSON `error` names the fault and parameter.

Plain HTTP on 127.0.0.1 by default: it is bound to loopback only, is no operator API (the gateway
never calls it, so there is no TLS behaviour to simulate), and it must stay reachable while the
operators' own listeners are down or presenting broken certificates, so it shares nothing with
them. Pass `ssl_context` (e.g. the simulation PKI's server context) to serve HTTPS instead.
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Mapping

import orjson
from aiohttp import web

from simulator.faults import FaultConfigError, FaultPlan, Faults, Handler

MAX_BODY = 64 * 1024


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


class ControlServer:
    """The admin server of a whole simulation, on its own loopback listener."""

    def __init__(
        self,
        targets: Mapping[str, Faults],
        token: str,
        *,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if len(token) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        self.targets = dict(targets)
        self._token = token.encode()
        self.port = port
        self._ssl = ssl_context
        self.app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY)
        self.app.router.add_get("/admin/faults", self.list_all)
        self.app.router.add_get("/admin/faults/{operator_id}", self.get_one)
        self.app.router.add_put("/admin/faults/{operator_id}", self.replace)
        self.app.router.add_delete("/admin/faults/{operator_id}", self.clear)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL (`http://127.0.0.1:<port>`, or https with an ssl_context)."""
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Bind to 127.0.0.1 (an ephemeral port unless one was given) and serve."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self._ssl)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving (the faults stay as they are)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- middlewares ---------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """JSON errors for everything, HTTP errors (404, 405, 413) included."""
        try:
            return await handler(request)
        except FaultConfigError as exc:
            return _json({"error": str(exc)}, 400)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _json({"error": exc.reason}, exc.status, {k: v for k, v in exc.headers.items() if k == "Allow"})

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """401 unless `Authorization: Bearer <admin token>`."""
        scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), self._token):
            challenge = {"WWW-Authenticate": 'Bearer realm="evgate-sim"'}
            return _json({"error": "missing or invalid admin token"}, 401, challenge)
        return await handler(request)

    # -- handlers ------------------------------------------------------------------------------

    def _target(self, request: web.Request) -> tuple[str, Faults]:
        operator_id = request.match_info["operator_id"]
        faults = self.targets.get(operator_id)
        if faults is None:
            raise web.HTTPNotFound(reason=f"unknown operator {operator_id!r}")
        return operator_id, faults

    async def list_all(self, request: web.Request) -> web.Response:
        """GET /admin/faults."""
        return _json({"operators": {name: faults.active() for name, faults in sorted(self.targets.items())}})

    async def get_one(self, request: web.Request) -> web.Response:
        """GET /admin/faults/{operator_id}."""
        operator_id, faults = self._target(request)
        return _json({"operator": operator_id, **faults.active()})

    async def replace(self, request: web.Request) -> web.Response:
        """PUT /admin/faults/{operator_id}: validate the whole plan, then replace."""
        operator_id, faults = self._target(request)
        try:
            raw = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise FaultConfigError(f"body is not JSON: {exc}") from None
        if not isinstance(raw, list | dict):
            raise FaultConfigError('body must be a list of faults or {"faults": [...]} (DELETE clears)')
        await faults.apply(FaultPlan.from_config(raw))
        return _json({"operator": operator_id, **faults.active()})

    async def clear(self, request: web.Request) -> web.Response:
        """DELETE /admin/faults/{operator_id}."""
        operator_id, faults = self._target(request)
        await faults.clear()
        return _json({"operator": operator_id, **faults.active()})
