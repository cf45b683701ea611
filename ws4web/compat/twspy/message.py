"""``twspy.message``: ws4web's messages with twspy's ``payload`` (``str`` for text, ``bytes`` for binary)."""

from __future__ import annotations

from ... import messages
from ...messages import Message
from .frame import Frame

__all__ = ["BinaryMessage", "Message", "TextMessage", "twspy_message"]


class TextMessage(messages.TextMessage):
    """``TextMessage(payload)``: a text message; ``payload`` is the ``str``."""

    __slots__ = ()

    @property
    def payload(self) -> str:
        return self.text

    def frame(self, mask: bool = False) -> Frame:
        return Frame(self.opcode, self.data)

    def fragment(self, fragment_size: int, mask: bool = False) -> list[Frame]:
        return self.frame().fragment(fragment_size)


class BinaryMessage(messages.BinaryMessage):
    """``BinaryMessage(payload)``: a binary message; ``payload`` is the bytes."""

    __slots__ = ()

    def __init__(self, payload: bytes | bytearray | memoryview = b"") -> None:
        super().__init__(bytes(payload))

    @property
    def payload(self) -> bytes:
        return self.data

    def frame(self, mask: bool = False) -> Frame:
        return Frame(self.opcode, self.data)

    def fragment(self, fragment_size: int, mask: bool = False) -> list[Frame]:
        return self.frame().fragment(fragment_size)


def twspy_message(message: Message) -> TextMessage | BinaryMessage:
    """A received ws4web message as twspy's (the payload is not copied)."""
    if message.is_text:
        return TextMessage(message.data)
    return BinaryMessage(message.data)
