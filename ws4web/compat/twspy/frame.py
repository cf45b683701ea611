"""``twspy.frame``: :class:`Frame` and :class:`ControlFrame` (ws4web frames with ``payload``), and the constants."""

from __future__ import annotations

from ...frames import Close, CloseCode, Opcode
from ...frames import Frame as _Frame

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
    "ControlFrame",
    "Frame",
    "twspy_frame",
]

OPCODE_CONTINUATION = Opcode.CONTINUATION
OPCODE_TEXT = Opcode.TEXT
OPCODE_BINARY = Opcode.BINARY
OPCODE_CLOSE = Opcode.CLOSE
OPCODE_PING = Opcode.PING
OPCODE_PONG = Opcode.PONG

CLOSE_NORMAL = CloseCode.NORMAL_CLOSURE
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
CLOSE_PROTOCOL_ERROR = CloseCode.PROTOCOL_ERROR
CLOSE_NOACCEPT_DTYPE = CloseCode.UNSUPPORTED_DATA
CLOSE_INVALID_DATA = CloseCode.INVALID_DATA
CLOSE_POLICY = CloseCode.POLICY_VIOLATION
CLOSE_MESSAGE_TOOBIG = CloseCode.MESSAGE_TOO_BIG
CLOSE_MISSING_EXTENSIONS = CloseCode.MANDATORY_EXTENSION
CLOSE_UNABLE = CloseCode.INTERNAL_ERROR


class Frame(_Frame):
    """``Frame(opcode, payload, masking_key='', mask=False, final=True, rsv1, rsv2, rsv3)``.

    A ``str`` payload is sent as its UTF-8 bytes. ``masking_key`` and ``mask`` are
    accepted and ignored: the connection masks what a client sends and nothing a
    server sends, as RFC 6455 §5.3 requires.
    """

    __slots__ = ()

    def __init__(
        self,
        opcode: int,
        payload: str | bytes | bytearray = b"",
        masking_key: bytes | str = b"",
        mask: bool = False,
        final: bool = True,
        rsv1: bool = False,
        rsv2: bool = False,
        rsv3: bool = False,
    ) -> None:
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        super().__init__(Opcode(opcode), data, bool(final), bool(rsv1), bool(rsv2), bool(rsv3))

    @property
    def payload(self) -> bytes:
        return self.data

    @property
    def final(self) -> bool:
        return self.fin

    def pack(self) -> bytes:
        """The frame as bytes, unmasked (a server's frame)."""
        return b"".join(self.serialize(mask=False))

    def fragment(self, fragment_size: int, mask: bool = False) -> list[Frame]:
        """This frame's payload split into frames of at most ``fragment_size`` bytes."""
        if fragment_size < 1:
            raise ValueError("fragment_size must be at least 1")
        data = self.data
        chunks = [data[i : i + fragment_size] for i in range(0, len(data), fragment_size)] or [b""]
        return [
            Frame(self.opcode if i == 0 else Opcode.CONTINUATION, chunk, final=i == len(chunks) - 1)
            for i, chunk in enumerate(chunks)
        ]

    def __str__(self) -> str:
        return f"<{type(self).__name__} opcode=0x{self.opcode:X} len={len(self.data)}>"


class ControlFrame(Frame):
    """A close, ping or pong frame."""

    __slots__ = ()

    def fragment(self, fragment_size: int, mask: bool = False) -> list[Frame]:
        raise TypeError("control frames must not be fragmented")  # RFC 6455 §5.5

    def unpack_close(self) -> tuple[int | None, str]:
        """A close frame's ``(code, reason)``; ``(None, '')`` for an empty one."""
        if not self.data:
            return None, ""
        close = Close.parse(self.data)
        return close.code, close.reason


def twspy_frame(frame: _Frame) -> Frame:
    """A ws4web frame as twspy's :class:`Frame` (or :class:`ControlFrame`)."""
    cls = ControlFrame if frame.is_control else Frame
    return cls(frame.opcode, frame.data, final=frame.fin, rsv1=frame.rsv1, rsv2=frame.rsv2, rsv3=frame.rsv3)
