"""Tests for ws4web.frames: frame parse/serialize, close payloads, close codes and masking."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ws4web.exceptions import InvalidPayload, PayloadTooBig, ProtocolError
from ws4web.frames import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    Close,
    CloseCode,
    Frame,
    Opcode,
    _c_apply_mask,
    _py_apply_mask,
    apply_mask,
    is_valid_close_code,
)
from ws4web.streams import StreamReader


def reference_mask(data: bytes, key: bytes) -> bytes:
    """The masking rule of RFC 6455 §5.3 written as plainly as possible."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def parse_one(data: bytes, *, mask: bool, max_size: int | None = None, rsv_mask: int = 0) -> Frame:
    """Parse exactly one frame from ``data``, which must hold all of it."""
    reader = StreamReader(data)
    parser = Frame.parse(reader, mask=mask, max_size=max_size, rsv_mask=rsv_mask)
    try:
        next(parser)
    except StopIteration as stop:
        frame: Frame = stop.value
        return frame
    raise AssertionError("the parser asked for more bytes")


def header_of(wire: bytes, length: int, masked: bool) -> bytes:
    size = 2 if length < 126 else 4 if length < 65536 else 10
    return wire[: size + (4 if masked else 0)]


# -- serialize / parse round trips -----------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 2**20 + 3])
@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION])
def test_round_trip(length: int, mask: bool, opcode: Opcode) -> None:
    data = os.urandom(length)
    frame = Frame(opcode, data, fin=length % 2 == 0)
    wire = b"".join(frame.serialize(mask=mask))
    assert parse_one(wire, mask=mask) == frame


@pytest.mark.parametrize(
    ("length", "second_byte", "extended"),
    [
        (0, 0, b""),
        (125, 125, b""),
        (126, 126, b"\x00\x7e"),
        (65535, 126, b"\xff\xff"),
        (65536, 127, b"\x00\x00\x00\x00\x00\x01\x00\x00"),
        (2**20, 127, struct.pack("!Q", 2**20)),
    ],
)
def test_length_encoding(length: int, second_byte: int, extended: bytes) -> None:
    # RFC 6455 §5.2: 7-bit, then 16-bit, then 64-bit lengths, minimal form.
    wire = b"".join(Frame(Opcode.BINARY, b"x" * length).serialize(mask=False))
    assert wire[0] == 0x82
    assert wire[1] == second_byte
    assert wire[2 : 2 + len(extended)] == extended
    assert len(wire) == 2 + len(extended) + length
    masked = b"".join(Frame(Opcode.BINARY, b"x" * length).serialize(mask=True))
    assert masked[1] == 0x80 | second_byte
    assert len(masked) == 2 + len(extended) + 4 + length


def test_rfc_examples() -> None:
    # RFC 6455 §5.7.
    assert Frame(Opcode.TEXT, b"Hello").serialize(mask=False) == [b"\x81\x05Hello"]
    masked_hello = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert parse_one(masked_hello, mask=True) == Frame(Opcode.TEXT, b"Hello")
    assert parse_one(b"\x01\x03Hel", mask=False) == Frame(Opcode.TEXT, b"Hel", fin=False)
    assert parse_one(b"\x80\x02lo", mask=False) == Frame(Opcode.CONTINUATION, b"lo")
    assert Frame(Opcode.PING, b"Hello").serialize(mask=False) == [b"\x89\x05Hello"]
    masked_pong = bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert parse_one(masked_pong, mask=True) == Frame(Opcode.PONG, b"Hello")
    assert b"".join(Frame(Opcode.BINARY, bytes(256)).serialize(mask=False))[:4] == b"\x82\x7e\x01\x00"


def test_flags_are_serialized() -> None:
    frame = Frame(Opcode.TEXT, b"a", fin=False, rsv1=True, rsv2=True, rsv3=True)
    assert frame.serialize(mask=False) == [b"\x71\x01a"]
    assert parse_one(b"\x71\x01a", mask=False, rsv_mask=0x70) == frame
    assert Frame(Opcode.TEXT, b"", rsv2=True).serialize(mask=False) == [b"\xa1\x00"]


