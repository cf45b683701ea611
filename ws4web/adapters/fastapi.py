"""FastAPI routes for ws4web handlers: FastAPI's dependencies decide before the upgrade, ws4web's ASGI door after.

::

    from fastapi import Depends, FastAPI, WebSocketException, status
    from ws4web.adapters.fastapi import add_websocket_route

    app = FastAPI()
    add_websocket_route(app, "/chat/{room}", Chat, depends={"user": Depends(current_user)})

:func:`add_websocket_route` adds an ordinary FastAPI WebSocket route (the
public ``add_api_websocket_route``) whose endpoint hands the connection to a
:class:`~ws4web.adapters.asgi.WebSocketASGIApp`. docs/fastapi.md is the manual.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi import WebSocket as FastAPIWebSocket
from fastapi.params import Depends

from ..websocket import WebSocket
from .asgi import WebSocketASGIApp

__all__ = ["WebSocketEndpoint", "add_websocket_route"]

# What every handler has already (its methods, and what WebSocket.__init__ sets):
# a dependency's result must not hide any of it.
_TAKEN = frozenset(dir(WebSocket)) | frozenset(vars(WebSocket())) | {"websocket"}  # the endpoint's own parameter


class WebSocketEndpoint:
    """The FastAPI endpoint of one ws4web route: FastAPI calls it once the dependencies ran.

    Its signature, which FastAPI reads, asks for the connection and, as keyword
    parameters with ``Depends`` defaults, for the ``depends`` given; it passes
    the connection to :attr:`ws4web_app` with those results as the handler's
    attributes.
    """

    def __init__(self, ws4web_app: WebSocketASGIApp, depends: Mapping[str, Depends]) -> None:
        #: the door that runs the connection (``uvicorn_server`` finds it here)
        self.ws4web_app = ws4web_app
        parameters = [
            inspect.Parameter("websocket", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=FastAPIWebSocket)
        ]
        parameters += [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d) for name, d in depends.items()
        ]
        self.__signature__ = inspect.Signature(parameters)
        self.__name__ = ws4web_app.handler_cls.__name__

    async def __call__(self, websocket: FastAPIWebSocket, **results: Any) -> None:
        # Starlette's WebSocket.receive and .send are the ASGI callables, with
        # Starlette's checks of the message order on top.
        await self.ws4web_app.serve(websocket.scope, websocket.receive, websocket.send, attributes=results)


def add_websocket_route(
    router: FastAPI | APIRouter,
    path: str,
    handler_cls: type[WebSocket],
    protocols: Sequence[str] = (),
    *,
    depends: Mapping[str, Depends] | None = None,
    dependencies: Sequence[Depends] = (),
    name: str | None = None,
    **options: Any,
) -> WebSocketASGIApp:
    """Serve ``handler_cls`` at ``path`` of a FastAPI app or ``APIRouter``; returns its door.

    ``path`` is FastAPI's (``/chat/{room}``, ``/item/{id:int}``); the handler
    finds the parameters in its ``view_args``. FastAPI runs ``dependencies``
    (their results are dropped, as FastAPI's ``dependencies=`` does) and then
    ``depends`` before anything is sent: one that raises ``WebSocketException``
    or ``HTTPException`` refuses the upgrade, and each result of ``depends`` is
    set on the handler under its key before ``opened()`` (``depends={"user":
    Depends(current_user)}``: ``self.user``). The route's own
    ``dependencies``, the router's and ``app.dependency_overrides`` apply as to
    any FastAPI route. ``protocols`` and ``options`` are those of
    :class:`~ws4web.adapters.asgi.WebSocketASGIApp` (the accept policy, the
    limits, the handler's keywords), which then runs the connection.
    """
    depends = dict(depends or {})
    for key, dependency in depends.items():
        if not isinstance(dependency, Depends):
            raise TypeError(f"depends[{key!r}] must be a fastapi Depends(...), not {dependency!r}")
        existing = inspect.getattr_static(handler_cls, key, None)  # a plain default value is fine
        taken = key in _TAKEN or callable(existing) or hasattr(type(existing), "__get__")
        if not key.isidentifier() or key.startswith("_") or taken:
            raise ValueError(
                f"depends[{key!r}]: the result would be the handler's attribute {key!r}, which "
                + ("is not a public name" if not taken else f"{handler_cls.__name__} already has")
            )
    for dependency in dependencies:
        if not isinstance(dependency, Depends):
            raise TypeError(f"dependencies must be fastapi Depends(...), not {dependency!r}")
    ws4web_app = WebSocketASGIApp(handler_cls, protocols, **options)
    endpoint = WebSocketEndpoint(ws4web_app, depends)
    router.add_api_websocket_route(path, endpoint, name=name or handler_cls.__name__, dependencies=list(dependencies))
    return ws4web_app
