"""RFC 6455 framing: opcodes, close codes, frames, close payloads and masking.

Everything here is pure computation on bytes. :meth:`Frame.parse` is a generator
that pulls from a :class:`~ws4web.streams.StreamReader`, so it works with any
chunking of the input; it enforces every rule that one frame can break on its own
(RFC 6455 §5.2, §5.5). Rules about sequences of frames live in
:mod:`ws4web.protocol`.
"""

from __future__ import annotations

import enum
import importlib
import os
import struct
from collections.abc import Callable, Generator
from typing import Any

from .exceptions import InvalidPayload, PayloadTooBig, ProtocolError
from .streams import StreamReader

__all__ = [
    "CONTROL_OPCODES",
    "DATA_OPCODES",
    "Close",
    "CloseCode",
    "Frame",
    "Opcode",
    "apply_mask",
    "fast_parse_frames",
    "frame_wire",
    "is_valid_close_code",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2, §11.8)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    # ws4py-style short names
    CONT = 0x0


DATA_OPCODES = frozenset((Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY))
CONTROL_OPCODES = frozenset((Opcode.CLOSE, Opcode.PING, Opcode.PONG))

# Looking an int up in a dict is several times cheaper than calling Opcode(n).
_OPCODES: dict[int, Opcode] = {op.value: op for op in Opcode}


class CloseCode(enum.IntEnum):
    """Close status codes from the IANA "WebSocket Close Code Number" registry."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    # 1004 is reserved.
    NO_STATUS_RCVD = 1005  # never on the wire: no code in the close frame
    ABNORMAL_CLOSURE = 1006  # never on the wire: no close frame at all
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# Codes that may appear in a close frame: the registered ones except 1004 (reserved)
# and 1005/1006/1015 (RFC 6455 §7.4.1 says they MUST NOT be sent), plus 3000-4999
# (§7.4.2: registered libraries/frameworks, and private use). Everything else
# received is a protocol error.
_WIRE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may be carried by a close frame."""
    return code in _WIRE_CODES or 3000 <= code <= 4999


# The optional C accelerator (ws4web/_speedups.c); WS4WEB_NO_SPEEDUPS=1 ignores it, to
# compare against pure Python. It is all or nothing: the masking, the frame builder
# and the receive fast path (used by ws4web.protocol) come from the same build.
_speedups: Any = None
if not os.environ.get("WS4WEB_NO_SPEEDUPS"):
    try:
        _speedups = importlib.import_module("ws4web._speedups")
    except ImportError:  # pragma: no cover - depends on the build
        pass
_c_apply_mask: Callable[[bytes | bytearray | memoryview, bytes], bytes] | None = (
    None if _speedups is None else _speedups.apply_mask
)


# Above this size the pure-Python mask XORs each of the four byte lanes with a
# translation table (four C-level passes); below it one big-integer XOR is cheaper.
_LANES_FROM = 4096
_xor_tables: list[bytes | None] = [None] * 256


def _xor_table(key: int) -> bytes:
    table = _xor_tables[key]
    if table is None:
        table = _xor_tables[key] = bytes(byte ^ key for byte in range(256))
    return table


