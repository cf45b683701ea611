"""ws4py on CherryPy: its WebSocketTool and WebSocketPlugin, with ws4py's own EchoWebSocket."""

from __future__ import annotations

from bench.servers._common import main, version


def describe() -> str:
    import cherrypy  # noqa: F401
    from ws4py.server.cherrypyserver import WebSocketPlugin, WebSocketTool  # type: ignore[import-untyped]  # noqa: F401
    from ws4py.websocket import EchoWebSocket  # type: ignore[import-untyped]  # noqa: F401

    return f"ws4py {version('ws4py')} on CherryPy {version('CherryPy')} (cheroot {version('cheroot')})"


def serve(host: str, port: int) -> None:
    import cherrypy
    from ws4py.server.cherrypyserver import WebSocketPlugin, WebSocketTool
    from ws4py.websocket import EchoWebSocket

    cherrypy.config.update(
        {
            "server.socket_host": host,
            "server.socket_port": port,
            "server.socket_queue_size": 1024,
            "log.screen": False,
            "log.access_file": "",
            "engine.autoreload.on": False,
            "checker.on": False,
        }
    )
    WebSocketPlugin(cherrypy.engine).subscribe()
    cherrypy.tools.websocket = WebSocketTool()

    class Root:
        @cherrypy.expose  # type: ignore[untyped-decorator]
        def index(self) -> None:
            """The tool has taken the socket over by the time this runs."""

    config = {"/": {"tools.websocket.on": True, "tools.websocket.handler_cls": EchoWebSocket}}
    cherrypy.quickstart(Root(), "/", config)


if __name__ == "__main__":
    main(describe, serve)
