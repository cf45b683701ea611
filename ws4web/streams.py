"""The shared byte buffer that every parser in ws4web pulls from.

Parsers are generators: they ``yield`` when they need more bytes and ``return``
their result. The I/O side feeds whatever ``recv()`` returned — one byte or a
megabyte, split anywhere — and resumes the parser. So one parser serves blocking
sockets, gevent, tests that feed a byte at a time, and the bytes a server read
past the end of the HTTP handshake. The parser never chooses ``recv()`` sizes.
"""

from __future__ import annotations

from collections.abc import Generator

__all__ = ["LineTooLong", "StreamReader"]

# Above this size a payload is copied out of the buffer through a memoryview, which
# copies once; below it the two-copy ``bytes(buffer[:n])`` is cheaper to set up.
_MEMORYVIEW_THRESHOLD = 4096


class LineTooLong(ValueError):
    """A line did not end within the allowed length."""


class StreamReader:
    """A growable byte buffer with generator-based readers.

    Deleting from the front of a ``bytearray`` is amortised O(1) in CPython, so
    consuming many small frames from one large ``recv()`` costs no copying of the
    rest of the buffer.
    """

    __slots__ = ("buffer", "eof")

    def __init__(self, data: bytes = b"") -> None:
        self.buffer = bytearray(data)
        self.eof = False

    def feed_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the transport."""
        if self.eof:
            raise EOFError("data fed after end of stream")
        self.buffer += data

    def feed_eof(self) -> None:
        """Record that the transport will deliver no more bytes."""
        self.eof = True

    def wait_for(self, n: int) -> Generator[None, None, None]:
        """Suspend until at least ``n`` bytes are buffered; EOFError if they never will be."""
        while len(self.buffer) < n:
            if self.eof:
                raise EOFError(f"stream ended with {len(self.buffer)} of {n} bytes")
            yield

    def take(self, n: int) -> bytes:
        """Remove and return ``n`` buffered bytes (the caller has waited for them)."""
        buffer = self.buffer
        if n > _MEMORYVIEW_THRESHOLD:
            with memoryview(buffer) as view:
                data = view[:n].tobytes()
        else:
            data = bytes(buffer[:n])
        del buffer[:n]
        return data

    def read_exact(self, n: int) -> Generator[None, None, bytes]:
        """Read exactly ``n`` bytes."""
        yield from self.wait_for(n)
        return self.take(n)

    def read_line(self, limit: int) -> Generator[None, None, bytes]:
        """Read one line ending with ``\\n`` (included), at most ``limit`` bytes long."""
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if end >= 0:
                break
            start = len(self.buffer)
            if start > limit:
                raise LineTooLong(f"line longer than {limit} bytes")
            if self.eof:
                raise EOFError(f"stream ended within a line of {start} bytes")
            yield
        if end >= limit:
            raise LineTooLong(f"line longer than {limit} bytes")
        return self.take(end + 1)

    def discard(self) -> None:
        """Drop everything buffered (after a fatal error nothing more is parsed)."""
        self.buffer.clear()
