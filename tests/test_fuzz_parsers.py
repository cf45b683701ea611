"""Property tests: the parsers survive any input and any chunking, and valid input round-trips."""

from __future__ import annotations

import itertools
from collections.abc import Generator
from typing import TypeVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ws4web.exceptions import InvalidHandshake, InvalidHeader
from ws4web.frames import Frame, Opcode
from ws4web.handshake import accept, check_response, parse_extensions
from ws4web.http11 import parse_request, parse_response
from ws4web.protocol import CLIENT, SEND_EOF, SERVER, Protocol, Side, State
from ws4web.streams import StreamReader

from .test_handshake import KEY, ServerFactory
from .test_protocol import decode_output, wire

T = TypeVar("T")

FUZZ = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

sides = st.sampled_from([SERVER, CLIENT])


cut_points = st.lists(st.integers(0, 2**16), max_size=12)


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the positions in ``cuts`` (taken modulo its length; empty chunks included)."""
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def check_output(protocol: Protocol, writes: list[bytes]) -> None:
    """What a protocol writes is frames, then at most one SEND_EOF, last."""
    assert all(isinstance(chunk, bytes) for chunk in writes)
    if SEND_EOF in writes:
        assert writes.index(SEND_EOF) == len(writes) - 1
    decode_output([w for w in writes if w != SEND_EOF], masked=protocol.side is CLIENT)


# -- Protocol: garbage in ---------------------------------------------------------------


@FUZZ
@given(side=sides, data=st.binary(max_size=300), cuts=cut_points, limit=st.sampled_from([None, 0, 10, 2**20]))
def test_protocol_never_raises_on_garbage(side: Side, data: bytes, cuts: list[int], limit: int | None) -> None:
    protocol = Protocol(side, max_message_size=limit)
    writes: list[bytes] = []
    for chunk in chunks_of(data, cuts):
        protocol.receive_data(chunk)
        writes += protocol.data_to_send()
        assert all(isinstance(frame, Frame) for frame in protocol.events_received())
    protocol.receive_eof()
    writes += protocol.data_to_send()
    assert protocol.state is State.CLOSED
    assert writes[-1:] == [SEND_EOF]
    check_output(protocol, writes)


# Well-formed frame headers around any opcode, flags and payload: reaches deeper than raw bytes.
garbage_frames = st.lists(
    st.builds(
        Frame,
        st.sampled_from(list(Opcode)),
        st.binary(max_size=130),
        st.booleans(),
        st.integers(0, 9).map(lambda n: n == 0),  # RSV1 now and then
    ),
    max_size=8,
)


@FUZZ
@given(side=sides, frames=garbage_frames, cuts=cut_points)
def test_protocol_never_raises_on_framed_garbage(side: Side, frames: list[Frame], cuts: list[int]) -> None:
    protocol = Protocol(side, max_message_size=100)
    writes: list[bytes] = []
    for chunk in chunks_of(wire(*frames, to=side), cuts):
        protocol.receive_data(chunk)
        writes += protocol.data_to_send()
    protocol.receive_eof()
    writes += protocol.data_to_send()
    assert protocol.state is State.CLOSED
    check_output(protocol, writes)


# -- Protocol: valid sequences round-trip ------------------------------------------------------

controls = st.builds(Frame, st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125))


@st.composite
def message_frames(draw: st.DrawFn) -> list[Frame]:
    """One message, fragmented anywhere (inside UTF-8 sequences too), control frames between fragments."""
    if draw(st.booleans()):
        opcode, payload = Opcode.TEXT, draw(st.text(max_size=60)).encode()
    else:
        opcode, payload = Opcode.BINARY, draw(st.binary(max_size=200))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    bounds = [0, *cuts, len(payload)]
    pieces = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    frames: list[Frame] = []
    for i, piece in enumerate(pieces):
        if i:
            frames += draw(st.lists(controls, max_size=2))
        frames.append(Frame(opcode if i == 0 else Opcode.CONTINUATION, piece, fin=i == len(pieces) - 1))
    return frames


conversations = st.lists(st.one_of(message_frames(), controls.map(lambda f: [f])), max_size=6).map(
    lambda groups: [frame for group in groups for frame in group]
)


@FUZZ
@given(side=sides, frames=conversations, cuts=cut_points, max_pending=st.sampled_from([None, 1, 3, 64]))
def test_valid_frames_round_trip_under_any_chunking(
    side: Side, frames: list[Frame], cuts: list[int], max_pending: int | None
) -> None:
    protocol = Protocol(side, max_pending=max_pending)
    events: list[Frame] = []
    for chunk in chunks_of(wire(*frames, to=side), cuts):
        protocol.receive_data(chunk)
        while batch := protocol.events_received():
            events += batch
    assert events == frames
    assert protocol.state is State.OPEN
    assert protocol.failure is None
    # Every ping is answered, in order (RFC 6455 §5.5.2).
    pongs = [Frame(Opcode.PONG, frame.data) for frame in frames if frame.opcode is Opcode.PING]
    assert decode_output(protocol.data_to_send(), masked=side is CLIENT) == pongs


@FUZZ
@given(frames=conversations)
def test_what_one_side_sends_the_other_receives(frames: list[Frame]) -> None:
    for sender_side, receiver_side in ((CLIENT, SERVER), (SERVER, CLIENT)):
        sender, receiver = Protocol(sender_side), Protocol(receiver_side)
        for frame in frames:
            sender.send_frame(frame)
        for chunk in sender.data_to_send():
            receiver.receive_data(chunk)
        assert receiver.events_received() == frames


# -- HTTP parsers ---------------------------------------------------------------------------

VALID_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: a, b\r\nSec-WebSocket-Extensions: x-one; p=1\r\n\r\n"
)
VALID_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def run_to_end(parser: Generator[None, None, T], reader: StreamReader, chunks: list[bytes]) -> T:
    pending = list(chunks)
    while True:
        try:
            next(parser)
        except StopIteration as stop:
            result: T = stop.value
            return result
        if pending:
            reader.feed_data(pending.pop(0))
        else:
            assert not reader.eof, "the parser kept waiting after EOF"
            reader.feed_eof()


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """Arbitrary bytes, or a valid message with a stretch replaced by arbitrary bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    start = draw(st.integers(0, len(valid)))
    end = draw(st.integers(start, len(valid)))
    middle = draw(st.one_of(st.binary(max_size=40), st.sampled_from([b"\r\n", b":", b" ", b",", b";", b'"', b"\n"])))
    return valid[:start] + middle + valid[end:]


