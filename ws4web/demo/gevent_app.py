"""The chat demo on gevent's pywsgi, without monkey-patching: the page at ``/``, ChatHandler at ``/ws``.

    ws4web serve --adapter gevent [--port 8080] [--host 127.0.0.1]

Then open the printed URL (http://127.0.0.1:8080/) in two browser tabs.
``--port 0`` picks a free port; the URL printed has the real one. Each chat
runs in the greenlet pywsgi gave its connection, with gevent primitives, so
nothing needs ``patch_all()``. The room's locks (``threading.Lock``) are safe here:
they are held around dict operations and hub calls that only queue for a
gevent connection (the hub writes to it from its own threads), never around
anything that yields to gevent's loop. Ctrl-C
or SIGTERM says goodbye (1001) to every open tab, then stops the server.
``--origin URL`` (or ``$WS4WEB_DEMO_ORIGINS``) names the page's public origin
behind a proxy.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent
import gevent.pywsgi
import gevent.socket

from ws4web.adapters.gevent import PathDispatcher, WebSocketWSGIApplication, WebSocketWSGIHandler
from ws4web.extensions import ServerPerMessageDeflateFactory

from . import MAX_MESSAGE, arguments, banner, listen, page_origins
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


def build_app(origins: Sequence[str | None]) -> tuple[PathDispatcher, WebSocketWSGIApplication]:
    """The site (upgrades to /ws go to ChatHandler, the rest to ``page``) and its WebSocket app."""
    chat = WebSocketWSGIApplication(
        handler_cls=ChatHandler,
        max_message_size=MAX_MESSAGE,
        extensions=[ServerPerMessageDeflateFactory()],
        origins=origins,
    )
    return PathDispatcher({"/ws": chat}, default=page), chat


def main(argv: Sequence[str] | None = None) -> None:
    parser = arguments("ws4web chat demo (gevent pywsgi, no monkey-patching)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sock = listen(args.host, args.port)  # bound first: the origins name the port (--port 0)
    try:
        site, chat = build_app(page_origins(args.host, sock.getsockname()[1], args.origin))
    except ValueError as exc:  # a malformed --origin
        sock.close()
        parser.error(str(exc))
    # The same socket as a gevent one (a standard socket would block gevent's loop in accept()).
    listener = gevent.socket.socket(sock.family, sock.type, fileno=sock.detach())
    server = gevent.pywsgi.WSGIServer(listener, site, handler_class=WebSocketWSGIHandler, log=None)
    server.start()
    port = server.address[1]

    def stop() -> None:
        chat.shutdown(timeout=2.0)  # 1001 Going Away to every open chat
        server.stop(timeout=2.0)

    # gevent's own signal handlers run in the hub, so stop() may block cooperatively.
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(stop))
    gevent.signal_handler(signal.SIGINT, lambda: gevent.spawn(stop))
    print(banner(args.host, port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
