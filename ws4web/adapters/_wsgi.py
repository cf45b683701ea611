"""What every WSGI adapter shares: the environ-to-Request bridge, the upgrade app and the socket takeover hook.

A WSGI application cannot speak WebSocket through ``start_response``: after the
101 the connection stops being HTTP. So :class:`WebSocketWSGIApplication` checks
the upgrade with the ordinary handshake rules, answers refusals as plain WSGI
responses, and on success asks the *server* for its socket. How to get it is
server-specific; each server adapter registers one small function
(:func:`register_server`) keyed by an environ entry that its request handler
sets, and that function returns a :class:`Takeover`: the socket, the bytes the
server's buffered reader already took past the headers, a raw writer for the
101, and a way to tell the server the connection is no longer its own.
"""

from __future__ import annotations

import io
import logging
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..accept import AcceptPolicy, Registry, log_refusal, unexpected_error
from ..concurrency import Primitives
from ..drivers.blocking import BlockingDriver
from ..drivers.selector import Loop, SelectorDriver
from ..exceptions import InvalidHandshake, InvalidMessage
from ..extensions.base import ServerExtensionFactory
from ..frames import CloseCode
from ..handshake import Accepted, reject
from ..http11 import Headers, Request, Response
from ..logs import ConnectionLog, format_peer, new_id
from ..websocket import WebSocket
from ._paths import environ_params

__all__ = [
    "REQUEST_TIMEOUT",
    "HeadReader",
    "PathDispatcher",
    "ServerHook",
    "Takeover",
    "WebSocketWSGIApplication",
    "buffered_bytes",
    "find_server",
    "register_server",
    "request_from_environ",
    "shutdown_all",
]

logger = logging.getLogger("ws4web.adapters.wsgi")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# PEP 3333 forbids applications to set hop-by-hop headers (RFC 9110 §7.6.1);
# wsgiref even asserts on them. Servers that tolerate them say so at registration.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade"}
)  # fmt: skip

# Words whose usual spelling Header-Case would get wrong.
_SPELLING = {"websocket": "WebSocket", "www": "WWW", "md5": "MD5", "te": "TE", "dnt": "DNT"}


# -- the request -------------------------------------------------------------------


def _header_name(cgi_name: str) -> str:
    """``SEC_WEBSOCKET_KEY`` -> ``Sec-WebSocket-Key``."""
    return "-".join(_SPELLING.get(word.lower(), word.capitalize()) for word in cgi_name.split("_"))


def request_from_environ(environ: Mapping[str, Any]) -> Request:
    """Rebuild the HTTP request a WSGI server parsed, for the handshake rules.

    The path is the full request target: SCRIPT_NAME + PATH_INFO, re-quoted
    (servers hand them over percent-decoded as latin-1), plus the query string,
    so a handler mounted under a prefix still sees what the client asked for.
    """
    script = environ.get("SCRIPT_NAME", "") or ""
    path_info = environ.get("PATH_INFO", "") or ""
    path = urllib.parse.quote((script + path_info).encode("latin-1"), safe="/:@!$&'()*+,;=~")
    if not path:
        path = "/"
    query = environ.get("QUERY_STRING", "")
    if query:
        path += "?" + query
    headers = Headers()
    for key, value in environ.items():
        if key.startswith("HTTP_") and len(key) > 5 and isinstance(value, str):
            headers.add(_header_name(key[5:]), value)
    # CGI keeps these two apart from HTTP_* (RFC 3875 §4.1.2, §4.1.3).
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        value = environ.get(key)
        if isinstance(value, str) and value:
            headers.add(name, value)
    method = str(environ.get("REQUEST_METHOD", "GET"))
    version = str(environ.get("SERVER_PROTOCOL", "HTTP/1.0"))
    return Request(method, path, headers, version)


# -- the server side: taking the socket over ----------------------------------------


