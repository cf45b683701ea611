"""WebSockets on the standard library's wsgiref server: a request handler, a threading server, make_server.

::

    from ws4web.adapters.wsgiref import WebSocketWSGIApplication, make_server

    server = make_server("127.0.0.1", 9000, WebSocketWSGIApplication(handler_cls=Chat))
    server.serve_forever()

Each HTTP request gets a thread of its own (``ThreadingMixIn``); an upgraded
connection leaves it at once and runs on the server's selector loop. Plain WSGI
requests work as with ``wsgiref.simple_server``, so the app can sit beside a
site under a :class:`PathDispatcher`.
"""

from __future__ import annotations

import logging
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Mapping
from typing import Any
from wsgiref.handlers import BaseHandler
from wsgiref.headers import Headers
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer
from wsgiref.util import is_hop_by_hop

from ..concurrency import THREADING
from ..drivers.selector import Loop
from ._wsgi import (
    REQUEST_TIMEOUT,
    HeadReader,
    PathDispatcher,
    Takeover,
    WebSocketWSGIApplication,
    buffered_bytes,
    register_server,
    shutdown_all,
)

__all__ = [
    "ENVIRON_KEY",
    "PathDispatcher",
    "WebSocketWSGIApplication",
    "WebSocketWSGIRequestHandler",
    "WebSocketWSGIServer",
    "make_server",
    "serve",
]

logger = logging.getLogger("ws4web.adapters.wsgiref")

#: The environ entry through which the application finds the request handler.
ENVIRON_KEY = "ws4web.wsgiref.handler"

_MAX_REQUEST_LINE = 65536


class _ServerHandler(ServerHandler):
    """wsgiref's per-request handler, silent once the connection was taken over."""

    request_handler: WebSocketWSGIRequestHandler
    result: Any
    headers: Headers

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        # wsgiref asserts that an application sends no hop-by-hop header, but a 426
        # must name the protocol to upgrade to (RFC 9110 §15.5.22: Upgrade) and a
        # refusal ends the connection (Connection: close): this server carries them.
        hop_by_hop = [(name, value) for name, value in headers if is_hop_by_hop(name)]
        write = super().start_response(status, [h for h in headers if h not in hop_by_hop], exc_info)
        for name, value in hop_by_hop:
            self.headers.add_header(name, value)
        return write

    def finish_response(self) -> None:
        if not self.request_handler.detached:
            super().finish_response()
            return
        # The WebSocket is over and the socket closed: there is no response to
        # finish, and start_response was never called (no status to log).
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            self.request_handler.log_request(101)
            BaseHandler.close(self)


