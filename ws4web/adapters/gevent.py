"""WebSockets on gevent's pywsgi server, without monkey-patching: a handler class and gevent primitives.

::

    from gevent.pywsgi import WSGIServer
    from ws4web.adapters.gevent import WebSocketWSGIApplication, WebSocketWSGIHandler

    app = WebSocketWSGIApplication(handler_cls=Chat)
    WSGIServer(("127.0.0.1", 9000), app, handler_class=WebSocketWSGIHandler).serve_forever()

Each WebSocket runs in the greenlet pywsgi gave its connection, over pywsgi's
own gevent socket, with :data:`GEVENT` primitives (gevent locks, events,
greenlets and a cooperative readiness wait), so every other greenlet keeps
running while one waits for a frame, and nothing needs ``patch_all()``.
"""

from __future__ import annotations

import http.client
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pywsgi
import gevent.select

from ..concurrency import Primitives
from ..exceptions import InvalidMessage
from ..handshake import reject
from ._wsgi import (
    REQUEST_TIMEOUT,
    PathDispatcher,
    Takeover,
    WebSocketWSGIApplication,
    buffered_bytes,
    register_server,
    shutdown_all,
)

__all__ = [
    "ENVIRON_KEY",
    "GEVENT",
    "GeventPrimitives",
    "PathDispatcher",
    "WebSocketWSGIApplication",
    "WebSocketWSGIHandler",
    "make_server",
    "serve",
]

#: The environ entry through which the application finds the pywsgi handler.
ENVIRON_KEY = "ws4web.gevent.handler"


def _spawn(target: Callable[[], Any], name: str = "ws4web") -> Any:
    greenlet = gevent.spawn(target)
    try:
        greenlet.name = name
    except AttributeError:  # pragma: no cover - older gevent: names are read-only
        pass
    return greenlet


def _wait_readable(sock: Any, timeout: float | None) -> bool:
    """Whether ``sock`` has bytes to read within ``timeout`` seconds; yields to the hub meanwhile."""
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True  # decrypted bytes wait inside the TLS layer; select cannot see them
    try:
        fileno = sock.fileno()
    except (OSError, ValueError):
        return True  # closed: let recv() report it
    if fileno < 0:
        return True
    if timeout is not None and timeout < 0:
        timeout = 0
    try:
        readable, _, _ = gevent.select.select([fileno], [], [], timeout)
    except (OSError, ValueError):  # closed by another greenlet meanwhile
        return True
    return bool(readable)


def _current() -> int:
    return id(gevent.getcurrent())


