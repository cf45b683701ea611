"""ws4web/_speedups.c: the compiled fast path does exactly what the Python code does.

The Python parser is the reference. Every test here feeds the same bytes to a
Protocol with the compiled fast path and to one without, and compares what comes
out: frames delivered, bytes written, how the connection ended. Without the C
accelerator (no compiler, or WS4WEB_NO_SPEEDUPS=1) the comparisons skip and the
pure path is what every other test runs.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ws4web import frames
from ws4web import protocol as protocol_module
from ws4web.frames import _py_frame_wire, apply_mask
from ws4web.protocol import CLIENT, SERVER, Protocol, Side, State

speedups = frames._speedups
needs_c = pytest.mark.skipif(speedups is None, reason="the C accelerator is not built (or WS4WEB_NO_SPEEDUPS=1)")
pytestmark = needs_c

KEY = b"\x37\xfa\x21\x3d"


@contextlib.contextmanager
def python_parser() -> Iterator[None]:
    """Protocols made inside parse with the Python code only (the fast path is read at creation)."""
    saved = protocol_module.fast_parse_frames
    protocol_module.fast_parse_frames = None
    try:
        yield
    finally:
        protocol_module.fast_parse_frames = saved


def wire(b0: int, payload: bytes, *, masked: bool, length: int | None = None, form: int | None = None) -> bytes:
    """One frame on the wire; ``form`` forces the 7/16/64-bit length encoding, ``length`` lies about it."""
    n = len(payload) if length is None else length
    if form is None:
        form = 7 if n < 126 else 16 if n < 65536 else 64
    if form == 7:
        header = bytes([b0, (0x80 if masked else 0) | n])
    elif form == 16:
        header = bytes([b0, (0x80 if masked else 0) | 126]) + struct.pack("!H", n)
    else:
        header = bytes([b0, (0x80 if masked else 0) | 127]) + struct.pack("!Q", n)
    if masked:
        return header + KEY + apply_mask(payload, KEY)
    return header + payload


def transcript(chunks: list[bytes], side: Side, *, fast: bool, eof: bool = True, **options: object) -> list[object]:
    """Feed ``chunks``; what came out after each one, then how the connection ended."""
    if fast:
        protocol = Protocol(side, **options)  # type: ignore[arg-type]
    else:
        with python_parser():
            protocol = Protocol(side, **options)  # type: ignore[arg-type]
    masked_out = side is CLIENT
    result: list[object] = []

    def collect() -> None:
        delivered = []
        while batch := protocol.events_received():
            delivered.append([(int(f.opcode), f.data, f.fin, f.rsv1, f.rsv2, f.rsv3) for f in batch])
        writes = protocol.data_to_send()
        if masked_out:  # fresh keys each time: compare what the frames say
            writes = [unmask_output(w) for w in writes]
        result.append((delivered, writes, protocol.unparsed_bytes, protocol.state))

    for chunk in chunks:
        protocol.receive_data(chunk)
        collect()
    if eof:
        protocol.receive_eof()
        collect()
    result.append((protocol.close_code, protocol.close_reason, str(protocol.failure)))
    return result


def unmask_output(data: bytes) -> bytes:
    """A masked frame written by a client, with its mask key replaced by zeros (the payload unmasked)."""
    if not data:
        return data
    length = data[1] & 0x7F
    header = 2 + {126: 2, 127: 8}.get(length, 0)
    key = data[header : header + 4]
    return data[:header] + bytes(4) + apply_mask(data[header + 4 :], key)


def same(chunks: list[bytes], side: Side = SERVER, **options: object) -> list[object]:
    compiled = transcript(chunks, side, fast=True, **options)
    python = transcript(chunks, side, fast=False, **options)
    assert compiled == python
    return compiled


def close_code(result: list[object]) -> int:
    last = result[-1]
    assert isinstance(last, tuple)
    return int(last[0])


# -- the protocol uses the fast path --------------------------------------------------------


def test_the_fast_path_is_used() -> None:
    assert protocol_module.fast_parse_frames is speedups.parse_frames
    assert frames.frame_wire is speedups.frame_wire
    protocol = Protocol(SERVER)
    calls = []
    real = speedups.parse_frames

    def spy(*args: object) -> int:
        calls.append(args)
        return real(*args)  # type: ignore[no-any-return]

    protocol_module.fast_parse_frames = spy
    try:
        protocol = Protocol(SERVER)
    finally:
        protocol_module.fast_parse_frames = real
    protocol.receive_data(wire(0x82, b"a", masked=True) * 3)
    assert len(calls) == 1  # three frames, one call
    assert [f.data for f in protocol.events_received()] == [b"a"] * 3


# -- crafted cases ----------------------------------------------------------------------------

LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 125, 126, 127, 4095, 4096, 4097, 16384, 16385, 65535, 65536, 70000]


@pytest.mark.parametrize("side", [SERVER, CLIENT], ids=["server", "client"])
@pytest.mark.parametrize("opcode", [0x1, 0x2])
def test_every_length_encoding(side: Side, opcode: int) -> None:
    masked = side is SERVER
    for n in LENGTHS:
        frame = wire(0x80 | opcode, b"a" * n, masked=masked)
        result = same([frame], side, max_message_size=None)
        assert result[0][0] == [[(opcode, b"a" * n, True, False, False, False)]]  # type: ignore[index]
        # §5.2 asks for the minimal length form; ws4web accepts the others, both paths alike.
        for form in (16, 64) if n < 65536 else (64,):
            same([wire(0x80 | opcode, b"a" * n, masked=masked, form=form)], side, max_message_size=None)


@pytest.mark.parametrize("side", [SERVER, CLIENT], ids=["server", "client"])
def test_limits_at_their_edges(side: Side) -> None:
    masked = side is SERVER
    for n in (0, 1, 10, 125, 126, 65535, 65536):
        frame = wire(0x82, bytes(n), masked=masked)
        for limit in (n - 1, n, n + 1):
            if limit < 0:
                continue
            codes = {
                close_code(same([frame], side, max_frame_size=limit, max_message_size=None)),
                close_code(same([frame], side, max_message_size=limit)),
                close_code(same([frame[:14]], side, max_message_size=limit)),  # the header alone decides
            }
            assert codes == ({1009} if n > limit else {1006}), (n, limit, codes)


@pytest.mark.parametrize("side", [SERVER, CLIENT], ids=["server", "client"])
def test_limits_out_of_the_ordinary(side: Side) -> None:
    masked = side is SERVER
    stream = wire(0x82, b"", masked=masked) + wire(0x81, b"abc", masked=masked) + wire(0x8A, b"", masked=masked)
    for limit in (-1, -(2**70), 2**63 - 1, 2**63, 2**70):
        same([stream], side, max_frame_size=limit, max_message_size=None)
        same([stream], side, max_message_size=limit)
    for max_pending in (2**63, 2**70):
        same([stream * 3], side, max_pending=max_pending)


@pytest.mark.parametrize("side", [SERVER, CLIENT], ids=["server", "client"])
def test_protocol_errors(side: Side) -> None:
    masked = side is SERVER
    good = wire(0x82, b"ok", masked=masked)
    bad = [
        *(wire(0x82 | rsv, b"x", masked=masked) for rsv in (0x40, 0x20, 0x10)),  # §5.2: RSV without extension
        *(wire(0x89 | rsv, b"x", masked=masked) for rsv in (0x40, 0x20, 0x10)),
        *(wire(0x80 | op, b"x", masked=masked) for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)),
        wire(0x09, b"x", masked=masked),  # §5.5: fragmented control frames
        wire(0x0A, b"x", masked=masked),
        wire(0x89, b"p" * 126, masked=masked),  # §5.5: control payload over 125
        wire(0x8A, b"p" * 126, masked=masked),
        wire(0x89, b"p" * 5, masked=masked, form=16),
        wire(0x82, b"x", masked=not masked),  # §5.1: masking the wrong way
        wire(0x89, b"x", masked=not masked),
        wire(0x80, b"x", masked=masked),  # §5.4: a continuation with nothing to continue
        wire(0x82, b"", masked=masked, length=1 << 63, form=64),  # §5.2: top bit of the 64-bit length
        wire(0x88, b"\x03", masked=masked),  # §5.5.1: a 1-byte close payload
        wire(0x88, struct.pack("!H", 999), masked=masked),  # §7.4: an invalid close code
    ]
    for frame in bad:
        assert close_code(same([good + frame + good], side)) == 1002, frame
        assert close_code(same([good, frame, good], side)) == 1002, frame


INVALID_UTF8 = [
    b"\x80",
    b"\xbf",
    b"\xc0\x80",  # overlong
    b"\xc1\xbf",
    b"\xc2",
    b"\xe0\x80\x80",  # overlong
    b"\xe0\x9f\xbf",
    b"\xed\xa0\x80",  # surrogate
    b"\xed\xbf\xbf",
    b"\xef\xbf",
    b"\xf0\x80\x80\x80",  # overlong
    b"\xf0\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"\xfe",
    b"a\xce",
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
]
VALID_UTF8 = ["", "a", "é", "€", "𝄞", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0010ffff"]


@pytest.mark.parametrize("side", [SERVER, CLIENT], ids=["server", "client"])
def test_utf8(side: Side) -> None:
    masked = side is SERVER
    for text in VALID_UTF8:
        data = (text * 3 + "abcdefghij" + text).encode()
        assert close_code(same([wire(0x81, data, masked=masked)], side)) == 1006
    for data in INVALID_UTF8:
        for padded in (data, b"12345678" + data, data + b"12345678", b"x" * 9 + data + b"x" * 17):
            assert close_code(same([wire(0x81, padded, masked=masked)], side)) == 1007, padded
            # Split across fragments: the Python parser's incremental check (§8.1).
            half = len(padded) // 2
            split = wire(0x01, padded[:half], masked=masked) + wire(0x80, padded[half:], masked=masked)
            assert close_code(same([split], side)) == 1007, padded
        assert close_code(same([wire(0x82, data, masked=masked)], side)) == 1006  # binary: no check


def test_utf8_check_matches_python_on_short_sequences() -> None:
    check = speedups.utf8_check
    for lead in range(256):
        for second in range(256):
            for tail in (b"", b"\x80", b"\xbf", b"\x80\x80", b"\xbf\xbf", b"\x7f", b"\xc0", b"\x80\x7f"):
                data = bytes([lead, second]) + tail
                try:
                    data.decode()
                    expected = True
                except UnicodeDecodeError:
                    expected = False
                assert check(data) is expected, data
                assert check(b"abcdefgh" + data) is expected, data


@given(st.binary(max_size=64) | st.text(max_size=32).map(str.encode))
def test_utf8_check_matches_python(data: bytes) -> None:
    try:
        data.decode()
        expected = True
    except UnicodeDecodeError:
        expected = False
    assert speedups.utf8_check(data) is expected


@pytest.mark.parametrize("side", [SERVER, CLIENT], ids=["server", "client"])
def test_control_frames_and_closing(side: Side) -> None:
    masked = side is SERVER
    text = wire(0x81, b"hi", masked=masked)
    ping = wire(0x89, b"are you there", masked=masked)
    pong = wire(0x8A, b"yes", masked=masked)
    empty_ping = wire(0x89, b"", masked=masked)
    close = wire(0x88, struct.pack("!H", 1000) + b"bye", masked=masked)
    result = same([text + ping + pong + empty_ping + text + close + text], side)
    assert close_code(result) == 1000
    same([ping * 3, close, ping])
    same([text + close + ping + text], side)
    # Pings after this side sent its close are not answered (the protocol is CLOSING).
    for fast in (True, False):
        context = contextlib.nullcontext() if fast else python_parser()
        with context:
            protocol = Protocol(side)
        protocol.send_close(1001)
        protocol.data_to_send()
        protocol.receive_data(ping + text + ping)
        assert [f.data for f in protocol.events_received()] == [b"are you there", b"hi", b"are you there"]
        assert protocol.data_to_send() == []


@pytest.mark.parametrize("side", [SERVER, CLIENT], ids=["server", "client"])
def test_fragmented_messages_between_whole_ones(side: Side) -> None:
    masked = side is SERVER
    stream = (
        wire(0x81, b"one", masked=masked)
        + wire(0x01, "€".encode()[:1], masked=masked)
        + wire(0x8A, b"pong inside", masked=masked)
        + wire(0x00, "€".encode()[1:], masked=masked)
        + wire(0x80, b"!", masked=masked)
        + wire(0x82, b"two", masked=masked)
        + wire(0x02, b"", masked=masked)
        + wire(0x81, b"new message inside a fragmented one", masked=masked)
    )
    assert close_code(same([stream], side)) == 1002
    for limit in (3, 4, 5, 6):
        same([stream], side, max_message_size=limit)


@pytest.mark.parametrize("side", [SERVER, CLIENT], ids=["server", "client"])
def test_cut_at_every_byte(side: Side) -> None:
    masked = side is SERVER
    stream = (
        wire(0x81, "ünïcødé".encode(), masked=masked)
        + wire(0x89, b"ping", masked=masked)
        + wire(0x82, bytes(200), masked=masked)
        + wire(0x01, b"frag", masked=masked)
        + wire(0x80, b"ment", masked=masked)
        + wire(0x8A, b"", masked=masked)
        + wire(0x81, b"\xce\xba\xe1\xbd\xb9\xcf\x83", masked=masked)
        + wire(0x82, bytes(70000), masked=masked)
        + wire(0x88, struct.pack("!H", 1001), masked=masked)
    )
    reference = same([stream], side, max_message_size=None)
    delivered = [f for step in reference[:-1] for batch in step[0] for f in batch]  # type: ignore[index]
    for cut in range(len(stream) - 69000):
        result = same([stream[:cut], stream[cut:]], side, max_message_size=None)
        assert [f for step in result[:-1] for batch in step[0] for f in batch] == delivered  # type: ignore[index]
        assert result[-1] == reference[-1]
    result = same([stream[i : i + 1] for i in range(len(stream) - 69000)] + [stream[len(stream) - 69000 :]], side)
    same([stream[:-1]], side)  # EOF inside the close frame: 1006


def test_max_pending_batches() -> None:
    frame = wire(0x82, b"x", masked=True)
    for max_pending in (1, 2, 63, 64, None):
        result = same([frame * 200 + wire(0x89, b"p", masked=True) * 70], max_pending=max_pending)
        batches = result[0][0]  # type: ignore[index]
        assert sum(len(b) for b in batches) == 270
        if max_pending is not None:
            assert all(len(b) <= max_pending for b in batches)


def test_held_batch_then_more_bytes() -> None:
    frame = wire(0x82, b"x", masked=True)
    for fast in (True, False):
        context = contextlib.nullcontext() if fast else python_parser()
        with context:
            protocol = Protocol(SERVER, max_pending=4)
        protocol.receive_data(frame * 6)
        protocol.receive_data(frame * 6)  # parsing is held: these wait as bytes
        assert protocol.unparsed_bytes == 8 * len(frame)
        sizes = []
        while batch := protocol.events_received():
            sizes.append(len(batch))
        assert sizes == [4, 4, 4]
        assert protocol.state is State.OPEN


# -- random streams ------------------------------------------------------------------------------


@st.composite
def frame_streams(draw: st.DrawFn) -> tuple[Side, bytes, list[int], dict[str, object]]:
    side = draw(st.sampled_from([SERVER, CLIENT]))
    masked = side is SERVER
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        fin = draw(st.booleans()) if draw(st.integers(0, 3)) == 0 else True
        rsv = draw(st.sampled_from([0, 0, 0, 0, 0x40, 0x20, 0x10]))
        opcode = draw(st.sampled_from([0x0, 0x1, 0x1, 0x2, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB]))
        if draw(st.booleans()):
            payload = draw(st.text(max_size=20)).encode()
            if payload and draw(st.integers(0, 5)) == 0:
                cut = draw(st.integers(0, len(payload)))
                payload = payload[:cut] + payload[cut + 1 :]  # maybe no longer UTF-8
        else:
            payload = draw(st.binary(max_size=draw(st.sampled_from([10, 130, 300]))))
        if opcode == 0x8 and draw(st.booleans()):
            payload = struct.pack("!H", draw(st.sampled_from([1000, 1001, 1005, 1011, 999, 3000, 4999, 5000]))) + (
                payload[:20]
            )
        flip = draw(st.integers(0, 15)) == 0
        form = draw(st.sampled_from([None, None, None, 16, 64]))
        parts.append(wire((0x80 if fin else 0) | rsv | opcode, payload, masked=masked != flip, form=form))
    stream = b"".join(parts)
    if draw(st.integers(0, 7)) == 0:
        stream = draw(st.binary(max_size=60))  # raw bytes
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    options: dict[str, object] = {
        "max_message_size": draw(st.sampled_from([None, 0, 10, 125, 2**20])),
        "max_frame_size": draw(st.sampled_from([None, 0, 5, 126])),
        "max_pending": draw(st.sampled_from([1, 3, 64, None])),
    }
    return side, stream, cuts, options


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_streams(), st.booleans())
def test_random_streams(case: tuple[Side, bytes, list[int], dict[str, object]], eof: bool) -> None:
    side, stream, cuts, options = case
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert transcript(chunks, side, fast=True, eof=eof, **options) == transcript(
        chunks, side, fast=False, eof=eof, **options
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([SERVER, CLIENT]))
def test_random_bytes(data: bytes, side: Side) -> None:
    assert transcript([data], side, fast=True) == transcript([data], side, fast=False)


# -- frame_wire -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", LENGTHS)
def test_frame_wire_matches_python(n: int) -> None:
    data = os.urandom(n)
    for b0 in (0x81, 0x82, 0x01, 0x80, 0x89, 0x8A, 0x88, 0xC1):
        assert speedups.frame_wire(b0, data, False) == _py_frame_wire(b0, data, False)
        assert speedups.frame_wire(b0, bytearray(data), False) == _py_frame_wire(b0, bytearray(data), False)
        compiled = b"".join(speedups.frame_wire(b0, data, True))
        python = b"".join(_py_frame_wire(b0, data, True))
        assert len(speedups.frame_wire(b0, data, True)) == len(_py_frame_wire(b0, data, True))
        assert unmask_output(compiled) == unmask_output(python)
        assert unmask_output(compiled)[-n:] == data if n else True


def test_frame_wire_sends_a_large_payload_as_given() -> None:
    data = bytes(20000)
    header, payload = speedups.frame_wire(0x82, data, False)
    assert payload is data  # no copy to prepend the header
    assert header == b"\x82\x7e\x4e\x20"
    masked = speedups.frame_wire(0x82, data, True)
    assert masked[1] != data and apply_mask(masked[1], masked[0][-4:]) == data


def test_frame_wire_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        speedups.frame_wire(256, b"", False)
    with pytest.raises(TypeError):
        speedups.frame_wire(0x81, "text", False)
    with pytest.raises(TypeError):
        speedups.frame_wire(0x81, b"")


def test_parse_frames_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError):
        speedups.parse_frames(b"\x82\x00", [], 1, False, None, None)  # not a bytearray
    with pytest.raises(TypeError):
        speedups.parse_frames(bytearray(), (), 1, False, None, None)
    with pytest.raises(TypeError):
        speedups.parse_frames(bytearray(), [], 1, False, None)
    with pytest.raises(TypeError):
        speedups.parse_frames(bytearray(), [], 1.0, False, None, None)
    with pytest.raises(TypeError):
        speedups.parse_frames(bytearray(), [], 1, False, 1.5, None)
    buffer = bytearray(b"\x82\x01x\x82\x01y")
    events: list[object] = []
    assert speedups.parse_frames(buffer, events, 1, False, None, None) == 3  # budget reached
    assert buffer == b"\x82\x01y" and len(events) == 1
    assert speedups.parse_frames(buffer, events, 5, False, None, None) == 0  # all taken
    assert speedups.parse_frames(bytearray(b"\x82"), events, 5, False, None, None) == 1  # partial
    assert speedups.parse_frames(bytearray(b"\x88\x00"), events, 5, False, None, None) == 2  # close: Python's


def test_parsed_frames_have_every_field() -> None:
    # The C parser fills a Frame's slots itself (no __init__ call): a field added to
    # Frame must be added there too, or this fails.
    stream = wire(0x81, b"text", masked=True) + wire(0x82, b"", masked=True) + wire(0x8A, b"p", masked=True)
    compiled = Protocol(SERVER, data=stream).events_received()
    with python_parser():
        python = Protocol(SERVER, data=stream).events_received()
    assert len(compiled) == len(python) == 3
    for mine, reference in zip(compiled, python, strict=True):
        assert type(mine) is type(reference)
        for name in type(reference).__slots__:
            assert getattr(mine, name) == getattr(reference, name), name
            assert type(getattr(mine, name)) is type(getattr(reference, name)), name
