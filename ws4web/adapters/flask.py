"""Flask integration: WebSocket routes in Flask's URL map, with Flask's request context in every callback.

::

    from flask import Flask, session
    from flask_login import login_required
    from ws4web import WebSocket
    from ws4web.adapters.flask import WebSockets

    app = Flask(__name__)
    ws = WebSockets(app, max_message_size=2**16)

    @ws.route("/chat/<room>", decorators=[login_required])
    class Chat(WebSocket):
        def opened(self):
            self.send(f"{session['user']} joined {self.view_args['room']}")

A route is an ordinary Flask view (``GET``), so the request goes through
Flask first: ``before_request`` functions, the route's ``decorators``
(``login_required``...) and URL converters run, and any of them may answer
(401, 403, a redirect) before a 101 is sent. When the view is reached, the
upgrade goes through ws4web's accept policy and the server's socket takeover,
exactly as with :class:`~ws4web.adapters.middleware.WebSocketMiddleware`
(Werkzeug, gunicorn, cheroot, and gevent / wsgiref with ws4web's handlers).

Every callback (``opened``, ``received_message``, ``ponged``, ``closed``) runs
inside the upgrade request's context, whichever thread runs it: ``request``,
``session``, ``g``, ``current_app`` and ``flask_login.current_user`` work as in
the view. The context is pushed around each callback, not once per connection:
``teardown_request`` and ``teardown_appcontext`` functions run after each
callback, ``g`` lives as long as the connection (it starts as the handshake
request's ``g``), and changes to ``session`` are not saved (no response carries
them). The path parameters are ``self.view_args`` (and ``request.view_args``).
docs/flask.md is the manual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import flask
import flask.globals

from ..drivers import Driver
from ..http11 import Request
from ..messages import Message
from ..websocket import WebSocket
from ._wsgi import WebSocketWSGIApplication
from .middleware import ServerSupport, serve_upgrade

__all__ = ["WebSockets"]

W = TypeVar("W", bound=type[WebSocket])
T = TypeVar("T")

StartResponse = Callable[..., Any]
ViewDecorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class _RequestScope:
    """The upgrade request's context, pushed around one callback at a time, on any thread.

    Built in the view (where Flask's own context is active): a copy of the
    request context (same request, same session) and an application context of
    the connection's own that shares the handshake's ``g``.
    """

    __slots__ = ("_app_context", "_run")

    def __init__(self) -> None:
        self._app_context = flask.current_app.app_context()
        self._app_context.g = flask.globals.app_ctx.g
        self._run: Callable[[Callable[[], Any]], Any] = flask.copy_current_request_context(_call)

    def run(self, callback: Callable[[], T]) -> T:
        with self._app_context:
            result: T = self._run(callback)
            return result


def _call(callback: Callable[[], T]) -> T:
    return callback()


class _InRequestContext(WebSocket):
    """Put before a handler class: its hooks run in the upgrade request's context."""

    _flask_scope: _RequestScope

    def bind(self, driver: Driver, request: Request | None = None) -> None:
        # The door binds in the view's thread, where Flask's context is active.
        self._flask_scope = _RequestScope()
        # WebSocket.view_args, as Flask's URL map converted them (``<int:n>`` gives an int).
        self.view_args = dict(flask.request.view_args or {})
        super().bind(driver, request)

    def handle_open(self) -> bool:
        return self._flask_scope.run(super().handle_open)

    def handle_message(self, message: Message) -> bool:
        return self._flask_scope.run(lambda: super(_InRequestContext, self).handle_message(message))

    def handle_pong(self, payload: bytes) -> bool:
        return self._flask_scope.run(lambda: super(_InRequestContext, self).handle_pong(payload))

    def handle_close(self) -> None:
        self._flask_scope.run(super().handle_close)


_MIXED: dict[type[WebSocket], type[WebSocket]] = {}
_MIXED_LOCK = threading.Lock()


def _in_request_context(handler_cls: type[WebSocket]) -> type[WebSocket]:
    """``handler_cls`` with its hooks in the request context (a subclass, made once per class)."""
    if issubclass(handler_cls, _InRequestContext):
        return handler_cls
    with _MIXED_LOCK:
        mixed = _MIXED.get(handler_cls)
        if mixed is None:
            namespace = {"__module__": handler_cls.__module__, "__qualname__": handler_cls.__qualname__}
            mixed = type(handler_cls.__name__, (_InRequestContext, handler_cls), namespace)
            _MIXED[handler_cls] = mixed
        return mixed


_UPGRADED: dict[type[flask.Response], type[flask.Response]] = {}


def _upgraded_response(support: ServerSupport) -> flask.Response:
    """What the view returns once the WebSocket ran: a response whose WSGI call ends
    the request the way the server expects (Werkzeug and gunicorn: an exception they
    take as "the connection is gone"). It is of the app's own response class, so that
    Flask neither converts nor replaces it."""
    base: type[flask.Response] = flask.current_app.response_class
    cls = _UPGRADED.get(base)
    if cls is None:

        def call(self: flask.Response, environ: Any, start_response: StartResponse) -> Iterable[bytes]:
            finish: Callable[[], Iterable[bytes]] = self.ws4web_finish  # type: ignore[attr-defined]
            return finish()

        cls = type(f"WebSocketUpgraded{base.__name__}", (base,), {"__call__": call})
        _UPGRADED[base] = cls
    response = cls()
    response.ws4web_finish = support.finish  # type: ignore[attr-defined]
    return response


class WebSockets:
    """WebSocket routes on a Flask application or blueprint.

    ``WebSockets(app)`` or ``WebSockets(blueprint)``; or ``WebSockets()`` then
    :meth:`init_app` (application factories). ``options`` are the door options
    every route takes (``max_message_size``, ``origins``, ``subprotocols``,
    ``authenticate``, ``ping_interval`` ... and keywords for the handler class);
    a route's own options override them.
    """

    def __init__(self, app: flask.Flask | flask.Blueprint | None = None, **options: Any) -> None:
        self.options = options
        self._targets: list[flask.Flask | flask.Blueprint] = []
        self._routes: list[tuple[str, str, Callable[..., Any]]] = []
        self._apps: list[WebSocketWSGIApplication] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask | flask.Blueprint) -> None:
        """Add the routes (those declared so far and those to come) to ``app``."""
        self._targets.append(app)
        for rule, endpoint, view in self._routes:
            app.add_url_rule(rule, endpoint, view, methods=["GET"], websocket=True)

    def route(
        self, rule: str, *, endpoint: str | None = None, decorators: Sequence[ViewDecorator] = (), **options: Any
    ) -> Callable[[W], W]:
        """Serve the decorated :class:`~ws4web.websocket.WebSocket` subclass at ``rule``
        (Flask's syntax: ``/chat/<room>``, ``/item/<int:id>``).

        ``decorators`` wrap the route's view as with ``MethodView.decorators``
        (first in the list innermost): ``login_required`` and the like run before
        the upgrade. ``endpoint`` defaults to the class name. The class itself is
        returned unchanged.
        """

        def register(handler_cls: W) -> W:
            if not (isinstance(handler_cls, type) and issubclass(handler_cls, WebSocket)):
                raise TypeError(f"@route() decorates a subclass of ws4web.WebSocket, not {handler_cls!r}")
            ws_app = WebSocketWSGIApplication(_in_request_context(handler_cls), **{**self.options, **options})
            view = _view(ws_app)
            view.__name__ = endpoint or handler_cls.__name__
            for decorator in decorators:
                view = decorator(view)
            name = endpoint or handler_cls.__name__
            self._apps.append(ws_app)
            self._routes.append((rule, name, view))
            for target in self._targets:
                target.add_url_rule(rule, name, view, methods=["GET"], websocket=True)
            return handler_cls

        return register

    @property
    def websockets(self) -> set[WebSocket]:
        """A snapshot of the open WebSockets, on every route."""
        result: set[WebSocket] = set()
        for ws_app in self._apps:
            result |= ws_app.websockets
        return result

    def broadcast(self, payload: Any, binary: bool | None = None) -> int:
        """Send one message to every open WebSocket of every route; returns how many took it."""
        return sum(ws_app.broadcast(payload, binary) for ws_app in self._apps)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close every open WebSocket with 1001 (Going Away), waiting up to ``timeout`` per route."""
        for ws_app in self._apps:
            ws_app.shutdown(timeout=timeout)


def _view(ws_app: WebSocketWSGIApplication) -> Callable[..., flask.Response]:
    def view(**view_args: Any) -> flask.Response:
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, headers]
            return lambda data: None  # refusals come back as the returned body, never written

        outcome = serve_upgrade(ws_app, flask.request.environ, start_response)
        if isinstance(outcome, ServerSupport):
            return _upgraded_response(outcome)
        try:
            body = b"".join(outcome)
        finally:
            close = getattr(outcome, "close", None)
            if close is not None:
                close()
        status, headers = answer
        return flask.current_app.response_class(body, status=status, headers=headers)

    return view
