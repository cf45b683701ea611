"""Tests for ws4web.protocol: the sans-I/O state machine, bytes in and bytes out."""

from __future__ import annotations

import gc
import logging
import struct
import tracemalloc
from collections.abc import Callable

import pytest

from ws4web.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidPayload,
    PayloadTooBig,
    ProtocolError,
)
from ws4web.extensions.base import Extension
from ws4web.frames import Close, CloseCode, Frame, Opcode
from ws4web.messages import Assembler
from ws4web.protocol import CLIENT, SEND_EOF, SERVER, Protocol, Side, State
from ws4web.streams import StreamReader

SIDES = [SERVER, CLIENT]
TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
PING, PONG, CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE


# -- helpers ---------------------------------------------------------------------


def wire(*frames: Frame, to: Side) -> bytes:
    """What the peer of ``to`` puts on the wire: a client masks, a server does not (§5.1)."""
    return b"".join(b"".join(frame.serialize(mask=to is SERVER)) for frame in frames)


def close_frame(code: int, reason: str = "") -> Frame:
    return Frame(CLOSE, struct.pack("!H", code) + reason.encode())


def decode_output(chunks: list[bytes], *, masked: bool) -> list[Frame | bytes]:
    """Parse what a protocol wrote: its frames, with SEND_EOF kept in place."""
    result: list[Frame | bytes] = []
    reader = StreamReader()
    for chunk in chunks:
        if chunk == SEND_EOF:
            result.append(SEND_EOF)
            continue
        reader.feed_data(chunk)
        while reader.buffer:
            parser = Frame.parse(reader, mask=masked)
            try:
                next(parser)
            except StopIteration as stop:
                result.append(stop.value)
            else:
                break
    assert not reader.buffer, "a frame was written in part"
    return result


def sent(protocol: Protocol) -> list[Frame | bytes]:
    """The frames (and SEND_EOF) ``protocol`` wants written, decoded."""
    return decode_output(protocol.data_to_send(), masked=protocol.side is CLIENT)


def assert_failed(protocol: Protocol, code: int) -> None:
    """The protocol sent exactly one close frame with ``code``, then SEND_EOF (§7.1.7)."""
    out = sent(protocol)
    assert len(out) == 2, out
    frame, eof = out
    assert eof == SEND_EOF
    assert isinstance(frame, Frame)
    assert frame.opcode is CLOSE
    close = Close.parse(frame.data)
    assert close.code == code
    assert len(frame.data) <= 125
    assert protocol.close_sent == close
    assert state(protocol) is State.CLOSING
    assert protocol.failure is not None
    assert protocol.failure.code == code or code == CloseCode.INTERNAL_ERROR


def state(protocol: Protocol) -> State:
    # A call, not an attribute read: mypy would keep an earlier assert's narrowing of the attribute.
    return protocol.state


def drain(protocol: Protocol) -> list[Frame]:
    """Every frame the protocol can deliver without more bytes, batch after batch."""
    events: list[Frame] = []
    while batch := protocol.events_received():
        events += batch
    return events


def feed(protocol: Protocol, data: bytes, step: int = 1) -> list[Frame]:
    events: list[Frame] = []
    for i in range(0, len(data), step):
        protocol.receive_data(data[i : i + step])
        events += drain(protocol)
    return events


# A conversation that uses every kind of frame; the text is split inside characters.
KOSME = "κόσμε €𝄞".encode()
CONVERSATION = [
    Frame(TEXT, b"hello"),
    Frame(TEXT, KOSME[:3], fin=False),
    Frame(PING, b"in the middle"),
    Frame(CONT, KOSME[3:8], fin=False),
    Frame(CONT, b"", fin=False),
    Frame(PONG, b"unsolicited"),
    Frame(CONT, KOSME[8:], fin=True),
    Frame(BINARY, bytes(range(200))),
    Frame(BINARY, b"\xff" * 300, fin=False),
    Frame(CONT, b"\x00" * 70),
    Frame(TEXT, b""),
    Frame(PING, b""),
]


def expected_replies(side: Side) -> list[Frame | bytes]:
    # Every ping is answered, in order (§5.5.2).
    return [Frame(PONG, b"in the middle"), Frame(PONG, b"")]


# -- basics -------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_initial_state(side: Side) -> None:
    protocol = Protocol(side)
    assert protocol.side is side
    assert state(protocol) is State.OPEN
    assert not protocol.close_expected()
    assert protocol.events_received() == []
    assert protocol.data_to_send() == []
    assert protocol.close_rcvd is None
    assert protocol.close_sent is None
    assert protocol.failure is None


@pytest.mark.parametrize("side", SIDES)
def test_conversation_in_one_call(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(*CONVERSATION, to=side))
    assert protocol.events_received() == CONVERSATION
    assert protocol.events_received() == []
    assert sent(protocol) == expected_replies(side)
    assert protocol.data_to_send() == []
    assert state(protocol) is State.OPEN


@pytest.mark.parametrize("side", SIDES)
def test_one_byte_at_a_time(side: Side) -> None:
    protocol = Protocol(side)
    frames = [*CONVERSATION, Frame(BINARY, bytes(70_000)), close_frame(1000, "bye")]
    events = feed(protocol, wire(*frames, to=side))
    assert events == frames
    tail: list[Frame | bytes] = [Frame(CLOSE, b"\x03\xe8")] + ([SEND_EOF] if side is SERVER else [])
    assert sent(protocol) == expected_replies(side) + tail


@pytest.mark.parametrize("side", SIDES)
def test_every_split_position(side: Side) -> None:
    data = wire(*CONVERSATION, to=side)
    for i in range(len(data) + 1):
        protocol = Protocol(side)
        protocol.receive_data(data[:i])
        protocol.receive_data(data[i:])
        assert protocol.events_received() == CONVERSATION, i
        assert sent(protocol) == expected_replies(side), i


@pytest.mark.parametrize("side", SIDES)
def test_every_pair_of_split_positions(side: Side) -> None:
    frames = [Frame(TEXT, "é".encode(), fin=False), Frame(PING, b"p"), Frame(CONT, b"x" * 130), Frame(BINARY, b"b")]
    data = wire(*frames, to=side)
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            protocol = Protocol(side)
            for part in (data[:i], data[i:j], data[j:]):
                protocol.receive_data(part)
            assert protocol.events_received() == frames, (i, j)
            assert sent(protocol) == [Frame(PONG, b"p")]


