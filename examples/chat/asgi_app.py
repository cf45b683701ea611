"""The chat demo on Starlette and uvicorn: one port serves the page and /ws.

    python examples/chat/asgi_app.py [--port 8080] [--host 127.0.0.1]

Then open http://127.0.0.1:8080/ in two browser tabs. The page is a Starlette
route; ``/ws`` runs the same ``ChatHandler`` class as stdlib_app.py, unchanged,
through ws4web's ``WebSocketMiddleware`` (its plain callbacks are quick: they run
on the event loop, and the hub writes to the room). On Ctrl-C the open chats are
closed with 1001 (Going Away).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

from handler import ChatHandler
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ws4web.adapters.asgi import WebSocketMiddleware, uvicorn_server

with open(os.path.join(HERE, "index.html"), "rb") as _page:
    PAGE = _page.read()


async def page(request: Request) -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8")


def make_app() -> Starlette:
    """The page at / (and /index.html); WebSocket upgrades to /ws go to ChatHandler."""
    return Starlette(
        routes=[Route("/", page), Route("/index.html", page)],
        middleware=[Middleware(WebSocketMiddleware, routes={"/ws": ChatHandler})],
    )


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here so that --port 0 can print the port the system chose."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family)


def main() -> None:
    parser = argparse.ArgumentParser(description="ws4web chat demo (Starlette on uvicorn)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sock = listen(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    # uvicorn_server: on Ctrl-C / SIGTERM the chats get 1001 rather than uvicorn's 1012.
    server = uvicorn_server(make_app(), log_level="warning", access_log=False)
    print(f"ws4web chat on http://{host}:{sock.getsockname()[1]}/  (Ctrl-C to stop)", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the signal it caught
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    main()