@FUZZ
@given(data=mutated(VALID_REQUEST), cuts=cut_points)
def test_parse_request_raises_only_handshake_errors(data: bytes, cuts: list[int]) -> None:
    reader = StreamReader()
    try:
        request = run_to_end(parse_request(reader, max_line=200, max_headers=10), reader, chunks_of(data, cuts))
        accepted = accept(request, subprotocols=["b"], extensions=[ServerFactory("x-one")])
    except InvalidHandshake:
        return
    assert accepted.response.status == 101


@FUZZ
@given(data=mutated(VALID_RESPONSE), cuts=cut_points)
@example(data=b"HTTP/1.1 400 X\r\nContent-Length: \xb2\r\n\r\n", cuts=[])  # once escaped as ValueError
@example(data=b"HTTP/1.1 400 X\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", cuts=[])
def test_parse_response_raises_only_handshake_errors(data: bytes, cuts: list[int]) -> None:
    reader = StreamReader()
    try:
        response = run_to_end(parse_response(reader, max_body=100), reader, chunks_of(data, cuts))
        check_response(response, KEY)
    except InvalidHandshake:
        return


@FUZZ
@given(value=st.text(alphabet=st.sampled_from(list('ab=;, "\\\tx-1é')), max_size=30))
def test_parse_extensions_raises_only_invalid_header(value: str) -> None:
    try:
        offers = parse_extensions([value])
    except InvalidHeader:
        return
    for name, params in offers:
        assert name
        for pname, pvalue in params:
            assert pname
            assert pvalue is None or pvalue
