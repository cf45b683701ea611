"""The chat demo on Starlette and uvicorn: one port serves the page and /ws.

    ws4web serve --adapter asgi [--port 8080] [--host 127.0.0.1]

Then open http://127.0.0.1:8080/ in two browser tabs. The page is a Starlette
route; ``/ws`` runs the same ``ChatHandler`` class as stdlib_app.py, unchanged,
through ws4web's ``WebSocketMiddleware`` (its plain callbacks run in a thread
per connection, so the room's lock never blocks the event loop). On Ctrl-C the
open chats are closed with 1001 (Going Away). ``--origin URL`` (or
``$WS4WEB_DEMO_ORIGINS``) names the page's public origin behind a proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ws4web.adapters.asgi import WebSocketMiddleware, uvicorn_server

from . import MAX_MESSAGE, arguments, banner, listen, page_origins
from . import page as chat_page
from .handler import ChatHandler

PAGE = chat_page()


async def page(request: Request) -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8")


def make_app(origins: Sequence[str | None]) -> Starlette:
    """The page at / (and /index.html); WebSocket upgrades to /ws from ``origins`` go to ChatHandler."""
    return Starlette(
        routes=[Route("/", page), Route("/index.html", page)],
        middleware=[
            Middleware(WebSocketMiddleware, routes={"/ws": ChatHandler}, origins=origins, max_message_size=MAX_MESSAGE)
        ],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = arguments("ws4web chat demo (Starlette on uvicorn)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sock = listen(args.host, args.port)  # bound first: --port 0 prints the port, the origins name it
    try:
        app = make_app(page_origins(args.host, sock.getsockname()[1], args.origin))
    except ValueError as exc:  # a malformed --origin
        sock.close()
        parser.error(str(exc))
    # uvicorn_server: on Ctrl-C / SIGTERM the chats get 1001 rather than uvicorn's 1012.
    server = uvicorn_server(app, log_level="warning", access_log=False)
    print(banner(args.host, sock.getsockname()[1]), flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the signal it caught
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    main()
