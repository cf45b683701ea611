"""CherryPy integration: the ``websocket`` tool that upgrades requests and the engine plugin that tracks them.

Set it up once, then turn the tool on per path, in config or with a decorator::

    import cherrypy
    from ws4web import WebSocket
    from ws4web.adapters.cherrypy import install

    class Chat(WebSocket):
        def received_message(self, message):
            plugin.broadcast(message)

    plugin = install()  # cherrypy.tools.websocket + a WebSocketPlugin on cherrypy.engine
    # install(io="threads") runs each connection in a thread of its own instead of the reactor

    class Root:
        @cherrypy.expose
        def ws(self):  # runs before the 101 goes out; raise HTTPError here to refuse
            pass

        @cherrypy.expose
        @cherrypy.tools.websocket(handler_cls=Chat, max_message_size=2**16)
        def chat(self):
            pass

    cherrypy.quickstart(Root(), "/", {"/ws": {"tools.websocket.on": True, "tools.websocket.handler_cls": Chat}})

``install()`` is the same as ``cherrypy.tools.websocket = WebSocketTool()`` plus
``WebSocketPlugin(cherrypy.engine).subscribe()`` (ws4py's two lines, which also work).

How a request becomes a WebSocket:

1. ``before_handler``: the tool checks the upgrade with :func:`ws4web.handshake.accept`.
   A refusal (400, 405, 426 ... with the headers RFC 6455 asks for) is an ordinary
   CherryPy response and the page handler is skipped. On success the response
   becomes the 101 and the page handler still runs, so it may refuse instead.
2. CherryPy's server (cheroot) writes the 101.
3. ``on_end_request``: the socket is detached from cheroot (it neither writes
   nor closes nor reuses the connection), the worker thread goes back to the pool
   at once, and ``handler_cls`` takes over the connection. Bytes the client sent
   right behind its request are handed over.

How connections run is chosen on the plugin, with ``install(io=...)`` or
``WebSocketPlugin(engine, io=...)`` (``plugin.io`` may change later: it applies
to the connections that start afterwards):

* ``io="reactor"`` (the default): the plugin owns one :class:`~ws4web.reactor.Reactor`,
  started with the engine (or on first use) and stopped with it. One selector
  thread serves every socket and the callbacks run on its worker pool
  (``max_workers``, default 64), in order per connection, so a slow handler
  delays only its own connection: thousands of idle WebSockets cost no threads.
  Callbacks only: ``recv()`` raises NotImplementedError.
* ``io="threads"``: a thread per connection runs :meth:`WebSocket.run`; handlers
  may block as they like and use the pull style (``recv()``, iteration).

Without a subscribed plugin there is no reactor to run on: the tool falls back
to a thread per connection.

Tool options, per path (``tools.websocket.<name>``) or as decorator keywords:
``handler_cls``, ``protocols`` (subprotocols the server speaks), ``extensions``
(server extension factories), ``select_subprotocol``, and anything else goes to
``handler_cls`` (``max_message_size``, ``max_frame_size``, ``close_timeout``,
``heartbeat_freq`` ...).

The plugin keeps the open WebSockets (:attr:`WebSocketPlugin.websockets`),
broadcasts, and on ``engine.stop`` closes them all with 1001 (Going Away) and
waits for them up to ``shutdown_timeout``. It listens on the bus channels
``handle-websocket`` / ``websocket-closed`` (published by the tool) and
``websocket-broadcast`` (``cherrypy.engine.publish("websocket-broadcast", msg)``),
and answers ``websocket-reactor`` (the tool asks it which reactor, if any, a new
connection runs on). In both modes ``handle-websocket`` fires before
``opened()`` and ``websocket-closed`` after ``closed()``.

This needs CherryPy's own HTTP server, cheroot: under another WSGI server the
tool answers 500 rather than a 101 it could not honour.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import cherrypy
from cherrypy.process import plugins

from ..auth import Authenticator
from ..exceptions import InvalidHandshake
from ..extensions.base import Extension, ServerExtensionFactory
from ..frames import CloseCode
from ..handshake import SubprotocolSelector, accept, reject
from ..http11 import Headers, Request, Response
from ..logs import ConnectionLog, format_peer, new_id
from ..protocol import SERVER
from ..reactor import Reactor, ReactorConnection
from ..websocket import WebSocket

__all__ = ["IO_MODES", "WebSocketPlugin", "WebSocketTool", "install", "uninstall"]

#: How the plugin runs connections: on its reactor, or a thread each.
IO_MODES = ("reactor", "threads")

logger = logging.getLogger("ws4web.adapters.cherrypy")

# Attribute of cherrypy.request carrying an accepted upgrade from the tool's
# before_handler hook to its on_end_request hook.
_PENDING = "_ws4web_pending"

# CherryPy title-cases response header names ("Sec-Websocket-Accept"). Header
# names are case-insensitive (RFC 9110 §5.1), but some clients compare them
# exactly; restore the spelling RFC 6455 §11.3 registers.
_CANONICAL = {
    name.lower().encode("ascii"): name.encode("ascii")
    for name in (
        "Sec-WebSocket-Accept",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Version",
    )
}


class _Pending:
    """An upgrade accepted by the tool, waiting for the 101 to be sent."""

    __slots__ = ("environ", "extensions", "handler_cls", "options", "peer", "request", "subprotocol")

    def __init__(
        self,
        handler_cls: type[WebSocket],
        request: Request,
        subprotocol: str | None,
        extensions: list[Extension],
        environ: dict[str, Any],
        peer: tuple[str, int],
        options: dict[str, Any],
    ) -> None:
        self.handler_cls = handler_cls
        self.request = request
        self.subprotocol = subprotocol
        self.extensions = extensions
        self.environ = environ
        self.peer = peer
        self.options = options


class WebSocketTool(cherrypy.Tool):  # type: ignore[misc]  # cherrypy is untyped
    """The ``tools.websocket`` tool: validates the upgrade, answers 101, hands the socket over."""

    def __init__(self, priority: int = 50) -> None:
        # before_handler, after the authentication tools (auth_basic and
        # auth_digest run there with priority 1): a refused login never upgrades.
        super().__init__("before_handler", self.upgrade, priority=priority)

    def _setup(self) -> None:
        super()._setup()
        hooks = cherrypy.serving.request.hooks
        hooks.attach("on_end_resource", _restore_header_case, priority=90)
        # failsafe: run even if another on_end_request hook fails, or the
        # detached socket would be left to nobody.
        hooks.attach("on_end_request", self.start_handler, failsafe=True, priority=90)

    def upgrade(
        self,
        handler_cls: type[WebSocket] = WebSocket,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[ServerExtensionFactory] | None = None,
        select_subprotocol: SubprotocolSelector | None = None,
        origins: Sequence[str | None] | None = None,
        authenticate: Authenticator | None = None,
        **handler_options: Any,
    ) -> None:
        """Validate the upgrade request and answer 101, or refuse it with the status RFC 6455 asks for.

        ``origins`` is the Origin allow-list (403 otherwise) and ``authenticate``
        a hook that may raise Unauthorized/Forbidden, as on every other stack;
        other keyword arguments go to the handler's constructor.
        """
        request = cherrypy.serving.request
        ws_request = _upgrade_request(request)
        try:
            accepted = accept(
                ws_request,
                subprotocols=list(protocols or ()),
                select_subprotocol=select_subprotocol,
                extensions=list(extensions or ()),
                origins=origins,
                authenticate=authenticate,
            )
        except InvalidHandshake as exc:
            peer = format_peer((request.remote.ip, request.remote.port))
            ConnectionLog(logger, new_id(), peer).warning(
                "upgrade of %s refused (HTTP %d): %s", ws_request.path, exc.status, exc
            )
            _set_response(reject(exc))
            request.handler = None  # the refusal is the whole answer
            return
        if not _served_by_cheroot():
            raise cherrypy.HTTPError(500, "tools.websocket needs CherryPy's own HTTP server (cheroot)")
        _set_response(accepted.response)
        cherrypy.serving.response.stream = False  # a 101 has no body: let finalize() drop it
        setattr(
            request,
            _PENDING,
            _Pending(
                handler_cls,
                ws_request,
                accepted.subprotocol,
                accepted.extensions,
                _environ(request),
                (request.remote.ip, request.remote.port),
                handler_options,
            ),
        )

    def start_handler(self) -> None:
        """After the 101 is sent: detach the socket and start the handler on it."""
        request = cherrypy.serving.request
        pending: _Pending | None = getattr(request, _PENDING, None)
        if pending is None:
            return
        setattr(request, _PENDING, None)
        if not str(cherrypy.serving.response.status).startswith("101"):
            # The page handler (or an error) replaced the 101: no upgrade, and
            # cheroot carries on with the connection as usual.
            return
        detached = _detach_socket()
        if detached is None:
            logger.error("could not take the connection of %s:%s from cheroot", *pending.peer)
            return
        sock, data = detached
        options = dict(pending.options)
        try:
            reactor = _reactor_for_new_connection()
            if reactor is not None:
                # Only in reactor mode: a ws4py-era handler whose __init__ takes
                # no ``reactor`` keyword still runs with io="threads".
                options["reactor"] = reactor
            websocket = pending.handler_cls(
                sock,
                protocols=[pending.subprotocol] if pending.subprotocol else [],
                extensions=pending.extensions,
                environ=pending.environ,
                request=pending.request,
                side=SERVER,
                data=data,
                **options,
            )
        except Exception:
            logger.exception("%s could not be created; dropping the connection", pending.handler_cls.__name__)
            _close_socket(sock)
            return
        request.ws_handler = websocket  # ws4py's name, for later on_end_request hooks
        if isinstance(websocket.connection, ReactorConnection):
            _start_on_reactor(websocket, pending.peer)
        else:
            _serve(websocket, pending.peer)


def _upgrade_request(request: Any) -> Request:
    """The ws4web Request equivalent to ``cherrypy.request``."""
    environ = getattr(request, "wsgi_environ", None) or {}
    target = environ.get("REQUEST_URI")  # the raw request-target, as the client sent it
    if not target:
        target = (request.script_name + request.path_info) or "/"
        if request.query_string:
            target += "?" + request.query_string
    # request.protocol is min(client version, server version): a 1.1 upgrade
    # needs both sides at 1.1 (RFC 6455 §4.2.1 item 1).
    major, minor = request.protocol
    return Request(request.method, target, Headers(request.header_list), f"HTTP/{major}.{minor}")


def _environ(request: Any) -> dict[str, Any]:
    """Request information for the handler: the WSGI environ, without the consumed input stream."""
    environ = {k: v for k, v in (getattr(request, "wsgi_environ", None) or {}).items() if k != "wsgi.input"}
    if request.login and "REMOTE_USER" not in environ:  # set by CherryPy's auth tools
        environ["REMOTE_USER"] = request.login
    return environ


def _set_response(answer: Response) -> None:
    """Make ``answer`` CherryPy's response: status, headers and body."""
    response = cherrypy.serving.response
    response.status = f"{answer.status} {answer.reason}"
    headers = response.headers
    headers.pop("Content-Type", None)  # CherryPy's default text/html describes neither a 101 nor a refusal
    values: dict[str, list[str]] = {}
    for name, value in answer.headers:
        if name.lower() == "connection":
            # cheroot decides whether the connection persists and says so
            # itself; keep only the other tokens (Upgrade on a 426 or 101).
            tokens = [t for t in (s.strip() for s in value.split(",")) if t and t.lower() != "close"]
            if tokens:
                values.setdefault(name, []).append(", ".join(tokens))
        else:
            values.setdefault(name, []).append(value)
    for name, items in values.items():
        headers[name] = ", ".join(items)  # RFC 9110 §5.3: repeated fields combine into one list
    response.body = answer.body


