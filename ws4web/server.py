"""A WebSocket server on the standard library alone, on the selector driver.

One :class:`~ws4web.drivers.selector.Loop` accepts, does the TLS and HTTP
handshakes without blocking (the whole request head bounded by
``handshake_timeout``), asks the door's :class:`~ws4web.accept.AcceptPolicy`,
and runs every connection; quick callbacks run on the loop thread, one that
blocks (pull style included) moves to a thread of its own. ``shutdown()`` stops
accepting, sends 1001 (Going Away) to every open connection, waits up to a
deadline, then drops the rest. docs/handlers.md and docs/drivers.md have more.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from typing import Any

from .accept import AcceptPolicy, Registry, log_refusal, unexpected_error
from .drivers.base import end_write_side
from .drivers.selector import IOHandler, Loop, SelectorDriver, Timer
from .exceptions import InvalidHandshake, InvalidMessage
from .frames import CloseCode
from .handshake import Accepted
from .http11 import Request, parse_request
from .logs import ConnectionLog, format_peer, new_id
from .streams import StreamReader
from .websocket import WebSocket

__all__ = ["WebSocketServer", "serve"]

logger = logging.getLogger("ws4web.server")

_RETRY = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
# A refused client's late bytes are read and dropped for this long (and this much)
# before the socket closes, so a reset cannot destroy the refusal (a lingering close).
_LINGER = 1.0
_LINGER_BYTES = 65536


class WebSocketServer:
    """Listen on ``host:port`` and run ``handler_cls`` for every WebSocket client.

    ``port=0`` picks a free port (read it back from :attr:`port`). The other
    keyword arguments are the door's options, the same on every door: the accept
    policy (``origins``, ``authenticate``, ``subprotocols``, ``select_subprotocol``,
    ``extensions``, ``process_request``, ``handshake_timeout``, ``max_line``,
    ``max_headers``), the per-connection limits (``max_message_size``,
    ``max_frame_size``, ``close_timeout``, ``ping_interval``, ``ping_timeout``,
    ``max_send_buffer``, ``max_queue``), and any other keyword goes to
    ``handler_cls``'s constructor — all checked here, before the first client.
    """

    def __init__(
        self,
        handler_cls: type[WebSocket] = WebSocket,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 1024,
        sock: socket.socket | None = None,
        **options: Any,
    ) -> None:
        self.policy = AcceptPolicy.from_options(handler_cls, options)
        self.handler_cls = handler_cls
        self.ssl_context = ssl_context
        if sock is None and host is not None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=backlog)
        if sock is not None:
            sock.setblocking(False)
        #: the listening socket; None with ``host=None`` (connections come through serve_socket())
        self.socket = sock
        #: the open connections' handlers (broadcast, shutdown)
        self.registry = Registry()
        self.loop = Loop(name="ws4web-server")
        self._handshakes: set[_Handshake] = set()
        self._listening = False
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[Any, ...]:
        if self.socket is None:
            raise RuntimeError("this server does not listen (host=None)")
        return tuple(self.socket.getsockname())

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def websockets(self) -> set[WebSocket]:
        """A snapshot of the open connections' handlers."""
        return set(self.registry)

    def __enter__(self) -> WebSocketServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    # -- serving --------------------------------------------------------------------------

    def start(self) -> WebSocketServer:
        """Start accepting in the background (the loop's own threads) and return."""
        with self._lock:
            if self._listening or self._stopping.is_set():
                return self
            self._listening = True
        self.loop.start()
        listener = self.socket
        if listener is not None:
            self.loop.call_soon(lambda: self.loop.register(listener, selectors.EVENT_READ, _Listener(self)))
        return self

    def serve_socket(self, sock: socket.socket, address: Any = None) -> None:
        """Serve one connection accepted elsewhere (socket activation, inetd, a
        socketpair in tests): its TLS and HTTP handshake, then its WebSocket."""
        self.start()
        if self._stopping.is_set():
            sock.close()
            return
        self.loop.call_soon(_Handshake(self, sock, address).begin)

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown` (from another thread or a signal handler)."""
        self.start()
        while not self._stopping.wait(0.5):  # a wait with a timeout lets Ctrl-C through
            pass
        self._stopped.wait()

    # -- broadcasting and shutdown -------------------------------------------------------------

    def broadcast(self, payload: Any, binary: bool | None = None) -> int:
        """Send one message to every open connection; returns how many took it."""
        return self.registry.broadcast(payload, binary)

    def shutdown(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
    ) -> None:
        """Stop accepting, close every connection with ``code``, wait up to ``timeout``, drop the rest."""
        with self._lock:
            if self._stopping.is_set():
                self._stopped.wait(timeout + 2.0)
                return
            self._stopping.set()
        try:
            if self.loop.is_leader():
                self._stop_listening()
            elif self._listening:
                done = threading.Event()

                def stop_listening() -> None:
                    self._stop_listening()
                    done.set()

                self.loop.call_soon(stop_listening)
                done.wait(timeout)
            if self.socket is not None:
                self.socket.close()
            self.registry.shutdown(code, reason, timeout)
            self.loop.stop(timeout=1.0)
        finally:
            self._stopped.set()

    def _stop_listening(self) -> None:
        if self.socket is not None:
            self.loop.unregister(self.socket)
        for handshake in list(self._handshakes):
            handshake.drop()


class _Listener(IOHandler):
    """Loop: accept clients; each gets a :class:`_Handshake`."""

    __slots__ = ("server",)

    def __init__(self, server: WebSocketServer) -> None:
        self.server = server

    def on_io(self, mask: int) -> bool:
        server = self.server
        assert server.socket is not None
        for _ in range(64):  # drain the backlog, but let the connections get a word in
            try:
                sock, addr = server.socket.accept()
            except _RETRY:
                return True
            except OSError as exc:  # e.g. EMFILE: log, keep serving the others
                logger.warning("accept failed: %s", exc)
                time.sleep(0.01)
                return True
            if server._stopping.is_set():
                sock.close()
                continue
            _Handshake(server, sock, addr).begin()
        return True

    def on_error(self) -> None:
        if self.server.socket is not None:
            self.server.loop.unregister(self.server.socket)


class _Handshake(IOHandler):
    """Loop side of one server handshake: TLS, the request head, the decision, the answer."""

    __slots__ = (
        "addr", "linger_until", "log", "out", "parser", "reader", "refusing", "server", "sock", "timer", "tls_done"
    )  # fmt: skip

    def __init__(self, server: WebSocketServer, sock: Any, addr: Any) -> None:
        self.server = server
        self.sock = sock
        self.addr = addr
        self.log = ConnectionLog(logger, new_id(), format_peer(addr))
        self.reader = StreamReader()
        policy = server.policy
        self.parser = parse_request(self.reader, max_line=policy.max_line, max_headers=policy.max_headers)
        self.tls_done = server.ssl_context is None
        self.timer: Timer | None = None
        self.refusing = False
        self.out = b""
        self.linger_until = 0.0

    @property
    def loop(self) -> Loop:
        return self.server.loop

    def begin(self) -> None:
        sock = self.sock
        sock.setblocking(False)
        if not self.tls_done:
            assert self.server.ssl_context is not None
            try:
                self.sock = self.server.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ssl.SSLError):
                self._close()
                return
        self.server._handshakes.add(self)
        timeout = self.server.policy.handshake_timeout
        if timeout is not None:
            self.timer = self.loop.call_later(timeout, self._timed_out)
        next(self.parser)
        self.loop.register(self.sock, selectors.EVENT_READ, self)

    def on_io(self, mask: int) -> bool:
        if self.refusing:
            self._linger(mask)
            return True
        if not self.tls_done:
            try:
                self.sock.do_handshake()
            except ssl.SSLWantReadError:
                self.loop.modify(self.sock, selectors.EVENT_READ, self)
                return True
            except ssl.SSLWantWriteError:
                self.loop.modify(self.sock, selectors.EVENT_WRITE, self)
                return True
            except (OSError, ssl.SSLError) as exc:
                self.log.info("TLS handshake failed: %s", exc)
                self.drop()
                return True
            self.tls_done = True
            self.loop.modify(self.sock, selectors.EVENT_READ, self)
        data = self.loop.recv_into(self.sock)
        if data is None:
            return True
        try:
            if data:
                self.reader.feed_data(data)
            else:
                self.reader.feed_eof()
            next(self.parser)
        except StopIteration as done:
            return self._decide(done.value)
        except InvalidMessage as exc:
            self._refuse(exc, "")
        return True

    def on_error(self) -> None:
        self.drop()

    # -- the decision -------------------------------------------------------------------------

    def _decide(self, request: Request) -> bool:
        """The policy's hooks and the handler's constructor are user code: run them
        under the loop's watchdog. Returns False if the loop moved meanwhile."""
        self._detach()
        server = self.server
        result: list[Any] = []

        def decide() -> None:
            try:
                accepted = server.policy.evaluate(request)
            except InvalidHandshake as exc:
                result.append(exc)
                return
            try:
                result.append((accepted, server.policy.make_handler(self.sock, accepted)))
            except Exception as exc:
                self.log.exception("could not build %s", server.handler_cls.__name__)
                result.append(unexpected_error(exc))

        try:
            leading = self.loop.run_callback(None, decide)
        except Exception as exc:  # a hook raised something else: 500, and the traceback
            self.log.exception("a handshake hook raised")
            leading = self.loop.is_leader()
            result.append(unexpected_error(exc))
        outcome = result[0]
        if isinstance(outcome, InvalidHandshake):
            if leading:
                self._refuse(outcome, request.path)
            else:
                self.loop.call_soon(lambda: self._refuse(outcome, request.path))
            return leading
        accepted, handler = outcome
        self._open(request, accepted, handler)
        return leading

    def _open(self, request: Request, accepted: Accepted, handler: WebSocket) -> None:
        server = self.server
        data = self.reader.take(len(self.reader.buffer))
        driver = SelectorDriver(
            self.sock, server.policy.new_protocol(accepted, data), self.log, self.loop, limits=server.policy.limits
        )
        driver.send_handshake(accepted.response.serialize())
        handler.bind(driver, request)
        self.log.debug("opened %s", request.path)
        registry = server.registry
        if not registry.add(handler):
            handler.close(CloseCode.GOING_AWAY, "server shutting down")
        driver.on_ended = lambda: registry.discard(handler)
        driver.start()

    # -- refusing -------------------------------------------------------------------------------

    def _refuse(self, exc: InvalidHandshake, target: str) -> None:
        """Send the refusal without blocking, then linger (read and drop) before closing."""
        log_refusal(self.log, target, exc)
        self._detach()
        if self.sock.fileno() < 0:
            return
        self.server._handshakes.add(self)
        self.refusing = True
        self.out = AcceptPolicy.refusal(exc).serialize()
        self.linger_until = time.monotonic() + _LINGER
        self.timer = self.loop.call_later(_LINGER + 1.0, self.drop)
        self.loop.register(self.sock, selectors.EVENT_WRITE | selectors.EVENT_READ, self)
        self._linger(selectors.EVENT_WRITE)

    def _linger(self, mask: int) -> None:
        sock = self.sock
        if self.out and mask & selectors.EVENT_WRITE:
            try:
                sent = sock.send(self.out)
            except _RETRY:
                sent = 0
            except OSError:
                self.drop()
                return
            self.out = self.out[sent:]
            if not self.out:
                try:
                    end_write_side(sock)
                except OSError:
                    pass
                self.loop.modify(sock, selectors.EVENT_READ, self)
        if mask & selectors.EVENT_READ:
            drained = 0
            while drained < _LINGER_BYTES:
                try:
                    chunk = sock.recv(16384)
                except _RETRY:
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    if not self.out:
                        self.drop()
                    return
                drained += len(chunk)
            if drained >= _LINGER_BYTES or time.monotonic() > self.linger_until:
                self.drop()

    def _timed_out(self) -> None:
        self.timer = None
        if not self.tls_done:  # no channel to answer on
            self.log.info("TLS handshake timed out")
            self.drop()
            return
        self._refuse(InvalidMessage("handshake timed out", status=408), "")

    # -- releasing ------------------------------------------------------------------------------

    def _detach(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.loop.unregister(self.sock)
        self.server._handshakes.discard(self)

    def drop(self) -> None:
        self._detach()
        self._close()

    def _close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def serve(handler_cls: type[WebSocket] = WebSocket, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Run a :class:`WebSocketServer` until Ctrl-C or SIGTERM, then shut it down cleanly (1001)."""
    import signal

    server = WebSocketServer(handler_cls, host, port, **options)
    logger.info("listening on %s:%d", host, server.port)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: _interrupt())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt() -> None:
    raise KeyboardInterrupt
