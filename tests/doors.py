"""Every server door, running with its real framework on 127.0.0.1:0, for the cross-door tests.

A door serves named endpoints (:class:`Endpoint`: a handler class and its options) and stops
cleanly; :func:`running` starts one and checks that it left no thread behind. The doors: the
standard-library ``WebSocketServer``, ``accept_socket`` on sockets a plain listener accepted,
CherryPy (``install()`` and ``cherrypy.engine``), gevent's pywsgi (its own hub in a thread,
never monkey-patched), wsgiref, ``WebSocketMiddleware`` on Werkzeug's threaded server, and the
ASGI app on uvicorn. Used by tests/test_bad_input.py and tests/test_handler_apis.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, NamedTuple

import pytest

from ws4web import WebSocket, WebSocketServer, accept_socket
from ws4web.accept import Registry
from ws4web.exceptions import InvalidHandshake

from .conftest import TIMEOUT, idle_spare, wait_until

MiB = 2**20


class Endpoint(NamedTuple):
    """What a door serves at ``/<name>``: a handler class and the options it is mounted with."""

    handler_cls: type[WebSocket]
    options: Mapping[str, Any] = {}


class Door:
    """One door running: its endpoints' ports and paths, its open WebSockets, how to stop it.

    ``head_timeout`` and ``close_timeout`` are given to every endpoint (and, for the head, to the
    framework where it reads the request head); None leaves the door's defaults.
    """

    name: ClassVar[str]
    #: whether options reach the door per request (CherryPy config) rather than when it is built
    options_per_request: ClassVar[bool] = False

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        *,
        head_timeout: float | None = None,
        close_timeout: float | None = None,
    ) -> None:
        self.endpoints = dict(endpoints)
        self.head_timeout = head_timeout
        self.common: dict[str, Any] = {}
        if close_timeout is not None:
            self.common["close_timeout"] = close_timeout

    def options(self, endpoint: str, *, head: bool = True) -> dict[str, Any]:
        """The options ``endpoint`` is mounted with: the door's common ones, then its own."""
        options = dict(self.common)
        if head and self.head_timeout is not None:
            options["handshake_timeout"] = self.head_timeout
        options.update(self.endpoints[endpoint].options)
        return options

    def port(self, endpoint: str) -> int:
        raise NotImplementedError

    def path(self, endpoint: str) -> str:
        return f"/{endpoint}"

    def url(self, endpoint: str, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port(endpoint)}{self.path(endpoint)}{query}"

    def websockets(self) -> set[WebSocket]:
        raise NotImplementedError

    def build(self, handler_cls: type[WebSocket], **options: Any) -> None:
        """Build (and drop) this door's server object with ``options``: what raises for a bad one."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class StdlibDoor(Door):
    name = "stdlib"

    def __init__(self, endpoints: Mapping[str, Endpoint], **knobs: Any) -> None:
        super().__init__(endpoints, **knobs)
        self.servers = {
            endpoint: WebSocketServer(spec.handler_cls, "127.0.0.1", 0, **self.options(endpoint)).start()
            for endpoint, spec in self.endpoints.items()
        }

    def port(self, endpoint: str) -> int:
        return self.servers[endpoint].port

    def websockets(self) -> set[WebSocket]:
        return set().union(*(server.websockets for server in self.servers.values()))

    def build(self, handler_cls: type[WebSocket], **options: Any) -> None:
        WebSocketServer(handler_cls, "127.0.0.1", 0, **options).shutdown()

    def stop(self) -> None:
        for server in self.servers.values():
            server.shutdown(timeout=2.0)


class AcceptingListener:
    """A plain listening socket; every connection gets a thread that calls ``accept_socket``."""

    def __init__(self, handler_cls: type[WebSocket], options: dict[str, Any]) -> None:
        self.handler_cls = handler_cls
        self.options = options
        self.registry = Registry()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.acceptor = threading.Thread(target=self._accept, name="accept-socket-listener", daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), name="accept-socket-connection", daemon=True)
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(None)
            try:
                handler = accept_socket(sock, self.handler_cls, **self.options)
            except InvalidHandshake:
                return  # answered (and logged) by accept_socket
            if not self.registry.add(handler):
                handler.close(1001, "server shutting down")
            try:
                handler.run()
            finally:
                self.registry.discard(handler)

    def stop(self) -> None:
        self.stopping.set()
        self.acceptor.join(TIMEOUT)
        self.listener.close()
        self.registry.shutdown(timeout=2.0)
        for thread in self.threads:
            thread.join(TIMEOUT)


class AcceptSocketDoor(Door):
    name = "accept_socket"

    def __init__(self, endpoints: Mapping[str, Endpoint], **knobs: Any) -> None:
        super().__init__(endpoints, **knobs)
        self.listeners = {
            endpoint: AcceptingListener(spec.handler_cls, self.options(endpoint))
            for endpoint, spec in self.endpoints.items()
        }

    def port(self, endpoint: str) -> int:
        return int(self.listeners[endpoint].port)

    def websockets(self) -> set[WebSocket]:
        return set().union(*(set(listener.registry) for listener in self.listeners.values()))

    def build(self, handler_cls: type[WebSocket], **options: Any) -> None:
        a, b = socket.socketpair()
        with a, b:
            b.close()  # if the options passed, accept_socket reads EOF and refuses
            try:
                accept_socket(a, handler_cls, handshake_timeout=1.0, **options)
            except InvalidHandshake as exc:
                raise AssertionError(f"accept_socket read the socket before checking its options: {exc}") from exc

    def stop(self) -> None:
        for listener in self.listeners.values():
            listener.stop()


class CherryPyDoor(Door):
    name = "cherrypy"
    options_per_request = True

    def __init__(self, endpoints: Mapping[str, Endpoint], **knobs: Any) -> None:
        super().__init__(endpoints, **knobs)
        import cherrypy

        from ws4web.adapters import cherrypy as adapter

        self.cherrypy = cherrypy
        self.adapter = adapter

        class Root:
            @cherrypy.expose  # type: ignore[untyped-decorator]
            def default(self, *args: str, **kwargs: str) -> str:
                return ""

        config: dict[str, dict[str, Any]] = {
            self.path(endpoint): {
                "tools.websocket.on": True,
                "tools.websocket.handler_cls": spec.handler_cls,
                # The head deadline is the plugin's (below), not a tool option.
                **{f"tools.websocket.{k}": v for k, v in self.options(endpoint, head=False).items()},
            }
            for endpoint, spec in self.endpoints.items()
        }
        cherrypy.config.update(
            {
                "server.socket_host": "127.0.0.1",
                "server.socket_port": 0,
                "server.thread_pool": 8,
                "engine.autoreload.on": False,
                "checker.on": False,
                "log.screen": False,
            }
        )
        cherrypy.tree.mount(Root(), "/", config)
        self.plugin = adapter.install(shutdown_timeout=2.0)
        # A fresh server object asks for a fresh port (see tests/adapters/test_cherrypy.py).
        cherrypy.server.httpserver = cherrypy.server.httpserver_from_self()[0]
        if self.head_timeout is not None:
            self.plugin.handshake_timeout = self.head_timeout
            cherrypy.server.httpserver.expiration_interval = 0.05
        cherrypy.engine.start()
        self._port = int(cherrypy.server.bound_addr[1])

    def port(self, endpoint: str) -> int:
        return self._port

    def websockets(self) -> set[WebSocket]:
        return set(self.plugin.websockets)

    def build(self, handler_cls: type[WebSocket], **options: Any) -> None:  # pragma: no cover - per request
        raise AssertionError("CherryPy's options arrive per request")

    def stop(self) -> None:
        cherrypy = self.cherrypy
        cherrypy.engine.stop()
        self.adapter.uninstall()
        cherrypy.tree.apps.clear()
        cherrypy.engine.exit()
        cherrypy.config.reset()


class _WSGIDoor(Door):
    """What the gevent and wsgiref doors share: one WebSocketWSGIApplication per endpoint,
    under a PathDispatcher (the head deadline is the request handler's)."""

    def _apps(self, application: Callable[..., Any]) -> dict[str, Any]:
        self.apps = {
            endpoint: application(spec.handler_cls, **self.options(endpoint, head=False))
            for endpoint, spec in self.endpoints.items()
        }
        return {self.path(endpoint): app for endpoint, app in self.apps.items()}

    def websockets(self) -> set[WebSocket]:
        return set().union(*(app.websockets for app in self.apps.values()))


class WsgirefDoor(_WSGIDoor):
    name = "wsgiref"

    def __init__(self, endpoints: Mapping[str, Endpoint], **knobs: Any) -> None:
        super().__init__(endpoints, **knobs)
        from ws4web.adapters import wsgiref

        handler_class = wsgiref.WebSocketWSGIRequestHandler
        if self.head_timeout is not None:

            class Handler(wsgiref.WebSocketWSGIRequestHandler):
                handshake_timeout = self.head_timeout

            handler_class = Handler
        self.module = wsgiref
        site = wsgiref.PathDispatcher(self._apps(wsgiref.WebSocketWSGIApplication))
        self.server = wsgiref.make_server("127.0.0.1", 0, site, handler_class=handler_class)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="wsgiref-door", daemon=True
        )
        self.thread.start()

    def port(self, endpoint: str) -> int:
        return int(self.server.server_port)

    def build(self, handler_cls: type[WebSocket], **options: Any) -> None:
        self.module.WebSocketWSGIApplication(handler_cls, **options)

    def stop(self) -> None:
        for app in self.apps.values():
            app.shutdown(timeout=2.0)
        self.server.shutdown()
        self.thread.join(TIMEOUT)
        self.server.server_close()


