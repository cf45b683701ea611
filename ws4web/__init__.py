"""ws4web: RFC 6455 WebSockets for every Python web stack.

The core (frames, protocol, handshake, messages) is sans-I/O and uses the
standard library only; adapters for CherryPy, gevent and ASGI live in
:mod:`ws4web.adapters` and import their framework only when imported.
"""

from .client import WebSocketClient, connect
from .drivers import Driver, Limits, PingWaiter
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidPayload,
    InvalidRedirect,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    ProxyError,
    SendQueueFull,
    WebSocketError,
)
from .frames import Close, CloseCode, Frame, Opcode
from .messages import (
    BinaryMessage,
    CloseControlMessage,
    Message,
    PingControlMessage,
    PongControlMessage,
    TextMessage,
)
from .protocol import CLIENT, SERVER, Protocol, Side, State
from .reconnect import Backoff, ReconnectingClient
from .server import WebSocketServer, serve
from .upgrade import accept_socket, connect_socket, wrap_socket
from .websocket import WebSocket

__version__ = "0.1.0"

__all__ = [
    "CLIENT",
    "SERVER",
    "Backoff",
    "BinaryMessage",
    "Close",
    "CloseCode",
    "CloseControlMessage",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Driver",
    "Frame",
    "InvalidHandshake",
    "InvalidPayload",
    "InvalidRedirect",
    "InvalidStatus",
    "InvalidURI",
    "Limits",
    "Message",
    "Opcode",
    "PayloadTooBig",
    "PingControlMessage",
    "PingWaiter",
    "PongControlMessage",
    "Protocol",
    "ProtocolError",
    "ProxyError",
    "ReconnectingClient",
    "SendQueueFull",
    "Side",
    "State",
    "TextMessage",
    "WebSocket",
    "WebSocketClient",
    "WebSocketError",
    "WebSocketServer",
    "accept_socket",
    "connect",
    "connect_socket",
    "serve",
    "wrap_socket",
]
