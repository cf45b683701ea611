"""Tests for ws4web.streams: the shared byte buffer and its generator readers."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

import pytest

from ws4web.streams import LineTooLong, StreamReader

T = TypeVar("T")


def finish(parser: Generator[None, None, T]) -> T:
    """Run ``parser`` on what is buffered; fail if it wants more bytes."""
    try:
        next(parser)
    except StopIteration as stop:
        result: T = stop.value
        return result
    raise AssertionError("the reader asked for more bytes")


def test_feed_and_eof() -> None:
    reader = StreamReader(b"ab")
    reader.feed_data(b"cd")
    assert bytes(reader.buffer) == b"abcd"
    assert not reader.eof
    reader.feed_eof()
    assert reader.eof
    with pytest.raises(EOFError):
        reader.feed_data(b"e")
    assert bytes(reader.buffer) == b"abcd"


@pytest.mark.parametrize("size", [0, 1, 4096, 4097, 100_000])
def test_take(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 2)
    reader = StreamReader(data)
    taken = reader.take(size)
    assert type(taken) is bytes
    assert taken == data[:size]
    assert bytes(reader.buffer) == data[size:]


def test_read_exact_waits_for_every_byte() -> None:
    reader = StreamReader()
    parser = reader.read_exact(5)
    for byte in b"hell":
        next(parser)
        reader.feed_data(bytes([byte]))
    next(parser)
    reader.feed_data(b"o!")
    assert finish(parser) == b"hello"
    assert bytes(reader.buffer) == b"!"


def test_read_exact_zero_and_eof() -> None:
    assert finish(StreamReader().read_exact(0)) == b""
    reader = StreamReader(b"abc")
    parser = reader.read_exact(4)
    next(parser)
    reader.feed_eof()
    with pytest.raises(EOFError, match="3 of 4"):
        next(parser)


def test_wait_for() -> None:
    reader = StreamReader(b"ab")
    finish(reader.wait_for(2))
    assert bytes(reader.buffer) == b"ab"  # waiting consumes nothing


def test_read_line() -> None:
    reader = StreamReader(b"first\r\nsec")
    assert finish(reader.read_line(100)) == b"first\r\n"
    parser = reader.read_line(100)
    next(parser)
    reader.feed_data(b"ond")
    next(parser)
    reader.feed_data(b"\nthird")
    assert finish(parser) == b"second\n"
    assert bytes(reader.buffer) == b"third"


def test_read_line_one_byte_at_a_time() -> None:
    line = b"GET / HTTP/1.1\r\n"
    reader = StreamReader()
    parser = reader.read_line(len(line))
    next(parser)
    result = None
    for i in range(len(line)):
        reader.feed_data(line[i : i + 1])
        try:
            next(parser)
        except StopIteration as stop:
            result = stop.value
            assert i == len(line) - 1
    assert result == line


def test_read_line_limit() -> None:
    # The limit counts the line with its terminator; the newline sits at index limit - 1.
    assert finish(StreamReader(b"abcd\n").read_line(5)) == b"abcd\n"
    with pytest.raises(LineTooLong):
        finish(StreamReader(b"abcde\n").read_line(5))
    # Without a newline in sight the reader gives up as soon as the limit is passed.
    reader = StreamReader(b"abcde")
    parser = reader.read_line(5)
    next(parser)
    reader.feed_data(b"f")
    with pytest.raises(LineTooLong):
        next(parser)
    assert issubclass(LineTooLong, ValueError)


def test_read_line_eof() -> None:
    reader = StreamReader(b"partial")
    parser = reader.read_line(100)
    next(parser)
    reader.feed_eof()
    with pytest.raises(EOFError, match="7 bytes"):
        next(parser)


def test_discard() -> None:
    reader = StreamReader(b"junk")
    reader.discard()
    assert reader.buffer == bytearray()
    reader.feed_data(b"x")
    assert bytes(reader.buffer) == b"x"
