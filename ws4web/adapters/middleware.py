"""WebSocketMiddleware: WebSocket endpoints mounted in front of any WSGI app, with the socket takeover per server.

::

    from flask import Flask
    from ws4web.adapters.middleware import WebSocketMiddleware

    app = Flask(__name__)
    app.wsgi_app = WebSocketMiddleware(app.wsgi_app, {"/ws": Chat, "/feed": Feed}, max_message_size=2**16)

Upgrade requests (``Upgrade: websocket``) whose path matches a route
(``/ws``, ``/chat/{room}``: the ASGI middleware's rule too, docs/adapters.md)
go to ws4web; every other request reaches the wrapped
application untouched: same environ, same ``start_response``, its iterable
returned as is.

A WebSocket needs the server's socket. Servers known to hand it over:

* gevent's pywsgi and wsgiref, through ws4web's request handlers
  (:mod:`ws4web.adapters.gevent`, :mod:`ws4web.adapters.wsgiref`);
* Werkzeug's development server (``environ["werkzeug.socket"]``); give it
  ``request_handler=werkzeug_request_handler()`` so that a request head cannot
  take longer than the handshake timeout (Werkzeug's own handler sets no bound);
* gunicorn's ``sync``, ``gthread`` and ``gevent`` workers (``environ["gunicorn.socket"]``).
  A ``sync`` worker serves one connection at a time: a WebSocket occupies it
  for its whole life, and the arbiter kills a worker silent for ``--timeout``
  seconds, so run WebSockets on ``gthread`` or ``gevent`` workers (or give a
  ``sync`` worker ``--timeout 0`` and expect one WebSocket per worker);
* cheroot (CherryPy's server), found from its request in the call stack.

Elsewhere a valid upgrade is answered ``501 Not Implemented`` and one line
naming ``SERVER_SOFTWARE`` is logged. Make the middleware the outermost
application: under Werkzeug and gunicorn it ends an upgraded request by
raising the exception those servers take as "the connection is gone"
(``ConnectionError``, ``StopIteration``), which a debugging middleware around
it would turn into an error page.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..concurrency import THREADING, Primitives
from ..exceptions import InvalidHandshake
from ..handshake import check_request
from ..websocket import WebSocket
from ._paths import PathRoutes, with_environ_params, wsgi_path
from ._stack import cheroot_request, find_on_stack
from ._wsgi import (
    REQUEST_TIMEOUT,
    HeadReader,
    Takeover,
    WebSocketWSGIApplication,
    buffered_bytes,
    find_server,
    register_server,
    request_from_environ,
)

if TYPE_CHECKING:
    import werkzeug.serving

__all__ = [
    "ENVIRON_KEY",
    "ServerSupport",
    "WebSocketMiddleware",
    "detect_server",
    "serve_upgrade",
    "werkzeug_request_handler",
]

logger = logging.getLogger("ws4web.adapters.middleware")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Environ entry the middleware sets on an upgrade: the :class:`ServerSupport` serving it.
ENVIRON_KEY = "ws4web.middleware.server"


class ServerSupport:
    """How the middleware takes a connection from one server and hands the request back.

    ``takeover(environ)`` extracts the socket (see :class:`~ws4web.adapters._wsgi.Takeover`);
    ``finish()`` is what the middleware does once the WebSocket is over: return
    an (empty) iterable, or raise what makes the server drop the request quietly.
    """

    __slots__ = ("finish", "name", "takeover")

    def __init__(
        self, name: str, takeover: Callable[[Mapping[str, Any]], Takeover], finish: Callable[[], Iterable[bytes]]
    ) -> None:
        self.name = name
        self.takeover = takeover
        self.finish = finish


def _return_nothing() -> Iterable[bytes]:
    return []


# -- Werkzeug's development server -------------------------------------------------------


def _werkzeug_takeover(environ: Mapping[str, Any]) -> Takeover:
    # Werkzeug documents environ["werkzeug.socket"] for upgrades. Its request
    # handler reads the headers through a buffered self.rfile, which is also
    # wsgi.input for a request without a chunked body (an upgrade has none):
    # early frames sit in that buffer.
    from werkzeug.serving import WSGIRequestHandler

    sock = environ["werkzeug.socket"]
    reader = environ.get("wsgi.input")
    data = buffered_bytes(reader, sock) if hasattr(reader, "peek") else b""
    handler = find_on_stack(WSGIRequestHandler)

    def detach() -> None:
        # http.server keeps an HTTP/1.1 connection open unless told otherwise
        # (Werkzeug says so only when it writes its "Connection: close"
        # header, which it never does here): without this, the handler would
        # read the next "request" from the buffered reader, which keeps the
        # descriptor open after the WebSocket closed the socket.
        if handler is not None:
            handler.close_connection = True

    # The reader stays open: the handler closes it in finish(); closing it here
    # would make a handler that was not found fail on a closed file instead.
    return Takeover(sock, data, sock.sendall, detach, THREADING)


def werkzeug_request_handler(handshake_timeout: float | None = 10.0) -> type[werkzeug.serving.WSGIRequestHandler]:
    """A request handler class for Werkzeug's server that bounds each request head.

    Werkzeug's own reads the request line and headers with no deadline: a client
    sending a byte a second holds a thread for ever. With this one, each request
    head must arrive within ``handshake_timeout`` seconds, or the client gets 408
    and the connection ends. Pass it where Werkzeug takes one::

        app.run(threaded=True, request_handler=werkzeug_request_handler())
        werkzeug.serving.run_simple(host, port, app, threaded=True, request_handler=werkzeug_request_handler())
    """
    from werkzeug.serving import WSGIRequestHandler

    class BoundedRequestHandler(WSGIRequestHandler):
        head: HeadReader

        def setup(self) -> None:
            super().setup()
            self.head = HeadReader.install(self)

        def handle_one_request(self) -> None:
            if handshake_timeout is not None:
                self.head.deadline = time.monotonic() + handshake_timeout
            # http.server catches the TimeoutError of a late head, logs it and
            # closes; the answer is ours to send.
            super().handle_one_request()
            if self.head.expired:
                self.head.expired = False
                self.close_connection = True
                self.log("info", "request head not complete within %g s: 408", handshake_timeout)
                try:
                    self.connection.settimeout(1.0)
                    self.connection.sendall(REQUEST_TIMEOUT)
                except OSError:
                    pass

        def log_error(self, format: str, *args: Any) -> None:
            if self.head.expired:
                return  # http.server's "Request timed out": the 408 line says it
            super().log_error(format, *args)

        def run_wsgi(self) -> None:
            # The head is in: from here the time is the application's.
            self.head.deadline = None
            self.connection.settimeout(self.timeout)
            super().run_wsgi()

    return BoundedRequestHandler


def _werkzeug_finish() -> Iterable[bytes]:
    # WSGIRequestHandler.run_wsgi catches ConnectionError from the application
    # as a dropped connection: no response, no drain of the socket, no log.
    # Returning normally would make it write a status line (or a 500 on our
    # closed socket, since start_response was never called).
    raise ConnectionError("ws4web: the connection was upgraded to a WebSocket")


# -- gunicorn --------------------------------------------------------------------------


def _gunicorn_leftover(environ: Mapping[str, Any]) -> bytes:
    """The bytes gunicorn's parser read past the request headers, taken from its Unreader."""
    # wsgi.input is a gunicorn Body over a LengthReader(unreader, 0) for a
    # request without a body; the Unreader keeps read-ahead in a BytesIO.
    # Unreader.read() would block on the socket when that is empty, so the
    # buffer is taken directly.
    body = environ.get("wsgi.input")
    unreader = getattr(getattr(body, "reader", None), "unreader", None)
    buf = getattr(unreader, "buf", None)
    if not isinstance(buf, io.BytesIO):
        return b""
    data = buf.getvalue()
    unreader.buf = io.BytesIO()  # type: ignore[union-attr]  # the bytes are the WebSocket's now
    return data


