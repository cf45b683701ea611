"""gevent-websocket: gevent.pywsgi with geventwebsocket's WebSocketHandler, a greenlet per connection."""

from __future__ import annotations

from typing import Any

from bench.servers._common import main, version


def describe() -> str:
    import gevent  # noqa: F401
    from geventwebsocket.handler import WebSocketHandler  # type: ignore[import-untyped]  # noqa: F401

    return f"gevent-websocket {version('gevent-websocket')} on gevent {version('gevent')} pywsgi (no monkey-patching)"


def serve(host: str, port: int) -> None:
    from gevent import pywsgi
    from geventwebsocket.handler import WebSocketHandler

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        websocket = environ.get("wsgi.websocket")
        if websocket is None:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"WebSocket only\n"]
        while True:
            message = websocket.receive()
            if message is None:
                break
            websocket.send(message, binary=not isinstance(message, str))
        return []

    pywsgi.WSGIServer((host, port), app, handler_class=WebSocketHandler, log=None).serve_forever()


if __name__ == "__main__":
    main(describe, serve)
