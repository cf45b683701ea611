"""The chat demo on the standard library alone: one port serves the page and /ws.

    ws4web serve --adapter stdlib [--port 8080] [--host 127.0.0.1]

Then open http://127.0.0.1:8080/ in two browser tabs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from ws4web import WebSocketServer
from ws4web.extensions import ServerPerMessageDeflateFactory
from ws4web.http11 import Headers, Request, Response

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


def make_server(host: str = "127.0.0.1", port: int = 8080) -> WebSocketServer:
    # permessage-deflate: every browser offers it, and chat text compresses well.
    return WebSocketServer(
        ChatHandler, host, port, process_request=serve_page, extensions=[ServerPerMessageDeflateFactory()]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ws4web chat demo (standard library server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    server = make_server(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"ws4web chat on http://{host}:{server.port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
