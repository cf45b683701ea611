"""The ASGI door: ws4web handlers, unchanged, under uvicorn, hypercorn, Starlette or any ASGI app.

:class:`WebSocketASGIApp` is the ASGI app, :func:`websocket_route` its Starlette
route, :class:`WebSocketMiddleware` mounts handlers around another app;
:func:`uvicorn_server` and :func:`hypercorn_config` hand the message size bound
to the server, and close connections with 1001 on shutdown. The connection
itself is :class:`~ws4web.drivers.asgi.ASGIDriver`'s. docs/adapters-asgi.md
is the manual, with the table of what ASGI can carry.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, cast

from ..accept import AcceptPolicy, Registry, log_refusal, unexpected_error
from ..drivers.asgi import AWAIT, INLINE, SKIP, THREAD, ASGIDriver, AsyncCallbacks, Plan, UnsupportedByASGI
from ..exceptions import InvalidHandshake, RequestAnswered
from ..frames import Close, CloseCode
from ..http11 import Headers, Request, Response
from ..logs import ConnectionLog, format_peer, new_id
from ..messages import Message
from ..websocket import WebSocket
from ._paths import PathRoutes, asgi_path, scope_params, with_scope_params

__all__ = [
    "UNSUPPORTED_OPTIONS",
    "UnsupportedByASGI",
    "WebSocketASGIApp",
    "WebSocketMiddleware",
    "close_all",
    "hypercorn_config",
    "hypercorn_shutdown_trigger",
    "uvicorn_server",
    "websocket_route",
]

logger = logging.getLogger("ws4web.adapters.asgi")

Scope = MutableMapping[str, Any]
Event = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Event]]
Send = Callable[[Event], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HTTP_RESPONSE = "websocket.http.response"
_HTTP1 = ("HTTP/1.0", "HTTP/1.1")

#: Options ASGI cannot honour (the server frames, pings and negotiates): refused
#: when the app is built unless left at their defaults, with what to use instead.
UNSUPPORTED_OPTIONS: dict[str, str] = {
    "extensions": "the server negotiates compression (uvicorn --ws-per-message-deflate)",
    "ping_interval": "use the server's keepalive pings (uvicorn --ws-ping-interval)",
    "ping_timeout": "use the server's keepalive pings (uvicorn --ws-ping-timeout)",
    "heartbeat_freq": "use the server's keepalive pings (uvicorn --ws-ping-interval)",
    "max_frame_size": "the server assembles frames; bound messages with max_message_size",
    "handshake_timeout": "the server reads the handshake (uvicorn --timeout-keep-alive)",
}


def _check_supported(options: Mapping[str, Any]) -> None:
    for name, hint in UNSUPPORTED_OPTIONS.items():
        if name in options and options[name] not in (None, (), []):
            raise UnsupportedByASGI(f"the option {name}=", hint)


def _plan_for(handler_cls: type[WebSocket], budget: float) -> Plan:
    """How ``handler_cls``'s callbacks run: ``async def`` ones awaited, plain ones inline
    (``opened()`` once in a thread, as pull style may wait there; all in threads for budget 0)."""

    def is_async(name: str) -> bool:
        return inspect.iscoroutinefunction(getattr(handler_cls, name))

    opened = SKIP if handler_cls.opened is WebSocket.opened else THREAD
    if is_async("opened"):
        opened = AWAIT
    return Plan(
        handler_cls.__name__,
        open=opened,
        message=AWAIT if is_async("received_message") else INLINE,
        close=AWAIT if is_async("closed") else INLINE,
        budget=budget,
        blocking=budget == 0,
    )


def _async_callbacks(handler: WebSocket, plan: Plan) -> AsyncCallbacks:
    if AWAIT not in (plan.open, plan.message, plan.close):
        return AsyncCallbacks()
    # The base class declares them plain; the plan says these are async def.
    return AsyncCallbacks(
        opened=cast(Callable[[], Awaitable[object]], handler.opened) if plan.open is AWAIT else None,
        received_message=(
            cast(Callable[[Message], Awaitable[object]], handler.received_message) if plan.message is AWAIT else None
        ),
        closed=cast(Callable[[int, str], Awaitable[object]], handler.closed) if plan.close is AWAIT else None,
    )


class WebSocketASGIApp:
    """An ASGI app that runs ``handler_cls`` for every WebSocket connection.

    ``protocols`` are the subprotocols supported; the other options are those
    of every ws4web door (``process_request``, ``origins``, ``authenticate``,
    ``select_subprotocol``, the limits, the handler's own keyword arguments),
    checked here, once. ``process_request`` may be ``async def``; a plain
    ``process_request`` or ``authenticate`` runs in a thread (it may block).
    The ASGI server validated the upgrade; ``check_handshake=True`` re-runs
    ws4web's RFC 6455 checks on HTTP/1.x requests. ``headers`` go with the
    accept. ``budget``: seconds a plain callback may hold the event loop before
    its class's callbacks move to threads (0: in threads from the start).
    Non-WebSocket scopes go to ``app``, else get a 404.
    """

    def __init__(
        self,
        handler_cls: type[WebSocket] = WebSocket,
        protocols: Sequence[str] = (),
        *,
        check_handshake: bool = False,
        headers: Sequence[tuple[str, str]] = (),
        app: ASGIApp | None = None,
        budget: float = 0.01,
        **options: Any,
    ) -> None:
        _check_supported(options)
        if not isinstance(budget, (int, float)) or budget < 0:
            raise ValueError(f"budget must be a number of seconds >= 0, not {budget!r}")
        if protocols:
            options["protocols"] = protocols
        process_request = options.get("process_request")
        #: an ``async def`` process_request: awaited here, before the policy's checks
        self._process_request: Callable[[Request], Awaitable[Response | None]] | None = None
        if inspect.iscoroutinefunction(process_request):
            self._process_request = options.pop("process_request")
        if inspect.iscoroutinefunction(options.get("authenticate")):
            raise TypeError("authenticate must be a plain function (do async checks in an async process_request)")
        self.policy = AcceptPolicy.from_options(handler_cls, options)
        self._hooks_may_block = self.policy.process_request is not None or self.policy.authenticate is not None
        self.handler_cls = handler_cls
        self.plan = _plan_for(handler_cls, budget)
        self.check_handshake = check_handshake
        self.headers = list(headers)
        self.app = app
        #: the open connections' handlers (broadcast, shutdown)
        self.registry = Registry()
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()  # those it served on
        _APPS.add(self)

    @property
    def websockets(self) -> set[WebSocket]:
        """A snapshot of the open connections' handlers."""
        return set(self.registry)

    def broadcast(self, payload: Any, binary: bool | None = None) -> int:
        """Send one message to every open connection; returns how many took it."""
        return self.registry.broadcast(payload, binary)

    async def shutdown(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
    ) -> None:
        """Refuse newcomers (503), close every connection with ``code``, drop those not closed in ``timeout``."""
        Close(code, reason).serialize()  # a bad code or reason fails here, not in a thread
        # Registry.shutdown waits for the closes: in a thread, while this loop runs them.
        await asyncio.to_thread(self.registry.shutdown, code, reason, timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "websocket":
            await self.serve(scope, receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "http":
            body = b"Not Found: this endpoint only speaks WebSocket\n"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, *, attributes: Mapping[str, object] | None = None
    ) -> None:
        """Run one ``websocket`` scope through this door, setting ``attributes`` on the handler.

        The handler is built once the policy accepted the request; its
        :attr:`~ws4web.websocket.WebSocket.view_args` are ``scope["path_params"]``
        (what a router matched) and each of ``attributes`` (for a framework's
        per-request values: :mod:`ws4web.adapters.fastapi` passes its dependencies'
        results) is set on it before the accept, so before ``opened()``.
        """
        if (await receive()).get("type") != "websocket.connect":
            return  # the client left before the handshake
        self._loops.add(asyncio.get_running_loop())
        request = _request_from_scope(scope)
        log = ConnectionLog(logger, new_id(), format_peer(tuple(scope["client"]) if scope.get("client") else None))
        policy = self.policy
        try:
            if self.registry.stopping:
                raise InvalidHandshake("server shutting down", status=503)
            try:
                if self._process_request is not None:
                    answer = await self._process_request(request)
                    if answer is not None:
                        raise RequestAnswered(f"answered by process_request with {answer.status}", response=answer)
                checked = not (self.check_handshake and request.version in _HTTP1)
                if self._hooks_may_block:
                    accepted = await asyncio.to_thread(policy.evaluate, request, server_checked=checked)
                else:
                    accepted = policy.evaluate(request, server_checked=checked)
                handler = policy.make_handler(None, accepted, scope)
                handler.view_args = scope_params(scope)
                for name, value in (attributes or {}).items():
                    setattr(handler, name, value)
            except InvalidHandshake:
                raise
            except Exception as exc:  # a hook or the handler's constructor failed
                log.exception("handshake for %s failed", request.path)
                raise unexpected_error(exc) from exc
        except InvalidHandshake as exc:
            log_refusal(log, request.path, exc)
            await _refuse(scope, send, AcceptPolicy.refusal(exc))
            return
        driver = ASGIDriver(
            receive, send, log, plan=self.plan, limits=policy.limits, callbacks=_async_callbacks(handler, self.plan)
        )
        handler.bind(driver, request)
        if not self.registry.add(handler):  # shutdown began meanwhile
            late = InvalidHandshake("server shutting down", status=503)
            log_refusal(log, request.path, late)
            await _refuse(scope, send, AcceptPolicy.refusal(late))
            return
        driver.on_ended = lambda: self.registry.discard(handler)
        try:
            await driver.accept(accepted.subprotocol, self.headers)
        except Exception as exc:  # the client left
            log.debug("websocket.accept failed: %r", exc)
            self.registry.discard(handler)
            return
        log.debug("opened %s", request.path)
        await driver.serve()


async def _refuse(scope: Scope, send: Send, response: Response) -> None:
    """Answer the handshake with ``response``, or with the server's 403 when ASGI cannot say more."""
    if _HTTP_RESPONSE in (scope.get("extensions") or {}):
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        if "Content-Length" not in response.headers:
            # The whole body is known: say its size, or a server may fall back to
            # chunked encoding, which a WebSocket client need not read.
            headers.append((b"content-length", str(len(response.body)).encode("ascii")))
        await send({"type": "websocket.http.response.start", "status": response.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": response.body, "more_body": False})
    else:
        # A close before the accept is the only refusal plain ASGI has; servers
        # answer it with HTTP 403. The code is not sent anywhere.
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})


def _request_from_scope(scope: Scope) -> Request:
    """The upgrade request as ws4web sees it, rebuilt from the ASGI scope."""
    path = scope.get("raw_path")
    target = path.decode("latin-1") if isinstance(path, (bytes, bytearray)) and path else str(scope.get("path", "/"))
    query = scope.get("query_string") or b""
    if query:
        target += "?" + bytes(query).decode("latin-1")
    headers = Headers(
        (bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in scope.get("headers", ())
    )
    return Request("GET", target, headers, "HTTP/" + str(scope.get("http_version", "1.1")))


# -- shutdown and the servers' own settings ----------------------------------------------------

_APPS: weakref.WeakSet[WebSocketASGIApp] = weakref.WeakSet()


async def close_all(
    code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
) -> None:
    """Shut down every :class:`WebSocketASGIApp` that served on the running loop (see its ``shutdown``).

    Call it from a server's shutdown path so clients get ``code`` (1001 Going
    Away by default) rather than the server's own choice.
    """
    loop = asyncio.get_running_loop()
    apps = [app for app in list(_APPS) if loop in app._loops]
    await asyncio.gather(*(app.shutdown(code, reason, timeout) for app in apps))


def _ws4web_apps(app: Any, depth: int = 0) -> Iterator[WebSocketASGIApp]:
    """The ws4web apps inside ``app``: itself, a middleware's routes, Starlette routes and middleware,
    FastAPI routes (:mod:`ws4web.adapters.fastapi` endpoints carry theirs)."""
    if depth > 8 or app is None:
        return
    if isinstance(app, WebSocketASGIApp):
        yield app
    elif isinstance(app, WebSocketMiddleware):
        yield from app.routes.values()
        yield from _ws4web_apps(app.app, depth + 1)
    else:
        for middleware in getattr(app, "user_middleware", ()):  # Starlette builds these on first call
            if getattr(middleware, "cls", None) is WebSocketMiddleware:
                yield from WebSocketMiddleware(_no_app, *middleware.args, **middleware.kwargs).routes.values()
        for route in getattr(app, "routes", ()):
            yield from _ws4web_apps(getattr(route, "app", None), depth + 1)
            endpoint_app = getattr(getattr(route, "endpoint", None), "ws4web_app", None)
            if isinstance(endpoint_app, WebSocketASGIApp):
                yield endpoint_app


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover - never called
    raise LookupError("nothing here")


def _max_message_size(app: Any) -> int | None:
    """The largest ``max_message_size`` of the ws4web apps in ``app``; None if one has none (or none found)."""
    sizes = [a.policy.limits.max_message_size for a in _ws4web_apps(app)]
    if not sizes or None in sizes:
        return None
    return max(s for s in sizes if s is not None)


def uvicorn_server(
    app: ASGIApp,
    *,
    shutdown_code: int = CloseCode.GOING_AWAY,
    shutdown_reason: str = "server shutting down",
    shutdown_timeout: float = 5.0,
    **config: Any,
) -> Any:
    """A ``uvicorn.Server`` for ``app`` that bounds messages and closes ws4web connections with 1001 on shutdown.

    ``config`` goes to ``uvicorn.Config``; ``ws_max_size`` defaults to the
    largest ``max_message_size`` of the ws4web apps in ``app``, so uvicorn
    refuses (1009) a message too big before it buffers it. Plain uvicorn closes
    open WebSockets with 1012 (Service Restart); this server first runs
    :func:`close_all`, then lets clients answer the close before uvicorn drops
    what is left.
    """
    import uvicorn

    size = _max_message_size(app)
    if size is not None:
        config.setdefault("ws_max_size", size)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + shutdown_timeout
            await close_all(shutdown_code, shutdown_reason, shutdown_timeout)
            # uvicorn reports the disconnect as soon as our close frame is out; the
            # client's answer arrives later, and uvicorn's own shutdown would cut it.
            ws_class = getattr(self.config, "ws_protocol_class", None)
            while ws_class is not None and loop.time() < deadline:
                if not any(isinstance(c, ws_class) for c in self.server_state.connections):
                    break
                await asyncio.sleep(0.02)
            await super().shutdown(sockets)

    return Server(uvicorn.Config(app, **config))


def hypercorn_config(app: ASGIApp, **settings: Any) -> Any:
    """A ``hypercorn.config.Config`` whose ``websocket_max_message_size`` is ``app``'s ``max_message_size``.

    ``settings`` are set as attributes (``bind=["127.0.0.1:8000"]``...).
    """
    from hypercorn.config import Config

    config = Config()
    size = _max_message_size(app)
    if size is not None:
        config.websocket_max_message_size = size
    for name, value in settings.items():
        if not hasattr(config, name):
            raise TypeError(f"hypercorn's Config has no setting {name!r}")
        setattr(config, name, value)
    return config


def hypercorn_shutdown_trigger(
    trigger: Callable[[], Awaitable[Any]],
    *,
    code: int = CloseCode.GOING_AWAY,
    reason: str = "server shutting down",
    timeout: float = 5.0,
) -> Callable[[], Awaitable[None]]:
    """Wrap hypercorn's ``shutdown_trigger`` so ws4web connections close with 1001 first.

    ``asyncio.run(hypercorn.asyncio.serve(app, config, shutdown_trigger=hypercorn_shutdown_trigger(event.wait)))``
    """

    async def shutdown_trigger() -> None:
        await trigger()
        await close_all(code, reason, timeout)

    return shutdown_trigger


# -- Starlette and other apps ----------------------------------------------------------------


def websocket_route(
    path: str, handler_cls: type[WebSocket], protocols: Sequence[str] = (), *, name: str | None = None, **options: Any
) -> Any:
    """A ``starlette.routing.WebSocketRoute`` running ``handler_cls``; its ``.app`` is the WebSocketASGIApp.

    ``path`` is Starlette's (``/chat/{room}``, ``/item/{id:int}``); the handler
    finds the parameters in its ``view_args``.
    """
    from starlette.routing import WebSocketRoute

    return WebSocketRoute(path, WebSocketASGIApp(handler_cls, protocols, **options), name=name or handler_cls.__name__)


class WebSocketMiddleware:
    """ASGI middleware: WebSockets whose path matches a route run ws4web handlers, the rest reaches ``app``.

    ``WebSocketMiddleware(app, {"/ws": Chat, "/chat/{room}": Room}, **options)``:
    a handler class is built into a :class:`WebSocketASGIApp` with ``options``; a
    WebSocketASGIApp keeps its own. Route paths (docs/adapters.md, "Route paths",
    the WSGI middleware's rule too) match ``scope["path"]``, relative to
    ``scope["root_path"]`` as Starlette matches routes; their parameters go to
    ``scope["path_params"]`` and from there to the handler's ``view_args``. Every
    other scope goes to ``app`` as it came. Also a Starlette middleware class:
    ``app.add_middleware(WebSocketMiddleware, routes={"/ws": Chat})``.
    """

    def __init__(
        self, app: ASGIApp, /, routes: Mapping[str, type[WebSocket] | WebSocketASGIApp], **options: Any
    ) -> None:
        # ``app`` is positional-only so that Starlette's ``Middleware(cls, **kwargs)``
        # type-checks; an ``app=`` keyword would land in ``options``: refuse it.
        if "app" in options:
            raise TypeError("WebSocketMiddleware: pass the wrapped app first, positionally (app= is not an option)")
        self.app = app
        built: dict[str, WebSocketASGIApp] = {}
        for path, target in routes.items():
            if isinstance(target, WebSocketASGIApp):
                built[path] = target
            elif isinstance(target, type) and issubclass(target, WebSocket):
                built[path] = WebSocketASGIApp(target, **options)
            else:
                raise TypeError(
                    f"WebSocketMiddleware: {path!r} maps to {target!r}, not a WebSocket subclass or a WebSocketASGIApp"
                )
        #: route path -> the WebSocketASGIApp serving it
        self.routes: PathRoutes[WebSocketASGIApp] = PathRoutes(built)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "websocket":
            found = self.routes.match(asgi_path(scope))
            if found is not None:
                target, params = found
                await target(with_scope_params(scope, params) if params else scope, receive, send)
                return
        await self.app(scope, receive, send)

    @property
    def websockets(self) -> set[WebSocket]:
        """The handlers of the open connections, on every mounted path."""
        return {handler for target in self.routes.values() for handler in target.registry}

    async def shutdown(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
    ) -> None:
        """Shut down every mounted app (lifespan events are the wrapped app's: nothing calls this by itself)."""
        await asyncio.gather(*(target.shutdown(code, reason, timeout) for target in self.routes.values()))
