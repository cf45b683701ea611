"""``twspy.errors``: :class:`SocketClosed`, and twspy's other exception names bound to ws4web's."""

from __future__ import annotations

import ssl

from ...exceptions import ConnectionClosed, InvalidHandshake
from ...frames import CloseCode

__all__ = ["HandshakeError", "SSLError", "SocketClosed"]

#: A refused or invalid opening handshake (``.status``: the HTTP status).
HandshakeError = InvalidHandshake

#: TLS failures are the standard library's.
SSLError = ssl.SSLError


class SocketClosed(ConnectionClosed):
    """The connection closed: ``code`` (None when the close frame had no code) and ``reason``."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(CloseCode.NO_STATUS_RCVD if code is None else code, reason)
        self.code_sent = code

    @property
    def message(self) -> str:
        """``[1000] reason``, as twspy printed it."""
        return f"[{self.code}] {self.reason}" if self.code != CloseCode.NO_STATUS_RCVD else self.reason
