"""``twspy.server``: :class:`Server`, per-client hooks on :class:`~ws4web.server.WebSocketServer`.

Subclass it and override ``onopen(client)``, ``onmessage(client, message)``,
``onclose(client, code, reason)`` (or the README's ``onclose(client)``),
``onpong(client, payload)`` and ``onerror(client, exc)``; then ``run()`` serves
until Ctrl-C and closes every client with 1001 (Going Away). ``client`` is the
connection's handler (a :class:`Client`): ``client.send(message)``,
``client.close()``, ``client.send_ping()``.

Where twspy ran a thread per client, the server's selector loop runs them all
(a hook that blocks moves to a thread of its own: see docs/drivers.md).
"""

from __future__ import annotations

import logging
import ssl
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from ...auth import basic_auth
from ...exceptions import InvalidHandshake
from ...extensions.base import ServerExtensionFactory
from ...http11 import Request
from ...messages import Message, PongControlMessage
from ...server import WebSocketServer
from ...websocket import WebSocket
from .connection import positional_arity
from .message import twspy_message

__all__ = ["Client", "Server"]

logger = logging.getLogger("ws4web.compat.twspy")


class Client(WebSocket):
    """One client of a :class:`Server`: a ws4web handler whose callbacks call the server's hooks."""

    def __init__(
        self,
        sock: Any = None,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[Any] | None = None,
        environ: Mapping[str, Any] | None = None,
        heartbeat_freq: float | None = None,
        *,
        server: Server,
    ) -> None:
        super().__init__(sock, protocols, extensions, environ, heartbeat_freq)
        self.server = server

    def __str__(self) -> str:
        peer = self.peer_address
        if isinstance(peer, tuple):
            return f"<Client at {peer[0]}:{peer[1]}>"
        return "<Client on closed socket>"

    def opened(self) -> None:
        self._hook(self.server.onopen, self)

    def received_message(self, message: Message) -> None:
        self._hook(self.server.onmessage, self, twspy_message(message))

    def ponged(self, message: PongControlMessage) -> None:
        self._hook(self.server.onpong, self, message.data)

    def closed(self, code: int, reason: str | None = None) -> None:
        onclose = self.server.onclose
        if positional_arity(onclose) == 1:
            self._hook(onclose, self)
        else:
            self._hook(onclose, self, code, reason or "")

    def send_ping(self, payload: str | bytes = b"") -> None:
        self.ping(payload.encode() if isinstance(payload, str) else payload)
        self._hook(self.server.onping, self, payload)

    def send_close_frame(self, code: int = 1000, reason: str = "") -> None:
        self.close(code, reason)

    def _hook(self, hook: Any, *args: Any) -> None:
        # As in twspy, an exception in a hook goes to onerror() and the client stays connected.
        try:
            hook(*args)
        except Exception as exc:
            self.server.onerror(self, exc)


class Server:
    """``Server(address, loglevel=logging.INFO, ssl_args=None, max_join_time=2.0, **kwargs)``.

    ``address`` is ``(host, port)`` (``''`` for every interface, port 0 for any
    free one: see :attr:`port`). ``ssl_args`` (``certfile``, ``keyfile``) serve
    ``wss://``. ``max_join_time`` bounds the wait for clients to close at
    shutdown. ``kwargs`` are twspy's websocket options for a server:
    ``protocols``, ``extensions`` (ws4web server extension factories),
    ``trusted_origins``, ``locations``, ``auth``; and ws4web's door options
    (``max_message_size`` ...). As twspy did, it configures the root logger at
    ``loglevel``.
    """

    def __init__(
        self,
        address: tuple[str, int],
        loglevel: int = logging.INFO,
        ssl_args: Mapping[str, Any] | None = None,
        max_join_time: float = 2.0,
        **kwargs: Any,
    ) -> None:
        logging.basicConfig(level=loglevel, format="%(asctime)s: %(levelname)s: %(message)s", datefmt="%H:%M:%S")
        host, port = address
        options = self._door_options(kwargs)
        context = None
        if ssl_args:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(ssl_args["certfile"], ssl_args.get("keyfile"))
        self.max_join_time = max_join_time
        self.server = WebSocketServer(Client, host, port, ssl_context=context, server=self, **options)
        logger.info("Starting server at %s://%s:%d", "wss" if context else "ws", host, self.port)

    @staticmethod
    def _door_options(kwargs: dict[str, Any]) -> dict[str, Any]:
        options = dict(kwargs)
        for name in ("origin", "location"):
            if name in options:
                raise TypeError(f"{name!r} is a client's option (the Origin to send, the resource to ask for)")
        if "protocols" in options:
            options["subprotocols"] = options.pop("protocols")
        extensions = list(options.pop("extensions", ()))
        for factory in extensions:
            if not isinstance(factory, ServerExtensionFactory):
                raise TypeError(f"extensions are ws4web server extension factories, not {factory!r}")
        options["extensions"] = extensions
        origins = options.pop("trusted_origins", None)
        if origins:
            options["origins"] = origins
        locations = [path.rstrip("/") or "/" for path in options.pop("locations", ()) or ()]
        if locations:

            def only_locations(request: Request) -> None:
                path = request.path.split("?", 1)[0].rstrip("/") or "/"
                if path not in locations:
                    raise InvalidHandshake(f"no resource at {path}", status=404)

            options["process_request"] = only_locations
        auth = options.pop("auth", None)
        if auth is not None:
            user, password = auth
            options["authenticate"] = basic_auth({user: password})
        return options

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def clients(self) -> list[Client]:
        """The connected clients, a snapshot."""
        return [client for client in self.server.websockets if isinstance(client, Client)]

    def run(self) -> None:
        """Serve until Ctrl-C (caught), then :meth:`quit_gracefully`."""
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            logger.info("Received interrupt, stopping server...")
        finally:
            self.quit_gracefully()

    def quit_gracefully(self) -> None:
        """Close every client with 1001, wait up to ``max_join_time``, drop the rest."""
        self.server.shutdown(timeout=self.max_join_time)

    # -- the hooks (override these) ---------------------------------------------------------------

    def onopen(self, client: Client) -> None:
        logger.debug("Opened socket to %s", client)

    def onmessage(self, client: Client, message: Any) -> None:
        logger.debug("Received %r from %s", message, client)

    def onping(self, client: Client, payload: str | bytes) -> None:
        logger.debug("Sent ping %r to %s", payload, client)

    def onpong(self, client: Client, payload: bytes) -> None:
        logger.debug("Received pong %r from %s", payload, client)

    def onclose(self, client: Client, code: int | None, reason: str) -> None:
        logger.debug("Closed socket to %s [%s] %s", client, code, reason)

    def onerror(self, client: Client, e: BaseException) -> None:
        logger.error("%s: %s", client, "".join(traceback.format_exception(e)).rstrip())
