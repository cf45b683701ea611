"""Logging: the ``ws4web`` logger hierarchy and a connection id on every record.

Every logger in the library is a child of ``logging.getLogger("ws4web")``
(``ws4web.server``, ``ws4web.drivers.selector``, ``ws4web.adapters.cherrypy`` ...), so one
``logging.getLogger("ws4web").setLevel(...)`` tunes them all. Records about one
connection go through a :class:`ConnectionLog`: the message starts with
``[ws12 127.0.0.1:50312]`` and the record carries ``ws4web_id`` and
``ws4web_peer`` attributes for structured handlers and filters. (One
:class:`ConnectionLog` serves a connection's driver, protocol and handler.)

Levels: ERROR for a handler that raised (with its traceback); WARNING for what
an operator must fix (a server that cannot hand its socket over, accept()
failing); INFO for refused handshakes and abnormal closes; DEBUG for each open
and close and the details. The library adds no handler, so with no logging
configured Python's last-resort handler prints WARNING and above to stderr: a
crashing handler is never silent. docs/logging.md is the manual.

Secrets: a URL or request target goes into a record, an exception message or a
thread name only through :func:`redact_url` / :func:`redact_target` (see
docs/security.md, "Secrets in logs").
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import Any

__all__ = ["ConnectionLog", "connection_log", "format_peer", "new_id", "redact_target", "redact_url"]

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


#: What stands for a removed secret.
REDACTED = "***"

# Characters that could forge a log line or hide text on a terminal: C0 and C1
# controls, space, DEL, and the Unicode line and paragraph separators.
_UNPRINTABLE = re.compile("[\x00-\x20\x7f-\x9f\u2028\u2029]")
# The authority of a URL ends at the first "/", "?" or "#" (RFC 3986 §3.2).
_AUTHORITY_END = re.compile(r"[/?#]")


def _escape(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), text)


def _redact_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        if eq:
            parts.append(f"{name}={REDACTED}" if value else item)
        else:
            # A bare item (``?abc123``) may be the secret itself: nothing says it is a name.
            parts.append(REDACTED if item else "")
    return "&".join(parts)


def redact_target(target: str) -> str:
    """A request target (``/path?query``) fit for a log record or an exception message.

    Every query value is replaced by ``***`` and the names are kept
    (``/ws?access_token=***&room=***``); a query item without ``=`` is replaced
    whole, since it may be the token itself; a fragment becomes ``#***``.
    Control characters and spaces are percent-encoded, so that a target cannot
    forge a log line. The path is kept: an application that puts secrets in path
    segments must not log its paths at all.

    **Every door** (the servers and adapters) **must log request targets through
    this function**: browsers can only pass a token to a WebSocket in the query
    string (``?access_token=...``), so a raw target in a WARNING about a refused
    handshake writes credentials into the log.
    """
    before, hashmark, fragment = target.partition("#")
    path, qmark, query = before.partition("?")
    redacted = path + qmark + _redact_query(query) if qmark else path
    if hashmark:
        redacted += "#" + (REDACTED if fragment else "")
    return _escape(redacted)


def redact_url(url: str) -> str:
    """``url`` fit for a log record, an exception message or a thread name.

    The user information (``user:password@``) becomes ``***@``, and the rest
    goes through :func:`redact_target`: ``ws://***@host/chat?api_key=***``.
    Works on any text, even one that is not a valid URL (a proxy given without
    a scheme, a broken ``Location``), and never raises.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or any(c in scheme for c in "/?#"):
        scheme, sep, rest = "", "", url  # no scheme: the text starts with the authority (or a path)
    found = _AUTHORITY_END.search(rest)
    end = found.start() if found else len(rest)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = f"{REDACTED}@{authority.rpartition('@')[2]}"
    return _escape(scheme + sep + authority) + redact_target(tail)
