"""Tests for ws4web.http11: headers, requests, responses and their size limits."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

import pytest

from ws4web.exceptions import InvalidHandshake, InvalidMessage
from ws4web.http11 import (
    MAX_HEADERS,
    MAX_LINE,
    Headers,
    Request,
    Response,
    parse_request,
    parse_response,
    parse_response_head,
)
from ws4web.streams import StreamReader

T = TypeVar("T")

REQUEST = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def run(parser: Generator[None, None, T], reader: StreamReader, chunks: list[bytes], eof: bool = False) -> T:
    """Feed ``chunks`` to ``reader`` one by one while ``parser`` runs; then EOF if asked."""
    pending = list(chunks)
    while True:
        try:
            next(parser)
        except StopIteration as stop:
            result: T = stop.value
            return result
        if pending:
            reader.feed_data(pending.pop(0))
        elif eof and not reader.eof:
            reader.feed_eof()
        else:
            raise AssertionError("the parser wants more bytes than the test has")


def request_from(data: bytes, **limits: int) -> Request:
    reader = StreamReader()
    return run(parse_request(reader, **limits), reader, [data], eof=True)


def response_from(data: bytes, **limits: int) -> tuple[Response, StreamReader]:
    reader = StreamReader()
    return run(parse_response(reader, **limits), reader, [data], eof=False), reader


def response_to_eof(data: bytes, **limits: int) -> Response:
    reader = StreamReader()
    return run(parse_response(reader, **limits), reader, [data], eof=True)


# -- Headers ------------------------------------------------------------------------


def test_headers_multimap() -> None:
    headers = Headers([("Host", "a"), ("X-Thing", "1")])
    headers.add("x-thing", "2, 3")
    assert len(headers) == 3
    assert "host" in headers and "HOST" in headers
    assert "Missing" not in headers
    assert 42 not in headers
    assert headers.get("X-THING") == "1"
    assert headers.get("nope") is None
    assert headers.get("nope", "default") == "default"
    assert headers.get_all("x-thing") == ["1", "2, 3"]
    assert headers.tokens("X-Thing") == ["1", "2", "3"]
    assert Headers([("T", " a ,, b,")]).tokens("t") == ["a", "b"]
    assert headers.items() == [("Host", "a"), ("X-Thing", "1"), ("x-thing", "2, 3")]
    assert list(headers) == headers.items()
    assert headers.serialize() == b"Host: a\r\nX-Thing: 1\r\nx-thing: 2, 3\r\n"
    assert repr(Headers([("A", "b")])) == "Headers([('A', 'b')])"


def test_headers_equality() -> None:
    assert Headers([("A", "1")]) == Headers([("A", "1")])
    assert Headers([("A", "1")]) != Headers([("a", "1")])  # the original spelling is kept
    assert Headers().__eq__([]) is NotImplemented
    with pytest.raises(TypeError):
        hash(Headers())


def test_headers_items_is_a_copy() -> None:
    headers = Headers([("A", "1")])
    headers.items().append(("B", "2"))
    assert len(headers) == 1


# -- requests -----------------------------------------------------------------------


def test_parse_request() -> None:
    request = request_from(REQUEST)
    assert (request.method, request.path, request.version) == ("GET", "/chat?room=1", "HTTP/1.1")
    assert request.headers.get("sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ=="
    assert len(request.headers) == 5
    assert repr(request) == "Request(GET /chat?room=1 HTTP/1.1)"
    assert request.serialize() == REQUEST


def test_parse_request_one_byte_at_a_time() -> None:
    reader = StreamReader()
    chunks = [REQUEST[i : i + 1] for i in range(len(REQUEST))]
    request = run(parse_request(reader), reader, chunks)
    assert request.serialize() == REQUEST


def test_bytes_after_the_request_stay_in_the_reader() -> None:
    reader = StreamReader()
    frame = b"\x81\x82abcd\x00\x00"
    request = run(parse_request(reader), reader, [REQUEST + frame])
    assert request.path == "/chat?room=1"
    assert bytes(reader.buffer) == frame


def test_header_values_are_stripped_and_latin1() -> None:
    request = request_from(b"GET / HTTP/1.1\r\nA:  spaced\t \r\nB:\r\nC: caf\xe9\r\n\r\n")
    assert request.headers.items() == [("A", "spaced"), ("B", ""), ("C", "café")]


def test_request_round_trip() -> None:
    request = Request("GET", "/", Headers([("Host", "h")]))
    assert request.serialize() == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert request_from(request.serialize()).headers == request.headers


@pytest.mark.parametrize(
    "data",
    [
        b"GET /\r\n\r\n",  # two parts
        b"GET / HTTP/1.1 extra\r\n\r\n",  # four parts
        b"GET  HTTP/1.1\r\n\r\n",  # empty path
        b" / HTTP/1.1\r\n\r\n",  # empty method
        b"G(T / HTTP/1.1\r\n\r\n",  # method not a token
        b"GET / FTP/1.1\r\n\r\n",  # not HTTP
        b"GET / HTTP/1.1\n\r\n",  # bare LF ends the request line
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",  # bare LF ends a header line
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon (RFC 9112 §5.1)
        b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded: line\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad\x00Name: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",  # control character in a value
        b"GET / HTTP/1.1\r\nHost: a\x7fb\r\n\r\n",
    ],
)
def test_malformed_request(data: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        request_from(data)
    assert info.value.status == 400


@pytest.mark.parametrize("cut", [0, 5, 16, len(REQUEST) - 2, len(REQUEST) - 1])
def test_eof_mid_request(cut: int) -> None:
    with pytest.raises(InvalidMessage, match="closed during the handshake") as info:
        request_from(REQUEST[:cut])
    assert info.value.status == 400


def test_request_line_too_long() -> None:
    line = b"GET /" + b"a" * (MAX_LINE - len("GET / HTTP/1.1")) + b" HTTP/1.1\r\n"
    assert len(line) == MAX_LINE + 2
    assert request_from(line + b"\r\n").path.startswith("/aaa")
    longer = b"GET /a" + line[5:]
    with pytest.raises(InvalidMessage) as info:
        request_from(longer + b"\r\n")
    assert info.value.status == 431
    # A line that never ends is refused as soon as it passes the limit, without EOF.
    reader = StreamReader()
    parser = parse_request(reader)
    next(parser)
    reader.feed_data(b"G" * (MAX_LINE + 3))
    with pytest.raises(InvalidMessage) as info:
        next(parser)
    assert info.value.status == 431


def test_header_line_too_long() -> None:
    with pytest.raises(InvalidMessage) as info:
        request_from(b"GET / HTTP/1.1\r\nX: " + b"v" * 30 + b"\r\n\r\n", max_line=32)
    assert info.value.status == 431
    request = request_from(b"GET / HTTP/1.1\r\nX: " + b"v" * 29 + b"\r\n\r\n", max_line=32)
    assert request.headers.get("X") == "v" * 29


def test_too_many_headers() -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS))
    assert len(request_from(b"GET / HTTP/1.1\r\n" + many + b"\r\n").headers) == MAX_HEADERS
    with pytest.raises(InvalidMessage) as info:
        request_from(b"GET / HTTP/1.1\r\n" + many + b"X: one too many\r\n\r\n")
    assert info.value.status == 431
    with pytest.raises(InvalidMessage) as info:
        request_from(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", max_headers=2)
    assert info.value.status == 431


def test_invalid_message_is_a_handshake_error() -> None:
    assert issubclass(InvalidMessage, InvalidHandshake)


# -- responses ----------------------------------------------------------------------


def test_parse_101_response_leaves_frames_in_the_reader() -> None:
    data = (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    response, reader = response_from(data + b"\x81\x02hi")
    assert (response.status, response.reason, response.body) == (101, "Switching Protocols", b"")
    assert response.headers.get("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert bytes(reader.buffer) == b"\x81\x02hi"
    assert repr(response) == "Response(101 Switching Protocols)"
    assert response.serialize() == data


def test_response_body_by_content_length() -> None:
    data = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!extra"
    response, reader = response_from(data)
    assert (response.status, response.reason, response.body) == (403, "Forbidden", b"nope!")
    assert bytes(reader.buffer) == b"extra"
    reader = StreamReader()
    chunks = [data[i : i + 1] for i in range(len(data) - 5)]
    assert run(parse_response(reader), reader, chunks).body == b"nope!"


def test_response_body_to_eof() -> None:
    reader = StreamReader()
    chunks = [b"HTTP/1.0 500 Internal Server Error\r\n\r\nsomething ", b"went ", b"wrong"]
    response = run(parse_response(reader), reader, chunks, eof=True)
    assert (response.status, response.body) == (500, b"something went wrong")


def test_response_without_reason() -> None:
    assert response_to_eof(b"HTTP/1.1 404\r\n\r\n").reason == ""
    assert response_to_eof(b"HTTP/1.1 404 \r\n\r\n").reason == ""
    assert response_to_eof(b"HTTP/1.1 404 Not  Found\r\n\r\n").reason == "Not  Found"


@pytest.mark.parametrize("status", [100, 101, 204, 304])
def test_responses_without_body(status: int) -> None:
    response, reader = response_from(b"HTTP/1.1 %d X\r\n\r\nleft" % status)
    assert response.body == b""
    assert bytes(reader.buffer) == b"left"


def test_chunked_body_is_not_read() -> None:
    response, _ = response_from(b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n5\r\nhello\r\n")
    assert response.body == b""


def test_response_body_limits() -> None:
    with pytest.raises(InvalidMessage, match="body over"):
        response_from(b"HTTP/1.1 400 Bad\r\nContent-Length: 11\r\n\r\n", max_body=10)
    assert response_from(b"HTTP/1.1 400 Bad\r\nContent-Length: 10\r\n\r\n" + bytes(10), max_body=10)[0].body == bytes(
        10
    )
    # To EOF, the limit holds before EOF arrives.
    reader = StreamReader()
    parser = parse_response(reader, max_body=10)
    next(parser)
    reader.feed_data(b"HTTP/1.1 400 Bad\r\n\r\n" + bytes(11))
    with pytest.raises(InvalidMessage, match="body over"):
        next(parser)


@pytest.mark.parametrize("value", [b"-1", b"1.0", b"0x10", b"", b"five", b"1 2"])
def test_malformed_content_length(value: bytes) -> None:
    with pytest.raises(InvalidMessage, match="Content-Length"):
        response_to_eof(b"HTTP/1.1 400 Bad\r\nContent-Length: " + value + b"\r\n\r\n")


@pytest.mark.parametrize("value", [b"\xb2", b"\xb9", b"1\xb3"])
def test_content_length_with_latin1_digits(value: bytes) -> None:
    # Superscript digits are str.isdigit() but int() refuses them: still a malformed header.
    with pytest.raises(InvalidMessage):
        response_to_eof(b"HTTP/1.1 400 Bad\r\nContent-Length: " + value + b"\r\n\r\n")


def test_content_length_with_too_many_digits() -> None:
    # More digits than int() converts by default (sys.int_info.default_max_str_digits is 4300).
    with pytest.raises(InvalidMessage):
        response_to_eof(b"HTTP/1.1 400 Bad\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")


def test_status_code_with_too_many_digits() -> None:
    with pytest.raises(InvalidMessage):
        response_to_eof(b"HTTP/1.1 " + b"9" * 5000 + b" Huge\r\n\r\n")


def test_eof_within_body() -> None:
    with pytest.raises(InvalidMessage, match="within the body"):
        response_to_eof(b"HTTP/1.1 400 Bad\r\nContent-Length: 10\r\n\r\nshort")


@pytest.mark.parametrize(
    "line",
    [b"HTTP/1.1\r\n", b"HTTP/2 101 OK\r\n", b"HTTP/1.1 abc OK\r\n", b"ICY 200 OK\r\n", b"HTTP/1.1 -1 X\r\n", b"\r\n"],
)
def test_malformed_status_line(line: bytes) -> None:
    with pytest.raises(InvalidMessage, match="status line") as info:
        response_to_eof(line + b"\r\n")
    assert info.value.status == 400


def test_eof_mid_response() -> None:
    with pytest.raises(InvalidMessage, match="closed during the handshake"):
        response_to_eof(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")


def test_response_header_limits() -> None:
    with pytest.raises(InvalidMessage) as info:
        response_to_eof(b"HTTP/1.1 101 OK\r\nA: 1\r\nB: 2\r\n\r\n", max_headers=1)
    assert info.value.status == 431
    with pytest.raises(InvalidMessage) as info:
        response_to_eof(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", max_line=16)
    assert info.value.status == 431


def test_response_serialize_with_body() -> None:
    response = Response(400, "Bad Request", Headers([("Content-Length", "3")]), b"bad")
    assert response.serialize() == b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad"
    parsed, _ = response_from(response.serialize())
    assert (parsed.status, parsed.reason, parsed.headers, parsed.body) == (400, "Bad Request", response.headers, b"bad")


def test_response_head_leaves_what_follows_in_the_reader() -> None:
    reader = StreamReader()
    head = b"HTTP/1.1 200 Connection established\r\nContent-Length: 5\r\n\r\n"
    response = run(parse_response_head(reader), reader, [head + b"tunnel bytes"])
    assert (response.status, response.reason, response.body) == (200, "Connection established", b"")
    assert bytes(reader.buffer) == b"tunnel bytes"  # not taken as a body
