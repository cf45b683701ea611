"""CherryPy integration: the ``websocket`` tool that upgrades requests and the engine plugin that tracks them.

Set it up once, then turn the tool on per path, in config or with a decorator::

    import cherrypy
    from ws4web import WebSocket
    from ws4web.adapters.cherrypy import install

    class Chat(WebSocket):
        def received_message(self, message):
            plugin.broadcast(message)

    plugin = install()  # cherrypy.tools.websocket + a WebSocketPlugin on cherrypy.engine

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

1. ``before_handler``: the tool asks the door's :class:`~ws4web.accept.AcceptPolicy`
   (built once per set of options, so an unknown option is a 500 naming it, before
   any 101). A refusal (400, 403, 426 ... with the headers RFC 6455 asks for) is an
   ordinary CherryPy response and the page handler is skipped. On success the
   handler is built (``cherrypy.request.ws_handler``, as in ws4py), the response
   becomes the 101, and the page handler still runs, so it may refuse instead.
2. CherryPy's server (cheroot) writes the 101.
3. ``on_end_request``: the socket is detached from cheroot (it neither writes
   nor closes nor reuses the connection), the worker thread goes back to the pool
   at once, and the handler runs on the plugin's selector loop
   (:mod:`ws4web.drivers.selector`): quick callbacks on the loop thread, one that
   blocks (pull style included) on a thread of its own. Bytes the client sent
   right behind its request are handed over.

Tool options, per path (``tools.websocket.<name>``) or as decorator keywords, are
the door options every door takes: ``handler_cls``, the accept policy
(``protocols``, ``extensions``, ``select_subprotocol``, ``origins``,
``authenticate``), the limits (``max_message_size``, ``close_timeout``,
``heartbeat_freq`` ...) and keywords for ``handler_cls``.

The plugin owns the loop (started and stopped with the engine), keeps the open
WebSockets (:attr:`WebSocketPlugin.websockets`), broadcasts, and on ``engine.stop``
closes them all with 1001 (Going Away) and waits for them up to
``shutdown_timeout``. It listens on the bus channels ``handle-websocket`` /
``websocket-closed`` (published by the tool) and ``websocket-broadcast``
(``cherrypy.engine.publish("websocket-broadcast", msg)``), and answers
``websocket-loop`` (the tool asks it which loop a new connection runs on; without
a plugin, the process-wide loop). ``handle-websocket`` fires before ``opened()``
and ``websocket-closed`` after ``closed()``.

This needs CherryPy's own HTTP server, cheroot: under another WSGI server the
tool answers 500 rather than a 101 it could not honour.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import cherrypy
from cherrypy.process import plugins

from ..accept import AcceptPolicy, Registry, log_refusal, unexpected_error
from ..drivers.selector import Loop, SelectorDriver, default_loop
from ..exceptions import InvalidHandshake
from ..frames import CloseCode
from ..handshake import Accepted
from ..http11 import MAX_HEADERS, Headers, Request, Response
from ..logs import ConnectionLog, format_peer, new_id
from ..websocket import WebSocket
from ._stack import cheroot_request

__all__ = ["WebSocketPlugin", "WebSocketTool", "guard_server", "install", "uninstall"]

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

    __slots__ = ("accepted", "cheroot_request", "handler", "log", "peer", "policy", "request")

    def __init__(
        self,
        policy: AcceptPolicy,
        accepted: Accepted,
        handler: WebSocket,
        request: Request,
        peer: tuple[str, int],
        log: ConnectionLog,
        cheroot_request: Any,
    ) -> None:
        self.cheroot_request = cheroot_request  # found once, up the stack, by upgrade()
        self.policy = policy
        self.accepted = accepted
        self.handler = handler
        self.request = request
        self.peer = peer
        self.log = log


class WebSocketTool(cherrypy.Tool):  # type: ignore[misc]  # cherrypy is untyped
    """The ``tools.websocket`` tool: validates the upgrade, answers 101, hands the socket over."""

    def __init__(self, priority: int = 50) -> None:
        # before_handler, after the authentication tools (auth_basic and
        # auth_digest run there with priority 1): a refused login never upgrades.
        super().__init__("before_handler", self.upgrade, priority=priority)
        self._policies: dict[Any, AcceptPolicy] = {}
        self._policies_lock = threading.Lock()

    def _setup(self) -> None:
        super()._setup()
        hooks = cherrypy.serving.request.hooks
        hooks.attach("on_end_resource", _restore_header_case, priority=90)
        # failsafe: run even if another on_end_request hook fails, or the
        # detached socket would be left to nobody.
        hooks.attach("on_end_request", self.start_handler, failsafe=True, priority=90)

    def policy(self, handler_cls: type[WebSocket], options: dict[str, Any]) -> AcceptPolicy:
        """The accept policy for one set of tool options, built (and checked) once."""
        try:
            key: Any = (handler_cls, tuple(sorted((k, _hashable(v)) for k, v in options.items())))
            hash(key)
        except TypeError:
            key = None
        if key is not None:
            with self._policies_lock:
                policy = self._policies.get(key)
            if policy is not None:
                return policy
        policy = AcceptPolicy.from_options(handler_cls, options)
        if key is not None:
            with self._policies_lock:
                self._policies[key] = policy
        return policy

    def upgrade(self, handler_cls: type[WebSocket] = WebSocket, **options: Any) -> None:
        """Validate the upgrade request and answer 101, or refuse it with the status RFC 6455 asks for.

        ``options`` are the door options (see the module docstring); an unknown
        one is answered 500 and logged with its name, before any 101.
        """
        request = cherrypy.serving.request
        peer = (request.remote.ip, request.remote.port)
        log = ConnectionLog(logger, new_id(), format_peer(peer))
        ws_request = _upgrade_request(request)
        try:
            try:
                policy = self.policy(handler_cls, options)
            except TypeError as exc:
                log.error("tools.websocket: %s", exc)
                raise unexpected_error(exc) from exc
            accepted = policy.evaluate(ws_request)
            if not _served_by_cheroot():
                raise InvalidHandshake("tools.websocket needs CherryPy's own HTTP server (cheroot)", status=500)
            served_by = cheroot_request()
            sock = None if served_by is None else served_by.conn.socket
            try:
                handler = policy.make_handler(sock, accepted, _environ(request))
            except Exception as exc:
                log.exception("could not build %s", getattr(handler_cls, "__name__", handler_cls))
                raise unexpected_error(exc) from exc
        except InvalidHandshake as exc:
            log_refusal(log, ws_request.path, exc)
            refusal = AcceptPolicy.refusal(exc)
            closing = "close" in (t.lower() for t in refusal.headers.tokens("Connection"))
            _set_response(refusal, closing)
            if closing:
                # As on every door, a refused upgrade ends the connection: whatever
                # the client sends next may be frames, not another HTTP request.
                req = cheroot_request()
                if req is not None:
                    req.close_connection = True
            request.handler = None  # the refusal is the whole answer
            return
        _set_response(accepted.response)
        cherrypy.serving.response.stream = False  # a 101 has no body: let finalize() drop it
        request.ws_handler = handler  # ws4py's name: the page handler may look at it
        setattr(request, _PENDING, _Pending(policy, accepted, handler, ws_request, peer, log, served_by))

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
            request.ws_handler = None
            return
        detached = _detach_socket(pending.cheroot_request)
        if detached is None:
            pending.log.error("could not take the connection from cheroot")
            return
        sock, data = detached
        _start(pending, sock, data)


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


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


def _set_response(answer: Response, closing: bool = False) -> None:
    """Make ``answer`` CherryPy's response: status, headers and body; ``closing``
    when the connection ends after it (the caller tells cheroot)."""
    response = cherrypy.serving.response
    response.status = f"{answer.status} {answer.reason}"
    headers = response.headers
    headers.pop("Content-Type", None)  # CherryPy's default text/html describes neither a 101 nor a refusal
    values: dict[str, list[str]] = {}
    for name, value in answer.headers:
        if name.lower() == "connection":
            # cheroot decides whether the connection persists: "close" only goes
            # out when it will close; keep the other tokens (Upgrade on a 426 or 101).
            tokens = [t for t in (s.strip() for s in value.split(",")) if t and (closing or t.lower() != "close")]
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


def _detach_socket(req: Any) -> tuple[socket.socket, bytes] | None:
    """Take the socket of ``req`` (cheroot's request, or None) from cheroot, with the bytes buffered past the request.

    Call it from an ``on_end_request`` hook of a request whose 101 was sent.
    cheroot has no public API for this; everything it relies on is here
    (checked against the installed cheroot by the adapter's tests):

    * the :class:`cheroot.server.HTTPRequest` serving this thread was found up the
      call stack by the tool's upgrade (HTTPConnection.communicate -> HTTPRequest.respond
      -> the WSGI gateway -> CherryPy -> the tool);
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


# -- request heads: what cheroot does not bound -------------------------------------------


class _HeadGuard:
    """What cheroot's request reading lacks for WebSocket handshakes: a deadline on
    the whole request head (cheroot bounds each read, so a client dripping a byte
    at a time could hold a worker thread for ever), a limit on the number of header
    lines, and a refusal of a repeated ``Sec-WebSocket-Key`` or
    ``Sec-WebSocket-Version`` (cheroot keeps the last, hiding the duplicate).

    Installed by :class:`WebSocketPlugin` on the server it starts (see
    :func:`guard_server`); nothing changes for requests that arrive in time.
    """

    def __init__(self, loop: Callable[[], Loop], timeout: float | None, max_headers: int) -> None:
        self.loop = loop
        self.timeout = timeout
        self.max_headers = max_headers


def guard_server(
    httpserver: Any,
    loop: Callable[[], Loop] = default_loop,
    timeout: float | None = 10.0,
    max_headers: int = MAX_HEADERS,
) -> None:
    """Make ``httpserver`` (cheroot's, e.g. ``cherrypy.server.httpserver``) bound each
    request head by ``timeout`` seconds (408, then the connection is closed) and
    ``max_headers`` lines (431), and refuse repeated handshake keys (400). ``loop()``
    gives the loop whose timers keep the deadlines. Guarding twice changes nothing."""
    from cheroot.server import HeaderReader

    if getattr(httpserver.ConnectionClass, "ws4web_guarded", False):
        return
    guard = _HeadGuard(loop, timeout, max_headers)
    base_connection: Any = httpserver.ConnectionClass  # the server's own, subclassed, not replaced
    base_request: Any = base_connection.RequestHandlerClass

    class GuardedHeaderReader(HeaderReader):
        def __call__(self, rfile: Any, hdict: Any = None) -> Any:
            return super().__call__(_CountingLines(rfile, guard.max_headers), hdict)

    class GuardedRequest(base_request):  # type: ignore[misc]
        header_reader = GuardedHeaderReader()

        def simple_response(self, status: Any, msg: Any = "") -> None:
            # cheroot answers every ValueError of its header reader with a 400,
            # from inside its except block: a refusal of the guard's has its own status.
            refused = sys.exc_info()[1]
            if isinstance(refused, _HeadRefused) and str(status).startswith("400"):
                status = refused.status
                self.close_connection = True
            super().simple_response(status, msg)

        def parse_request(self) -> None:
            if guard.timeout is None:
                super().parse_request()
                return
            deadline = _Deadline(self.conn.socket)
            timer = guard.loop().call_later(guard.timeout, deadline.expire)
            try:
                super().parse_request()
            finally:
                deadline.done()
                timer.cancel()

    class GuardedConnection(base_connection):  # type: ignore[misc]
        RequestHandlerClass = GuardedRequest
        ws4web_guarded = True

    httpserver.ConnectionClass = GuardedConnection


_REPEATABLE_NOT = (b"sec-websocket-key", b"sec-websocket-version")


class _HeadRefused(ValueError):
    """A request head the guard refuses (a ValueError, the one cheroot's header reader may raise)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class _CountingLines:
    """A reader proxy that counts header lines and refuses repeated handshake keys."""

    def __init__(self, rfile: Any, limit: int) -> None:
        self._rfile = rfile
        self._limit = limit
        self._count = 0
        self._seen: set[bytes] = set()

    def readline(self, *args: Any) -> bytes:
        line: bytes = self._rfile.readline(*args)
        if line not in (b"\r\n", b""):
            self._count += 1
            if self._count > self._limit:
                raise _HeadRefused(f"more than {self._limit} header lines", "431 Request Header Fields Too Large")
            name = line.split(b":", 1)[0].strip().lower()
            if name in _REPEATABLE_NOT:
                if name in self._seen:
                    raise _HeadRefused(f"more than one {name.decode()} header", "400 Bad Request")
                self._seen.add(name)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rfile, name)


class _Deadline:
    """One request head's deadline: past it, answer 408 and end the connection."""

    __slots__ = ("_lock", "_state", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._state = "reading"

    def done(self) -> None:
        with self._lock:
            self._state = "done"

    def expire(self) -> None:
        """Loop thread: the head is late. The worker blocked in recv() sees EOF."""
        with self._lock:
            if self._state != "reading":
                return
            self._state = "expired"
        body = b"408 Request Timeout\n"
        try:
            self.sock.send(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(body), body),
                socket.MSG_DONTWAIT,
            )
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# -- running handlers ---------------------------------------------------------------------


def _loop_for_new_connection() -> tuple[Loop, Registry | None]:
    """The loop (and registry) of the plugin, asked over the bus like everything else
    between the tool and the plugin; with no plugin subscribed, the process-wide loop."""
    for answer in cherrypy.engine.publish("websocket-loop"):
        if isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[0], Loop):
            return answer[0], answer[1]
    return default_loop(), None


