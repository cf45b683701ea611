"""ws4py's names on ws4web: port a ws4py program by replacing ``ws4py`` with ``ws4web.compat.ws4py`` in its imports.

The modules mirror ws4py's: :mod:`~ws4web.compat.ws4py.websocket`,
:mod:`~ws4web.compat.ws4py.messaging`, :mod:`~ws4web.compat.ws4py.exc`,
:mod:`~ws4web.compat.ws4py.framing`, :mod:`~ws4web.compat.ws4py.manager`,
:mod:`ws4web.compat.ws4py.client` (``threadedclient``, ``geventclient``) and
:mod:`ws4web.compat.ws4py.server` (``cherrypyserver``, ``geventserver``,
``wsgiutils``). Each name is ws4web's own class where ws4py's behaved the same,
and a thin subclass where ws4py's constructor or behaviour differed.
docs/migrating-from-ws4py.md has the table of every ws4py name, and what changed.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from typing import Any

from ...handshake import GUID

__all__ = ["WS_KEY", "WS_VERSION", "configure_logger", "format_addresses"]

#: The handshake's GUID (RFC 6455 §1.3), as bytes, as ws4py had it.
WS_KEY = GUID.encode("ascii")

#: The protocol versions spoken: RFC 6455's 13 only (ws4py also listed draft 8).
WS_VERSION = (13,)


def configure_logger(stdout: bool = True, filepath: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send ws4web's log records (logger ``ws4web``, where ws4py used ``ws4py``) to
    stdout and/or a rotating file, as ws4py's function did; returns that logger."""
    logger = logging.getLogger("ws4web")
    logger.setLevel(level)
    formatter = logging.Formatter("[%(asctime)s] %(levelname)s %(message)s")
    handlers: list[logging.Handler] = []
    if filepath:
        handlers.append(logging.handlers.RotatingFileHandler(filepath, maxBytes=10485760, backupCount=3))
    if stdout:
        handlers.append(logging.StreamHandler(sys.stdout))
    for handler in handlers:
        handler.setLevel(level)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def format_addresses(ws: Any) -> str:
    """``[Local => ip:port | Remote => ip:port]`` for a WebSocket over TCP, as ws4py printed it."""
    me, peer = ws.local_address, ws.peer_address
    if isinstance(me, tuple) and isinstance(peer, tuple):
        return f"[Local => {me[0]}:{me[1]} | Remote => {peer[0]}:{peer[1]}]"
    return f"[Bound to {me!r}]"