@pytest.mark.parametrize("side", SIDES)
def test_trailing_handshake_bytes(side: Side) -> None:
    # Bytes read past the HTTP handshake are handed over at construction.
    data = wire(Frame(TEXT, b"early"), Frame(PING, b"?"), to=side)
    protocol = Protocol(side, data=data)
    assert protocol.events_received() == [Frame(TEXT, b"early"), Frame(PING, b"?")]
    assert sent(protocol) == [Frame(PONG, b"?")]
    # A frame cut short at the end of the handshake read is completed later.
    data = wire(Frame(BINARY, b"0123456789"), to=side)
    protocol = Protocol(side, data=data[:5])
    assert protocol.events_received() == []
    protocol.receive_data(data[5:])
    assert protocol.events_received() == [Frame(BINARY, b"0123456789")]


@pytest.mark.parametrize("side", SIDES)
def test_any_bytes_like_input(side: Side) -> None:
    data = wire(Frame(TEXT, b"one"), Frame(BINARY, b"two"), Frame(PING, b"3"), to=side)
    protocol = Protocol(side)
    protocol.receive_data(bytearray(data[:7]))
    protocol.receive_data(memoryview(data)[7:])
    assert protocol.events_received() == [Frame(TEXT, b"one"), Frame(BINARY, b"two"), Frame(PING, b"3")]


def test_server_frames_are_not_masked_client_frames_are() -> None:
    server = Protocol(SERVER)
    server.send_text(b"hi")
    server.send_binary(b"\x00\x01")
    server.send_ping(b"p")
    server.send_pong(b"q")
    assert server.data_to_send() == [b"\x81\x02hi", b"\x82\x02\x00\x01", b"\x89\x01p", b"\x8a\x01q"]

    client = Protocol(CLIENT)
    client.send_text(b"hello")
    (data,) = client.data_to_send()
    assert data[:2] == b"\x81\x85"
    key = data[2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(data[6:])) == b"hello"
    # What one side writes, the other side reads.
    server.receive_data(data)
    assert server.events_received() == [Frame(TEXT, b"hello")]
    client.receive_data(b"\x81\x02hi")
    assert client.events_received() == [Frame(TEXT, b"hi")]


# -- close codes (RFC 6455 §7.4) ----------------------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code_is_echoed(side: Side, code: int) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(close_frame(code, "why ✓"), to=side))
    assert protocol.events_received() == [close_frame(code, "why ✓")]
    # §5.5.1: echo the status code; §7.1.1: the server then closes TCP first.
    echo = Frame(CLOSE, struct.pack("!H", code))
    assert sent(protocol) == ([echo, SEND_EOF] if side is SERVER else [echo])
    assert state(protocol) is State.CLOSING
    assert protocol.close_expected()
    assert protocol.close_code == code
    assert protocol.close_reason == "why ✓"
    assert protocol.close_sent == Close(code)
    exc = protocol.close_exc()
    assert type(exc) is (ConnectionClosedOK if code in (1000, 1001) else ConnectionClosedError)
    assert (exc.code, exc.reason, exc.sent_code) == (code, "why ✓", code)
    protocol.receive_eof()
    assert state(protocol) is State.CLOSED
    assert not protocol.close_expected()
    assert protocol.data_to_send() == ([] if side is SERVER else [SEND_EOF])


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code_is_a_protocol_error(side: Side, code: int) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(close_frame(code), to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1002)
    # We failed the connection (§7.1.7) and read no answer: the code is ours.
    assert protocol.close_rcvd is None
    assert protocol.close_code == CloseCode.PROTOCOL_ERROR
    assert protocol.close_sent is not None
    assert protocol.close_reason == protocol.close_sent.reason != ""
    exc = protocol.close_exc()
    assert isinstance(exc, ConnectionClosedError)
    assert (exc.code, exc.sent_code) == (1002, 1002)


@pytest.mark.parametrize("side", SIDES)
def test_one_byte_close_payload(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(CLOSE, b"\x03"), to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1002)


@pytest.mark.parametrize("side", SIDES)
def test_close_reason_not_utf8(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(CLOSE, b"\x03\xe8\xce\xba\xff"), to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1007)
    assert isinstance(protocol.failure, InvalidPayload)


@pytest.mark.parametrize("side", SIDES)
def test_empty_close_is_echoed_empty(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(CLOSE, b""), to=side))
    assert protocol.events_received() == [Frame(CLOSE, b"")]
    assert sent(protocol) == ([Frame(CLOSE, b""), SEND_EOF] if side is SERVER else [Frame(CLOSE, b"")])
    assert protocol.close_code == CloseCode.NO_STATUS_RCVD
    assert protocol.close_reason == ""
    exc = protocol.close_exc()
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1005


def test_server_exact_close_echo_bytes() -> None:
    server = Protocol(SERVER)
    server.receive_data(wire(close_frame(1001, "away"), to=SERVER))
    assert server.data_to_send() == [b"\x88\x02\x03\xe9", SEND_EOF]


# -- the closing handshake (RFC 6455 §7) ----------------------------------------------------


def test_client_waits_for_the_server_to_close_tcp() -> None:
    client = Protocol(CLIENT)
    client.receive_data(wire(close_frame(1000), to=CLIENT))
    assert sent(client) == [close_frame(1000)]  # no SEND_EOF: the server closes TCP first
    assert client.close_expected()
    client.receive_data(b"late bytes are ignored")
    assert client.events_received() == [close_frame(1000)]
    assert client.data_to_send() == []
    client.receive_eof()
    assert state(client) is State.CLOSED
    assert not client.close_expected()
    assert client.data_to_send() == [SEND_EOF]
    assert isinstance(client.close_exc(), ConnectionClosedOK)


