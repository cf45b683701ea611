"""A plain WSGI page and a WebSocket endpoint side by side on one gevent pywsgi server.

    python examples/gevent_mounted.py --port 8000 [--host 127.0.0.1]

``GET /`` (or any path but /ws) answers a hello-world page from an ordinary
WSGI app; ``ws://host:port/ws`` is a WebSocket echo. No monkey-patching.
Ctrl-C or SIGTERM closes every WebSocket with 1001 (Going Away) and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ws4web import WebSocket
from ws4web.adapters.gevent import PathDispatcher, WebSocketWSGIApplication, serve
from ws4web.messages import Message


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Any WSGI app: a framework's, or this one."""
    body = b"Hello from plain WSGI; the WebSocket lives at /ws\n"
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def build_app(**handler_options: Any) -> tuple[PathDispatcher, WebSocketWSGIApplication]:
    """The site: /ws upgrades to Echo, everything else goes to ``hello``."""
    websocket_app = WebSocketWSGIApplication(handler_cls=Echo, **handler_options)
    return PathDispatcher({"/ws": websocket_app}, default=hello), websocket_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    site, _websocket_app = build_app()
    serve(site, args.host, args.port, log=None)


if __name__ == "__main__":
    main()
