"""``ws4py.messaging``: ws4web's message classes, under the names ws4py gave them.

One difference: ``Message`` takes only the payload bytes (the class is the
opcode), where ws4py's took ``(opcode, data, encoding)``.
"""

from __future__ import annotations

from ...messages import (
    BinaryMessage,
    CloseControlMessage,
    Message,
    PingControlMessage,
    PongControlMessage,
    TextMessage,
)

__all__ = [
    "BinaryMessage",
    "CloseControlMessage",
    "Message",
    "PingControlMessage",
    "PongControlMessage",
    "TextMessage",
]