class Takeover:
    """A connection handed over by a WSGI server after a successful upgrade.

    ``sock`` is the socket to run the WebSocket over, ``data`` the bytes the
    server had already read past the request headers (the client's first
    frames, maybe), ``write`` sends raw bytes (the 101), ``detach()`` tells the
    server it must neither answer, reuse nor close the connection, and
    ``primitives`` are the concurrency primitives fitting the server's model.
    With ``loop``, the server lets the connection go entirely: it runs on that
    selector loop and the server's thread is free at once (wsgiref); without,
    it runs in the server's thread or greenlet until it ends (gevent, Werkzeug,
    gunicorn, cheroot), and ``close()`` releases the socket and the server's
    reader then.
    """

    __slots__ = ("_detach", "data", "loop", "primitives", "reader", "sock", "write")

    def __init__(
        self,
        sock: Any,
        data: bytes,
        write: Callable[[bytes], None],
        detach: Callable[[], None],
        primitives: Primitives,
        reader: Any = None,
        loop: Loop | None = None,
    ) -> None:
        self.sock = sock
        self.data = data
        self.write = write
        self._detach = detach
        self.primitives = primitives
        self.reader = reader
        self.loop = loop

    def detach(self) -> None:
        self._detach()

    def close(self) -> None:
        """Release the server's reader, and the socket unless a loop runs it now."""
        # A socket with an open makefile() reader only really closes with the
        # reader, so close both (the WebSocket usually closed the socket already).
        for closable in (self.reader, None if self.loop is not None else self.sock):
            if closable is None:
                continue
            try:
                closable.close()
            except (OSError, ValueError):
                pass


class ServerHook:
    """How to take a connection over from one kind of WSGI server."""

    __slots__ = ("environ_key", "hop_by_hop", "takeover")

    def __init__(self, environ_key: str, takeover: Callable[[Mapping[str, Any]], Takeover], hop_by_hop: bool) -> None:
        self.environ_key = environ_key
        self.takeover = takeover
        #: whether the server lets an application send hop-by-hop headers
        self.hop_by_hop = hop_by_hop


_HOOKS: list[ServerHook] = []


def register_server(
    environ_key: str, takeover: Callable[[Mapping[str, Any]], Takeover], *, hop_by_hop: bool = False
) -> None:
    """Teach :class:`WebSocketWSGIApplication` a server.

    The server's request handler puts ``environ_key`` in every environ; when it
    is there, ``takeover(environ)`` is called for each accepted upgrade.
    """
    for hook in _HOOKS:
        if hook.environ_key == environ_key:
            _HOOKS.remove(hook)
            break
    _HOOKS.append(ServerHook(environ_key, takeover, hop_by_hop))


def find_server(environ: Mapping[str, Any]) -> ServerHook | None:
    for hook in _HOOKS:
        if hook.environ_key in environ:
            return hook
    return None


def buffered_bytes(reader: Any, sock: Any) -> bytes:
    """The bytes ``reader`` (a buffered ``sock.makefile('rb')``) holds but nobody read.

    A server reads the request headers through a buffered reader, which pulls
    whole chunks from the socket: a client that sends its first frame right
    behind the request (legal, RFC 6455 §4.1) has those bytes sitting in the
    reader's buffer, not in the socket. ``peek()`` returns the buffer without
    consuming it; with the socket non-blocking, an empty buffer costs at most
    one read that cannot wait.
    """
    peek = getattr(reader, "peek", None)
    if peek is None:
        return b""
    try:
        sock.settimeout(0.0)
    except (OSError, ValueError):
        return b""
    try:
        return bytes(peek())
    except (OSError, ValueError):  # nothing buffered and the read refused (TLS wants more)
        return b""
    finally:
        try:
            sock.settimeout(None)  # the WebSocket does its own timeouts
        except (OSError, ValueError):
            pass


# -- request heads: one deadline for the whole head -----------------------------------


#: What a server answers a request head that did not arrive within the handshake timeout.
REQUEST_TIMEOUT = reject(InvalidMessage("request head not complete in time", status=408)).serialize()


