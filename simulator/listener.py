"""The HTTPS socket of a simulated operator, which faults can take down or re-key.

An outage must look like one from the client's side (connection refused, not an error page), and
a certificate or protocol fault must be a real handshake with other TLS settings. So the listener
can stop accepting while the application keeps its state, and come back on the same port with the
same or another SSL context.
"""

from __future__ import annotations

import ssl

from aiohttp import web


class Listener:
    """One aiohttp application served over TLS on 127.0.0.1, restartable on its port."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext, port: int = 0) -> None:
        self.app = app
        self.ssl_context = ssl_context  # the normal context; `up(other)` may serve another for a while
        self.port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def running(self) -> bool:
        """Whether the app is set up (it may still be down)."""
        return self._runner is not None

    @property
    def accepting(self) -> bool:
        """Whether connections are accepted right now."""
        return self._site is not None

    async def start(self) -> None:
        """Set the application up and start accepting (an ephemeral port unless one was given)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await self.up()

    async def up(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Accept connections again, with the normal TLS settings or `ssl_context`."""
        assert self._runner is not None, "start() first"
        if self._site is not None:
            await self.down()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ssl_context or self.ssl_context)
        await site.start()
        self._site = site
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def down(self) -> None:
        """Stop accepting: clients now get connection refused; the application keeps its state."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    def drop_connections(self) -> None:
        """Close every established connection, so that a fault switched on now reaches clients
        that keep connections alive (they reconnect, and meet the outage or the new TLS)."""
        if self._runner is not None and self._runner.server is not None:
            for protocol in list(self._runner.server.connections):
                protocol.force_close()

    async def stop(self) -> None:
        """Stop serving and release the port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None


class ListenedServer:
    """What every simulated server shares: its `app` served by its `listener` on `port`."""

    listener: Listener
    port: int

    async def start(self) -> None:
        """Bind to 127.0.0.1 (an ephemeral port unless one was given) and serve."""
        await self.listener.start()
        self.port = self.listener.port

    async def stop(self) -> None:
        """Stop serving and release the port."""
        await self.listener.stop()
