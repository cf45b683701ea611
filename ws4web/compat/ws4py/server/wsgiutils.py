"""``ws4py.server.wsgiutils``: :class:`WebSocketWSGIApplication` with ws4py's arguments.

ws4py's application only answered the handshake and left the WebSocket in the
environ for its server to run; ws4web's takes the socket from the server and
runs the WebSocket itself, on the servers ws4web supports (gevent's pywsgi and
wsgiref with ws4web's handlers; see :mod:`ws4web.adapters.gevent`,
:mod:`ws4web.adapters.wsgiref`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ....adapters._wsgi import StartResponse
from ....adapters._wsgi import WebSocketWSGIApplication as _WebSocketWSGIApplication
from ....extensions.base import ServerExtensionFactory
from ....websocket import WebSocket

__all__ = ["SERVED_BY", "WebSocketWSGIApplication"]

#: Environ entry a server sets to the set that collects the applications it serves
#: (the gevent ``WSGIServer`` of this package does, to close their WebSockets on stop()).
SERVED_BY = "ws4web.compat.ws4py.applications"


class WebSocketWSGIApplication(_WebSocketWSGIApplication):
    """``WebSocketWSGIApplication(protocols=None, extensions=None, handler_cls=WebSocket)``,
    ws4py's argument order, plus ws4web's door options as keywords."""

    def __init__(
        self,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[ServerExtensionFactory] | None = None,
        handler_cls: type[WebSocket] = WebSocket,
        **options: Any,
    ) -> None:
        super().__init__(handler_cls, protocols or (), extensions or (), **options)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        served: set[WebSocketWSGIApplication] | None = environ.get(SERVED_BY)
        if served is not None:
            served.add(self)
        return super().__call__(environ, start_response)
