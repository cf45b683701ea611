"""ws4web on its standard-library server with its defaults.

WS4WEB_NO_SPEEDUPS=1 turns the C accelerator off (ws4web reads it on import).
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from bench.servers._common import MAX_MESSAGE, Unavailable, main


def deflate_factories() -> list[Any]:
    """permessage-deflate, if ws4web ships it yet: any concrete server factory in that module."""
    try:
        module = importlib.import_module("ws4web.extensions.permessage_deflate")
        from ws4web.extensions.base import ServerExtensionFactory
    except Exception:
        return []
    for _name, obj in inspect.getmembers(module, inspect.isclass):
        mine = obj.__module__ == module.__name__
        if mine and issubclass(obj, ServerExtensionFactory) and not inspect.isabstract(obj):
            try:
                return [obj()]
            except Exception:
                continue
    return []


def describe() -> str:
    import ws4web
    from ws4web import frames

    accelerated = frames.apply_mask is not frames._py_apply_mask
    if not os.environ.get("WS4WEB_NO_SPEEDUPS") and not accelerated:
        raise Unavailable("the C accelerator is not built here (pip install -e . builds it)")
    deflate = "on" if deflate_factories() else "not available yet"
    return (
        f"ws4web {ws4web.__version__} stdlib WebSocketServer (defaults), accelerator {'on' if accelerated else 'off'}, "
        f"permessage-deflate {deflate}"
    )


def serve(host: str, port: int) -> None:
    from ws4web import WebSocket, WebSocketServer

    class Echo(WebSocket):
        def received_message(self, message: Any) -> None:
            self.send(message)

    server = WebSocketServer(
        Echo,
        host,
        port,
        extensions=deflate_factories(),
        max_message_size=MAX_MESSAGE,
        backlog=1024,
    )
    server.serve_forever()


if __name__ == "__main__":
    main(describe, serve)
