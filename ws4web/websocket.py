"""The handler API: :class:`WebSocket`, written once and mounted on any stack.

Two styles, both first-class:

* callbacks, as ws4py users write them — subclass and override :meth:`opened`,
  :meth:`received_message`, :meth:`ponged` and :meth:`closed`; a server calls
  :meth:`run`, which reads until the connection ends;
* pull style — ``ws.recv()``, ``for message in ws``, ``with ws: ...``.

Either way ``send``, ``ping`` and ``close`` may be called from any thread.
All I/O goes through ``self.connection``: a :class:`~ws4web.connection.Connection`
over a socket, or an adapter's equivalent (ASGI), so handlers never know which.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .concurrency import THREADING, Primitives
from .connection import Connection, PingWaiter
from .exceptions import ConnectionClosed
from .extensions.base import Extension
from .frames import CloseCode, Frame
from .http11 import Request
from .logs import ConnectionLog, connection_log
from .messages import Data, Message, PongControlMessage
from .protocol import SERVER, Protocol, Side
from .reactor import Reactor, ReactorConnection

__all__ = ["WebSocket"]

logger = logging.getLogger("ws4web.websocket")


class WebSocket:
    """One WebSocket connection, with ws4py's callbacks and a pull-style API.

    ``sock`` is a connected socket-like object (``recv``, ``sendall``,
    ``shutdown``, ``close``) whose HTTP upgrade is done; ``data`` holds any bytes
    read past the handshake. ``protocols`` and ``extensions`` are what the
    handshake negotiated; ``environ`` is the WSGI environ where there is one and
    ``request`` the parsed upgrade request.

    With ``reactor=`` the connection is driven by a shared selector loop
    (:mod:`ws4web.reactor`): call :meth:`start` instead of :meth:`run`; callbacks
    then run on the reactor's workers, in order, and ``recv()`` is not available.

    ``ping_interval`` (or ws4py's ``heartbeat_freq``) turns on keepalive pings
    while :meth:`run` reads: a peer that does not answer within ``ping_timeout``
    (default: the interval) is dropped after a 1011 close frame.
    """

    def __init__(
        self,
        sock: Any = None,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[Extension] | None = None,
        environ: Mapping[str, Any] | None = None,
        heartbeat_freq: float | None = None,
        *,
        side: Side = SERVER,
        data: bytes = b"",
        request: Request | None = None,
        max_message_size: int | None = 2**20,
        max_frame_size: int | None = None,
        close_timeout: float | None = 10.0,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        primitives: Primitives = THREADING,
        reactor: Reactor | None = None,
        connection: Any = None,
        conn_id: str | None = None,
    ) -> None:
        self.sock = sock
        self.protocols = list(protocols or ())
        self.extensions = list(extensions or ())
        self.environ = environ
        self.request = request
        self.heartbeat_freq = heartbeat_freq
        #: keepalive: ping this often while run() reads (ws4py's heartbeat_freq)
        self.ping_interval = ping_interval if ping_interval is not None else heartbeat_freq
        self.ping_timeout = ping_timeout
        if connection is None:
            protocol = Protocol(
                side,
                data=data,
                max_message_size=max_message_size,
                max_frame_size=max_frame_size,
                extensions=self.extensions,
            )
            subprotocol = self.protocols[0] if self.protocols else None
            if reactor is not None:
                connection = ReactorConnection(
                    sock, protocol, reactor, close_timeout=close_timeout, subprotocol=subprotocol, conn_id=conn_id
                )
            else:
                connection = Connection(
                    sock,
                    protocol,
                    primitives=primitives,
                    close_timeout=close_timeout,
                    subprotocol=subprotocol,
                    conn_id=conn_id,
                )
        self.connection = connection
        log = getattr(connection, "log", None)
        #: tags this connection's log records: ``[ws12 127.0.0.1:50312] ...``
        self.log: ConnectionLog = log if isinstance(log, ConnectionLog) else connection_log(logger, sock, conn_id)
        #: process-unique id, the one in every log record about this connection
        self.id = self.log.conn_id
        connection.on_pong = self._on_pong
        self._closed_called = False

    # -- callbacks (override these) -----------------------------------------------

    def opened(self) -> None:
        """Called once, when the connection is ready, before any message."""

    def received_message(self, message: Message) -> None:
        """Called for each complete message (TextMessage or BinaryMessage)."""

    def ponged(self, message: PongControlMessage) -> None:
        """Called for each pong received."""

    def closed(self, code: int, reason: str | None = None) -> None:
        """Called once, when the connection has ended; 1006 if no close frame came."""

    # -- sending -------------------------------------------------------------------

    def send(
        self, payload: Data | Iterable[str | bytes], binary: bool | None = None, *, compress: bool = True
    ) -> None:
        """Send a message: ``str`` as text, bytes as binary, a Message as its type.

        A generator or other iterable of chunks is sent as one fragmented
        message, a frame per chunk. ``binary`` forces the message type.
        ``compress=False`` sends this message uncompressed even where
        permessage-deflate was negotiated (already-compressed data, say).
        """
        if isinstance(payload, (str, bytes, bytearray, memoryview, Message)):
            if compress:
                self.connection.send_message(payload, binary)
            else:
                self.connection.send_message(payload, binary, compress=False)
        elif compress:
            self.connection.send_fragments(payload, binary)
        else:
            self.connection.send_fragments(payload, binary, compress=False)

    def ping(self, data: bytes | None = None) -> PingWaiter:
        """Send a ping; wait on the result for its pong (``.latency`` in seconds)."""
        waiter: PingWaiter = self.connection.ping(data)
        return waiter

    def pong(self, data: bytes = b"") -> None:
        self.connection.pong(data)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; it completes in the reading thread."""
        self.connection.close(code, reason)

    def terminate(self) -> None:
        """Drop the connection at once, without a closing handshake."""
        self.connection.abort()

    def send_frame(self, frame: Frame) -> None:
        """Low-level: send one frame exactly as built (any opcode, fin, RSV bits)."""
        self.connection.send_frame(frame)

    # -- receiving -----------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Message:
        """The next message. ConnectionClosed when the connection ends, TimeoutError on timeout."""
        message: Message = self.connection.recv_message(timeout)
        return message

    def recv_frame(self, timeout: float | None = None) -> Frame:
        """Low-level: the next frame, control frames included, unassembled."""
        frame: Frame = self.connection.recv_frame(timeout)
        return frame

    def __iter__(self) -> Iterator[Message]:
        """Messages until the connection closes normally; ConnectionClosedError otherwise."""
        from .exceptions import ConnectionClosedOK

        while True:
            try:
                yield self.recv()
            except ConnectionClosedOK:
                return

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- state ---------------------------------------------------------------------

    @property
    def terminated(self) -> bool:
        """True once the connection is closed (ws4py's name)."""
        return bool(self.connection.closed)

    @property
    def local_address(self) -> Any:
        """This end's socket address, where there is a socket (ws4py's name)."""
        return _sockname(self.sock, "getsockname")

    @property
    def peer_address(self) -> Any:
        """The peer's socket address, where there is a socket (ws4py's name)."""
        return _sockname(self.sock, "getpeername")

    @property
    def subprotocol(self) -> str | None:
        return self.protocols[0] if self.protocols else None

    @property
    def close_code(self) -> int:
        return int(self.connection.close_code)

    @property
    def close_reason(self) -> str:
        return str(self.connection.close_reason)

    # -- the callback loop ---------------------------------------------------------

    def start(self) -> None:
        """Deliver callbacks in the background: on the reactor if this connection
        has one, else in a new thread running :meth:`run`."""
        if isinstance(self.connection, ReactorConnection):
            if self.ping_interval:
                self.connection.start_keepalive(self.ping_interval, self.ping_timeout)
            self.connection.start(self)
        else:
            primitives = getattr(self.connection, "primitives", THREADING)
            primitives.spawn(self.run)

    def run(self) -> None:
        """Call opened(), then received_message() per message, then closed().

        A callback that raises is logged and the connection closed with 1011
        (Internal Error); the exception goes no further, so a server's other
        connections never notice.
        """
        try:
            if self.ping_interval:
                self.connection.start_keepalive(self.ping_interval, self.ping_timeout)
            if self._guard(self.opened):
                while self._guard(self.received_message, self.recv()):
                    pass
        except ConnectionClosed:
            pass
        finally:
            self._fire_closed()

    def _guard(self, callback: Any, *args: Any) -> bool:
        """Run one callback; if it raises, log it, close with 1011 and return False."""
        try:
            callback(*args)
            return True
        except ConnectionClosed:
            raise
        except Exception:
            self.log.exception("handler %s raised; closing with 1011", type(self).__name__)
            try:
                self.close(CloseCode.INTERNAL_ERROR, "internal error")
            except ConnectionClosed:
                pass
            except Exception:  # pragma: no cover - the socket is gone; nothing left to do
                self.terminate()
            return False

    def _fire_closed(self) -> None:
        if self._closed_called:
            return
        self._closed_called = True
        code = self.close_code
        if code not in _ORDINARY_CLOSE_CODES and not 3000 <= code <= 4999:
            self.log.warning("closed abnormally: %d %s", code, self.close_reason)
        try:
            self.closed(code, self.close_reason)
        except Exception:
            self.log.exception("closed() of %s raised", type(self).__name__)

    def _on_pong(self, frame: Frame) -> None:
        self.ponged(PongControlMessage(frame.data))


# Closes that are part of normal operation; any other code (1006 no close frame,
# 1002/1007/1009 bad input, 1011 handler crash ...) is logged at WARNING.
_ORDINARY_CLOSE_CODES = frozenset(
    {
        CloseCode.NORMAL_CLOSURE,
        CloseCode.GOING_AWAY,
        CloseCode.NO_STATUS_RCVD,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
    }
)


def _sockname(sock: Any, method: str) -> Any:
    try:
        return getattr(sock, method)()
    except (AttributeError, OSError):
        return None
