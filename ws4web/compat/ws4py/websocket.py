"""``ws4py.websocket``: the handler class (ws4web's own) and ws4py's :class:`EchoWebSocket`."""

from __future__ import annotations

from ...messages import Message
from ...websocket import WebSocket

__all__ = ["EchoWebSocket", "WebSocket"]


class EchoWebSocket(WebSocket):
    """Sends every message back, text as text and binary as binary."""

    def received_message(self, message: Message) -> None:
        self.send(message.data, message.is_binary)
