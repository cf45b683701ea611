"""Tests for ws4web.messages: message types, frame assembly and fragmenting iterables."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from ws4web.frames import Close, CloseCode, Frame, Opcode
from ws4web.messages import (
    Assembler,
    BinaryMessage,
    CloseControlMessage,
    Message,
    PingControlMessage,
    PongControlMessage,
    TextMessage,
    iter_fragments,
)

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION


def test_text_message_from_bytes_and_str() -> None:
    from_bytes = TextMessage("héllo".encode())
    from_str = TextMessage("héllo")
    for message in (from_bytes, from_str):
        assert message.data == "héllo".encode()
        assert message.text == "héllo"
        assert str(message) == "héllo"
        assert len(message) == 6  # bytes, not characters
        assert bytes(message) == "héllo".encode()
        assert message.is_text and not message.is_binary
        assert message.opcode is TEXT
        assert message.completed
    assert from_bytes == from_str


def test_text_is_decoded_once() -> None:
    message = TextMessage(b"abc")
    assert message.text is message.text


def test_binary_message() -> None:
    message = BinaryMessage(b"\x00\xff")
    assert message.is_binary and not message.is_text
    assert message.opcode is BINARY
    assert bytes(message) == b"\x00\xff"
    assert len(message) == 2
    assert BinaryMessage().data == b""
    assert Message(b"x").opcode is BINARY


def test_message_equality() -> None:
    assert TextMessage(b"a") == TextMessage("a")
    assert TextMessage(b"a") != BinaryMessage(b"a")
    assert BinaryMessage(b"a") != BinaryMessage(b"b")
    assert TextMessage(b"a") != b"a"
    assert BinaryMessage(b"a").__eq__(b"a") is NotImplemented
    with pytest.raises(TypeError):
        hash(TextMessage(b"a"))


def test_message_repr() -> None:
    assert repr(TextMessage(b"hi")) == "TextMessage(b'hi', len=2)"
    assert repr(BinaryMessage(b"x" * 40)) == f"BinaryMessage({b'x' * 29 + b'...'!r}, len=40)"


def test_control_messages() -> None:
    assert PingControlMessage(b"p").opcode is Opcode.PING
    assert PongControlMessage(b"q").opcode is Opcode.PONG
    close = CloseControlMessage(CloseCode.GOING_AWAY, "bye")
    assert close.opcode is Opcode.CLOSE
    assert (close.code, close.reason) == (1001, "bye")
    assert close.data == b"\x03\xe9bye"
    assert Close.parse(close.data) == Close(1001, "bye")
    default = CloseControlMessage()
    assert (default.code, default.reason, default.data) == (1000, "", b"\x03\xe8")
    with pytest.raises(ValueError):
        CloseControlMessage(1006)
    assert not PingControlMessage(b"").is_text


# -- Assembler ----------------------------------------------------------------------------


def test_assembler_single_frames() -> None:
    assembler = Assembler()
    text = assembler.feed(Frame(TEXT, b"hello"))
    assert isinstance(text, TextMessage)
    assert text.text == "hello"
    binary = assembler.feed(Frame(BINARY, b"\x01"))
    assert isinstance(binary, BinaryMessage)
    assert binary.data == b"\x01"


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_assembler_fragments(opcode: Opcode) -> None:
    assembler = Assembler()
    payload = "κόσμε".encode()
    assert assembler.feed(Frame(opcode, payload[:3], fin=False)) is None
    assert assembler.feed(Frame(CONT, b"", fin=False)) is None
    assert assembler.feed(Frame(CONT, payload[3:7], fin=False)) is None
    message = assembler.feed(Frame(CONT, payload[7:]))
    expected = TextMessage(payload) if opcode is TEXT else BinaryMessage(payload)
    assert message == expected
    assert type(message) is type(expected)
    # The assembler is ready for the next message, of either kind.
    assert assembler.feed(Frame(BINARY, b"a", fin=False)) is None
    assert assembler.feed(Frame(CONT, b"b")) == BinaryMessage(b"ab")
    assert assembler.feed(Frame(TEXT, b"c", fin=False)) is None
    assert assembler.feed(Frame(CONT, b"d")) == TextMessage(b"cd")


def test_assembler_single_frame_between_messages_does_not_leak() -> None:
    assembler = Assembler()
    assert assembler.feed(Frame(TEXT, b"a", fin=False)) is None
    assert assembler.feed(Frame(CONT, b"b")) == TextMessage(b"ab")
    assert assembler.feed(Frame(BINARY, b"whole")) == BinaryMessage(b"whole")
    assert assembler.feed(Frame(BINARY, b"x", fin=False)) is None
    assert assembler.feed(Frame(CONT, b"y")) == BinaryMessage(b"xy")


# Fragment sizes around Assembler.LARGE_FRAGMENT: empty, tiny, just below, at, above, large.
SIZES = [0, 1, 4095, 4096, 4097, 70_000]


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_assembler_joins_any_mix_of_fragment_sizes_in_order(opcode: Opcode) -> None:
    assert Assembler.LARGE_FRAGMENT == 4096
    assembler = Assembler()
    counter = itertools.count()
    for sizes in itertools.product(SIZES, repeat=3):
        payloads = [bytes([next(counter) % 128]) * size for size in sizes] + [b"end"]
        fragments = [Frame(opcode, payloads[0], fin=False)]
        fragments += [Frame(CONT, payload, fin=False) for payload in payloads[1:-1]]
        results = [assembler.feed(frame) for frame in [*fragments, Frame(CONT, payloads[-1])]]
        assert results[:-1] == [None] * len(fragments)
        message = results[-1]
        assert message is not None and message.opcode is opcode, sizes
        assert type(message.data) is bytes
        assert message.data == b"".join(payloads), sizes


def test_assembler_does_not_copy_a_lone_fragment() -> None:
    assembler = Assembler()
    payload = bytes(100_000)
    assert assembler.feed(Frame(BINARY, payload, fin=False)) is None
    assert assembler.feed(Frame(CONT, b"", fin=False)) is None
    message = assembler.feed(Frame(CONT, b""))
    assert message is not None and message.data is payload


def traced_peak(feed: Callable[[], object]) -> int:
    """Peak bytes allocated while ``feed`` runs (what existed before is not counted)."""
    tracemalloc.start()
    try:
        feed()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_assembler_copies_large_fragments_only_in_the_final_join() -> None:
    fragments = [Frame(BINARY, bytes(65536), fin=False)]
    fragments += [Frame(CONT, bytes([i]) * 65536, fin=False) for i in range(1, 15)] + [Frame(CONT, bytes(65536))]
    assembler = Assembler()
    messages: list[Message | None] = []
    peak = traced_peak(lambda: messages.extend(assembler.feed(frame) for frame in fragments))
    assert messages[-1] is not None and len(messages[-1].data) == 16 * 65536
    assert peak < 16 * 65536 + 4096, f"peak {peak} bytes"  # the joined message, and a list


@pytest.mark.parametrize("payload", [b"", b"x"], ids=["empty", "1-byte"])
def test_assembler_memory_for_many_tiny_fragments(payload: bytes) -> None:
    """200,000 fragments: no object (nor list slot) per fragment, whatever the protocol allowed."""
    count = 200_000
    first, middle, last = Frame(TEXT, payload, fin=False), Frame(CONT, payload, fin=False), Frame(CONT, b"")
    assembler = Assembler()

    def feed() -> None:
        assembler.feed(first)
        for _ in range(count):
            assembler.feed(middle)
        message = assembler.feed(last)
        assert message is not None and len(message.data) == len(payload) * (count + 1)

    peak = traced_peak(feed)
    # 1-byte fragments: the shared tail (with a bytearray's spare room) and the final join.
    # Keeping a list of the fragments and joining it at the end peaked at 17 MB here.
    assert peak < 3 * len(payload) * count + 4096, f"peak {peak} bytes"


# -- iter_fragments -----------------------------------------------------------------------


def test_iter_fragments_text() -> None:
    assert list(iter_fragments(["a", "é", "c"])) == [
        (TEXT, b"a", False),
        (CONT, "é".encode(), False),
        (CONT, b"c", True),
    ]


def test_iter_fragments_binary() -> None:
    chunks: list[bytes | bytearray | memoryview] = [b"a", bytearray(b"b"), memoryview(b"c")]
    fragments = list(iter_fragments(chunks))
    assert fragments == [(BINARY, b"a", False), (CONT, b"b", False), (CONT, b"c", True)]
    assert all(type(payload) is bytes for _, payload, _ in fragments)


def test_iter_fragments_single_chunk() -> None:
    assert list(iter_fragments(["only"])) == [(TEXT, b"only", True)]
    assert list(iter_fragments([b"only"])) == [(BINARY, b"only", True)]


def test_iter_fragments_empty() -> None:
    assert list(iter_fragments([])) == [(TEXT, b"", True)]
    assert list(iter_fragments([], binary=True)) == [(BINARY, b"", True)]
    assert list(iter_fragments([], binary=False)) == [(TEXT, b"", True)]


def test_iter_fragments_forced_kind() -> None:
    assert list(iter_fragments(["a", "b"], binary=True)) == [(BINARY, b"a", False), (CONT, b"b", True)]
    assert list(iter_fragments([b"a", b"b"], binary=False)) == [(TEXT, b"a", False), (CONT, b"b", True)]


def test_iter_fragments_is_lazy() -> None:
    # The last chunk is known by looking one ahead: no chunk is read before it is needed.
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(3):
            pulled.append(i)
            yield bytes([i])

    fragments = iter_fragments(chunks())
    assert next(fragments) == (BINARY, b"\x00", False)
    assert pulled == [0, 1]
    assert next(fragments) == (CONT, b"\x01", False)
    assert next(fragments) == (CONT, b"\x02", True)
    with pytest.raises(StopIteration):
        next(fragments)


def test_iter_fragments_feed_the_assembler() -> None:
    assembler = Assembler()
    messages = [assembler.feed(Frame(op, data, fin)) for op, data, fin in iter_fragments(["x", "y", "z"])]
    assert messages == [None, None, TextMessage("xyz")]
