"""``ws4py.exc``: ws4py's exception names, bound to the ws4web exceptions raised in their place.

``except HandshakeError`` catches a refused handshake (:class:`~ws4web.exceptions.InvalidHandshake`,
with its ``.status``); ``except ProtocolException`` a protocol failure, and so on.
"""

from __future__ import annotations

from ...exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidPayload,
    PayloadTooBig,
    ProtocolError,
    WebSocketError,
)

__all__ = [
    "FrameTooLargeException",
    "HandshakeError",
    "InvalidBytesError",
    "ProtocolException",
    "StreamClosed",
    "TextFrameEncodingException",
    "UnsupportedFrameTypeException",
    "WebSocketException",
]

WebSocketException = WebSocketError
ProtocolException = ProtocolError
FrameTooLargeException = PayloadTooBig
UnsupportedFrameTypeException = ProtocolError
TextFrameEncodingException = InvalidPayload
InvalidBytesError = InvalidPayload
StreamClosed = ConnectionClosed
HandshakeError = InvalidHandshake