def _py_apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 §5.3).

    No per-byte Python loop: a big-integer XOR for short payloads, and for long
    ones a ``bytes.translate`` per byte lane (every 4th byte shares a key byte).
    """
    n = len(data)
    if n < _LANES_FROM:
        if n == 0:
            return b""
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")
    out = bytearray(data)
    for lane in range(4):
        out[lane::4] = out[lane::4].translate(_xor_table(mask[lane]))
    return bytes(out)


apply_mask = _c_apply_mask or _py_apply_mask

_pack_header = struct.Struct("!BB").pack
_pack_header16 = struct.Struct("!BBH").pack
_pack_header64 = struct.Struct("!BBQ").pack
_unpack16 = struct.Struct("!H").unpack_from
_unpack64 = struct.Struct("!Q").unpack_from

# Received payloads up to this size are sliced off the buffer; larger ones are taken
# through a view (StreamReader.take), which copies once.
_SLICE_LIMIT = 4096

# Payloads up to this size are sent in one piece with their header; larger ones go
# out as two buffers so a big payload is never copied only to prepend a header.
_JOIN_LIMIT = 16384


class Frame:
    """One WebSocket frame, payload unmasked.

    Frames are plain values; the protocol decides what a frame means in its
    context. Any opcode, fin and RSV combination can be built and serialized, for
    tests and for low-level users.
    """

    # ws4web/_speedups.c fills these slots itself (new_frame): a new field goes there too.
    __slots__ = ("data", "fin", "opcode", "rsv1", "rsv2", "rsv3")

    def __init__(
        self,
        opcode: Opcode,
        data: bytes = b"",
        fin: bool = True,
        rsv1: bool = False,
        rsv2: bool = False,
        rsv3: bool = False,
    ) -> None:
        self.opcode = opcode
        self.data = data
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 32 else bytes(self.data[:29]) + b"..."
        flags = "".join(
            name for name, on in (("F", self.fin), ("1", self.rsv1), ("2", self.rsv2), ("3", self.rsv3)) if on
        )
        return f"Frame({self.opcode.name}, {data!r}, len={len(self.data)}, flags={flags or '-'})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (self.opcode, self.data, self.fin, self.rsv1, self.rsv2, self.rsv3) == (
            other.opcode,
            other.data,
            other.fin,
            other.rsv1,
            other.rsv2,
            other.rsv3,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable value object

    @property
    def is_control(self) -> bool:
        return self.opcode >= 8

    @classmethod
    def parse(
        cls,
        reader: StreamReader,
        *,
        mask: bool,
        max_size: int | None = None,
        rsv_mask: int = 0,
    ) -> Generator[None, None, Frame]:
        """Parse one frame from ``reader``, waiting for bytes as needed.

        ``mask`` says whether frames must be masked (a server reads masked client
        frames; RFC 6455 §5.1 makes either mismatch fatal). ``max_size`` bounds
        the payload of data frames and is checked on the header, before one byte
        of payload is read. ``rsv_mask`` holds the RSV bits (0x40, 0x20, 0x10)
        that negotiated extensions own; any other RSV bit is a protocol error.
        """
        while True:
            frame = cls.parse_buffered(reader, mask=mask, max_size=max_size, rsv_mask=rsv_mask)
            if frame is not None:
                return frame
            if reader.eof:
                raise EOFError("stream ended within a frame")
            yield

    @classmethod
    def parse_buffered(
        cls,
        reader: StreamReader,
        *,
        mask: bool,
        max_size: int | None = None,
        rsv_mask: int = 0,
    ) -> Frame | None:
        """Take one frame from ``reader``'s buffer if it holds a whole one, else None.

        The rules are checked as soon as the header is buffered, whether or not
        the payload is: a bad header fails before its payload arrives. This is
        the fast path (no generator when a recv() brought whole frames);
        :meth:`parse` retries it as bytes arrive.
        """
        buffer = reader.buffer
        size = len(buffer)
        if size < 2:
            return None
        b0 = buffer[0]
        b1 = buffer[1]
        opcode = _OPCODES.get(b0 & 0x0F)
        if opcode is None:  # §5.2: reserved opcodes 0x3-0x7, 0xB-0xF
            raise ProtocolError(f"reserved opcode {b0 & 0x0F:#x}")
        if b0 & 0x70 & ~rsv_mask:  # §5.2: RSV bits need a negotiated extension
            raise ProtocolError("RSV bit set without a negotiated extension")
        masked = b1 & 0x80
        if bool(masked) != mask:  # §5.1
            raise ProtocolError("unmasked client frame" if mask else "masked server frame")
        length = b1 & 0x7F
        if opcode >= 8:  # §5.5: control frames
            if not b0 & 0x80:
                raise ProtocolError("fragmented control frame")
            if length > 125:
                raise ProtocolError("control frame payload over 125 bytes")
        header_size = 2
        if length >= 126:
            header_size = 4 if length == 126 else 10
            if size < header_size:
                return None
            if length == 126:
                (length,) = _unpack16(buffer, 2)
            else:
                (length,) = _unpack64(buffer, 2)
                if length >> 63:  # §5.2: the most significant bit MUST be 0
                    raise ProtocolError("64-bit payload length with the top bit set")
        if max_size is not None and length > max_size and opcode < 8:
            raise PayloadTooBig(f"frame of {length} bytes exceeds the limit of {max_size}")
        if masked:
            header_size += 4
        if size < header_size + length:
            return None
        end = header_size + length
        if masked:
            mask_key = bytes(buffer[header_size - 4 : header_size])
            if length <= _SLICE_LIMIT:  # small: slicing copies less than a view would cost
                data = apply_mask(buffer[header_size:end], mask_key) if length else b""
                del buffer[:end]
            else:
                del buffer[:header_size]
                data = apply_mask(reader.take(length), mask_key)
        elif length <= _SLICE_LIMIT:
            data = bytes(buffer[header_size:end])
            del buffer[:end]
        else:
            del buffer[:header_size]
            data = reader.take(length)
        return cls(opcode, data, bool(b0 & 0x80), bool(b0 & 0x40), bool(b0 & 0x20), bool(b0 & 0x10))

    def serialize(self, *, mask: bool) -> list[bytes]:
        """The frame on the wire, as one buffer or as header and payload.

        ``mask`` masks the payload with a fresh random key (clients MUST, §5.3).
        """
        b0 = (
            (0x80 if self.fin else 0)
            | (0x40 if self.rsv1 else 0)
            | (0x20 if self.rsv2 else 0)
            | (0x10 if self.rsv3 else 0)
            | self.opcode
        )
        return frame_wire(b0, self.data, mask)


def _py_frame_wire(b0: int, data: bytes, mask: bool) -> list[bytes]:
    """A frame's bytes on the wire (RFC 6455 §5.2): ``b0`` is its first byte (FIN,
    RSV bits, opcode), ``data`` its payload, masked with a fresh key if ``mask``.

    One buffer, or header and payload apart when the payload is large: a big
    payload is never copied only to prepend a header.
    """
    length = len(data)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = _pack_header(b0, mask_bit | length)
    elif length < 65536:
        header = _pack_header16(b0, mask_bit | 126, length)
    else:
        header = _pack_header64(b0, mask_bit | 127, length)
    if mask:
        mask_key = os.urandom(4)
        header += mask_key
        data = apply_mask(data, mask_key)
    if length <= _JOIN_LIMIT:
        return [header + data]
    return [header, data]


#: The frame builder: the C one when built (the same bytes, one call), else the above.
frame_wire: Callable[[int, bytes, bool], list[bytes]] = _py_frame_wire
#: The receive fast path (see ws4web/_speedups.c and Protocol._parse), or None.
fast_parse_frames: Callable[[bytearray, list[Frame], int, bool, int | None, list[bytes] | None], int] | None = None
if _speedups is not None:
    _speedups.configure(Frame, _OPCODES, os.urandom)
    frame_wire = _speedups.frame_wire
    fast_parse_frames = _speedups.parse_frames


class Close:
    """The payload of a close frame: a status code and a UTF-8 reason (§5.5.1)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"Close({self.code}, {self.reason!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Close):
            return NotImplemented
        return (self.code, self.reason) == (other.code, other.reason)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def parse(cls, data: bytes) -> Close:
        """Decode a received close payload; an empty one means 1005 (§7.1.5)."""
        if not data:
            return cls(CloseCode.NO_STATUS_RCVD)
        if len(data) == 1:
            raise ProtocolError("close payload of 1 byte")
        (code,) = _unpack16(data)
        if not is_valid_close_code(code):
            raise ProtocolError(f"invalid close code {code}")
        try:
            reason = data[2:].decode()
        except UnicodeDecodeError as exc:  # §5.5.1, §8.1
            raise InvalidPayload("close reason is not valid UTF-8") from exc
        return cls(_close_code(code), reason)

    def serialize(self) -> bytes:
        """Encode the payload; 1005 encodes as the empty payload."""
        if self.code == CloseCode.NO_STATUS_RCVD:
            return b""
        if not is_valid_close_code(self.code):
            raise ValueError(f"close code {self.code} cannot be sent")
        data = struct.pack("!H", self.code) + self.reason.encode()
        if len(data) > 125:
            raise ValueError("close reason longer than 123 bytes")
        return data


def _close_code(code: int) -> int:
    """The CloseCode member for a registered code, the plain int otherwise."""
    try:
        return CloseCode(code)
    except ValueError:
        return code