def _gunicorn_primitives(sock: Any) -> Primitives:
    # The gevent worker monkey-patches, so THREADING would work too, but
    # gevent's own primitives avoid depending on the patch.
    if type(sock).__module__.startswith("gevent"):
        from .gevent import GEVENT

        return GEVENT
    return THREADING


def _gunicorn_takeover(environ: Mapping[str, Any]) -> Takeover:
    sock = environ["gunicorn.socket"]
    data = _gunicorn_leftover(environ)
    try:
        sock.settimeout(None)  # the WebSocket does its own timeouts
    except OSError:
        pass
    return Takeover(sock, data, sock.sendall, lambda: None, _gunicorn_primitives(sock))


def _gunicorn_finish() -> Iterable[bytes]:
    # Every worker's handle() takes StopIteration from the request as "close
    # this connection": no response is written (resp.close() is skipped), the
    # connection is not kept alive, and closing our already closed socket is
    # harmless.
    raise StopIteration


# -- cheroot ---------------------------------------------------------------------------------


def _cheroot_takeover(environ: Mapping[str, Any]) -> Takeover:
    # cheroot has no public API for this; the attributes used are the ones
    # ws4web.adapters.cherrypy._detach_socket relies on, but here the 101 is
    # written by ws4web before cheroot sent anything.
    req = cheroot_request()
    if req is None:
        raise RuntimeError("no cheroot request on the stack")
    conn = req.conn
    leftover = bytearray()
    while conn.rfile.has_data():  # read-ahead in cheroot's buffered reader
        leftover += conn.rfile.read1(65536)
    sock = conn.socket
    sock.settimeout(None)

    def detach() -> None:
        # sent_headers: ensure_headers_sent() after the application is a no-op;
        # close_connection: communicate() does not wait for another request;
        # linger: conn.close() closes cheroot's reader only, not our socket.
        req.sent_headers = True
        req.chunked_write = False
        req.close_connection = True
        conn.linger = True

    return Takeover(sock, bytes(leftover), sock.sendall, detach, THREADING)