def _restore_header_case() -> None:
    response = cherrypy.serving.response
    header_list = getattr(response, "header_list", None)
    if header_list:
        response.header_list = [(_CANONICAL.get(k.lower(), k), v) for k, v in header_list]


# -- cheroot coupling -----------------------------------------------------------------


def _served_by_cheroot() -> bool:
    """True in one of cheroot's worker threads, where :func:`_detach_socket` works."""
    from cheroot.workers.threadpool import WorkerThread

    return isinstance(threading.current_thread(), WorkerThread)


def _detach_socket() -> tuple[socket.socket, bytes] | None:
    """Take the current connection's socket from cheroot, with the bytes it buffered past the request.

    Call it from an ``on_end_request`` hook of a request whose 101 was sent.
    cheroot has no public API for this; everything it relies on is here
    (checked against the installed cheroot by the adapter's tests):

    * the :class:`cheroot.server.HTTPRequest` serving this thread is found up the
      call stack (HTTPConnection.communicate -> HTTPRequest.respond -> the WSGI
      gateway -> CherryPy -> this hook);
    * ``req.sent_headers`` says the 101 went out; ``conn.wfile`` writes through
      on every write, the flush() only makes sure;
    * ``req.close_connection = True`` makes ``communicate()`` return False, so the
      connection is neither kept alive nor polled for a next request;
    * ``conn.linger = True`` makes ``conn.close()`` close only cheroot's reader,
      not the socket (no shutdown, no close): the socket is ours from here;
    * ``conn.rfile`` is a buffered reader: a recv() may have fetched the
      client's first frames with the request; ``has_data()`` / ``read1()`` take
      them from the buffer without touching the socket;
    * cheroot set the socket's timeout (``server.socket_timeout``); a WebSocket
      may idle for long, so it goes back to blocking.
    """
    from cheroot.server import HTTPRequest

    frame = sys._getframe(1)
    req: Any = None
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, HTTPRequest):
            req = candidate
            break
        frame = frame.f_back  # type: ignore[assignment]
    del frame
    if req is None or not req.sent_headers or not bytes(req.status).startswith(b"101"):
        return None
    conn = req.conn
    conn.wfile.flush()
    req.close_connection = True
    conn.linger = True
    leftover = bytearray()
    while conn.rfile.has_data():
        leftover += conn.rfile.read1(65536)
    sock: socket.socket = conn.socket
    sock.settimeout(None)
    return sock, bytes(leftover)