class GeventDoor(_WSGIDoor):
    name = "gevent"

    def __init__(self, endpoints: Mapping[str, Endpoint], **knobs: Any) -> None:
        super().__init__(endpoints, **knobs)
        import gevent
        import gevent.event

        from ws4web.adapters import gevent as adapter

        handler_class = adapter.WebSocketWSGIHandler
        if self.head_timeout is not None:

            class Handler(adapter.WebSocketWSGIHandler):  # type: ignore[misc]
                handshake_timeout = self.head_timeout

            handler_class = Handler
        self.gevent = gevent
        self.module = adapter
        self.site = adapter.PathDispatcher(self._apps(adapter.WebSocketWSGIApplication))
        self.handler_class = handler_class
        self._port = 0
        self._ready = threading.Event()
        self._loop: Any = None
        self._stop: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gevent-door", daemon=True)
        self.thread.start()
        if not self._ready.wait(TIMEOUT) or self.error is not None:
            raise RuntimeError(f"the gevent server did not start: {self.error!r}")

    def _run(self) -> None:
        import gc

        gevent = self.gevent
        hub = gevent.get_hub()
        try:
            server = self.module.make_server("127.0.0.1", 0, self.site, handler_class=self.handler_class, log=None)
            server.start()
            self._port = server.server_port
            self._loop = hub.loop
            self._stop = gevent.event.Event()
            self._ready.set()
            self._stop.wait()
            for app in self.apps.values():
                app.shutdown(timeout=2.0)
            server.stop(timeout=TIMEOUT)
            gc.collect()  # finalize gevent sockets while their hub still exists
        except BaseException as exc:
            self.error = exc
            self._ready.set()
        finally:
            hub.destroy(destroy_loop=True)

    def port(self, endpoint: str) -> int:
        return self._port

    def build(self, handler_cls: type[WebSocket], **options: Any) -> None:
        self.module.WebSocketWSGIApplication(handler_cls, **options)

    def stop(self) -> None:
        if self._stop is not None and self.thread.is_alive():
            self._loop.run_callback_threadsafe(self._stop.set)
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the gevent server thread did not stop"
        if self.error is not None:
            raise self.error