def test_client_initiated_close() -> None:
    client = Protocol(CLIENT)
    server = Protocol(SERVER)
    client.send_close(CloseCode.GOING_AWAY, "leaving")
    assert state(client) is State.CLOSING
    assert client.close_expected()
    with pytest.raises(ConnectionClosed):
        client.send_close()
    server.receive_data(b"".join(client.data_to_send()))
    assert server.events_received() == [close_frame(1001, "leaving")]
    assert server.data_to_send() == [b"\x88\x02\x03\xe9", SEND_EOF]
    client.receive_data(b"\x88\x02\x03\xe9")
    assert client.events_received() == [close_frame(1001)]
    assert client.data_to_send() == []  # already sent its close: no second one
    client.receive_eof()
    assert client.data_to_send() == [SEND_EOF]
    for side in (client, server):
        exc = side.close_exc()
        assert isinstance(exc, ConnectionClosedOK)
        assert (exc.code, exc.sent_code) == (1001, 1001)
    assert client.close_reason == ""
    assert server.close_reason == "leaving"


def test_server_initiated_close() -> None:
    server = Protocol(SERVER)
    server.send_close(1000, "done")
    assert server.data_to_send() == [b"\x88\x06\x03\xe8done"]
    assert server.close_expected()
    # Frames sent before the peer saw our close are still delivered (§7.1.2 allows data until its close).
    server.receive_data(wire(Frame(TEXT, b"in flight"), close_frame(1000), to=SERVER))
    assert server.events_received() == [Frame(TEXT, b"in flight"), close_frame(1000)]
    assert server.data_to_send() == [SEND_EOF]
    assert state(server) is State.CLOSING
    server.receive_eof()
    assert state(server) is State.CLOSED
    assert server.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_close_with_no_code_and_with_an_unsendable_code(side: Side) -> None:
    protocol = Protocol(side)
    for code in (1004, 1006, 1015, 999, 5000):
        with pytest.raises(ValueError):
            protocol.send_close(code)
    with pytest.raises(ValueError):
        protocol.send_close(1000, "x" * 124)
    assert state(protocol) is State.OPEN
    assert protocol.data_to_send() == []
    protocol.send_close(None)
    assert sent(protocol) == [Frame(CLOSE, b"")]
    assert protocol.close_sent == Close(CloseCode.NO_STATUS_RCVD)


@pytest.mark.parametrize("side", SIDES)
def test_no_pong_after_we_sent_close(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_close()
    assert len(sent(protocol)) == 1
    protocol.receive_data(wire(Frame(PING, b"still there?"), to=side))
    assert protocol.events_received() == [Frame(PING, b"still there?")]
    assert protocol.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_data_after_close_frame_is_discarded(side: Side) -> None:
    protocol = Protocol(side)
    after = wire(Frame(TEXT, b"after"), Frame(PING, b"x"), to=side)
    protocol.receive_data(wire(close_frame(1000), to=side) + after)
    assert protocol.events_received() == [close_frame(1000)]
    protocol.receive_data(after + b"\xff\xff garbage that would be a protocol error")
    assert protocol.events_received() == []
    assert sent(protocol) == ([close_frame(1000), SEND_EOF] if side is SERVER else [close_frame(1000)])
    assert protocol.failure is None


@pytest.mark.parametrize("side", SIDES)
def test_send_after_close_raises(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(close_frame(1000), to=side))
    protocol.data_to_send()
    sends: list[Callable[[], None]] = [
        lambda: protocol.send_text(b"t"),
        lambda: protocol.send_binary(b"b"),
        protocol.send_ping,
        protocol.send_pong,
        protocol.send_close,
        lambda: protocol.send_frame(Frame(TEXT, b"f")),
    ]
    for send in sends:
        with pytest.raises(ConnectionClosedOK):
            send()
    assert protocol.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_send_after_failure_raises(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(Opcode(1), b"\xff"), to=side))
    assert_failed(protocol, 1007)
    with pytest.raises(ConnectionClosedError) as info:
        protocol.send_text(b"x")
    assert info.value.code == 1007
    assert info.value.sent_code == 1007


# -- EOF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("cut", [0, 1, 2, 5, 9])
def test_eof_mid_frame_or_between_frames(side: Side, cut: int) -> None:
    protocol = Protocol(side)
    data = wire(Frame(TEXT, b"abcdefghij"), to=side)
    protocol.receive_data(data[:cut])
    protocol.receive_eof()
    assert state(protocol) is State.CLOSED
    assert protocol.close_code == CloseCode.ABNORMAL_CLOSURE
    assert protocol.close_reason == ""
    assert protocol.events_received() == []
    assert protocol.data_to_send() == [SEND_EOF]  # no close frame: TCP is gone
    exc = protocol.close_exc()
    assert isinstance(exc, ConnectionClosedError)
    assert (exc.code, exc.sent_code) == (1006, None)
    protocol.receive_eof()  # a second EOF changes nothing
    protocol.receive_data(data)  # nor do bytes after EOF
    assert protocol.events_received() == []
    assert protocol.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_eof_inside_a_fragmented_message(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(TEXT, b"part", fin=False), to=side))
    protocol.receive_eof()
    assert protocol.events_received() == [Frame(TEXT, b"part", fin=False)]
    assert state(protocol) is State.CLOSED
    assert protocol.close_code == 1006


# -- framing rules (RFC 6455 §5) ---------------------------------------------------------


def test_unmasked_client_frame_at_server() -> None:
    server = Protocol(SERVER)
    server.receive_data(b"\x81\x02hi")
    assert server.events_received() == []
    assert_failed(server, 1002)


def test_masked_server_frame_at_client() -> None:
    client = Protocol(CLIENT)
    client.receive_data(b"".join(Frame(TEXT, b"hi").serialize(mask=True)))
    assert client.events_received() == []
    assert_failed(client, 1002)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("rsv", [{"rsv1": True}, {"rsv2": True}, {"rsv3": True}])
def test_rsv_bits_without_extension(side: Side, rsv: dict[str, bool]) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(TEXT, b"ok"), Frame(TEXT, b"x", **rsv), Frame(TEXT, b"never"), to=side))
    assert protocol.events_received() == [Frame(TEXT, b"ok")]
    assert_failed(protocol, 1002)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode(side: Side, opcode: int) -> None:
    protocol = Protocol(side)
    header = bytes([0x80 | opcode, 0x80 if side is SERVER else 0]) + (b"\0\0\0\0" if side is SERVER else b"")
    protocol.receive_data(header)
    assert protocol.events_received() == []
    assert_failed(protocol, 1002)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_fragmented_control_frame(side: Side, opcode: Opcode) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(opcode, b"", fin=False), to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1002)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frame_over_125_bytes(side: Side, opcode: Opcode) -> None:
    protocol = Protocol(side)
    data = wire(Frame(opcode, b"\x03\xe8" + b"x" * 124), to=side)
    protocol.receive_data(data[:4])  # the header alone is enough to refuse it
    assert protocol.events_received() == []
    assert_failed(protocol, 1002)