# -- choosing the server ------------------------------------------------------------------


_WERKZEUG = ServerSupport("werkzeug", _werkzeug_takeover, _werkzeug_finish)
_GUNICORN = ServerSupport("gunicorn", _gunicorn_takeover, _gunicorn_finish)
_CHEROOT = ServerSupport("cheroot", _cheroot_takeover, _return_nothing)


def _not_called(environ: Mapping[str, Any]) -> Takeover:  # pragma: no cover - the server's hook is used
    raise RuntimeError("the server's own registered hook takes the connection")


# A ws4web request handler (gevent, wsgiref) registered in _wsgi: its hook does it all.
_REGISTERED = ServerSupport("registered", _not_called, _return_nothing)


def detect_server(environ: Mapping[str, Any]) -> ServerSupport | None:
    """The support for the server running this request, or None if it cannot hand its socket over."""
    if find_server(environ) is not None:
        return _REGISTERED
    if "gunicorn.socket" in environ:
        return _GUNICORN
    if "werkzeug.socket" in environ:
        return _WERKZEUG
    if cheroot_request() is not None:
        return _CHEROOT
    return None


def _dispatch_takeover(environ: Mapping[str, Any]) -> Takeover:
    support: ServerSupport = environ[ENVIRON_KEY]
    return support.takeover(environ)


# Seen by WebSocketWSGIApplication only in environs the middleware marked, so
# a bare WebSocketWSGIApplication under these servers behaves as before. Werkzeug
# and cheroot send an application's hop-by-hop headers; gunicorn keeps its
# "Upgrade: websocket" (and says Connection itself): a 426 names the protocol.
register_server(ENVIRON_KEY, _dispatch_takeover, hop_by_hop=True)


# -- the middleware ----------------------------------------------------------------------------


def _is_upgrade(environ: Mapping[str, Any]) -> bool:
    """Whether the request asks for a WebSocket (RFC 6455 §4.2.1 item 3: Upgrade lists "websocket")."""
    upgrade = environ.get("HTTP_UPGRADE", "")
    return isinstance(upgrade, str) and any(t.strip().lower() == "websocket" for t in upgrade.split(","))