class HeadReader(io.RawIOBase):
    """A socket as a raw stream whose reads share one deadline while a request head
    arrives, for servers built on :mod:`http.server` (wsgiref, Werkzeug), which bound
    each read, if at all, but not the head: a client dripping a byte a second would
    hold the connection's thread for ever.

    Set :attr:`deadline` (a ``time.monotonic()`` value) before the head, clear it
    after; past it a read raises TimeoutError and ``expired`` is set. Each read
    also waits at most ``timeout`` seconds (None: no per-read bound).
    """

    def __init__(self, sock: Any, timeout: float | None) -> None:
        self.sock = sock
        self.timeout = timeout
        self.deadline: float | None = None
        self.expired = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        deadline = self.deadline
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.expired = True
                raise TimeoutError("request head timed out")
            self.sock.settimeout(left if self.timeout is None else min(left, self.timeout))
        try:
            received: int = self.sock.recv_into(buffer)
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                self.expired = True
            raise
        return received

    @classmethod
    def install(cls, handler: Any) -> HeadReader:
        """Put a HeadReader under ``handler.rfile`` (a StreamRequestHandler after setup())."""
        head = cls(handler.connection, handler.timeout)
        handler.rfile.close()  # the plain makefile() reader it replaces
        handler.rfile = io.BufferedReader(head)
        return head


# -- the application ------------------------------------------------------------------


class WebSocketWSGIApplication:
    """A WSGI application that upgrades every request to ``handler_cls``.

    ``protocols`` are the subprotocols the server speaks, ``extensions`` the
    extension factories; ``options`` are the door options every door takes
    (the accept policy, the limits, and keywords for ``handler_cls``), checked
    here. The primitives are the server's (gevent's under gevent).

    It runs the WebSocket on the server's selector loop where the server lets
    its connections go (wsgiref), else in the server's own thread or greenlet
    for that connection, returning when the connection is over. It needs a server
    registered with :func:`~ws4web.adapters._wsgi.register_server` (use the request handler classes of
    :mod:`ws4web.adapters.gevent` or :mod:`ws4web.adapters.wsgiref`); elsewhere
    it answers 501 (as the middleware does). Refusals are ordinary WSGI responses.
    """

    def __init__(
        self,
        handler_cls: type[WebSocket] = WebSocket,
        protocols: Sequence[str] = (),
        extensions: Sequence[ServerExtensionFactory] = (),
        **options: Any,
    ) -> None:
        if protocols:
            options["protocols"] = protocols
        if extensions:
            options["extensions"] = extensions
        self.policy = AcceptPolicy.from_options(handler_cls, options)
        self.handler_cls = handler_cls
        #: the open connections' handlers (broadcast, shutdown)
        self.registry = Registry()
        _APPS.add(self)

    @property
    def websockets(self) -> set[WebSocket]:
        """A snapshot of the open WebSockets."""
        return set(self.registry)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        hook = find_server(environ)
        hop_by_hop = hook is not None and hook.hop_by_hop
        request = request_from_environ(environ)
        log = _peer_log(environ)
        takeover: Takeover | None = None
        try:
            accepted = self.policy.evaluate(request)
            if hook is None:
                server = environ.get("SERVER_SOFTWARE", "this WSGI server")
                raise InvalidHandshake(f"{server} cannot hand its socket over to a WebSocket", status=501)
            takeover = hook.takeover(environ)
            try:
                handler = self.policy.make_handler(takeover.sock, accepted, environ)
                handler.view_args = environ_params(environ)
            except Exception as exc:
                log.exception("could not build %s", self.handler_cls.__name__)
                raise unexpected_error(exc) from exc
        except InvalidHandshake as exc:
            log_refusal(log, request.path, exc)
            return _respond(AcceptPolicy.refusal(exc), start_response, hop_by_hop=hop_by_hop)
        try:
            self._serve(takeover, accepted, handler, request, log)
        finally:
            takeover.close()
        # Nothing for the server to send: the connection was never its own after the 101.
        return []

    def _serve(
        self, takeover: Takeover, accepted: Accepted, handler: WebSocket, request: Request, log: ConnectionLog
    ) -> None:
        # Detach first: whatever happens next, the server must not write to this socket.
        takeover.detach()
        try:
            takeover.write(accepted.response.serialize())
        except OSError as exc:
            log.info("client left before the 101 went out: %s", exc)
            return
        protocol = self.policy.new_protocol(accepted, takeover.data)
        registry = self.registry
        if takeover.loop is not None:
            # The server let the connection go: it runs on the loop, and the
            # server's thread returns now (no thread per WebSocket).
            on_loop = SelectorDriver(takeover.sock, protocol, log, takeover.loop, limits=self.policy.limits)
            handler.bind(on_loop, request)
            log.debug("opened %s", request.path)
            on_loop.on_ended = lambda: registry.discard(handler)
            if not registry.add(handler):  # started while shutting down: say goodbye at once
                handler.close(CloseCode.GOING_AWAY, "server shutting down")
            on_loop.start()
            return
        driver = BlockingDriver(
            takeover.sock, protocol, log, limits=self.policy.limits, primitives=takeover.primitives
        )
        handler.bind(driver, request)
        log.debug("opened %s", request.path)
        if not registry.add(handler):  # started while shutting down: say goodbye at once
            handler.close(CloseCode.GOING_AWAY, "server shutting down")
        try:
            handler.run()
        except Exception:  # run() already guards the callbacks; this is the I/O itself
            log.exception("WebSocket %s failed", self.handler_cls.__name__)
        finally:
            registry.discard(handler)

    def broadcast(self, payload: Any, binary: bool | None = None) -> int:
        """Send one message to every open WebSocket; returns how many took it."""
        return self.registry.broadcast(payload, binary)

    def shutdown(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
    ) -> None:
        """Close every open WebSocket with ``code``; drop the ones not closed within ``timeout``.

        Call it before stopping the server, from a thread (wsgiref) or a greenlet
        of the server's hub (gevent). Connections upgraded afterwards are closed
        with ``code`` straight away.
        """
        self.registry.shutdown(code, reason, timeout)


