"""The chat demo on CherryPy: the page at ``/``, the unchanged ChatHandler at ``/ws``.

    ws4web serve --adapter cherrypy [--port 8080] [--host 127.0.0.1]

Then open the printed URL (http://127.0.0.1:8080/) in two browser tabs.
``--port 0`` picks a free port; the URL printed has the real one. Ctrl-C or
SIGTERM stops the engine, which says goodbye (1001) to every open tab.
``--origin URL`` (or ``$WS4WEB_DEMO_ORIGINS``) names the page's public origin
behind a proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cherrypy

from ws4web.adapters.cherrypy import WebSocketPlugin, install
from ws4web.extensions import ServerPerMessageDeflateFactory

from . import MAX_MESSAGE, arguments, banner, page_origins
from . import page as chat_page
from .handler import ChatHandler

PAGE = chat_page()


class ChatRoot:
    @cherrypy.expose  # type: ignore[untyped-decorator]  # cherrypy is untyped
    def index(self) -> bytes:
        cherrypy.response.headers["Content-Type"] = "text/html; charset=utf-8"
        return PAGE

    @cherrypy.expose  # type: ignore[untyped-decorator]
    def ws(self) -> None:
        """The upgrade: tools.websocket (configured below) has answered 101 by now."""


def setup(host: str = "127.0.0.1", port: int = 8080) -> WebSocketPlugin:
    """Configure CherryPy for the chat (without starting it); return the WebSocket plugin.

    Upgrades are refused (403) until :func:`admit` names the origins, once the port is bound.
    """
    plugin = install()
    cherrypy.config.update(
        {
            "server.socket_host": host,
            "server.socket_port": port,
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        }
    )
    config: dict[str, dict[str, Any]] = {
        "/ws": {
            "tools.websocket.on": True,
            "tools.websocket.handler_cls": ChatHandler,
            "tools.websocket.max_message_size": MAX_MESSAGE,
            "tools.websocket.extensions": [ServerPerMessageDeflateFactory()],
            "tools.websocket.origins": [],  # nobody, until admit()
        }
    }
    cherrypy.tree.mount(ChatRoot(), "/", config)
    return plugin


def admit(origins: Sequence[str | None]) -> None:
    """The origins whose pages may open /ws (CherryPy reads the tool's options on every request)."""
    cherrypy.tree.apps[""].config["/ws"]["tools.websocket.origins"] = list(origins)


def main(argv: Sequence[str] | None = None) -> None:
    parser = arguments("ws4web chat demo (CherryPy)")
    args = parser.parse_args(argv)
    try:
        page_origins(args.host, args.port, args.origin)  # a malformed --origin fails before the engine starts
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING)
    for handler in logging.getLogger().handlers:
        # CherryPy sets its own loggers to INFO; filter at the handler to stay quiet.
        handler.setLevel(logging.WARNING)
    setup(args.host, args.port)
    if hasattr(cherrypy.engine, "signal_handler"):
        cherrypy.engine.signal_handler.subscribe()  # SIGTERM / Ctrl-C stop the engine cleanly
    cherrypy.engine.start()
    port = cherrypy.server.bound_addr[1]
    admit(page_origins(args.host, port, args.origin))
    print(banner(args.host, port), flush=True)
    cherrypy.engine.block()


if __name__ == "__main__":
    main()
