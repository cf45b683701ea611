"""The chat demo that ``ws4web serve`` runs: one handler, its page, and an app per stack.

``handler.ChatHandler`` is the room; ``stdlib_app``, ``cherrypy_app``, ``gevent_app`` and
``asgi_app`` mount it unchanged, each with a ``main(argv)``. The page (``index.html``) is
package data, so the demo runs from an installed ws4web; README.md says how to start it.
"""

from __future__ import annotations

from importlib import resources

#: the stacks with a chat app here: ``ws4web.demo.<name>_app``
ADAPTERS = ("stdlib", "cherrypy", "gevent", "asgi")


def page() -> bytes:
    """The chat page: one HTML file that opens a WebSocket to ``/ws`` on its own host."""
    return resources.files(__name__).joinpath("index.html").read_bytes()
