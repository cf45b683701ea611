"""A WebSocket server on the standard library alone.

Two ways to run the connections, same handlers:

* ``io="reactor"`` (the default): one selector thread owns every socket and does
  the TLS and HTTP handshakes without blocking; handler callbacks run on a small
  elastic worker pool (up to ``max_workers``), in order per connection, so a slow
  handler delays only its own connection; the worker that ran a handler reads
  that connection's next message itself for a moment, so request/response
  traffic needs no hand-off from the loop (:mod:`ws4web.reactor`). Thousands of
  idle connections cost no threads. ``inline=True`` runs the callbacks in the
  loop thread instead, handing the loop to another thread when one overruns
  5 ms; ``max_workers=0`` runs them in the loop thread with no such watchdog, for
  handlers that never block — one that does stalls every connection.
* ``io="threads"``: a thread per connection running :meth:`WebSocket.run`; handlers
  may use the pull style (``recv()``) and block as they like.

Either way the handshakes are bounded by ``handshake_timeout`` (a slow client never
blocks the accept loop) and ``shutdown()`` stops accepting, sends 1001 (Going
Away) to every open connection, waits up to a deadline, then drops the rest.
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
from .exceptions import InvalidHandshake, InvalidMessage, RequestAnswered
from .extensions.base import ServerExtensionFactory
from .frames import CloseCode
from .handshake import SubprotocolSelector, reject
from .http11 import MAX_HEADERS, MAX_LINE, Request, parse_request
from .logs import ConnectionLog, format_peer, new_id
from .protocol import SERVER
from .reactor import Reactor, ReactorConnection, Timer
from .streams import StreamReader
from .upgrade import ProcessRequest, answer_request, send_refusal, server_handshake
from .websocket import WebSocket

__all__ = ["WebSocketServer", "serve"]

logger = logging.getLogger("ws4web.server")


class WebSocketServer:
    """Listen on ``host:port`` and run ``handler_cls`` for every WebSocket client.

    ``port=0`` picks a free port (read it back from :attr:`port`). Extra keyword
    arguments go to every handler (``max_message_size``, ``max_frame_size``,
    ``close_timeout``, ``ping_interval`` ...).
    """

    def __init__(
        self,
        handler_cls: type[WebSocket] = WebSocket,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        io: str = "reactor",
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
        max_workers: int = 64,
        inline: bool = False,
        backlog: int = 1024,
        sock: socket.socket | None = None,
        **handler_options: Any,
    ) -> None:
        if io not in ("reactor", "threads"):
            raise ValueError("io must be 'reactor' or 'threads'")
        self.handler_cls = handler_cls
        self.io = io
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.max_line = max_line
        self.max_headers = max_headers
        self.handler_options = handler_options
        self.answer_options: dict[str, Any] = {
            "subprotocols": list(subprotocols),
            "select_subprotocol": select_subprotocol,
            "extensions": list(extensions),
            "process_request": process_request,
            "origins": origins,
            "authenticate": authenticate,
        }
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=backlog)
        self.socket = sock
        self.reactor = Reactor(max_workers=max_workers, inline=inline).start() if io == "reactor" else None
        self.websockets: set[WebSocket] = set()
        self._sockets: set[Any] = set()  # every accepted socket not yet released
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._serving = False
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

    # -- accepting -------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        self._serving = True
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
        for _ in range(64):  # drain the backlog, but let shutdown get a word in
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: log, keep serving the others
                logger.warning("accept failed: %s", exc)
                time.sleep(0.01)
                return
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    return
                self._sockets.add(sock)
            if self.reactor is not None:
                handshake = _Handshake(self, self.reactor, sock, addr)
                self.reactor.call_soon(handshake.begin)
            else:
                sock.setblocking(True)
                threading.Thread(
                    target=self._serve_thread, args=(sock, addr), name=f"ws4web-{addr}", daemon=True
                ).start()

    def _release(self, sock: Any, websocket: WebSocket | None = None) -> None:
        with self._lock:
            if websocket is not None:
                self.websockets.discard(websocket)
            self._sockets.discard(sock)
            self._idle.notify_all()

    def _swap(self, old: Any, new: Any) -> None:
        with self._lock:
            self._sockets.discard(old)
            self._sockets.add(new)

    def _make_handler(self, sock: Any, result: Any, log: ConnectionLog) -> WebSocket:
        websocket = self.handler_cls(
            sock,
            protocols=[result.subprotocol] if result.subprotocol else [],
            extensions=result.extensions,
            side=SERVER,
            data=result.data,
            request=result.request,
            reactor=self.reactor,
            conn_id=log.conn_id,
            **self.handler_options,
        )
        with self._lock:
            self.websockets.add(websocket)
            stopping = self._stopping.is_set()
        if stopping:
            websocket.close(CloseCode.GOING_AWAY, "server shutting down")
        return websocket

    # -- thread per connection ---------------------------------------------------------

    def _serve_thread(self, sock: Any, addr: Any) -> None:
        websocket = None
        log = ConnectionLog(logger, new_id(), format_peer(addr))
        try:
            if self.ssl_context is not None:
                sock.settimeout(self.handshake_timeout)
                raw, sock = sock, self.ssl_context.wrap_socket(sock, server_side=True)
                self._swap(raw, sock)
                sock.settimeout(None)
            result = server_handshake(
                sock,
                timeout=self.handshake_timeout,
                max_line=self.max_line,
                max_headers=self.max_headers,
                **self.answer_options,
            )
            websocket = self._make_handler(sock, result, log)
            websocket.run()
        except InvalidHandshake as exc:
            _log_refusal(log, exc)
        except (OSError, ssl.SSLError) as exc:
            log.warning("connection failed during the handshake: %s", exc)
        except Exception:
            log.exception("unexpected error serving the connection")
        finally:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass
            self._release(sock, websocket)

    # -- reactor: handshake finished on the worker pool ---------------------------------

    def _finish_handshake(self, sock: Any, log: ConnectionLog, request: Request, data: bytes) -> None:
        try:
            sock.setblocking(True)
            sock.settimeout(self.handshake_timeout)  # bounds writing the answer
            result = answer_request(sock, request, data, **self.answer_options)
            websocket = self._make_handler(sock, result, log)
        except InvalidHandshake as exc:
            _log_refusal(log, exc)
            sock.close()
            self._release(sock)
            return
        except Exception as exc:
            if isinstance(exc, OSError):
                log.warning("connection failed during the handshake: %s", exc)
            else:
                log.exception("unexpected error in the handshake")
            sock.close()
            self._release(sock)
            return
        connection = websocket.connection
        if isinstance(connection, ReactorConnection):
            connection.on_teardown = lambda: self._release(sock, websocket)
        websocket.start()

    # -- broadcasting and shutdown -------------------------------------------------------

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
        if already:
            return
        self._wakeup_w.send(b"x")
        if self._serving:
            self._stopped.wait(timeout)
        self.socket.close()
        for websocket in targets:
            try:
                websocket.close(code, reason)
            except Exception as exc:
                logger.debug("closing %r failed: %s", websocket, exc)
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._sockets and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            leftovers = list(self._sockets)
        for sock in leftovers:  # past the deadline: drop them
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.reactor is not None:
            self.reactor.stop(timeout=1.0)
        self._wakeup_r.close()
        self._wakeup_w.close()


class _Handshake:
    """Reactor side of one server handshake: TLS, then the HTTP request, without blocking."""

    __slots__ = ("addr", "log", "parser", "reactor", "reader", "server", "sock", "timer", "tls_done")

    def __init__(self, server: WebSocketServer, reactor: Reactor, sock: Any, addr: Any) -> None:
        self.server = server
        self.reactor = reactor
        self.sock = sock
        self.addr = addr
        self.log = ConnectionLog(logger, new_id(), format_peer(addr))
        self.reader = StreamReader()
        self.parser = parse_request(self.reader, max_line=server.max_line, max_headers=server.max_headers)
        self.tls_done = server.ssl_context is None
        self.timer: Timer | None = None

    def begin(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        if not self.tls_done:
            assert self.server.ssl_context is not None
            try:
                tls = self.server.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ssl.SSLError):
                self._drop()
                return
            self.server._swap(sock, tls)
            self.sock = tls
        if self.server.handshake_timeout is not None:
            self.timer = self.reactor.call_later(self.server.handshake_timeout, self._timed_out)
        next(self.parser)
        self.reactor.register(self.sock, selectors.EVENT_READ, self)

    def _on_io(self, mask: int) -> None:
        if not self.tls_done:
            try:
                self.sock.do_handshake()
            except ssl.SSLWantReadError:
                self.reactor.modify(self.sock, selectors.EVENT_READ, self)
                return
            except ssl.SSLWantWriteError:
                self.reactor.modify(self.sock, selectors.EVENT_WRITE, self)
                return
            except (OSError, ssl.SSLError) as exc:
                self.log.warning("TLS handshake failed: %s", exc)
                self._drop()
                return
            self.tls_done = True
            self.reactor.modify(self.sock, selectors.EVENT_READ, self)
        data = self.reactor.recv_into(self.sock)
        if data is None:
            return
        try:
            if data:
                self.reader.feed_data(data)
            else:
                self.reader.feed_eof()
            next(self.parser)
        except StopIteration as done:
            self._parsed(done.value)
        except InvalidMessage as exc:
            self._refuse(exc)

    def _parsed(self, request: Request) -> None:
        self._detach()
        data = self.reader.take(len(self.reader.buffer))
        self.reactor.pool.submit(lambda: self.server._finish_handshake(self.sock, self.log, request, data))

    def _refuse(self, exc: InvalidHandshake) -> None:
        self._detach()
        self.log.warning("handshake refused (HTTP %d): %s", exc.status, exc)
        response = reject(exc).serialize()

        def refuse() -> None:
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(1.0)
            except OSError:
                pass
            send_refusal(self.sock, response)
            self._close()

        self.reactor.pool.submit(refuse)

    def _timed_out(self) -> None:
        if not self.tls_done:  # no channel to answer on: drop without tying up a worker
            self.log.warning("TLS handshake timed out")
            self._drop()
            return
        self._refuse(InvalidMessage("handshake timed out", status=408))

    def _detach(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.reactor.unregister(self.sock)

    def _drop(self) -> None:
        self._detach()
        self._close()

    def _close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.server._release(self.sock)

    def _teardown(self) -> None:  # called by the reactor if _on_io raised
        self._drop()


def _log_refusal(log: ConnectionLog, exc: InvalidHandshake) -> None:
    # An answer from process_request (a redirect, a health check) is normal traffic.
    level = logging.DEBUG if isinstance(exc, RequestAnswered) else logging.WARNING
    log.log(level, "handshake refused (HTTP %d): %s", exc.status, exc)


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
