"""Logging: the ``ws4web`` logger hierarchy and a connection id on every record.

Every logger in the library is a child of ``logging.getLogger("ws4web")``
(``ws4web.server``, ``ws4web.drivers.selector``, ``ws4web.adapters.cherrypy`` ...), so one
``logging.getLogger("ws4web").setLevel(...)`` tunes them all. Records about one
connection go through a :class:`ConnectionLog`: the message starts with
``[ws12 127.0.0.1:50312]`` and the record carries ``ws4web_id`` and
``ws4web_peer`` attributes for structured handlers and filters. (One
:class:`ConnectionLog` serves a connection's driver, protocol and handler.)

Levels: nothing at INFO or above during normal traffic; refused handshakes at
INFO (DEBUG for a ``process_request`` answer or a peer that sent nothing), see
:func:`ws4web.accept.log_refusal`; abnormal closes (no close frame, protocol
errors, handler crashes) at WARNING; all with the peer address; details at DEBUG.
"""

from __future__ import annotations

import itertools
import logging
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


class ConnectionLog:
    """Logs for one connection: tags each record with its id and peer.

    It has a :class:`logging.Logger`'s methods (``debug`` ... ``exception``,
    ``log``). Unlike a :class:`logging.LoggerAdapter` it builds nothing until a
    record is actually emitted: every connection has one, and most never log.
    """

    __slots__ = ("conn_id", "logger", "peer")

    def __init__(self, logger: logging.Logger, conn_id: str, peer: str = "") -> None:
        self.logger = logger
        self.conn_id = conn_id
        self.peer = peer

    @property
    def extra(self) -> dict[str, str]:
        """The attributes every record gets: ``ws4web_id`` and ``ws4web_peer``."""
        return {"ws4web_id": self.conn_id, "ws4web_peer": self.peer}

    def child(self, logger: logging.Logger) -> ConnectionLog:
        """The same connection's tags on another module's logger."""
        return ConnectionLog(logger, self.conn_id, self.peer)

    def isEnabledFor(self, level: int) -> bool:  # logging's name
        return self.logger.isEnabledFor(level)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.logger.isEnabledFor(level):
            return
        extra = self.extra
        if kwargs.get("extra"):
            extra.update(kwargs["extra"])
        kwargs["extra"] = extra
        kwargs.setdefault("stacklevel", 3)  # the caller's line, not this module's
        prefix = f"[{self.conn_id} {self.peer}] " if self.peer else f"[{self.conn_id}] "
        self.logger.log(level, prefix + str(msg), *args, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self.log(logging.ERROR, msg, *args, **kwargs)


def connection_log(logger: logging.Logger, sock: Any = None, conn_id: str | None = None) -> ConnectionLog:
    """A :class:`ConnectionLog` for ``sock``'s peer, with a fresh id unless one is given."""
    peer = ""
    if sock is not None:
        try:
            peer = format_peer(sock.getpeername())
        except (OSError, AttributeError, ValueError):
            peer = ""
    return ConnectionLog(logger, conn_id or new_id(), peer)
