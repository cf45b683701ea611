"""Just enough HTTP/1.1 for the opening handshake: headers, request, response.

Parsing pulls from a :class:`~ws4web.streams.StreamReader` like the frame parser,
so bytes the peer sent after the handshake stay in the buffer for the protocol.
Sizes are bounded (line length, header count, body size): a peer cannot make us
buffer more than the limits, and breaking one is an InvalidMessage (HTTP 400, or
431 for headers).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator

from .exceptions import InvalidMessage
from .streams import LineTooLong, StreamReader

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE",
    "Headers",
    "Request",
    "Response",
    "parse_request",
    "parse_response",
    "parse_response_head",
]

MAX_LINE = 8192  # bytes in the request line or one header line
MAX_HEADERS = 128  # header lines in one message
MAX_BODY = 2**20  # bytes of a refusal's body kept by the client

# RFC 9110 §5.1 field-name = token; §5.5 field values are visible chars, SP and HTAB.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")
_STATUS = re.compile(rb"[0-9]{3}")
_LENGTH = re.compile(r"[0-9]{1,18}")


class Headers:
    """An ordered, case-insensitive multi-map of header names to values."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``."""
        lname = name.lower()
        for k, v in self._items:
            if k.lower() == lname:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self._items if k.lower() == lname]

    def tokens(self, name: str) -> list[str]:
        """The comma-separated elements of every ``name`` header, stripped (RFC 9110 §5.6.1)."""
        return [t.strip() for v in self.get_all(name) for t in v.split(",") if t.strip()]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def serialize(self) -> bytes:
        return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in self._items)


class Request:
    """An HTTP request line and headers (a handshake request has no body)."""

    __slots__ = ("headers", "method", "path", "version")

    def __init__(self, method: str, path: str, headers: Headers, version: str = "HTTP/1.1") -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.version = version

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path} {self.version})"

    def serialize(self) -> bytes:
        return f"{self.method} {self.path} {self.version}\r\n".encode("latin-1") + self.headers.serialize() + b"\r\n"


class Response:
    """An HTTP response: status, reason, headers and a (possibly empty) body."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: Headers, body: bytes = b"") -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Response({self.status} {self.reason})"

    def serialize(self) -> bytes:
        return (
            f"HTTP/1.1 {self.status} {self.reason}\r\n".encode("latin-1")
            + self.headers.serialize()
            + b"\r\n"
            + self.body
        )


def _read_line(reader: StreamReader, max_line: int) -> Generator[None, None, bytes]:
    try:
        line = yield from reader.read_line(max_line + 2)
    except LineTooLong as exc:
        raise InvalidMessage(str(exc), status=431) from exc
    except EOFError as exc:
        raise InvalidMessage("connection closed during the handshake") from exc
    if not line.endswith(b"\r\n"):  # RFC 9112 §2.2: lines end with CRLF
        raise InvalidMessage("line not terminated by CRLF")
    return line[:-2]


def _parse_headers(reader: StreamReader, max_line: int, max_headers: int) -> Generator[None, None, Headers]:
    headers = Headers()
    for _ in range(max_headers + 1):
        line = yield from _read_line(reader, max_line)
        if not line:
            return headers
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):  # RFC 9112 §5.1: no space before ':'
            raise InvalidMessage(f"malformed header line {line[:64]!r}")
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            raise InvalidMessage(f"invalid characters in header {name.decode()}")
        headers.add(name.decode(), value.decode("latin-1"))
    raise InvalidMessage(f"more than {max_headers} headers", status=431)


def parse_request(
    reader: StreamReader, *, max_line: int = MAX_LINE, max_headers: int = MAX_HEADERS
) -> Generator[None, None, Request]:
    """Parse a request line and headers."""
    line = yield from _read_line(reader, max_line)
    parts = line.split(b" ")
    if len(parts) != 3:
        raise InvalidMessage(f"malformed request line {line[:64]!r}")
    method, path, version = (p.decode("latin-1") for p in parts)
    if not version.startswith("HTTP/"):
        raise InvalidMessage(f"unsupported protocol {version[:16]!r}")
    if not method or not _TOKEN.fullmatch(parts[0]) or not path:
        raise InvalidMessage(f"malformed request line {line[:64]!r}")
    headers = yield from _parse_headers(reader, max_line, max_headers)
    return Request(method, path, headers, version)


def parse_response(
    reader: StreamReader, *, max_line: int = MAX_LINE, max_headers: int = MAX_HEADERS, max_body: int = MAX_BODY
) -> Generator[None, None, Response]:
    """Parse a status line and headers; the body too, unless the status is 101.

    The body of a refusal is read by Content-Length, else up to EOF (bounded by
    ``max_body``), so a client can show the server's explanation.
    """
    response = yield from parse_response_head(reader, max_line=max_line, max_headers=max_headers)
    status = response.status
    if status != 101 and status >= 200 and status not in (204, 304):
        response.body = yield from _read_body(reader, response.headers, max_body)
    return response


def parse_response_head(
    reader: StreamReader, *, max_line: int = MAX_LINE, max_headers: int = MAX_HEADERS
) -> Generator[None, None, Response]:
    """Parse a status line and headers only, leaving whatever follows in ``reader``
    (a proxy's answer to CONNECT: the bytes after it belong to the tunnel)."""
    line = yield from _read_line(reader, max_line)
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not _STATUS.fullmatch(parts[1]):
        raise InvalidMessage(f"malformed status line {line[:64]!r}")
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    headers = yield from _parse_headers(reader, max_line, max_headers)
    return Response(status, reason, headers)


def _read_body(reader: StreamReader, headers: Headers, max_body: int) -> Generator[None, None, bytes]:
    length = headers.get("Content-Length")
    if length is not None:
        if not _LENGTH.fullmatch(length):  # ASCII digits only: int() takes "²" and 10**5 digits
            raise InvalidMessage("malformed Content-Length")
        size = int(length)
        if size > max_body:
            raise InvalidMessage(f"body over {max_body} bytes")
        try:
            return (yield from reader.read_exact(size))
        except EOFError as exc:
            raise InvalidMessage("connection closed within the body") from exc
    if "chunked" in (t.lower() for t in headers.tokens("Transfer-Encoding")):
        return b""  # a refusal's chunked body is not worth a parser here
    while not reader.eof:
        if len(reader.buffer) > max_body:
            raise InvalidMessage(f"body over {max_body} bytes")
        yield
    return reader.take(len(reader.buffer))