def _start(pending: _Pending, sock: socket.socket, data: bytes) -> None:
    """Run the handler on the plugin's loop, tracked by the plugin; no thread of its own."""
    bus = cherrypy.engine
    handler = pending.handler
    loop, registry = _loop_for_new_connection()
    driver = SelectorDriver(
        sock, pending.policy.new_protocol(pending.accepted, data), pending.log, loop, limits=pending.policy.limits
    )
    handler.bind(driver, pending.request)
    pending.log.debug("opened %s", pending.request.path)

    def ended() -> None:
        # After closed() returned, in the thread that ran it: listeners of
        # websocket-closed (the plugin's shutdown wait among them) see it done.
        if registry is not None:
            registry.discard(handler)
        try:
            bus.publish("websocket-closed", handler)
        except Exception:
            pending.log.exception("websocket-closed listener failed")

    driver.on_ended = ended
    if registry is not None and not registry.add(handler):
        handler.close(CloseCode.GOING_AWAY, "server shutting down")
    try:
        bus.publish("handle-websocket", handler, pending.peer)
    except Exception:  # a listener, not the handler
        pending.log.exception("handle-websocket listener failed")
    driver.start()


class WebSocketPlugin(plugins.SimplePlugin):  # type: ignore[misc]  # cherrypy is untyped
    """Engine plugin: runs the loop, tracks WebSockets, broadcasts, closes them all with 1001 on ``engine.stop``."""

    def __init__(self, bus: Any, shutdown_timeout: float = 5.0, handshake_timeout: float | None = 10.0) -> None:
        super().__init__(bus)
        self.shutdown_timeout = shutdown_timeout
        #: seconds for a whole request head on ``cherrypy.server`` (408 past it; see guard_server)
        self.handshake_timeout = handshake_timeout
        self._loop: Loop | None = None
        self._lock = threading.Lock()
        #: the open connections' handlers
        self.registry = Registry()

    @property
    def loop(self) -> Loop | None:
        """The loop connections run on while the engine runs."""
        return self._loop

    def subscribe(self) -> None:
        super().subscribe()  # start, stop
        self.bus.subscribe("websocket-broadcast", self.broadcast)
        self.bus.subscribe("websocket-loop", self.connection_loop)

    def unsubscribe(self) -> None:
        super().unsubscribe()
        self.bus.unsubscribe("websocket-broadcast", self.broadcast)
        self.bus.unsubscribe("websocket-loop", self.connection_loop)

    def connection_loop(self) -> tuple[Loop, Registry]:
        """The loop a new connection runs on (started on first use) and the registry it joins."""
        with self._lock:
            if self._loop is None or self._loop.stopping:
                self._loop = Loop(name="ws4web-cherrypy").start()
            return self._loop, self.registry

    @property
    def websockets(self) -> list[WebSocket]:
        """The open WebSockets, a snapshot."""
        return list(self.registry)

    def broadcast(self, message: Any, binary: bool | None = None) -> int:
        """Send ``message`` to every open WebSocket; one failing peer does not stop the others."""
        return self.registry.broadcast(message, binary)

    def start(self) -> None:
        self.registry = Registry() if self.registry.stopping else self.registry
        self.connection_loop()  # be ready before the first upgrade
        server = cherrypy.server
        if getattr(server, "httpserver", None) is None and hasattr(server, "httpserver_from_self"):
            # Built now rather than when it starts (it subscribes after us), so that
            # its connections are guarded from the first one.
            server.httpserver, server.bind_addr = server.httpserver_from_self()
        if hasattr(getattr(server, "httpserver", None), "ConnectionClass"):
            guard_server(server.httpserver, lambda: self.connection_loop()[0], self.handshake_timeout)

    def stop(self) -> None:
        """Close every WebSocket with 1001, wait up to ``shutdown_timeout``, drop the rest, stop the loop."""
        self.registry.shutdown(CloseCode.GOING_AWAY, "server shutting down", self.shutdown_timeout)
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop(timeout=1.0)


def install(engine: Any = None, **plugin_options: Any) -> WebSocketPlugin:
    """Register ``cherrypy.tools.websocket`` and subscribe a :class:`WebSocketPlugin` to ``engine``.

    ``engine`` defaults to ``cherrypy.engine``; ``plugin_options`` go to the
    plugin (``shutdown_timeout``). Calling it again returns the same plugin,
    options unchanged.
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
    leaves its loop and open connections as they are, and no longer stops them.
    """
    bus = engine if engine is not None else cherrypy.engine
    plugin: WebSocketPlugin | None = getattr(bus, "ws4web_plugin", None)
    if plugin is not None:
        plugin.unsubscribe()
        del bus.ws4web_plugin
