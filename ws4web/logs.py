"""Logging: the ``ws4web`` logger hierarchy and a connection id on every record.

Every logger in the library is a child of ``logging.getLogger("ws4web")``
(``ws4web.server``, ``ws4web.reactor``, ``ws4web.adapters.cherrypy`` ...), so one
``logging.getLogger("ws4web").setLevel(...)`` tunes them all. Records about one
connection go through a :class:`ConnectionLog`: the message starts with
``[ws12 127.0.0.1:50312]`` and the record carries ``ws4web_id`` and
``ws4web_peer`` attributes for structured handlers and filters.

Levels: nothing at INFO or above during normal traffic; refused or failed
handshakes and abnormal closes (no close frame, protocol errors, handler
crashes) at WARNING with the peer address; details at DEBUG.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["ConnectionLog", "connection_log", "format_peer", "new_id"]

# A library never configures output: the application decides (PEP 282 advice).
logging.getLogger("ws4web").addHandler(logging.NullHandler())

_ids = itertools.count(1)


def new_id() -> str:
    """A process-unique connection id (``ws1``, ``ws2`` ...); ``next`` on a count is atomic."""
    return f"ws{next(_ids)}"


def format_peer(address: Any) -> str:
    """``host:port`` for an IPv4/IPv6 socket address, ``[v6]:port`` for IPv6, else str()."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "" if address is None else str(address)


class ConnectionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that tags each record with one connection's id and peer."""

    def __init__(self, logger: logging.Logger, conn_id: str, peer: str = "") -> None:
        super().__init__(logger, {"ws4web_id": conn_id, "ws4web_peer": peer})
        self.conn_id = conn_id
        self.peer = peer
        self._prefix = f"[{conn_id} {peer}] " if peer else f"[{conn_id}] "

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra")
        kwargs["extra"] = dict(self.extra or {}, **extra) if extra else self.extra
        return self._prefix + str(msg), kwargs

    def child(self, logger: logging.Logger) -> ConnectionLog:
        """The same connection's tags on another module's logger."""
        return ConnectionLog(logger, self.conn_id, self.peer)


def connection_log(logger: logging.Logger, sock: Any = None, conn_id: str | None = None) -> ConnectionLog:
    """A :class:`ConnectionLog` for ``sock``'s peer, with a fresh id unless one is given."""
    peer = ""
    if sock is not None:
        try:
            peer = format_peer(sock.getpeername())
        except (OSError, AttributeError, ValueError):
            peer = ""
    return ConnectionLog(logger, conn_id or new_id(), peer)