# -- running handlers ---------------------------------------------------------------------


def _reactor_for_new_connection() -> Reactor | None:
    """The reactor the plugin runs connections on; None for a thread per connection.

    Asked over the bus, like everything else between the tool and the plugin:
    with no plugin subscribed nobody answers, and nobody would stop a reactor.
    """
    for answer in cherrypy.engine.publish("websocket-reactor"):
        if isinstance(answer, Reactor):
            return answer
    return None


def _start_on_reactor(websocket: WebSocket, peer: tuple[str, int]) -> None:
    """Hand ``websocket`` to its reactor, tracked by the plugin; no thread of its own."""
    bus = cherrypy.engine
    connection = websocket.connection
    assert isinstance(connection, ReactorConnection)

    def finished() -> None:
        # On the connection's lane, behind every callback still queued: closed()
        # runs first (firing it is idempotent: the reactor's own request to fire
        # it, queued right after this task, then does nothing), so listeners of
        # websocket-closed -- the plugin's shutdown wait among them -- see the
        # handler done, as in the threaded mode.
        websocket._fire_closed()
        try:
            bus.publish("websocket-closed", websocket)
        except Exception:
            logger.exception("websocket-closed listener failed")

    def released() -> None:
        # Loop thread, once the reactor has closed the socket: never run
        # handler code here, it would stall every other connection.
        try:
            connection._lane.submit(finished)
        except RuntimeError:  # the worker pool is already shut down
            finished()

    try:
        bus.publish("handle-websocket", websocket, peer)
    except Exception:  # the bus or the plugin, not the handler
        logger.exception("serving %s:%s failed", *peer)
        _close_socket(websocket.sock)
        try:
            bus.publish("websocket-closed", websocket)
        except Exception:
            logger.exception("websocket-closed listener failed")
        return
    connection.on_teardown = released
    websocket.start()


