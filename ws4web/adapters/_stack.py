"""Finding a server's request object up the call stack, for servers that pass the application no reference to it.

cheroot (under CherryPy, or any WSGI app it serves) and Werkzeug's development
server keep the connection in the object whose method called the application;
to take the socket over, the adapters look for that object among the callers'
``self``. Used by :mod:`ws4web.adapters.cherrypy` and :mod:`ws4web.adapters.middleware`.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

__all__ = ["cheroot_request", "find_on_stack", "method_codes"]


@functools.cache
def method_codes(cls: type) -> frozenset[int]:
    """The ids of the code objects of the functions defined in ``cls`` itself.

    Ids, because hashing a code object hashes its bytecode and constants; the class
    keeps its functions' code objects alive, so their ids stay theirs.
    """
    return frozenset(id(value.__code__) for value in vars(cls).values() if isinstance(value, types.FunctionType))


def find_on_stack(cls: type, codes: frozenset[int] = frozenset()) -> Any:
    """The nearest ``self`` up this thread's call stack that is a ``cls``, or None.

    Reading a frame's ``f_locals`` builds a dict of all its locals, which over
    CherryPy's deep stack was a fifth of a handshake's CPU: when ``codes`` is given
    (:func:`method_codes` of ``cls``), only the frames running those functions are
    read first, and every frame only if none of them holds one (a subclass that
    overrides the method on the stack).
    """
    for passes in (True, False) if codes else (False,):
        frame = sys._getframe(1)
        try:
            while frame is not None:
                if not passes or id(frame.f_code) in codes:
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
    request_cls = server_module.HTTPRequest
    return find_on_stack(request_cls, method_codes(request_cls))