class WebSocketWSGIRequestHandler(WSGIRequestHandler):
    """wsgiref's request handler, able to hand its connection to a WebSocket.

    Adds :data:`ENVIRON_KEY` to the environ, bounds the whole request head by
    :attr:`handshake_timeout` (408 past it), each later read by :attr:`timeout`,
    and logs through :mod:`logging` (logger ``ws4web.adapters.wsgiref``, INFO)
    instead of printing every request.
    """

    #: seconds for the whole request head (request line and headers)
    handshake_timeout: float | None = 10.0
    #: seconds to wait on a silent client in each read after that;
    #: cleared once a WebSocket owns the socket
    timeout = 30.0
    detached = False

    def setup(self) -> None:
        super().setup()
        self._head = HeadReader.install(self)

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = dict(super().get_environ())
        environ[ENVIRON_KEY] = self
        # Not in PEP 3333 and not set by wsgiref; gevent, Werkzeug and gunicorn set it.
        environ.setdefault("REMOTE_PORT", str(self.client_address[1]))
        return environ

    def handle(self) -> None:
        """Read one request and run the application on it (one request per connection)."""
        if self.handshake_timeout is not None:
            self._head.deadline = time.monotonic() + self.handshake_timeout
        try:
            self.raw_requestline = self.rfile.readline(_MAX_REQUEST_LINE + 1)
            if not self.raw_requestline:
                return  # connected and left
            if len(self.raw_requestline) > _MAX_REQUEST_LINE:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.parse_request():  # the error response is already sent
                return
        except TimeoutError:
            self._timed_out()
            return
        except OSError:  # reset before the request was complete
            return
        self._head.deadline = None
        self.connection.settimeout(self.timeout)
        # wfile is typed BufferedIOBase; ServerHandler only calls write() and flush() on it.
        handler = _ServerHandler(
            self.rfile,
            self.wfile,  # type: ignore[arg-type]
            self.get_stderr(),
            self.get_environ(),
            multithread=True,
        )
        handler.request_handler = self
        handler.run(self.server.get_app())  # type: ignore[attr-defined]

    def _timed_out(self) -> None:
        """The head did not arrive in time: 408, if the client still listens."""
        self.close_connection = True
        logger.info("%s - request head not complete within %g s: 408", self.address_string(), self.handshake_timeout)
        try:
            self.connection.settimeout(1.0)
            self.connection.sendall(REQUEST_TIMEOUT)
        except OSError:
            pass

    def detach_connection(self) -> None:
        """The application took the socket: answer nothing after it returns, and
        leave the socket open (it runs on the server's loop now)."""
        self.detached = True
        self.close_connection = True
        server = self.server
        if isinstance(server, WebSocketWSGIServer):
            server.detached(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s - %s", self.address_string(), format % args)


class WebSocketWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server with a thread per HTTP request; WebSockets run on its selector loop.

    An upgraded connection leaves its request thread at once: the server keeps
    one :class:`~ws4web.drivers.selector.Loop` (started on the first upgrade,
    stopped by ``server_close()``), so a thousand WebSockets are not a thousand
    threads queueing for the GIL.
    """

    daemon_threads = True  # an unfinished connection must not keep the process alive
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: Loop | None = None
        self._loop_lock = threading.Lock()
        self._detached: set[Any] = set()

    @property
    def loop(self) -> Loop:
        """The loop upgraded connections run on."""
        with self._loop_lock:
            if self._loop is None or self._loop.stopping:
                self._loop = Loop(name="ws4web-wsgiref").start()
            return self._loop

    def detached(self, request: Any) -> None:
        """``request`` (a socket) belongs to a WebSocket now: never shut it down here."""
        self._detached.add(request)

    def shutdown_request(self, request: Any) -> None:
        if request in self._detached:
            self._detached.discard(request)
            return
        super().shutdown_request(request)

    def server_close(self) -> None:
        """Stop listening and drop what still runs on the loop (call ``app.shutdown()``
        first for a 1001 to each client)."""
        super().server_close()
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop(timeout=1.0)


class WebSocketWSGIServer6(WebSocketWSGIServer):
    address_family = socket.AF_INET6


def _takeover(environ: Mapping[str, Any]) -> Takeover:
    handler: WebSocketWSGIRequestHandler = environ[ENVIRON_KEY]
    sock = handler.connection
    rfile = handler.rfile
    data = buffered_bytes(rfile, sock)  # also clears the request timeout
    server = handler.server
    loop = server.loop if isinstance(server, WebSocketWSGIServer) else None
    return Takeover(sock, data, sock.sendall, handler.detach_connection, THREADING, reader=rfile, loop=loop)


# Its request handler carries hop-by-hop headers (see _ServerHandler.start_response).
register_server(ENVIRON_KEY, _takeover, hop_by_hop=True)


def serve(app: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve ``app`` until Ctrl-C or SIGTERM, then close every WebSocket with 1001
    (Going Away), stop, and return — no traceback."""
    server = make_server(host, port, app)
    logger.info("listening on %s:%d", host, server.server_address[1])
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    runner = threading.Thread(target=server.serve_forever, name="ws4web-wsgiref", daemon=True)
    runner.start()
    try:
        while runner.is_alive():
            runner.join(0.5)  # a join with a timeout lets Ctrl-C through
    except KeyboardInterrupt:
        pass
    finally:
        shutdown_all()
        server.shutdown()
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def make_server(
    host: str,
    port: int,
    app: Any,
    server_class: type[WebSocketWSGIServer] | None = None,
    handler_class: type[WSGIRequestHandler] = WebSocketWSGIRequestHandler,
) -> WebSocketWSGIServer:
    """A threading wsgiref server on ``host:port`` (port 0 picks one) serving ``app``.

    Run it with ``serve_forever()``; stop it with ``app.shutdown()`` (to send
    1001 to open WebSockets), then ``shutdown()`` and ``server_close()``.
    """
    if server_class is None:
        server_class = WebSocketWSGIServer6 if ":" in host else WebSocketWSGIServer
    server = server_class((host, port), handler_class)
    server.set_app(app)
    return server