def _serve(websocket: WebSocket, peer: tuple[str, int]) -> None:
    """Run ``websocket``'s callback loop in a thread of its own, tracked by the plugin."""

    def run() -> None:
        bus = cherrypy.engine
        try:
            bus.publish("handle-websocket", websocket, peer)
            websocket.run()
        except Exception:  # run() traps handler errors; this is the bus or the plugin
            logger.exception("serving %s:%s failed", *peer)
        finally:
            _close_socket(websocket.sock)
            try:
                bus.publish("websocket-closed", websocket)
            except Exception:
                logger.exception("websocket-closed listener failed")

    threading.Thread(target=run, name=f"ws4web-cherrypy-{peer[0]}:{peer[1]}", daemon=True).start()


def _close_socket(sock: Any) -> None:
    try:
        sock.close()
    except OSError:  # pragma: no cover - nothing left to release
        pass


class WebSocketPlugin(plugins.SimplePlugin):  # type: ignore[misc]  # cherrypy is untyped
    """Engine plugin: runs the reactor, tracks WebSockets, broadcasts, closes them all with 1001 on ``engine.stop``.

    ``io`` is ``"reactor"`` (the default: connections share the plugin's reactor,
    whose worker pool has up to ``max_workers`` threads) or ``"threads"`` (a
    thread per connection).
    """

    def __init__(self, bus: Any, shutdown_timeout: float = 5.0, io: str = "reactor", max_workers: int = 64) -> None:
        super().__init__(bus)
        self.shutdown_timeout = shutdown_timeout
        self.io = io
        self.max_workers = max_workers
        self._reactor: Reactor | None = None
        self._websockets: dict[WebSocket, tuple[str, int] | None] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = False

    @property
    def io(self) -> str:
        """``"reactor"`` or ``"threads"``; read as each connection starts."""
        return self._io

    @io.setter
    def io(self, value: str) -> None:
        if value not in IO_MODES:
            raise ValueError(f"io must be one of {IO_MODES}, not {value!r}")
        self._io = value

    @property
    def reactor(self) -> Reactor | None:
        """The reactor connections run on while the engine runs in reactor mode."""
        return self._reactor

    def subscribe(self) -> None:
        super().subscribe()  # start, stop
        self.bus.subscribe("handle-websocket", self.handle)
        self.bus.subscribe("websocket-closed", self.discard)
        self.bus.subscribe("websocket-broadcast", self.broadcast)
        self.bus.subscribe("websocket-reactor", self.connection_reactor)

    def unsubscribe(self) -> None:
        super().unsubscribe()
        self.bus.unsubscribe("handle-websocket", self.handle)
        self.bus.unsubscribe("websocket-closed", self.discard)
        self.bus.unsubscribe("websocket-broadcast", self.broadcast)
        self.bus.unsubscribe("websocket-reactor", self.connection_reactor)

    def connection_reactor(self) -> Reactor | None:
        """The reactor a new connection runs on (started on first use); None for a thread of its own."""
        if self._io != "reactor":
            return None
        with self._lock:
            if self._reactor is None:
                if self._stopping:
                    # The reactor is already stopped and nothing would stop a
                    # new one: this straggler gets a thread, and handle() a 1001.
                    return None
                self._reactor = Reactor(max_workers=self.max_workers, name="ws4web-cherrypy-reactor").start()
            return self._reactor

    @property
    def websockets(self) -> list[WebSocket]:
        """The open WebSockets, a snapshot."""
        with self._lock:
            return list(self._websockets)

    def handle(self, websocket: WebSocket, peer: tuple[str, int] | None = None) -> None:
        """Track ``websocket`` (the ``handle-websocket`` channel, as in ws4py)."""
        with self._lock:
            self._websockets[websocket] = peer
            stopping = self._stopping
        if stopping:  # arrived while the engine stops: it goes away at once
            websocket.close(CloseCode.GOING_AWAY, "server shutting down")

    def discard(self, websocket: WebSocket) -> None:
        """Forget ``websocket`` (the ``websocket-closed`` channel)."""
        with self._lock:
            self._websockets.pop(websocket, None)
            self._idle.notify_all()

    def broadcast(self, message: Any, binary: bool | None = None) -> None:
        """Send ``message`` to every open WebSocket; one failing peer does not stop the others."""
        for websocket in self.websockets:
            try:
                websocket.send(message, binary)
            except Exception as exc:
                logger.debug("broadcast to %r failed: %s", websocket, exc)

    def start(self) -> None:
        with self._lock:
            self._stopping = False
        self.connection_reactor()  # reactor mode: be ready before the first upgrade

    def stop(self) -> None:
        """Close every WebSocket with 1001 and wait up to ``shutdown_timeout``; drop the rest, stop the reactor."""
        with self._lock:
            self._stopping = True
            targets = list(self._websockets)
        for websocket in targets:
            try:
                # RFC 6455 §7.4.1: 1001, the endpoint is going away. In reactor
                # mode this never blocks; the reactor finishes the handshake.
                websocket.close(CloseCode.GOING_AWAY, "server shutting down")
            except Exception as exc:
                logger.debug("closing %r failed: %s", websocket, exc)
        if not self._wait_idle(self.shutdown_timeout):
            for websocket in self.websockets:
                websocket.terminate()
            self._wait_idle(1.0)  # only closed() is left to run
        with self._lock:
            reactor, self._reactor = self._reactor, None
        if reactor is not None:
            # Drops whatever is left (a connection that arrived during the wait)
            # and lets queued callbacks, closed() included, finish.
            reactor.stop(timeout=1.0)

    def _wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._websockets:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


