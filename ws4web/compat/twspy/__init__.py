"""twspy's names on ws4web: port a twspy program by replacing ``twspy`` with ``ws4web.compat.twspy`` in its imports.

twspy's :class:`~ws4web.compat.twspy.websocket.websocket` (a socket that upgrades itself and moves frames),
:class:`~ws4web.compat.twspy.connection.Connection` (messages, with ``onopen``/``onmessage``/``onclose``
handlers), :class:`~ws4web.compat.twspy.server.Server` (per-client hooks, here on ws4web's server), its
frames, messages (``message.payload``), ``OPCODE_*`` and ``CLOSE_*`` constants
and exceptions. docs/migrating-from-twspy.md has the table of every twspy name.
"""

from __future__ import annotations

from .connection import Connection
from .errors import HandshakeError, SocketClosed, SSLError
from .frame import (
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOOBIG,
    CLOSE_MISSING_EXTENSIONS,
    CLOSE_NOACCEPT_DTYPE,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNABLE,
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    ControlFrame,
    Frame,
)
from .message import BinaryMessage, Message, TextMessage
from .server import Client, Server
from .websocket import websocket

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_MESSAGE_TOOBIG",
    "CLOSE_MISSING_EXTENSIONS",
    "CLOSE_NOACCEPT_DTYPE",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNABLE",
    "OPCODE_BINARY",
    "OPCODE_CLOSE",
    "OPCODE_CONTINUATION",
    "OPCODE_PING",
    "OPCODE_PONG",
    "OPCODE_TEXT",
    "BinaryMessage",
    "Client",
    "Connection",
    "ControlFrame",
    "Frame",
    "HandshakeError",
    "Message",
    "SSLError",
    "Server",
    "SocketClosed",
    "TextMessage",
    "websocket",
]
