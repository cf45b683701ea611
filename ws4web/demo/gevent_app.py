"""The chat demo on gevent's pywsgi, without monkey-patching: the page at ``/``, ChatHandler at ``/ws``.

    ws4web serve --adapter gevent [--port 8080] [--host 127.0.0.1]

Then open the printed URL (http://127.0.0.1:8080/) in two browser tabs.
``--port 0`` picks a free port; the URL printed has the real one. Each chat
runs in the greenlet pywsgi gave its connection, with gevent primitives, so
nothing needs ``patch_all()``. The room's ``threading.Lock`` is safe here: it
is only ever held around dict operations that never yield to the hub. Ctrl-C
or SIGTERM says goodbye (1001) to every open tab, then stops the server.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent

from ws4web.adapters.gevent import PathDispatcher, WebSocketWSGIApplication, make_server
from ws4web.extensions import ServerPerMessageDeflateFactory

from . import page as chat_page
from .handler import ChatHandler

PAGE = chat_page()


def page(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The plain WSGI side: the page at / (and /index.html), 404 elsewhere."""
    if environ.get("PATH_INFO", "") in ("", "/", "/index.html"):
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))])
        return [PAGE]
    body = b"not found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def build_app() -> tuple[PathDispatcher, WebSocketWSGIApplication]:
    """The site (upgrades to /ws go to ChatHandler, the rest to ``page``) and its WebSocket app."""
    # chat events are small (names of 32, texts of 2000 characters)
    chat = WebSocketWSGIApplication(
        handler_cls=ChatHandler, max_message_size=2**16, extensions=[ServerPerMessageDeflateFactory()]
    )
    return PathDispatcher({"/ws": chat}, default=page), chat


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ws4web chat demo (gevent pywsgi, no monkey-patching)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    site, chat = build_app()
    server = make_server(args.host, args.port, site, log=None)
    server.start()  # binds now, so that --port 0 can print the port the system chose
    port = server.address[1]
    host = f"[{args.host}]" if ":" in args.host else args.host

    def stop() -> None:
        chat.shutdown(timeout=2.0)  # 1001 Going Away to every open chat
        server.stop(timeout=2.0)

    # gevent's own signal handlers run in the hub, so stop() may block cooperatively.
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(stop))
    gevent.signal_handler(signal.SIGINT, lambda: gevent.spawn(stop))
    print(f"ws4web chat on http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