def test_masked_serialize_uses_a_fresh_key() -> None:
    data = bytes(range(256)) * 3
    wires = [b"".join(Frame(Opcode.BINARY, data).serialize(mask=True)) for _ in range(4)]
    keys = set()
    for wire in wires:
        key = wire[4:8]
        keys.add(key)
        assert reference_mask(wire[8:], key) == data
    assert len(keys) > 1  # 4 random 32-bit keys are all equal with probability 2**-96


def test_large_payload_is_not_joined_to_its_header() -> None:
    small = Frame(Opcode.BINARY, b"s" * 16384).serialize(mask=False)
    assert len(small) == 1
    big_data = b"b" * 16385
    big = Frame(Opcode.BINARY, big_data).serialize(mask=False)
    assert big == [b"\x82\x7e\x40\x01", big_data]
    masked = Frame(Opcode.BINARY, big_data).serialize(mask=True)
    assert len(masked) == 2
    assert len(masked[0]) == 8
    assert reference_mask(masked[1], masked[0][4:]) == big_data


# -- incremental parsing -----------------------------------------------------------


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("length", [0, 5, 126, 70000])
def test_parse_one_byte_at_a_time(mask: bool, length: int) -> None:
    frame = Frame(Opcode.BINARY, os.urandom(length))
    wire = b"".join(frame.serialize(mask=mask)) + b"\x89\x00"
    reader = StreamReader()
    parser = Frame.parse(reader, mask=mask)
    next(parser)
    step = 1 if length < 1000 else 997
    result: Frame | None = None
    for i in range(0, len(wire), step):
        reader.feed_data(wire[i : i + step])
        try:
            next(parser)
        except StopIteration as stop:
            result = stop.value
            break
    assert result == frame
    # Only this frame was consumed: what follows stays buffered.
    assert bytes(reader.buffer) == wire[len(wire) - 2 : i + step]


@pytest.mark.parametrize(
    "wire",
    [
        b"",  # nothing
        b"\x81",  # half a header
        b"\x81\x7e\x00",  # inside the 16-bit length
        b"\x82\x7f\x00\x00\x00\x00",  # inside the 64-bit length
        b"\x81\x85\x01\x02",  # inside the mask key (server side below)
        b"\x81\x05Hel",  # inside the payload
    ],
)
def test_eof_inside_a_frame(wire: bytes) -> None:
    mask = len(wire) > 1 and bool(wire[1] & 0x80)
    reader = StreamReader(wire)
    parser = Frame.parse(reader, mask=mask)
    if wire:
        next(parser)  # suspends: more bytes are needed
    reader.feed_eof()
    with pytest.raises(EOFError):
        next(parser)


# -- rules one frame can break on its own (RFC 6455 §5.2, §5.5) ------------------------


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes(opcode: int) -> None:
    with pytest.raises(ProtocolError, match="reserved opcode"):
        parse_one(bytes([0x80 | opcode, 0]), mask=False)


@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10])
def test_rsv_bits_need_an_extension(bit: int) -> None:
    wire = bytes([0x81 | bit, 1]) + b"a"
    with pytest.raises(ProtocolError, match="RSV"):
        parse_one(wire, mask=False)
    frame = parse_one(wire, mask=False, rsv_mask=bit)
    assert (frame.rsv1, frame.rsv2, frame.rsv3) == (bit == 0x40, bit == 0x20, bit == 0x10)
    other = 0x70 & ~bit
    with pytest.raises(ProtocolError, match="RSV"):
        parse_one(wire, mask=False, rsv_mask=other)


def test_mask_bit_must_match_the_side() -> None:
    unmasked = b"\x81\x01a"
    masked = b"".join(Frame(Opcode.TEXT, b"a").serialize(mask=True))
    with pytest.raises(ProtocolError, match="unmasked client frame"):
        parse_one(unmasked, mask=True)
    with pytest.raises(ProtocolError, match="masked server frame"):
        parse_one(masked, mask=False)


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
def test_control_frame_rules(opcode: Opcode) -> None:
    with pytest.raises(ProtocolError, match="fragmented control frame"):
        parse_one(bytes([opcode, 0]), mask=False)
    with pytest.raises(ProtocolError, match="over 125"):
        parse_one(bytes([0x80 | opcode, 126, 0, 126]) + bytes(126), mask=False)
    assert parse_one(bytes([0x80 | opcode, 125]) + bytes(125), mask=False) == Frame(opcode, bytes(125))
    # max_size bounds data frames only: a control frame is at most 125 bytes anyway.
    assert parse_one(bytes([0x80 | opcode, 100]) + bytes(100), mask=False, max_size=10).data == bytes(100)