@pytest.mark.parametrize("side", SIDES)
def test_control_frame_of_125_bytes_is_fine(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(PING, b"p" * 125), to=side))
    assert protocol.events_received() == [Frame(PING, b"p" * 125)]
    assert sent(protocol) == [Frame(PONG, b"p" * 125)]


@pytest.mark.parametrize("side", SIDES)
def test_continuation_without_start(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(CONT, b"orphan"), to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1002)


@pytest.mark.parametrize("side", SIDES)
def test_continuation_after_the_message_ended(side: Side) -> None:
    protocol = Protocol(side)
    frames = [Frame(BINARY, b"a", fin=False), Frame(CONT, b"b"), Frame(CONT, b"c")]
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.events_received() == frames[:2]
    assert_failed(protocol, 1002)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("first", [TEXT, BINARY])
@pytest.mark.parametrize("second", [TEXT, BINARY])
def test_new_data_frame_inside_fragmented_message(side: Side, first: Opcode, second: Opcode) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(first, b"a", fin=False), Frame(second, b"b"), to=side))
    assert protocol.events_received() == [Frame(first, b"a", fin=False)]
    assert_failed(protocol, 1002)


@pytest.mark.parametrize("side", SIDES)
def test_64_bit_length_with_top_bit(side: Side) -> None:
    protocol = Protocol(side, max_message_size=None)
    masked = side is SERVER
    header = bytes([0x82, (0x80 if masked else 0) | 127]) + struct.pack("!Q", 2**63 + 5)
    protocol.receive_data(header + (b"\x01\x02\x03\x04" if masked else b""))
    assert_failed(protocol, 1002)


# -- size limits (RFC 6455 §10.4) -----------------------------------------------------------


