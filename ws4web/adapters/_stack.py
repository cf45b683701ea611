"""Finding a server's request object up the call stack, for servers that pass the application no reference to it.

cheroot (under CherryPy, or any WSGI app it serves) and Werkzeug's development
server keep the connection in the object whose method called the application;
to take the socket over, the adapters look for that object among the callers'
``self``. Used by :mod:`ws4web.adapters.cherrypy` and :mod:`ws4web.adapters.middleware`.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["cheroot_request", "find_on_stack"]


def find_on_stack(cls: type) -> Any:
    """The nearest ``self`` up this thread's call stack that is a ``cls``, or None.

    Reading a frame's ``f_locals`` builds a dict of its locals: callers walk once
    per connection and keep what they found.
    """
    frame = sys._getframe(1)
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, cls):
                return candidate
            frame = frame.f_back  # type: ignore[assignment]
    finally:
        del frame
    return None


def cheroot_request() -> Any:
    """The cheroot ``HTTPRequest`` whose application call is on this thread's stack, if any."""
    server_module = sys.modules.get("cheroot.server")
    if server_module is None:  # cheroot is not even imported: not serving this
        return None
    return find_on_stack(server_module.HTTPRequest)
