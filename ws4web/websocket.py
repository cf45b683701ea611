"""The handler API: :class:`WebSocket`, written once and mounted on any stack.

Two styles, both first-class: callbacks as ws4py users write them
(:meth:`~WebSocket.opened`, :meth:`~WebSocket.received_message`,
:meth:`~WebSocket.ponged`, :meth:`~WebSocket.closed`), and pull style
(``ws.recv()``, ``for message in ws``, ``with ws: ...``). All I/O goes through
``self.connection``, the :class:`~ws4web.drivers.Driver` a front door bound;
docs/handlers.md is the manual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .drivers import Driver, PingWaiter
from .exceptions import ConnectionClosed, ConnectionClosedOK
from .extensions.base import Extension
from .frames import CloseCode, Frame
from .http11 import Request
from .logs import ConnectionLog
from .messages import Data, Message, PongControlMessage

__all__ = ["WebSocket"]

logger = logging.getLogger("ws4web.websocket")

# Closes that are part of normal operation; any other code (1006 no close frame,
# 1002/1007/1009 bad input, 1011 handler crash ...) is logged at INFO.
_ORDINARY_CLOSE_CODES = frozenset(
    {
        CloseCode.NORMAL_CLOSURE,
        CloseCode.GOING_AWAY,
        CloseCode.NO_STATUS_RCVD,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
    }
)


class WebSocket:
    """One WebSocket connection, with ws4py's callbacks and a pull-style API.

    The constructor takes what ws4py's did: ``sock`` (the socket, where there
    is one), ``protocols`` (the subprotocol the handshake chose, as a list),
    ``extensions`` (the negotiated :class:`~ws4web.extensions.base.Extension`
    objects), ``environ`` (the WSGI environ, where there is one) and
    ``heartbeat_freq`` (the keepalive interval the door was given). A front door
    builds the handler with these, then :meth:`bind` s it to the driver that
    runs its connection; only then may it send or receive.
    """

    def __init__(
        self,
        sock: Any = None,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[Extension] | None = None,
        environ: Mapping[str, Any] | None = None,
        heartbeat_freq: float | None = None,
    ) -> None:
        self.sock = sock
        self.protocols = list(protocols or ())
        self.extensions = list(extensions or ())
        self.environ = environ
        self.heartbeat_freq = heartbeat_freq
        #: the parsed upgrade request (set by :meth:`bind`)
        self.request: Request | None = None
        #: the route's path parameters (``{"room": "lobby"}`` for ``/chat/{room}``), as the
        #: router converted them; set by the door before :meth:`opened` (docs/adapters.md)
        self.view_args: dict[str, Any] = {}
        self._connection: Driver | None = None
        self._closed_called = False

    # -- binding (front doors) ---------------------------------------------------------

    def bind(self, driver: Driver, request: Request | None = None) -> None:
        """Run this handler over ``driver`` (called once, by the front door that built it)."""
        if self._connection is not None:
            raise RuntimeError("this WebSocket is already bound to a connection")
        self._connection = driver
        if request is not None:
            self.request = request
        driver.attach(self)

    @property
    def connection(self) -> Driver:
        """The driver running this connection."""
        driver = self._connection
        if driver is None:
            raise RuntimeError(
                "this WebSocket has no connection yet: a server, adapter, client or "
                "ws4web.upgrade function builds handlers and binds them"
            )
        return driver

    @property
    def log(self) -> ConnectionLog:
        """Tags this connection's log records: ``[ws12 127.0.0.1:50312] ...``."""
        return self.connection.log

    @property
    def id(self) -> str:
        """Process-unique id, the one in every log record about this connection."""
        return self.connection.id

    # -- callbacks (override these) -----------------------------------------------------

    def opened(self) -> None:
        """Called once, when the connection is ready, before any message."""

    def received_message(self, message: Message) -> None:
        """Called for each complete message (TextMessage or BinaryMessage)."""

    def ponged(self, message: PongControlMessage) -> None:
        """Called for each pong received."""

    def closed(self, code: int, reason: str | None = None) -> None:
        """Called once, when the connection has ended; 1006 if no close frame came."""

    # -- sending -------------------------------------------------------------------------

    def send(
        self, payload: Data | Iterable[str | bytes], binary: bool | None = None, *, compress: bool = True
    ) -> None:
        """Send a message: ``str`` as text, bytes as binary, a Message as its type.

        A generator or other iterable of chunks is sent as one fragmented
        message, a frame per chunk. ``binary`` forces the message type.
        ``compress=False`` sends this message uncompressed even where
        permessage-deflate was negotiated (already-compressed data, say).
        """
        driver = self._connection
        if driver is None:
            driver = self.connection  # raises the explanation
        if isinstance(payload, (str, bytes, bytearray, memoryview, Message)):
            driver.send_message(payload, binary, compress=compress)
        else:
            driver.send_fragments(payload, binary, compress=compress)

    async def asend(self, payload: Data, binary: bool | None = None) -> None:
        """Send from an ``async def`` callback (ASGI) and wait until the server took it."""
        await self.connection.asend(payload, binary)

    def ping(self, data: bytes | None = None) -> PingWaiter:
        """Send a ping; wait on the result for its pong (``.latency`` in seconds)."""
        return self.connection.ping(data)

    def pong(self, data: bytes = b"") -> None:
        self.connection.pong(data)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (the driver finishes it)."""
        self.connection.close(code, reason)

    async def aclose(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close from an ``async def`` callback (ASGI) and wait for the end of the handshake."""
        await self.connection.aclose(code, reason)

    def terminate(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        self.connection.abort()

    def send_frame(self, frame: Frame) -> None:
        """Low-level: send one frame exactly as built (any opcode, fin, RSV bits)."""
        self.connection.send_frame(frame)

    # -- receiving -------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Message:
        """The next message. ConnectionClosed when the connection ends, TimeoutError on timeout."""
        return self.connection.recv_message(timeout)

    def recv_frame(self, timeout: float | None = None) -> Frame:
        """Low-level: the next frame, control frames included, unassembled."""
        return self.connection.recv_frame(timeout)

    def __iter__(self) -> Iterator[Message]:
        """Messages until the connection closes normally; ConnectionClosedError otherwise."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosedOK:
                return

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state -------------------------------------------------------------------------------

    @property
    def terminated(self) -> bool:
        """True once the connection is closed (ws4py's name)."""
        return self._connection is not None and self._connection.closed

    @property
    def local_address(self) -> Any:
        """This end's address: the socket's, or under ASGI the scope's ``server`` (ws4py's name)."""
        return _address(self.sock, "getsockname", self.environ, "server")

    @property
    def peer_address(self) -> Any:
        """The peer's address: the socket's, or under ASGI the scope's ``client`` (ws4py's name)."""
        return _address(self.sock, "getpeername", self.environ, "client")

    @property
    def subprotocol(self) -> str | None:
        return self.protocols[0] if self.protocols else None

    @property
    def close_code(self) -> int:
        return self.connection.close_code

    @property
    def close_reason(self) -> str:
        return self.connection.close_reason

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Deliver the callbacks in the background (the driver decides on which thread)."""
        self.connection.start()

    def run(self) -> None:
        """Deliver the callbacks until the connection ends: opened(), received_message()
        per message, closed(). A callback that raises is logged and the connection
        closed with 1011 (Internal Error); the other connections never notice."""
        self.connection.run()

    # -- the hooks a driver calls (ws4web.drivers.Handler) ------------------------------------

    def handle_open(self) -> bool:
        return self._guard(self.opened)

    def handle_message(self, message: Message) -> bool:
        try:  # _guard written out: this is the path of every message
            self.received_message(message)
        except ConnectionClosed:
            pass  # the peer left while the handler was sending: not the handler's fault
        except Exception:
            self._crashed()
            return False
        return True

    def handle_pong(self, payload: bytes) -> bool:
        return self._guard(self.ponged, PongControlMessage(payload))

    def handle_close(self) -> None:
        """Call closed() once, with the code the connection ended with."""
        if self._closed_called:
            return
        self._closed_called = True
        code = self.close_code
        reason = self.close_reason
        log = self.log
        if code not in _ORDINARY_CLOSE_CODES and not 3000 <= code <= 4999:
            log.info("closed abnormally: %d %s", code, reason)
        else:
            log.debug("closed: %d %s", code, reason)
        try:
            self.closed(code, reason)
        except Exception:
            log.exception("closed() of %s raised", type(self).__name__)

    def _guard(self, callback: Callable[..., object], *args: object) -> bool:
        """Run one callback; if it raises, log it, close with 1011 and return False."""
        try:
            callback(*args)
        except ConnectionClosed:
            pass  # the peer left while the handler was sending: not the handler's fault
        except Exception:
            self._crashed()
            return False
        return True

    def _crashed(self) -> None:
        """In an ``except`` block: a callback raised; log it and close with 1011."""
        self.log.exception("handler %s raised; closing with 1011", type(self).__name__)
        try:
            self.close(CloseCode.INTERNAL_ERROR, "internal error")
        except ConnectionClosed:
            pass
        except Exception:  # pragma: no cover - the socket is gone; nothing left to do
            self.terminate()


def _address(sock: Any, method: str, environ: Mapping[str, Any] | None, scope_key: str) -> Any:
    if sock is None and environ is not None and environ.get("type") == "websocket":
        # No socket under ASGI: the server names both ends in the connection scope (ASGI spec,
        # "client" and "server"), so a handler that logs its peer runs there unchanged.
        address = environ.get(scope_key)
        return tuple(address) if address else None
    try:
        return getattr(sock, method)()
    except (AttributeError, OSError):
        return None