def test_64_bit_length_top_bit() -> None:
    with pytest.raises(ProtocolError, match="top bit"):
        parse_one(b"\x82\x7f" + struct.pack("!Q", 2**63), mask=False)
    with pytest.raises(ProtocolError, match="top bit"):
        parse_one(b"\x82\x7f" + b"\xff" * 8, mask=False)


@pytest.mark.parametrize("length", [11, 126, 65536, 2**62])
def test_max_size_is_checked_on_the_header(length: int) -> None:
    wire = b"".join(Frame(Opcode.BINARY, b"").serialize(mask=False))[:1]
    if length < 126:
        wire += bytes([length])
    elif length < 65536:
        wire += b"\x7e" + struct.pack("!H", length)
    else:
        wire += b"\x7f" + struct.pack("!Q", length)
    # Only the header is there: the refusal must not wait for the payload.
    with pytest.raises(PayloadTooBig):
        parse_one(wire, mask=False, max_size=10)


def test_max_size_boundary() -> None:
    assert parse_one(b"\x82\x0a" + bytes(10), mask=False, max_size=10).data == bytes(10)
    assert parse_one(b"\x82\x00", mask=False, max_size=0).data == b""


# -- Frame value behaviour ------------------------------------------------------------


def test_frame_repr() -> None:
    assert repr(Frame(Opcode.TEXT, b"hi")) == "Frame(TEXT, b'hi', len=2, flags=F)"
    assert repr(Frame(Opcode.BINARY, b"", fin=False)) == "Frame(BINARY, b'', len=0, flags=-)"
    assert repr(Frame(Opcode.CONTINUATION, b"x", rsv1=True, rsv3=True)) == "Frame(CONTINUATION, b'x', len=1, flags=F13)"
    assert repr(Frame(Opcode.PING, b"", fin=False, rsv2=True)) == "Frame(PING, b'', len=0, flags=2)"
    long = repr(Frame(Opcode.BINARY, b"a" * 100))
    assert long == f"Frame(BINARY, {b'a' * 29 + b'...'!r}, len=100, flags=F)"
    assert repr(Frame(Opcode.BINARY, b"a" * 32)) == f"Frame(BINARY, {b'a' * 32!r}, len=32, flags=F)"


def test_frame_equality() -> None:
    base = Frame(Opcode.TEXT, b"a")
    assert base == Frame(Opcode.TEXT, b"a", fin=True)
    assert base != Frame(Opcode.BINARY, b"a")
    assert base != Frame(Opcode.TEXT, b"b")
    assert base != Frame(Opcode.TEXT, b"a", fin=False)
    assert base != Frame(Opcode.TEXT, b"a", rsv1=True)
    assert base != Frame(Opcode.TEXT, b"a", rsv2=True)
    assert base != Frame(Opcode.TEXT, b"a", rsv3=True)
    assert base != (Opcode.TEXT, b"a")
    assert base.__eq__("a") is NotImplemented
    with pytest.raises(TypeError):
        hash(base)


def test_frame_is_control() -> None:
    assert [Frame(op).is_control for op in (Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY)] == [False] * 3
    assert [Frame(op).is_control for op in (Opcode.CLOSE, Opcode.PING, Opcode.PONG)] == [True] * 3


def test_opcode_sets() -> None:
    assert Opcode["CONT"] is Opcode.CONTINUATION  # the ws4py name is an alias
    assert sorted(DATA_OPCODES) == [0, 1, 2]
    assert sorted(CONTROL_OPCODES) == [8, 9, 10]


# -- close codes and payloads (RFC 6455 §5.5.1, §7.4) -------------------------------