# Every application alive in this process, for shutdown_all() (a server's serve() on a signal).
_APPS: weakref.WeakSet[WebSocketWSGIApplication] = weakref.WeakSet()


def shutdown_all(
    code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
) -> None:
    """Close every WebSocket of every WebSocketWSGIApplication in this process with
    ``code`` (1001 by default); what is not closed within ``timeout`` is dropped."""
    for app in list(_APPS):
        app.shutdown(code, reason, timeout)


def _respond(response: Response, start_response: StartResponse, *, hop_by_hop: bool) -> list[bytes]:
    headers = [(k, v) for k, v in response.headers if hop_by_hop or k.lower() not in _HOP_BY_HOP]
    if not any(k.lower() == "content-length" for k, _ in headers):
        headers.append(("Content-Length", str(len(response.body))))  # a process_request answer may lack it
    start_response(f"{response.status} {response.reason}", headers)
    return [response.body]


class PathDispatcher:
    """Route requests by path prefix to WSGI apps, like a tiny URL map.

    ``PathDispatcher({"/ws": ws_app}, default=site)`` sends ``/ws`` and
    ``/ws/...`` to ``ws_app`` (the prefix moves to SCRIPT_NAME, as PEP 3333
    mounting does) and the rest to ``default`` (404 if there is none).
    """

    def __init__(self, mounts: Mapping[str, WSGIApp], default: WSGIApp | None = None) -> None:
        # Longest prefix first, so /ws/admin wins over /ws.
        self.mounts = sorted(((p.rstrip("/"), app) for p, app in mounts.items()), key=lambda m: -len(m[0]))
        self.default = default

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        for prefix, app in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                environ = dict(environ)
                environ["SCRIPT_NAME"] = (environ.get("SCRIPT_NAME", "") or "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :]
                return app(environ, start_response)
        if self.default is not None:
            return self.default(environ, start_response)
        body = b"404 Not Found\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


def _peer_log(environ: dict[str, Any]) -> ConnectionLog:
    """A log tagged with a fresh id and the client's address, for records before a WebSocket exists."""
    host, port = environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")
    # REMOTE_PORT is not in PEP 3333 (most servers set it): without it, the host alone.
    peer = format_peer((host, port)) if port not in (None, "") else format_peer(host)
    return ConnectionLog(logger, new_id(), peer)