def plain_site(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The WSGI application the middleware wraps: a plain page for every request it passes on."""
    body = b"plain page\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class WerkzeugDoor(Door):
    name = "werkzeug"

    def __init__(self, endpoints: Mapping[str, Endpoint], **knobs: Any) -> None:
        super().__init__(endpoints, **knobs)
        import werkzeug.serving

        from ws4web.adapters._wsgi import WebSocketWSGIApplication
        from ws4web.adapters.middleware import WebSocketMiddleware, werkzeug_request_handler

        self.middleware_class = WebSocketMiddleware
        # A handler class mounted as is takes the middleware's options; one with options of
        # its own is mounted as the application built with them.
        mounts: dict[str, Any] = {
            self.path(endpoint): (
                WebSocketWSGIApplication(spec.handler_cls, **self.options(endpoint, head=False))
                if spec.options
                else spec.handler_cls
            )
            for endpoint, spec in self.endpoints.items()
        }
        self.middleware = WebSocketMiddleware(plain_site, mounts, **self.common)
        extra: dict[str, Any] = {}
        if self.head_timeout is not None:
            extra["request_handler"] = werkzeug_request_handler(self.head_timeout)
        self.server = werkzeug.serving.make_server("127.0.0.1", 0, self.middleware, threaded=True, **extra)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="werkzeug-door", daemon=True
        )
        self.thread.start()

    def port(self, endpoint: str) -> int:
        return int(self.server.server_port)

    def websockets(self) -> set[WebSocket]:
        return self.middleware.websockets

    def build(self, handler_cls: type[WebSocket], **options: Any) -> None:
        self.middleware_class(plain_site, {"/ws": handler_cls}, **options)

    def stop(self) -> None:
        self.middleware.shutdown(timeout=2.0)
        self.server.shutdown()
        self.thread.join(TIMEOUT)
        self.server.server_close()


class UvicornDoor(Door):
    name = "uvicorn"

    def __init__(self, endpoints: Mapping[str, Endpoint], **knobs: Any) -> None:
        super().__init__(endpoints, **knobs)
        import uvicorn

        from ws4web.adapters.asgi import WebSocketASGIApp

        self.app_class = WebSocketASGIApp
        # The server reads the request head (handshake_timeout is refused under ASGI).
        self.apps = {
            self.path(endpoint): WebSocketASGIApp(spec.handler_cls, **self.options(endpoint, head=False))
            for endpoint, spec in self.endpoints.items()
        }
        first = next(iter(self.apps.values()))

        async def router(scope: Any, receive: Any, send: Any) -> None:
            await self.apps.get(scope.get("path", ""), first)(scope, receive, send)

        self.listener = socket.create_server(("127.0.0.1", 0))
        # uvicorn's own bound on a message (ws_max_size) set to ws4web's default
        # max_message_size, as uvicorn_server() does. h11 and asyncio, as a plain
        # `pip install uvicorn` has them (httptools, when installed, answers some
        # hostile requests otherwise).
        config = uvicorn.Config(
            router, log_level="warning", lifespan="off", ws_max_size=MiB, http="h11", loop="asyncio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, name="uvicorn-door", daemon=True
        )
        self.thread.start()
        assert wait_until(lambda: self.server.started or not self.thread.is_alive()), "uvicorn did not start"
        assert self.server.started, "uvicorn did not start"

    def port(self, endpoint: str) -> int:
        return int(self.listener.getsockname()[1])

    def websockets(self) -> set[WebSocket]:
        return set().union(*(app.websockets for app in self.apps.values()))

    def build(self, handler_cls: type[WebSocket], **options: Any) -> None:
        self.app_class(handler_cls, **options)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT * 2)
        self.listener.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"


DOORS: dict[str, type[Door]] = {
    door.name: door
    for door in (StdlibDoor, AcceptSocketDoor, CherryPyDoor, GeventDoor, WsgirefDoor, WerkzeugDoor, UvicornDoor)
}
#: The framework each door needs, where it needs one: without it, its tests are skipped.
FRAMEWORK = {"cherrypy": "cherrypy", "gevent": "gevent", "werkzeug": "werkzeug", "uvicorn": "uvicorn"}


@contextmanager
def running(name: str, endpoints: Mapping[str, Endpoint], **knobs: Any) -> Iterator[Door]:
    """The door ``name`` serving ``endpoints`` until the block ends; then no thread it started
    may still run (the ASGI driver's idle spare threads excepted: they end by themselves)."""
    if name in FRAMEWORK:
        pytest.importorskip(FRAMEWORK[name])
    before = set(threading.enumerate())
    door = DOORS[name](endpoints, **knobs)
    try:
        yield door
    finally:
        door.stop()
    deadline = time.monotonic() + 5.0
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive() and not idle_spare(t)]
    assert not left, f"threads still running after the {name} door stopped: {left}"