@pytest.mark.parametrize("code", [*range(1000, 1004), *range(1007, 1015), 3000, 3999, 4000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert is_valid_close_code(code)


@pytest.mark.parametrize("code", [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    assert not is_valid_close_code(code)


def test_close_round_trip() -> None:
    close = Close(CloseCode.GOING_AWAY, "bye ✓")
    data = close.serialize()
    assert data == b"\x03\xe9" + "bye ✓".encode()
    parsed = Close.parse(data)
    assert parsed == close
    assert parsed.code is CloseCode.GOING_AWAY
    private = Close.parse(b"\x0f\xa0")  # 4000: not in the registry, kept as a plain int
    assert private == Close(4000)
    assert type(private.code) is int
    assert Close.parse(b"\x03\xe8").reason == ""


def test_close_parse_errors() -> None:
    assert Close.parse(b"") == Close(CloseCode.NO_STATUS_RCVD)
    with pytest.raises(ProtocolError, match="1 byte"):
        Close.parse(b"\x03")
    with pytest.raises(ProtocolError, match="1005"):
        Close.parse(b"\x03\xed")
    with pytest.raises(InvalidPayload):
        Close.parse(b"\x03\xe8\xff")
    with pytest.raises(InvalidPayload):
        Close.parse(b"\x03\xe8" + "é".encode()[:1])


def test_close_serialize() -> None:
    assert Close(CloseCode.NO_STATUS_RCVD).serialize() == b""
    assert Close(CloseCode.NO_STATUS_RCVD, "ignored").serialize() == b""
    assert Close(1000, "x" * 123).serialize() == b"\x03\xe8" + b"x" * 123
    with pytest.raises(ValueError, match="123"):
        Close(1000, "x" * 124).serialize()
    with pytest.raises(ValueError, match="123"):
        Close(1000, "é" * 62).serialize()  # 124 bytes of UTF-8
    for code in (1004, 1006, 1015, 999, 5000):
        with pytest.raises(ValueError, match="cannot be sent"):
            Close(code).serialize()


def test_close_value_behaviour() -> None:
    assert repr(Close(1000, "done")) == "Close(1000, 'done')"
    assert Close(1000, "a") != Close(1000, "b")
    assert Close(1000) != Close(1001)
    assert Close(1000).__eq__((1000, "")) is NotImplemented
    with pytest.raises(TypeError):
        hash(Close(1000))


# -- masking (RFC 6455 §5.3) ------------------------------------------------------------

# Both sides of the pure-Python lane threshold (4096), and every remainder modulo 4 above it.
MASK_LENGTHS = [*range(71), 127, 1001, 4095, 4096, 4097, 4098, 4099, 65537]


MaskFunction = Callable[[bytes | bytearray | memoryview, bytes], bytes]
needs_speedups = pytest.mark.skipif(_c_apply_mask is None, reason="the C accelerator is not built")


@pytest.mark.parametrize(
    "function",
    [_py_apply_mask, apply_mask, pytest.param(_c_apply_mask, marks=needs_speedups)],
    ids=["python", "public", "c"],
)
def test_apply_mask_matches_reference(function: MaskFunction) -> None:
    for key in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x37\xfa\x21\x3d", os.urandom(4)):
        for length in MASK_LENGTHS:
            data = os.urandom(length)
            expected = reference_mask(data, key)
            assert function(data, key) == expected, (key, length)
            assert function(bytearray(data), key) == expected
            assert function(memoryview(data), key) == expected
            assert function(expected, key) == data  # masking is its own inverse


def test_apply_mask_returns_bytes() -> None:
    assert _py_apply_mask(b"", b"abcd") == b""
    assert type(_py_apply_mask(bytearray(b"xyz"), b"abcd")) is bytes
    assert type(_py_apply_mask(bytearray(10_000), b"abcd")) is bytes
    assert type(apply_mask(bytearray(b"xyz"), b"abcd")) is bytes
    # Leading zero bytes of the result must survive the integer round trip.
    assert _py_apply_mask(b"abcd" * 3, b"abcd") == bytes(12)


def test_public_apply_mask_prefers_the_accelerator() -> None:
    assert apply_mask is (_c_apply_mask or _py_apply_mask)


def test_speedups_can_be_turned_off() -> None:
    # WS4WEB_NO_SPEEDUPS=1 selects the pure-Python code (masking, frame builder, parser), to compare.
    script = (
        "import ws4web.frames as f, ws4web.protocol as p;"
        "print(f.apply_mask is f._py_apply_mask, f._c_apply_mask is None, f._speedups is None,"
        " p.fast_parse_frames is None, f.frame_wire is f._py_frame_wire)"
    )
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "WS4WEB_NO_SPEEDUPS": "1", "PYTHONPATH": root}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"] * 5