def serve_upgrade(
    ws_app: WebSocketWSGIApplication, environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes] | ServerSupport:
    """Run one upgrade request through ``ws_app``, taking the connection from the server running it.

    Returns either the HTTP answer (a refusal, or 501 where the server cannot hand
    its socket over; ``start_response`` was called) for the application to return,
    or, once the WebSocket has run, the :class:`ServerSupport` whose ``finish()``
    must end the request. :class:`WebSocketMiddleware` and the Flask routes
    (:mod:`ws4web.adapters.flask`) both come through here.
    """
    support = detect_server(environ)
    if support is None:
        return _unsupported(ws_app, environ, start_response)
    if support.name != "registered":
        environ[ENVIRON_KEY] = support
    answered = False

    def tracking_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        nonlocal answered
        answered = True
        return start_response(status, headers, exc_info)

    try:
        result = ws_app(environ, tracking_start_response)
    finally:
        environ.pop(ENVIRON_KEY, None)
    if answered:
        return result  # a refusal: an ordinary HTTP response
    # The WebSocket ran on the taken-over socket and is over.
    return support


def _unsupported(
    ws_app: WebSocketWSGIApplication, environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    try:
        check_request(request_from_environ(environ))
    except InvalidHandshake:
        return ws_app(environ, start_response)  # not a valid upgrade: the usual refusal
    software = environ.get("SERVER_SOFTWARE") or "unknown server"
    logger.warning("WebSocket upgrade refused: %s does not hand its socket over to applications", software)
    body = f"501 Not Implemented: WebSockets are not supported by this server ({software})\n".encode()
    start_response(
        "501 Not Implemented",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


class WebSocketMiddleware:
    """Serve WebSocket handlers on some paths in front of a WSGI application.

    ``routes`` maps a route path (``/ws``, ``/chat/{room}``; docs/adapters.md,
    "Route paths") to a :class:`~ws4web.websocket.WebSocket` subclass or a ready
    :class:`~ws4web.adapters.gevent.WebSocketWSGIApplication`. Paths are matched
    against ``PATH_INFO``, relative to ``SCRIPT_NAME``; the handler sees the full
    request target, and the route's parameters in ``view_args``. ``options``
    go to each :class:`~ws4web.adapters.gevent.WebSocketWSGIApplication` built for a class:
    ``protocols``, ``extensions``, ``select_subprotocol``, ``origins``,
    ``authenticate`` and the handler options (``max_message_size`` ...).
    """

    def __init__(
        self, app: WSGIApp, routes: Mapping[str, type[WebSocket] | WebSocketWSGIApplication], **options: Any
    ) -> None:
        self.app = app
        built: dict[str, WebSocketWSGIApplication] = {}
        for path, target in routes.items():
            if isinstance(target, WebSocketWSGIApplication):
                built[path] = target
            elif isinstance(target, type) and issubclass(target, WebSocket):
                built[path] = WebSocketWSGIApplication(target, **options)
            else:
                raise TypeError(
                    f"WebSocketMiddleware: {path!r} maps to {target!r}, "
                    "not a WebSocket subclass or a WebSocketWSGIApplication"
                )
        #: route path -> the WebSocketWSGIApplication serving it
        self.routes: PathRoutes[WebSocketWSGIApplication] = PathRoutes(built)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # PATH_INFO only: routes are relative to where the middleware itself is
        # mounted (SCRIPT_NAME), as with any WSGI dispatcher (PEP 3333).
        found = self.routes.match(wsgi_path(environ)) if _is_upgrade(environ) else None
        if found is None:
            return self.app(environ, start_response)
        ws_app, params = found
        with_environ_params(environ, params)
        outcome = serve_upgrade(ws_app, environ, start_response)
        return outcome.finish() if isinstance(outcome, ServerSupport) else outcome

    @property
    def websockets(self) -> set[WebSocket]:
        """A snapshot of the open WebSockets, on every route."""
        result: set[WebSocket] = set()
        for ws_app in self.routes.values():
            result |= ws_app.websockets
        return result

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close every open WebSocket with 1001 (Going Away); see
        :meth:`ws4web.adapters.gevent.WebSocketWSGIApplication.shutdown`."""
        for ws_app in self.routes.values():
            ws_app.shutdown(timeout=timeout)
