"""The chat demo that ``ws4web serve`` runs: one handler, its page, and an app per stack.

``handler.ChatHandler`` is the room; ``stdlib_app``, ``cherrypy_app``, ``gevent_app`` and
``asgi_app`` mount it unchanged, each with a ``main(argv)``. The page (``index.html``) is
package data, so the demo runs from an installed ws4web; README.md says how to start it.

Every app admits WebSocket upgrades from its own page only (``origins=``, see
docs/security.md): from the origin it is served at, computed from the address it is
bound to (:func:`page_origins`), and from clients that send no ``Origin`` (not
browsers: the ``ws4web`` command-line client, scripts). Another site's page, which a
member may visit in the same browser, gets 403. Behind a proxy, or when people
reach the server by another name, give the public origin(s): ``--origin
https://chat.example.com`` (repeatable) or ``WS4WEB_DEMO_ORIGINS="https://chat.example.com"``
(comma-separated; also read by ``ws4web serve``).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence
from importlib import resources

from ..auth import OriginPolicy

#: the stacks with a chat app here: ``ws4web.demo.<name>_app``
ADAPTERS = ("stdlib", "cherrypy", "gevent", "asgi")

#: the largest WebSocket message the apps take (a line of MAX_TEXT characters fits, as JSON);
#: a bigger one closes the connection with 1009
MAX_MESSAGE = 2**14

#: the environment variable that replaces the computed origins (comma-separated)
ORIGINS_VARIABLE = "WS4WEB_DEMO_ORIGINS"

_WILDCARDS = ("", "0.0.0.0", "::")


def page() -> bytes:
    """The chat page: one HTML file that opens a WebSocket to ``/ws`` on its own host."""
    return resources.files(__name__).joinpath("index.html").read_bytes()


def page_origins(host: str, port: int, configured: Sequence[str] = ()) -> list[str | None]:
    """The ``origins=`` of an app bound to ``host:port``: the page's own origin(s), and None.

    ``configured`` (``--origin``), else ``$WS4WEB_DEMO_ORIGINS``, replaces the computed
    list. Computed: ``http://host:port``; on loopback also the other names of loopback a
    browser may use (``localhost``); on a wildcard address, loopback and this machine's
    host name. None admits clients that send no Origin: browsers always send one, so
    that cannot let another site's page in. Raises ValueError for a malformed origin.
    """
    if not configured:
        configured = [entry.strip() for entry in os.environ.get(ORIGINS_VARIABLE, "").split(",") if entry.strip()]
    if configured:
        origins: list[str | None] = list(configured)
    else:
        if host in _WILDCARDS:
            hosts = ["127.0.0.1", "localhost", "[::1]", socket.gethostname()]
        elif host in ("127.0.0.1", "localhost", "::1"):
            hosts = ["127.0.0.1", "localhost", "[::1]"]
        else:
            hosts = [f"[{host}]" if ":" in host else host]
        origins = [f"http://{name}:{port}" for name in hosts]
    origins.append(None)
    OriginPolicy(origins)  # malformed entries fail here, at start-up, not at the first browser
    return origins


def arguments(description: str) -> argparse.ArgumentParser:
    """The command line every app takes: ``--host``, ``--port``, ``--origin``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (default: 8080)")
    parser.add_argument(
        "--origin",
        action="append",
        default=[],
        metavar="URL",
        help=f"an origin whose pages may join, e.g. https://chat.example.com behind a proxy (repeatable; "
        f"default: ${ORIGINS_VARIABLE}, else the address served)",
    )
    return parser


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the app is built: the origins need the port (--port 0)."""
    family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=1024)


def banner(host: str, port: int) -> str:
    """The line every app prints once it listens (tests and people read the URL from it)."""
    shown = f"[{host}]" if ":" in host else host
    return f"ws4web chat on http://{shown}:{port}/  (Ctrl-C to stop)"