class GeventPrimitives(Primitives):
    """:class:`~ws4web.concurrency.Primitives` made of gevent's cooperative objects."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(
            lock=gevent.lock.Semaphore,  # a binary semaphore: non-reentrant, like threading.Lock
            event=gevent.event.Event,
            spawn=_spawn,
            wait_readable=_wait_readable,
            sleep=gevent.sleep,
            monotonic=time.monotonic,
            ident=_current,
        )


#: The primitives for code running in gevent greenlets.
GEVENT = GeventPrimitives()


class _HeadTimedOut(BaseException):
    """Raised in a pywsgi greenlet whose request head did not arrive in time (a
    BaseException, so that pywsgi's own ``except Exception`` lets it through)."""


#: pywsgi parses headers with http.client, which refuses more than 100 lines.
_TOO_MANY_HEADERS = reject(InvalidMessage("more than 100 header lines", status=431)).serialize()


class WebSocketWSGIHandler(gevent.pywsgi.WSGIHandler):  # type: ignore[misc]
    """pywsgi's request handler, able to hand its connection to a WebSocket.

    Plain requests are served exactly as by ``WSGIHandler``, but for two
    changes: an environ entry (:data:`ENVIRON_KEY`) lets
    :class:`WebSocketWSGIApplication` take the socket, and each request head
    must arrive within :attr:`handshake_timeout` (408 past it).
    """

    socket: Any
    response_length: int

    #: seconds for the whole request head (request line and headers); 408 past it
    handshake_timeout: float | None = 10.0

    def handle_one_request(self) -> Any:
        """pywsgi's, with the request head bounded by :attr:`handshake_timeout` (408 past it)."""
        # pywsgi bounds no read of the head: a client dripping a byte a second
        # would hold the greenlet (and its socket) for ever.
        timer = None
        if self.handshake_timeout is not None:
            timer = gevent.Timeout(self.handshake_timeout, _HeadTimedOut)
            timer.start()
        self._head_timer = timer
        try:
            return super().handle_one_request()
        except _HeadTimedOut:
            self.close_connection = True
            return ("408", REQUEST_TIMEOUT)
        finally:
            if timer is not None:
                timer.close()

    def _handle_client_error(self, ex: BaseException) -> Any:
        # pywsgi's hook for a request it cannot read. More header lines than
        # http.client takes: 431, as on every door (pywsgi would print a traceback
        # and answer 400).
        if isinstance(ex, http.client.HTTPException):
            self.close_connection = True
            self.log_error("Invalid request (from %s): %s", self.client_address, ex)
            return ("431", _TOO_MANY_HEADERS)
        return super()._handle_client_error(ex)

    def read_request(self, raw_requestline: str) -> Any:
        """pywsgi's; the head's deadline ends once the head is read."""
        try:
            return super().read_request(raw_requestline)
        finally:
            # The head is in: from here the time is the application's.
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.close()

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[ENVIRON_KEY] = self
        return environ

    def handle_one_response(self) -> None:
        try:
            super().handle_one_response()
        finally:
            # environ -> handler -> environ is a cycle: break it, so the request's
            # reader and socket are freed by reference counting, in this hub's
            # lifetime, not by a later garbage collection.
            environ = self.environ
            if environ is not None:
                environ.pop(ENVIRON_KEY, None)

    def detach_connection(self) -> None:
        """Forget the connection: after the application returns, pywsgi writes
        nothing, reads no more requests and does not close the socket."""
        # handle() stops its keep-alive loop on close_connection, and skips its
        # final recv()/close() when it has no socket any more.
        self.close_connection = True
        self.socket = None
        # What the access log shows instead of "000" (pywsgi's status is unset:
        # setting it would make pywsgi send headers of its own).
        self._orig_status = "101 Switching Protocols"
        # A non-zero length keeps pywsgi's error path (say, GreenletExit from
        # server.stop()) from starting a 500 response on a WebSocket.
        self.response_length = max(self.response_length, 1)
        # After the app, pywsgi drains the request body from rfile; an upgrade has
        # none, and the reader belongs to the WebSocket now.
        wsgi_input = self.wsgi_input
        if wsgi_input is not None:
            wsgi_input.content_length = 0
            wsgi_input.chunked_input = False


def _takeover(environ: Mapping[str, Any]) -> Takeover:
    handler: WebSocketWSGIHandler = environ[ENVIRON_KEY]
    sock = handler.socket
    rfile = handler.rfile
    data = buffered_bytes(rfile, sock)

    def write(raw: bytes) -> None:
        sock.sendall(raw)
        handler.response_length += len(raw)  # for the access log

    return Takeover(sock, data, write, handler.detach_connection, GEVENT, reader=rfile)


# pywsgi lets applications send hop-by-hop headers: a 426 keeps its Upgrade header.
register_server(ENVIRON_KEY, _takeover, hop_by_hop=True)


def serve(app: Any, host: str = "127.0.0.1", port: int = 8080, **kwargs: Any) -> None:
    """Serve ``app`` until Ctrl-C or SIGTERM, then close every WebSocket with 1001
    (Going Away), stop, and return — no traceback. ``kwargs`` go to WSGIServer."""
    server = make_server(host, port, app, **kwargs)
    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(signum, stop.set) for signum in (signal.SIGINT, signal.SIGTERM)]
    server.start()
    try:
        stop.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        shutdown_all()  # in this greenlet: the connections' greenlets finish their closing handshakes
        server.stop(timeout=1.0)


def make_server(host: str, port: int, app: Any, **kwargs: Any) -> Any:
    """A ``gevent.pywsgi.WSGIServer`` on ``host:port`` with :class:`WebSocketWSGIHandler`.

    ``kwargs`` go to WSGIServer (``log=None`` silences the access log). Call
    ``serve_forever()`` or ``start()`` on the result.
    """
    kwargs.setdefault("handler_class", WebSocketWSGIHandler)
    return gevent.pywsgi.WSGIServer((host, port), app, **kwargs)