def header_only(opcode: Opcode, length: int, *, to: Side, fin: bool = True) -> bytes:
    """A frame header declaring ``length`` bytes, without the payload."""
    b0 = (0x80 if fin else 0) | opcode
    masked = 0x80 if to is SERVER else 0
    if length < 126:
        header = bytes([b0, masked | length])
    elif length < 65536:
        header = bytes([b0, masked | 126]) + struct.pack("!H", length)
    else:
        header = bytes([b0, masked | 127]) + struct.pack("!Q", length)
    return header + (b"\x11\x22\x33\x44" if masked else b"")


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("length", [101, 65536, 2**40])
def test_message_limit_refused_on_the_header(side: Side, length: int) -> None:
    protocol = Protocol(side, max_message_size=100)
    protocol.receive_data(header_only(BINARY, length, to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1009)
    assert isinstance(protocol.failure, PayloadTooBig)
    protocol.receive_data(bytes(1000))  # the payload that follows is not read
    assert protocol.events_received() == []
    assert protocol.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_frame_limit_refused_on_the_header(side: Side) -> None:
    protocol = Protocol(side, max_message_size=None, max_frame_size=10)
    frames = [Frame(TEXT, b"0123456789", fin=False)] + [Frame(CONT, b"0123456789", fin=False)] * 20
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.events_received() == frames  # a long message of small frames is fine
    protocol.receive_data(header_only(CONT, 11, to=side, fin=True))
    assert protocol.events_received() == []
    assert_failed(protocol, 1009)


@pytest.mark.parametrize("side", SIDES)
def test_both_limits_the_smaller_wins(side: Side) -> None:
    protocol = Protocol(side, max_message_size=20, max_frame_size=50)
    protocol.receive_data(header_only(TEXT, 21, to=side))
    assert_failed(protocol, 1009)
    protocol = Protocol(side, max_message_size=50, max_frame_size=20)
    protocol.receive_data(header_only(TEXT, 21, to=side))
    assert_failed(protocol, 1009)


@pytest.mark.parametrize("side", SIDES)
def test_message_limit_exactly(side: Side) -> None:
    protocol = Protocol(side, max_message_size=100)
    frames = [Frame(BINARY, bytes(100)), Frame(TEXT, b"a" * 100), Frame(BINARY, bytes(60), fin=False)]
    frames += [Frame(PING, bytes(100)), Frame(CONT, bytes(40))]  # control frames do not count
    frames += [Frame(TEXT, b"b" * 99, fin=False), Frame(CONT, b"c")]  # the count restarts per message
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.events_received() == frames
    assert state(protocol) is State.OPEN


@pytest.mark.parametrize("side", SIDES)
def test_fragmented_message_over_the_limit(side: Side) -> None:
    protocol = Protocol(side, max_message_size=10)
    frames = [Frame(TEXT, b"012345", fin=False), Frame(CONT, b"6789", fin=False)]
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.events_received() == frames
    assert protocol.data_to_send() == []
    protocol.receive_data(header_only(CONT, 1, to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1009)


@pytest.mark.parametrize("side", SIDES)
def test_no_limit(side: Side) -> None:
    protocol = Protocol(side, max_message_size=None)
    frame = Frame(BINARY, bytes(3 * 2**20))
    protocol.receive_data(wire(frame, to=side))
    assert protocol.events_received() == [frame]


# -- what a peer can make one connection hold (issue 17) ----------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_fragments_but_the_last_count_at_least_one_byte(side: Side) -> None:
    protocol = Protocol(side, max_message_size=3)
    frames = [Frame(TEXT, b"", fin=False), Frame(CONT, b"", fin=False), Frame(CONT, b"", fin=False), Frame(CONT, b"")]
    frames += [Frame(BINARY, b"a", fin=False), Frame(CONT, b"", fin=False), Frame(CONT, b"b")]  # 1 + 1 + 1
    protocol.receive_data(wire(*frames, to=side))
    assert drain(protocol) == frames
    assert state(protocol) is State.OPEN
    fourth = [Frame(TEXT, b"", fin=False)] + [Frame(CONT, b"", fin=False)] * 3
    protocol.receive_data(wire(*fourth, to=side))
    assert drain(protocol) == fourth[:3]
    assert_failed(protocol, 1009)


@pytest.mark.parametrize("side", SIDES)
def test_a_zero_limit_allows_empty_messages_but_no_fragmented_one(side: Side) -> None:
    protocol = Protocol(side, max_message_size=0)
    protocol.receive_data(wire(Frame(TEXT, b""), Frame(BINARY, b""), to=side))
    assert drain(protocol) == [Frame(TEXT, b""), Frame(BINARY, b"")]
    protocol.receive_data(wire(Frame(BINARY, b"", fin=False), to=side))
    assert drain(protocol) == []
    assert_failed(protocol, 1009)


@pytest.mark.parametrize("side", SIDES)
def test_a_message_that_never_ends_is_refused_after_max_message_size_fragments(side: Side) -> None:
    protocol = Protocol(side, max_message_size=1024)
    protocol.receive_data(wire(Frame(TEXT, b"", fin=False), to=side))
    protocol.receive_data(wire(Frame(CONT, b"", fin=False), to=side) * 10_000)
    events = drain(protocol)
    assert len(events) == 1024  # the first fragment and 1023 continuations: 1024 "bytes"
    assert_failed(protocol, 1009)
    assert isinstance(protocol.failure, PayloadTooBig)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("payload", [b"", b"x"], ids=["empty", "1-byte"])
def test_memory_of_a_message_that_never_ends_is_bounded(side: Side, payload: bytes) -> None:
    """16 MiB of tiny fragments through a driver loop with an Assembler: O(max_message_size)."""
    limit = 65536
    fragment = wire(Frame(CONT, payload, fin=False), to=side)
    chunk = fragment * (65536 // len(fragment))
    first = wire(Frame(TEXT, payload, fin=False), to=side)
    protocol = Protocol(side, max_message_size=limit)
    assembler = Assembler()
    writes: list[bytes] = []
    delivered = 0
    tracemalloc.start()
    try:
        protocol.receive_data(first)
        for _ in range(16 * 2**20 // len(chunk)):
            protocol.receive_data(chunk)
            while events := protocol.events_received():
                delivered += len(events)
                for frame in events:
                    assert assembler.feed(frame) is None
            writes += protocol.data_to_send()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert delivered == limit  # each fragment counted 1 byte
    close = Frame(CLOSE, struct.pack("!H", 1009) + str(protocol.failure).encode())
    assert decode_output(writes, masked=side is CLIENT) == [close, SEND_EOF]
    # One read buffered, the fragments' bytes (at most the limit, plus a bytearray's spare
    # room), one batch of frames. Parsing a read at once and keeping each fragment as an
    # object took 3.6 MiB for the 1-byte fragments, and the empty ones were never refused.
    assert peak < len(chunk) + 2 * limit + 65536, f"peak {peak} bytes"


def live_frames() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is Frame)


@pytest.mark.parametrize("side", SIDES)
def test_a_large_read_of_tiny_messages_is_parsed_max_pending_frames_at_a_time(side: Side) -> None:
    message = wire(Frame(TEXT, b"a"), to=side)
    data = message * (256 * 1024 // len(message))
    total = len(data) // len(message)
    protocol = Protocol(side)
    assert protocol.max_pending == 64
    before = live_frames()
    protocol.receive_data(data)  # one 256 KiB read, tens of thousands of messages
    assert live_frames() - before <= 64
    assert protocol.events_pending()
    assert protocol.unparsed_bytes == len(data) - 64 * len(message)  # raw bytes, no objects
    batch = protocol.events_received()  # a slow consumer takes one batch and works on it
    assert batch == [Frame(TEXT, b"a")] * 64
    assert live_frames() - before <= 2 * 64  # the batch it holds, and the next one parsed
    del batch
    assert live_frames() - before <= 64
    sizes = [len(batch) for batch in iter(protocol.events_received, [])]
    assert sizes == [64] * ((total - 64) // 64) + ([(total - 64) % 64] if (total - 64) % 64 else [])
    assert not protocol.events_pending()
    assert protocol.unparsed_bytes == 0
    assert state(protocol) is State.OPEN


@pytest.mark.parametrize("side", SIDES)
def test_no_bound_parses_a_read_at_once(side: Side) -> None:
    frames = [Frame(BINARY, bytes([i])) for i in range(200)]
    protocol = Protocol(side, max_pending=None)
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.unparsed_bytes == 0
    assert protocol.events_received() == frames
    assert protocol.events_received() == []


@pytest.mark.parametrize("side", SIDES)
def test_max_pending_may_change_between_batches(side: Side) -> None:
    frames = [Frame(BINARY, bytes([i])) for i in range(20)]
    protocol = Protocol(side, max_pending=2)
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.events_received() == frames[:2]
    protocol.max_pending = 8
    assert protocol.events_received() == frames[2:4]  # parsed under the old bound
    assert protocol.events_received() == frames[4:12]
    protocol.max_pending = None
    assert protocol.events_received() == frames[12:]
    assert protocol.events_received() == []


@pytest.mark.parametrize("side", SIDES)
def test_failing_from_outside_drops_what_is_unparsed(side: Side) -> None:
    frames = [Frame(BINARY, bytes([i])) for i in range(20)]
    protocol = Protocol(side, max_pending=4)
    protocol.receive_data(wire(*frames, to=side))
    protocol.fail(1008, "policy")
    assert protocol.unparsed_bytes == 0
    assert drain(protocol) == frames[:4]  # parsed before the failure: already received
    assert sent(protocol) == [close_frame(1008, "policy"), SEND_EOF]


def test_max_pending_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        Protocol(SERVER, max_pending=0)


@pytest.mark.parametrize("side", SIDES)
def test_eof_waits_for_the_frames_still_unparsed(side: Side) -> None:
    frames = [Frame(TEXT, str(i).encode()) for i in range(100)]
    protocol = Protocol(side, max_pending=16)
    protocol.receive_data(wire(*frames, to=side))
    protocol.receive_eof()
    assert state(protocol) is State.OPEN  # not before the frames are delivered
    assert protocol.data_to_send() == []
    protocol.receive_data(wire(Frame(TEXT, b"after EOF"), to=side))  # ignored, as always after EOF
    assert drain(protocol) == frames
    assert state(protocol) is State.CLOSED
    assert protocol.close_code == CloseCode.ABNORMAL_CLOSURE
    assert protocol.data_to_send() == [SEND_EOF]


@pytest.mark.parametrize("side", SIDES)
def test_a_close_frame_behind_the_bound_is_answered_when_parsed(side: Side) -> None:
    frames = [Frame(TEXT, str(i).encode()) for i in range(100)]
    protocol = Protocol(side, max_pending=16)
    protocol.receive_data(wire(*frames, close_frame(1001), Frame(TEXT, b"discarded"), to=side))
    protocol.receive_eof()
    assert protocol.data_to_send() == []
    assert protocol.close_rcvd is None
    assert drain(protocol) == [*frames, close_frame(1001)]
    assert state(protocol) is State.CLOSED
    assert protocol.close_code == 1001
    assert sent(protocol) == [close_frame(1001), SEND_EOF]


@pytest.mark.parametrize("side", SIDES)
def test_replies_follow_each_batch(side: Side) -> None:
    # The pong for a ping in a batch is there once that batch is parsed, before the next.
    frames = [Frame(TEXT, b"t")] * 3 + [Frame(PING, b"1")] + [Frame(TEXT, b"t")] * 3 + [Frame(PING, b"2")]
    protocol = Protocol(side, max_pending=4)
    protocol.receive_data(wire(*frames, to=side))
    assert sent(protocol) == [Frame(PONG, b"1")]
    assert protocol.events_received() == frames[:4]
    assert sent(protocol) == [Frame(PONG, b"2")]
    assert protocol.events_received() == frames[4:]
    assert protocol.events_received() == []


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("max_pending", [1, 2, 5])
def test_every_split_position_with_a_small_bound(side: Side, max_pending: int) -> None:
    data = wire(*CONVERSATION, to=side)
    for i in range(len(data) + 1):
        protocol = Protocol(side, max_pending=max_pending)
        protocol.receive_data(data[:i])
        first = protocol.events_received()  # one batch only: the rest waits, parsed or not
        assert len(first) <= max_pending
        protocol.receive_data(data[i:])
        assert first + drain(protocol) == CONVERSATION, i
        assert sent(protocol) == expected_replies(side), i


# -- UTF-8 (RFC 6455 §8.1) --------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", b"\xc0\xaf", b"ok\xe2\x82"],
)
def test_invalid_utf8_in_one_frame(side: Side, payload: bytes) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(TEXT, payload), to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1007)


@pytest.mark.parametrize("side", SIDES)
def test_valid_utf8_in_one_frame(side: Side) -> None:
    protocol = Protocol(side)
    frames = [Frame(TEXT, KOSME), Frame(TEXT, b"ascii"), Frame(BINARY, b"\xff\xfe not text")]
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.events_received() == frames
    assert protocol.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_valid_utf8_split_across_fragments_at_every_byte(side: Side) -> None:
    for i in range(len(KOSME) + 1):
        for j in range(i, len(KOSME) + 1):
            protocol = Protocol(side)
            frames = [Frame(TEXT, KOSME[:i], fin=False), Frame(CONT, KOSME[i:j], fin=False), Frame(CONT, KOSME[j:])]
            protocol.receive_data(wire(*frames, to=side))
            assert protocol.events_received() == frames, (i, j)
            assert protocol.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_invalid_utf8_split_across_fragments(side: Side) -> None:
    # Each fragment alone is a valid prefix; together they are not UTF-8.
    protocol = Protocol(side)
    frames = [Frame(TEXT, b"\xe2\x82", fin=False), Frame(CONT, b"(", fin=True)]
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.events_received() == frames[:1]
    assert_failed(protocol, 1007)


@pytest.mark.parametrize("side", SIDES)
def test_utf8_sequence_cut_by_the_end_of_the_message(side: Side) -> None:
    protocol = Protocol(side)
    frames = [Frame(TEXT, b"ok\xf0\x9d", fin=False), Frame(CONT, b"\x84", fin=False), Frame(CONT, b"", fin=True)]
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.events_received() == frames[:2]
    assert_failed(protocol, 1007)


@pytest.mark.parametrize("side", SIDES)
def test_bad_first_fragment_fails_before_the_rest_arrives(side: Side) -> None:
    # Autobahn 6.4.x: κόσμε then U+110000, which no later byte can make valid.
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(TEXT, "κόσμε".encode() + b"\xf4\x90\x80\x80", fin=False), to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1007)


@pytest.mark.parametrize("side", SIDES)
def test_bad_byte_in_a_middle_fragment_fails_at_once(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(TEXT, b"abc", fin=False), Frame(CONT, b"\xff", fin=False), to=side))
    assert protocol.events_received() == [Frame(TEXT, b"abc", fin=False)]
    assert_failed(protocol, 1007)


@pytest.mark.parametrize("side", SIDES)
def test_a_new_text_message_gets_a_fresh_decoder(side: Side) -> None:
    protocol = Protocol(side)
    frames = [Frame(TEXT, b"a", fin=False), Frame(CONT, b"b"), Frame(TEXT, b"\xe2\x82", fin=False)]
    frames += [Frame(CONT, b"\xac")]
    frames += [Frame(BINARY, b"\xe2", fin=False), Frame(CONT, b"\xff")]  # binary: not decoded
    protocol.receive_data(wire(*frames, to=side))
    assert protocol.events_received() == frames
    assert protocol.data_to_send() == []


# -- pings and pongs (RFC 6455 §5.5.2, §5.5.3) -----------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_ping_answered_with_same_payload(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(PING, b"\x00payload\xff"), Frame(PONG, b"ignored"), to=side))
    assert protocol.events_received() == [Frame(PING, b"\x00payload\xff"), Frame(PONG, b"ignored")]
    assert sent(protocol) == [Frame(PONG, b"\x00payload\xff")]


def test_server_pong_bytes() -> None:
    server = Protocol(SERVER)
    server.receive_data(wire(Frame(PING, b"abc"), to=SERVER))
    assert server.data_to_send() == [b"\x8a\x03abc"]


INTERLEAVED = [
    Frame(TEXT, b"a", fin=False),
    Frame(PING, b"1"),
    Frame(CONT, b"b", fin=False),
    Frame(PING, b"2"),
    Frame(PONG, b"3"),
    Frame(CONT, b"c"),
]


@pytest.mark.parametrize("side", SIDES)
def test_pings_interleaved_in_a_fragmented_message(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(*INTERLEAVED, to=side))
    assert protocol.events_received() == INTERLEAVED
    assert sent(protocol) == [Frame(PONG, b"1"), Frame(PONG, b"2")]


@pytest.mark.parametrize("side", SIDES)
def test_every_ping_in_one_read_is_answered_in_order(side: Side) -> None:
    # Autobahn 2.10: ten pings in one write, ten pongs with their payloads.
    pings = [Frame(PING, i.to_bytes(4, "big")) for i in range(10_000)]
    protocol = Protocol(side)
    protocol.receive_data(wire(*pings, to=side))
    assert drain(protocol) == pings  # every ping is delivered
    assert sent(protocol) == [Frame(PONG, p.data) for p in pings]
    assert sent(protocol) == []


@pytest.mark.parametrize("side", SIDES)
def test_pongs_keep_their_place_among_what_this_side_sends(side: Side) -> None:
    # Before the answer to a close frame later in the same read.
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(PING, b"a"), Frame(PING, b"b"), close_frame(1001), Frame(PING, b"late"), to=side))
    assert drain(protocol) == [Frame(PING, b"a"), Frame(PING, b"b"), close_frame(1001)]
    eof: list[Frame | bytes] = [SEND_EOF] if side is SERVER else []
    assert sent(protocol) == [Frame(PONG, b"a"), Frame(PONG, b"b"), close_frame(1001), *eof]
    # Before the close frame of a failure later in the same read.
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(PING, b"c"), Frame(CONT, b"x"), to=side))
    assert drain(protocol) == [Frame(PING, b"c")]
    assert sent(protocol)[0] == Frame(PONG, b"c")
    assert protocol.close_sent is not None and protocol.close_sent.code == 1002
    # In order with what the application sends, and before our end of TCP.
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(PING, b"d"), to=side))
    protocol.send_text(b"reply")
    protocol.receive_data(wire(Frame(PING, b"e"), to=side))
    protocol.receive_eof()
    assert drain(protocol) == [Frame(PING, b"d"), Frame(PING, b"e")]
    assert sent(protocol) == [Frame(PONG, b"d"), Frame(TEXT, b"reply"), Frame(PONG, b"e"), SEND_EOF]


