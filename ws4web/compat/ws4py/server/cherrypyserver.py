"""``ws4py.server.cherrypyserver``: ws4web's CherryPy tool and plugin, with ws4py's ``version`` option and ``manager``.

ws4py's two set-up lines work as they are::

    WebSocketPlugin(cherrypy.engine).subscribe()
    cherrypy.tools.websocket = WebSocketTool()

and so do its ``tools.websocket.*`` settings, ``cherrypy.request.ws_handler`` in
the page handler (set once the upgrade is accepted, before the 101 goes out) and
``cherrypy.engine.publish("websocket-broadcast", message)``. See
:mod:`ws4web.adapters.cherrypy` for how connections run.
"""

from __future__ import annotations

from typing import Any

from ....adapters.cherrypy import WebSocketPlugin as _WebSocketPlugin
from ....adapters.cherrypy import WebSocketTool as _WebSocketTool
from ....websocket import WebSocket
from ..manager import WebSocketManager

__all__ = ["WebSocketPlugin", "WebSocketTool"]


class WebSocketTool(_WebSocketTool):
    """ws4web's tool; ws4py's ``version`` option is accepted and has no effect (only
    version 13 is spoken; a client asking for another gets 426 with the versions)."""

    def upgrade(self, handler_cls: type[WebSocket] = WebSocket, version: Any = None, **options: Any) -> None:
        super().upgrade(handler_cls, **options)


class WebSocketPlugin(_WebSocketPlugin):
    """ws4web's plugin, plus ws4py's ``manager``."""

    @property
    def manager(self) -> WebSocketManager:
        """The open WebSockets as a :class:`~ws4web.compat.ws4py.manager.WebSocketManager`
        (``broadcast``, ``close_all``, ``len``, iteration)."""
        return WebSocketManager(registry=self.registry)
