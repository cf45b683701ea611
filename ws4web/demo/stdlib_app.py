"""The chat demo on the standard library alone: one port serves the page and /ws.

    ws4web serve --adapter stdlib [--port 8080] [--host 127.0.0.1]

Then open http://127.0.0.1:8080/ in two browser tabs. ``--origin URL`` (or
``$WS4WEB_DEMO_ORIGINS``) names the page's public origin behind a proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ws4web import WebSocketServer
from ws4web.extensions import ServerPerMessageDeflateFactory
from ws4web.http11 import Headers, Request, Response

from . import MAX_MESSAGE, arguments, banner, listen, page_origins
from . import page as chat_page
from .handler import ChatHandler

PAGE = chat_page()


def serve_page(request: Request) -> Response | None:
    """Answer plain HTTP requests (the page itself); let upgrades through."""
    if "websocket" in (request.headers.get("Upgrade") or "").lower():
        return None if request.path.split("?")[0] == "/ws" else Response(404, "Not Found", Headers(), b"")
    if request.path.split("?")[0] in ("/", "/index.html"):
        headers = Headers(
            [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE))), ("Connection", "close")]
        )
        return Response(200, "OK", headers, PAGE)
    return Response(404, "Not Found", Headers([("Content-Length", "10")]), b"not found\n")


def make_server(host: str = "127.0.0.1", port: int = 8080, origins: Sequence[str] = ()) -> WebSocketServer:
    """The chat's server, listening; ``origins``: the page's public origins (default: computed)."""
    sock = listen(host, port)
    try:
        # permessage-deflate: every browser offers it, and chat text compresses well.
        return WebSocketServer(
            ChatHandler,
            None,
            sock=sock,
            process_request=serve_page,
            extensions=[ServerPerMessageDeflateFactory()],
            origins=page_origins(host, sock.getsockname()[1], origins),
            max_message_size=MAX_MESSAGE,
        )
    except BaseException:
        sock.close()
        raise


def main(argv: Sequence[str] | None = None) -> None:
    parser = arguments("ws4web chat demo (standard library server)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        server = make_server(args.host, args.port, args.origin)
    except ValueError as exc:  # a malformed --origin
        parser.error(str(exc))
    print(banner(args.host, server.port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