def install(engine: Any = None, **plugin_options: Any) -> WebSocketPlugin:
    """Register ``cherrypy.tools.websocket`` and subscribe a :class:`WebSocketPlugin` to ``engine``.

    ``engine`` defaults to ``cherrypy.engine``; ``plugin_options`` go to the
    plugin: ``io`` (``"reactor"``, the default, or ``"threads"``), ``max_workers``
    (the reactor's worker pool), ``shutdown_timeout``. Calling it again returns
    the same plugin, options unchanged.
    """
    if not isinstance(getattr(cherrypy.tools, "websocket", None), WebSocketTool):
        cherrypy.tools.websocket = WebSocketTool()
    bus = engine if engine is not None else cherrypy.engine
    plugin: WebSocketPlugin | None = getattr(bus, "ws4web_plugin", None)
    if plugin is None:
        plugin = WebSocketPlugin(bus, **plugin_options)
        plugin.subscribe()
        bus.ws4web_plugin = plugin
    return plugin


def uninstall(engine: Any = None) -> None:
    """Undo :func:`install`: unsubscribe the plugin (the tool stays registered).

    Call it once the engine has stopped: a plugin unsubscribed while it runs
    leaves its reactor and open connections as they are, and no longer stops them.
    """
    bus = engine if engine is not None else cherrypy.engine
    plugin: WebSocketPlugin | None = getattr(bus, "ws4web_plugin", None)
    if plugin is not None:
        plugin.unsubscribe()
        del bus.ws4web_plugin
