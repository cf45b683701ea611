"""``ws4py.server.geventserver``: a gevent ``WSGIServer`` that closes its WebSockets with 1001 when stopped.

No ``monkey.patch_all()`` is needed (it does no harm either): the WebSockets
run over pywsgi's gevent sockets with gevent's primitives
(:mod:`ws4web.adapters.gevent`).
"""

from __future__ import annotations

from typing import Any

import gevent.pywsgi

from ....adapters.gevent import WebSocketWSGIHandler
from .wsgiutils import SERVED_BY, WebSocketWSGIApplication

__all__ = ["WSGIServer", "WebSocketWSGIApplication", "WebSocketWSGIHandler"]


class WSGIServer(gevent.pywsgi.WSGIServer):  # type: ignore[misc]  # gevent is untyped
    """``gevent.pywsgi.WSGIServer`` with ws4web's request handler; ``stop()`` first
    closes, with 1001 (Going Away), the WebSockets of every
    :class:`~ws4web.compat.ws4py.server.wsgiutils.WebSocketWSGIApplication` it served."""

    handler_class = WebSocketWSGIHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.websocket_applications: set[WebSocketWSGIApplication] = set()
        environ = dict(kwargs.pop("environ", None) or {})
        environ[SERVED_BY] = self.websocket_applications  # copied by reference into each request's environ
        super().__init__(*args, environ=environ, **kwargs)

    def stop(self, timeout: float | None = None) -> None:
        """Close the WebSockets with 1001 (waiting up to ``timeout`` seconds, default the
        server's ``stop_timeout``), then stop as pywsgi's server does."""
        wait = timeout if timeout is not None else self.stop_timeout
        for application in list(self.websocket_applications):
            application.shutdown(timeout=wait)
        super().stop(timeout)