def test_a_pong_goes_out_before_a_prepared_frame_sent_after_it() -> None:
    server = Protocol(SERVER)
    server.receive_data(wire(Frame(PING, b"p"), to=SERVER))
    server.send_prepared(Frame(TEXT, b"hi"), b"\x81\x02hi")
    assert server.data_to_send() == [b"\x8a\x01p", b"\x81\x02hi"]


# -- outgoing fragmentation ------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_outgoing_fragmentation_rules(side: Side) -> None:
    protocol = Protocol(side)
    with pytest.raises(ValueError, match="no fragmented message"):
        protocol.send_continuation(b"x", fin=True)
    protocol.send_text(b"a", fin=False)
    with pytest.raises(ValueError, match="in progress"):
        protocol.send_text(b"b")
    with pytest.raises(ValueError, match="in progress"):
        protocol.send_binary(b"b", fin=False)
    protocol.send_ping(b"p")  # control frames may go between fragments
    protocol.send_continuation(b"b", fin=False)
    protocol.send_continuation(b"c", fin=True)
    with pytest.raises(ValueError, match="no fragmented message"):
        protocol.send_continuation(b"d", fin=True)
    protocol.send_binary(b"x", fin=False)
    protocol.send_continuation(b"y", fin=True)
    protocol.send_binary(b"z")
    assert sent(protocol) == [
        Frame(TEXT, b"a", fin=False),
        Frame(PING, b"p"),
        Frame(CONT, b"b", fin=False),
        Frame(CONT, b"c"),
        Frame(BINARY, b"x", fin=False),
        Frame(CONT, b"y"),
        Frame(BINARY, b"z"),
    ]


