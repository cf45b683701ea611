"""A threaded WebSocket server on the standard library alone.

One thread per connection, created on accept: the TLS and HTTP handshakes run
in that thread, bounded by ``handshake_timeout``, so a slow client never blocks
the accept loop. ``shutdown()`` stops accepting, sends 1001 (Going Away) to every
open connection, waits up to a deadline, then drops whatever is left.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

from .auth import Authenticator
from .exceptions import InvalidHandshake
from .extensions.base import ServerExtensionFactory
from .frames import CloseCode
from .handshake import SubprotocolSelector
from .http11 import MAX_HEADERS, MAX_LINE
from .protocol import SERVER
from .upgrade import ProcessRequest, server_handshake
from .websocket import WebSocket

__all__ = ["WebSocketServer", "serve"]

logger = logging.getLogger("ws4web.server")


class WebSocketServer:
    """Listen on ``host:port`` and run ``handler_cls`` for every WebSocket client.

    ``port=0`` picks a free port (read it back from :attr:`port`). Extra keyword
    arguments go to every handler (``max_message_size``, ``max_frame_size``,
    ``close_timeout`` ...).
    """

    def __init__(
        self,
        handler_cls: type[WebSocket] = WebSocket,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        subprotocols: Sequence[str] = (),
        select_subprotocol: SubprotocolSelector | None = None,
        extensions: Sequence[ServerExtensionFactory] = (),
        process_request: ProcessRequest | None = None,
        origins: Sequence[str | None] | None = None,
        authenticate: Authenticator | None = None,
        handshake_timeout: float | None = 10.0,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        backlog: int = 512,
        sock: socket.socket | None = None,
        **handler_options: Any,
    ) -> None:
        self.handler_cls = handler_cls
        self.ssl_context = ssl_context
        self.subprotocols = list(subprotocols)
        self.select_subprotocol = select_subprotocol
        self.extensions = list(extensions)
        self.process_request = process_request
        self.origins = origins
        self.authenticate = authenticate
        self.handshake_timeout = handshake_timeout
        self.max_line = max_line
        self.max_headers = max_headers
        self.handler_options = handler_options
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=backlog)
        self.socket = sock
        self.websockets: set[WebSocket] = set()
        self._sockets: set[socket.socket] = set()  # every accepted socket still open
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._threads = 0
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._wakeup_r, self._wakeup_w = socket.socketpair()

    @property
    def address(self) -> tuple[Any, ...]:
        return tuple(self.socket.getsockname())

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def __enter__(self) -> WebSocketServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()

    def start(self) -> threading.Thread:
        """Run :meth:`serve_forever` in a background thread and return it."""
        thread = threading.Thread(target=self.serve_forever, name="ws4web-server", daemon=True)
        thread.start()
        return thread

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        selector = selectors.DefaultSelector()
        self.socket.setblocking(False)
        selector.register(self.socket, selectors.EVENT_READ)
        selector.register(self._wakeup_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self.socket:
                        self._accept()
        finally:
            selector.close()
            self._stopped.set()

    def _accept(self) -> None:
        try:
            sock, addr = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. EMFILE: log, keep serving the others
            logger.warning("accept failed: %s", exc)
            time.sleep(0.01)
            return
        sock.setblocking(True)
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                return
            self._threads += 1
            self._sockets.add(sock)
        threading.Thread(target=self._serve_one, args=(sock, addr), name=f"ws4web-{addr}", daemon=True).start()

    def _serve_one(self, sock: socket.socket, addr: Any) -> None:
        websocket = None
        try:
            if self.ssl_context is not None:
                sock.settimeout(self.handshake_timeout)
                raw, sock = sock, self.ssl_context.wrap_socket(sock, server_side=True)
                with self._lock:
                    self._sockets.discard(raw)
                    self._sockets.add(sock)
                sock.settimeout(None)
            result = server_handshake(
                sock,
                subprotocols=self.subprotocols,
                select_subprotocol=self.select_subprotocol,
                extensions=self.extensions,
                process_request=self.process_request,
                origins=self.origins,
                authenticate=self.authenticate,
                timeout=self.handshake_timeout,
                max_line=self.max_line,
                max_headers=self.max_headers,
            )
            websocket = self.handler_cls(
                sock,
                protocols=[result.subprotocol] if result.subprotocol else [],
                extensions=result.extensions,
                side=SERVER,
                data=result.data,
                request=result.request,
                **self.handler_options,
            )
            with self._lock:
                if self._stopping.is_set():
                    websocket.close(CloseCode.GOING_AWAY, "server shutting down")
                self.websockets.add(websocket)
            websocket.run()
        except InvalidHandshake as exc:
            logger.info("handshake from %s refused: %s", addr, exc)
        except (OSError, ssl.SSLError) as exc:
            logger.info("connection from %s failed during the handshake: %s", addr, exc)
        except Exception:
            logger.exception("unexpected error serving %s", addr)
        finally:
            with self._lock:
                if websocket is not None:
                    self.websockets.discard(websocket)
                self._sockets.discard(sock)
                self._threads -= 1
                self._idle.notify_all()
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass

    def broadcast(self, payload: Any, binary: bool | None = None) -> None:
        """Send one message to every open connection (failures are skipped)."""
        with self._lock:
            targets = list(self.websockets)
        for websocket in targets:
            try:
                websocket.send(payload, binary)
            except Exception as exc:  # one dead peer must not stop the rest
                logger.debug("broadcast to %r failed: %s", websocket, exc)

    def shutdown(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
    ) -> None:
        """Stop accepting, close every connection with ``code``, wait up to ``timeout``."""
        with self._lock:
            already = self._stopping.is_set()
            self._stopping.set()
            targets = list(self.websockets)
        if not already:
            self._wakeup_w.send(b"x")
            self._stopped.wait(timeout)
            self.socket.close()
        for websocket in targets:
            try:
                websocket.close(code, reason)
            except Exception as exc:
                logger.debug("closing %r failed: %s", websocket, exc)
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._threads and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            leftovers = list(self._sockets)
        for sock in leftovers:  # past the deadline: drop them
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if not already:
            self._wakeup_r.close()
            self._wakeup_w.close()


def serve(handler_cls: type[WebSocket] = WebSocket, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Run a :class:`WebSocketServer` until Ctrl-C, then shut it down cleanly."""
    server = WebSocketServer(handler_cls, host, port, **options)
    logger.info("listening on %s:%d", host, server.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
