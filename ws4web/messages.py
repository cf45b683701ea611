"""Messages as applications see them, and the assembly of frames into messages.

The class names are the ones ws4py users know: :class:`TextMessage`,
:class:`BinaryMessage`, :class:`PingControlMessage`, :class:`PongControlMessage`,
:class:`CloseControlMessage`. ``message.data`` is always the payload bytes;
a text message decodes to ``str`` only when asked (``message.text`` or
``str(message)``), so an echo never pays for a decode.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Union

from .frames import Close, CloseCode, Frame, Opcode

__all__ = [
    "Assembler",
    "BinaryMessage",
    "CloseControlMessage",
    "Data",
    "Message",
    "PingControlMessage",
    "PongControlMessage",
    "TextMessage",
    "iter_fragments",
]

#: What ``send()`` accepts for one message: text, bytes, or a ready Message.
Data = Union[str, bytes, bytearray, memoryview, "Message"]


class Message:
    """A complete message: an opcode and its payload bytes."""

    opcode: Opcode = Opcode.BINARY
    __slots__ = ("data",)

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    @property
    def is_text(self) -> bool:
        return self.opcode is Opcode.TEXT

    @property
    def is_binary(self) -> bool:
        return self.opcode is Opcode.BINARY

    # ws4py compatibility: a received message is always complete.
    completed = True

    def __len__(self) -> int:
        return len(self.data)

    def __bytes__(self) -> bytes:
        return bytes(self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.opcode is other.opcode and self.data == other.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 32 else bytes(self.data[:29]) + b"..."
        return f"{type(self).__name__}({data!r}, len={len(self.data)})"


class TextMessage(Message):
    """A text message; ``data`` holds valid UTF-8 (the protocol checked it)."""

    opcode = Opcode.TEXT
    __slots__ = ("_text",)

    def __init__(self, data: bytes | str = b"") -> None:
        if isinstance(data, str):
            self._text: str | None = data
            data = data.encode()
        else:
            self._text = None
        super().__init__(data)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.data.decode()
        return self._text

    def __str__(self) -> str:
        return self.text


class BinaryMessage(Message):
    """A binary message."""

    opcode = Opcode.BINARY
    __slots__ = ()


class PingControlMessage(Message):
    opcode = Opcode.PING
    __slots__ = ()


class PongControlMessage(Message):
    opcode = Opcode.PONG
    __slots__ = ()


class CloseControlMessage(Message):
    """A close frame's payload: ``code`` and ``reason``."""

    opcode = Opcode.CLOSE
    __slots__ = ("code", "reason")

    def __init__(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        super().__init__(Close(code, reason).serialize())
        self.code = code
        self.reason = reason


class Assembler:
    """Turns the data frames of one connection into messages.

    The protocol has already checked sequencing, sizes and UTF-8, so this only
    joins fragments, in memory proportional to the message's bytes whatever its
    fragmentation: empty fragments are not kept, small ones are copied into a
    shared tail, large ones (``LARGE_FRAGMENT`` bytes and more) are kept as they
    are and copied once, by the final join.
    """

    #: Fragments at least this large are kept whole; smaller ones join the tail.
    LARGE_FRAGMENT = 4096

    __slots__ = ("_opcode", "_parts", "_tail")

    def __init__(self) -> None:
        self._opcode: Opcode | None = None
        # The message so far: large fragments and earlier tails in order (a list only
        # once a large fragment came), then the tail of small fragments.
        self._parts: list[bytes | bytearray] | None = None
        self._tail: bytearray | None = None

    def feed(self, frame: Frame) -> Message | None:
        """Take one data frame; return the message it completes, if any."""
        opcode = frame.opcode
        if opcode is not Opcode.CONTINUATION:
            if frame.fin:
                return TextMessage(frame.data) if opcode is Opcode.TEXT else BinaryMessage(frame.data)
            self._opcode = opcode
            self._parts = None
            self._tail = None
        data = frame.data
        if data:
            tail = self._tail
            if len(data) >= self.LARGE_FRAGMENT:
                if self._parts is None:
                    self._parts = []
                if tail is not None:
                    self._parts.append(tail)
                    self._tail = None
                self._parts.append(data)
            elif tail is None:
                self._tail = bytearray(data)
            else:
                tail += data  # in place
        if not frame.fin:
            return None
        parts, tail = self._parts, self._tail
        self._parts = self._tail = None
        if parts is None:
            data = b"" if tail is None else bytes(tail)
        else:
            if tail is not None:
                parts.append(tail)
            # bytes() of a bytes object is that object: a lone large fragment is not copied.
            data = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        first, self._opcode = self._opcode, None
        return TextMessage(data) if first is Opcode.TEXT else BinaryMessage(data)


def iter_fragments(
    chunks: Iterable[str | bytes | bytearray | memoryview], binary: bool | None = None
) -> Iterator[tuple[Opcode, bytes, bool]]:
    """(opcode, payload, fin) for each fragment of a message given as an iterable.

    The first chunk's type picks text or binary unless ``binary`` says; the last
    chunk is known by looking one ahead, so no empty closing frame is needed.
    An empty iterable sends one empty message.
    """
    iterator = iter(chunks)
    try:
        current = next(iterator)
    except StopIteration:
        yield (Opcode.BINARY if binary else Opcode.TEXT), b"", True
        return
    if binary is None:
        binary = not isinstance(current, str)
    opcode = Opcode.BINARY if binary else Opcode.TEXT
    for upcoming in iterator:
        yield opcode, _to_bytes(current), False
        opcode = Opcode.CONTINUATION
        current = upcoming
    yield opcode, _to_bytes(current), True


def _to_bytes(chunk: str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode()
    return bytes(chunk) if not isinstance(chunk, bytes) else chunk