@pytest.mark.parametrize("side", SIDES)
def test_send_frame_sends_anything(side: Side) -> None:
    protocol = Protocol(side)
    odd = Frame(CONT, b"no checks", fin=False, rsv2=True)
    protocol.send_frame(odd)
    (data,) = protocol.data_to_send()
    assert data[0] == 0x20  # fin clear, RSV2 set, continuation
    reader = StreamReader(data)
    parser = Frame.parse(reader, mask=side is CLIENT, rsv_mask=0x20)
    with pytest.raises(StopIteration) as stop:
        next(parser)
    assert stop.value.value == odd


# -- prepared (broadcast) frames ------------------------------------------------------------


def test_send_prepared_writes_the_bytes_as_they_are() -> None:
    server = Protocol(SERVER)
    message = Frame(TEXT, b"to everyone")
    prepared = b"".join(message.serialize(mask=False))
    assert server.can_send_prepared()
    server.send_prepared(message, prepared)
    assert server.data_to_send() == [prepared]


def test_send_prepared_falls_back_where_bytes_cannot_be_shared() -> None:
    message = Frame(BINARY, b"\x00\x01")
    prepared = b"".join(message.serialize(mask=False))
    # A client must mask with its own key (§5.3).
    client = Protocol(CLIENT)
    assert not client.can_send_prepared()
    client.send_prepared(message, prepared)
    assert sent(client) == [message]
    # An extension transforms frames with per-connection state.
    server = Protocol(SERVER, extensions=[Invert()])
    assert not server.can_send_prepared()
    server.send_prepared(message, prepared)
    assert server.data_to_send() == [b"\xc2\x02\xff\xfe"]


@pytest.mark.parametrize("side", SIDES)
def test_send_prepared_rules(side: Side) -> None:
    protocol = Protocol(side)
    message = Frame(TEXT, b"m")
    prepared = b"".join(message.serialize(mask=False))
    protocol.send_text(b"a", fin=False)
    with pytest.raises(ValueError, match="in progress"):
        protocol.send_prepared(message, prepared)
    protocol.send_continuation(b"b", fin=True)
    protocol.send_close()
    protocol.data_to_send()
    with pytest.raises(ConnectionClosed):
        protocol.send_prepared(message, prepared)
    assert protocol.data_to_send() == []


# -- failing the connection (RFC 6455 §7.1.7) ----------------------------------------------


@pytest.mark.parametrize("side", SIDES)
def test_fail(side: Side) -> None:
    protocol = Protocol(side)
    protocol.fail(CloseCode.INTERNAL_ERROR, "oops")
    assert sent(protocol) == [close_frame(1011, "oops"), SEND_EOF]
    assert state(protocol) is State.CLOSING
    assert protocol.eof_sent
    assert protocol.failure is not None
    assert (protocol.close_code, protocol.close_reason) == (1011, "oops")
    assert isinstance(protocol.close_exc(), ConnectionClosedError)
    protocol.fail(1002, "again")  # nothing more to send
    assert protocol.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_fail_with_unsendable_code_or_long_reason(side: Side) -> None:
    protocol = Protocol(side)
    protocol.fail(1006, "abnormal")
    assert sent(protocol) == [close_frame(1002, "abnormal"), SEND_EOF]
    protocol = Protocol(side)
    protocol.fail(1008, "r" * 200)
    assert sent(protocol) == [close_frame(1008, "r" * 120), SEND_EOF]
    protocol = Protocol(side)
    protocol.fail(1008, "é" * 100)  # 120 characters but 200 bytes: the reason is dropped
    assert sent(protocol) == [close_frame(1008), SEND_EOF]


@pytest.mark.parametrize("side", SIDES)
def test_fail_after_close_sent_only_ends_tcp(side: Side) -> None:
    protocol = Protocol(side)
    protocol.send_close()
    protocol.data_to_send()
    protocol.fail(1002)
    assert protocol.data_to_send() == [SEND_EOF]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("cut", ["between frames", "inside a frame"])
def test_nothing_is_processed_after_fail(side: Side, cut: str) -> None:
    # §7.1.7: after failing the connection an endpoint MUST NOT process more data from the peer.
    protocol = Protocol(side)
    data = wire(Frame(BINARY, b"0123456789"), Frame(PING, b"p"), Frame(TEXT, b"t"), to=side)
    split = 0 if cut == "between frames" else len(header_only(BINARY, 10, to=side)) + 3
    protocol.receive_data(data[:split])
    protocol.fail(CloseCode.POLICY_VIOLATION)
    assert sent(protocol) == [close_frame(1008), SEND_EOF]
    protocol.receive_data(data[split:])
    protocol.receive_data(data)
    assert protocol.events_received() == []
    assert protocol.data_to_send() == []
    protocol.receive_eof()
    assert state(protocol) is State.CLOSED
    assert protocol.data_to_send() == []


@pytest.mark.parametrize("side", SIDES)
def test_error_frames_after_a_failure_are_not_answered(side: Side) -> None:
    protocol = Protocol(side)
    protocol.receive_data(wire(Frame(CONT, b"x"), Frame(PING, b"p"), close_frame(1000), to=side))
    assert protocol.events_received() == []
    assert_failed(protocol, 1002)
    protocol.receive_data(wire(Frame(PING, b"q"), to=side))
    assert protocol.events_received() == []
    assert protocol.data_to_send() == []


# -- extensions -------------------------------------------------------------------------------


class Invert(Extension):
    """A tiny real extension: data payloads travel bit-inverted, flagged by RSV1."""

    name = "x-invert"
    rsv_mask = 0x40

    def __init__(self) -> None:
        self.limits: list[int | None] = []

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        self.limits.append(max_size)
        if frame.is_control or not frame.rsv1:
            return frame
        return Frame(frame.opcode, bytes(b ^ 0xFF for b in frame.data), frame.fin)

    def encode(self, frame: Frame) -> Frame:
        if frame.is_control:
            return frame
        return Frame(frame.opcode, bytes(b ^ 0xFF for b in frame.data), frame.fin, rsv1=True)


class Broken(Extension):
    name = "x-broken"

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        raise RuntimeError("bug in an extension")

    def encode(self, frame: Frame) -> Frame:
        return frame


def test_extension_transforms_both_ways() -> None:
    client = Protocol(CLIENT, extensions=[Invert()])
    extension = Invert()
    server = Protocol(SERVER, extensions=[extension], max_message_size=1000)
    client.send_text("é".encode(), fin=False)
    client.send_ping(b"p")
    client.send_continuation(b"!", fin=True)
    data = b"".join(client.data_to_send())
    assert data[0] == 0x41  # RSV1, not fin, text
    server.receive_data(data)
    assert server.events_received() == [
        Frame(TEXT, "é".encode(), fin=False),
        Frame(PING, b"p"),
        Frame(CONT, b"!"),
    ]
    # The extension is told how much of the message may still come.
    assert extension.limits == [1000, 998, 998]
    # Without the extension, RSV1 is a protocol error.
    plain = Protocol(SERVER)
    plain.receive_data(data)
    assert_failed(plain, 1002)


def test_extension_still_leaves_other_rsv_bits_reserved() -> None:
    server = Protocol(SERVER, extensions=[Invert()])
    server.receive_data(wire(Frame(TEXT, b"x", rsv2=True), to=SERVER))
    assert_failed(server, 1002)


def test_extensions_must_not_share_rsv_bits() -> None:
    with pytest.raises(ValueError, match="RSV"):
        Protocol(SERVER, extensions=[Invert(), Invert()])


def test_extension_limits() -> None:
    # A frame declared far beyond the limit is refused on its header even with extensions.
    server = Protocol(SERVER, extensions=[Invert()], max_message_size=1000)
    server.receive_data(header_only(BINARY, 10**6, to=SERVER))
    assert_failed(server, 1009)
    # What the extension decodes is held to the limit as well.
    server = Protocol(SERVER, extensions=[Invert()], max_message_size=1000)
    server.receive_data(wire(Frame(BINARY, bytes(1001), rsv1=True), to=SERVER))
    assert server.events_received() == []
    assert_failed(server, 1009)


def test_unexpected_error_fails_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    server = Protocol(SERVER, extensions=[Broken()])
    with caplog.at_level(logging.ERROR, logger="ws4web.protocol"):
        server.receive_data(wire(Frame(TEXT, b"x"), to=SERVER))
    assert server.events_received() == []
    assert sent(server) == [close_frame(1011, "internal error"), SEND_EOF]
    assert isinstance(server.failure, ProtocolError)
    assert "bug in an extension" in str(server.failure)
    assert any(record.exc_info for record in caplog.records)
