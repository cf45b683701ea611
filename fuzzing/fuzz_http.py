"""Fuzz harness for the HTTP/1.1 parsers and the opening handshake rules, both sides.

Input layout (see common.py): ``[config][K][K x u16 chunk sizes][body]``.

config bits::

    0x03  mode: 0 = server: parse_request, check_request, accept (no policy)
                1 = client: parse_response, check_response
                2 = Sec-WebSocket-Extensions values (one per line) through
                    parse_extensions and both permessage-deflate factories
                3 = server, as 0 with an Origin allow-list, Basic auth,
                    subprotocols and permessage-deflate configured
    0x0c  max_line:    16, 64, 1024, 8192
    0x30  max_headers: 0, 2, 16, 128
    0x40  the transport reaches EOF after the last chunk
    0x80  client mode: the client offered subprotocols and permessage-deflate

The checks: only :class:`~ws4web.exceptions.InvalidHandshake` subclasses leave
the parsers and the handshake functions (anything else is a crash); the parser
never buffers more than one line (or the body limit); a parsed request leaves
exactly the bytes after its blank line in the buffer (the first frames); every
refusal serializes to a response that ws4web's own client parses back to the
same status; a 101 carries the Sec-WebSocket-Accept computed here from the key
(RFC 6455 §4.2.2) and is accepted by ws4web's client.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from collections.abc import Generator
from typing import Any, TypeVar

from common import FuzzInput, fuzz_main, instrumented, split_input

with instrumented(__name__ == "__main__"):
    from ws4web.auth import basic_auth
    from ws4web.exceptions import InvalidHandshake, InvalidHeader, InvalidStatus, NegotiationError
    from ws4web.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory,
        ServerPerMessageDeflateFactory,
    )
    from ws4web.handshake import accept, check_request, check_response, parse_extensions, reject, serialize_extensions
    from ws4web.http11 import Request, Response, parse_request, parse_response
    from ws4web.streams import StreamReader

T = TypeVar("T")

#: Known bugs to look past (comma-separated names in WS4WEB_FUZZ_ALLOW; run.py --allow).
ALLOWED = frozenset(os.environ.get("WS4WEB_FUZZ_ALLOW", "").split(","))

MAX_LINES = (16, 64, 1024, 8192)
MAX_HEADERS = (0, 2, 16, 128)
MAX_BODY = 4096
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the sample key of RFC 6455 §1.3
SUBPROTOCOLS = ["chat", "superchat"]
ORIGINS: list[str | None] = [None, "https://example.com", "https://*.example.org"]
# Statuses a server may answer a refused handshake with (ws4web.exceptions).
REFUSALS = frozenset((400, 401, 403, 405, 408, 426, 431))


def expected_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode()


class Fed:
    """Feeds chunks to a parser generator, tracking what was fed and the buffer bound."""

    def __init__(self, fuzz: FuzzInput, eof: bool) -> None:
        self.fuzz = fuzz
        self.eof = eof
        self.reader = StreamReader()
        self.fed = bytearray()

    def run(self, parser: Generator[None, None, T], bound: int) -> T | InvalidHandshake | None:
        """The parsed value, the InvalidHandshake it raised, or None if it still waits."""
        try:
            next(parser)
            for chunk in self.fuzz.chunks(self.fuzz.body):
                self.reader.feed_data(chunk)
                self.fed += chunk
                next(parser)
                held = len(self.reader.buffer)
                assert held <= bound, f"the parser buffers {held} bytes, bound {bound}"
            if self.eof:
                self.reader.feed_eof()
                next(parser)
        except StopIteration as done:
            value: T = done.value
            return value
        except InvalidHandshake as exc:
            return exc
        return None


def check_refusal(exc: InvalidHandshake, statuses: frozenset[int] = REFUSALS) -> None:
    """What a server sends for ``exc`` is a response a client reads back as that status."""
    assert exc.status in statuses, f"{type(exc).__name__} answers {exc.status}, not one of {sorted(statuses)}"
    wire = reject(exc).serialize()
    reader = StreamReader(wire)
    reader.feed_eof()
    response = drive(parse_response(reader))
    assert response.status == exc.status
    assert response.body == wire[wire.index(b"\r\n\r\n") + 4 :]
    try:
        check_response(response, KEY)
    except InvalidStatus as refused:
        assert refused.status == exc.status
    else:
        raise AssertionError("a refusal passed check_response")


def drive(parser: Generator[None, None, T]) -> T:
    """Run a parser over a reader that already holds everything (and EOF)."""
    try:
        while True:
            next(parser)
    except StopIteration as done:
        value: T = done.value
        return value


def check_request_mode(fuzz: FuzzInput, policy: bool) -> None:
    config = fuzz.config
    max_line = MAX_LINES[(config >> 2) & 3]
    max_headers = MAX_HEADERS[(config >> 4) & 3]
    feeder = Fed(fuzz, eof=bool(config & 0x40))
    result = feeder.run(parse_request(feeder.reader, max_line=max_line, max_headers=max_headers), max_line + 2)
    if result is None:
        return
    if isinstance(result, InvalidHandshake):
        check_refusal(result, frozenset((400, 431)))
        return
    request: Request = result
    fed = bytes(feeder.fed)
    end = fed.find(b"\r\n\r\n")
    assert end >= 0, "a request parsed without a blank line"
    assert bytes(feeder.reader.buffer) == fed[end + 4 :], "bytes after the request were lost or eaten"
    request_line = fed[: fed.index(b"\r\n")].decode("latin-1")
    assert request_line == f"{request.method} {request.path} {request.version}"
    assert len(request.headers) <= max_headers
    for name, value in request.headers:
        assert name and all(c not in name for c in ": \t\r\n"), f"bad header name {name!r}"
        assert all(c not in value for c in "\r\n\0"), f"bad header value {value!r}"

    try:
        key = check_request(request)
    except InvalidHandshake as exc:
        check_refusal(exc)
        return
    assert request.headers.get_all("Sec-WebSocket-Key") == [key]
    assert len(base64.b64decode(key, validate=True)) == 16
    assert request.method == "GET" and request.headers.get("Sec-WebSocket-Version") == "13"

    options: dict[str, Any] = {}
    if policy:
        options = {
            "subprotocols": SUBPROTOCOLS,
            "extensions": [ServerPerMessageDeflateFactory(client_max_window_bits=10)],
            "origins": ORIGINS,
            "authenticate": basic_auth({"alice": "sésame", "bob": ""}),
        }
    try:
        accepted = accept(request, **options)
    except InvalidHandshake as exc:
        check_refusal(exc)
        return
    except ValueError as exc:
        # Known bug (fuzzing/crashes/http-basic-auth-non-ascii): basic_auth lets
        # base64's ValueError escape for a non-ASCII token. Tolerated only when
        # asked, so that a long run can look past it for other bugs.
        if "basic-auth-non-ascii" in ALLOWED and "ASCII" in str(exc):
            return
        raise
    response = accepted.response
    assert response.status == 101
    assert response.headers.get_all("Sec-WebSocket-Accept") == [expected_accept(key)]
    if accepted.subprotocol is not None:
        assert accepted.subprotocol in SUBPROTOCOLS
        assert accepted.subprotocol in request.headers.tokens("Sec-WebSocket-Protocol")
    wire = response.serialize()
    reader = StreamReader(wire)
    reader.feed_eof()
    parsed = drive(parse_response(reader))
    assert parsed.status == 101 and parsed.headers == response.headers
    try:
        client_deflate = ClientPerMessageDeflateFactory(client_max_window_bits=10)
        check_response(parsed, key, subprotocols=SUBPROTOCOLS, extensions=[client_deflate])
    except NegotiationError:
        # The client here did not make the fuzzed offer, so it may refuse the answer to it.
        assert parsed.headers.get("Sec-WebSocket-Extensions") is not None


def check_response_mode(fuzz: FuzzInput) -> None:
    config = fuzz.config
    max_line = MAX_LINES[(config >> 2) & 3]
    max_headers = MAX_HEADERS[(config >> 4) & 3]
    feeder = Fed(fuzz, eof=bool(config & 0x40))
    result = feeder.run(
        parse_response(feeder.reader, max_line=max_line, max_headers=max_headers, max_body=MAX_BODY),
        max(max_line + 2, MAX_BODY),
    )
    if result is None or isinstance(result, InvalidHandshake):
        return
    response: Response = result
    assert 0 <= response.status <= 999
    assert len(response.body) <= MAX_BODY
    offered = bool(config & 0x80)
    try:
        subprotocol, extensions = check_response(
            response,
            KEY,
            subprotocols=SUBPROTOCOLS if offered else (),
            extensions=[ClientPerMessageDeflateFactory()] if offered else (),
        )
    except InvalidStatus as exc:
        assert response.status != 101 and exc.status == response.status
        return
    except InvalidHandshake:
        return
    assert response.status == 101
    assert response.headers.get("Sec-WebSocket-Accept") == expected_accept(KEY)
    assert subprotocol is None or (offered and subprotocol in SUBPROTOCOLS)
    assert offered or not extensions


def check_extensions_mode(fuzz: FuzzInput) -> None:
    values = fuzz.body.decode("latin-1").split("\n")
    try:
        offers = parse_extensions(values)
    except InvalidHeader:
        return
    token = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for name, params in offers:
        assert name and set(name) <= token, f"extension name {name!r} is not a token"
        for pname, pvalue in params:
            assert pname and set(pname) <= token
            assert pvalue is None or (pvalue and set(pvalue) <= token)
    if offers:
        assert parse_extensions([serialize_extensions(offers)]) == offers, "serialize/parse do not round-trip"
    server = ServerPerMessageDeflateFactory(server_max_window_bits=12, client_max_window_bits=9)
    client = ClientPerMessageDeflateFactory(server_max_window_bits=12)
    for name, params in offers:
        if name != "permessage-deflate":
            continue
        try:
            answer = server.process_request_params(params, [])
        except NegotiationError:
            answer = None
        if answer is not None:
            # What the server answers must be a valid response to the same offer.
            ClientPerMessageDeflateFactory(client_max_window_bits=True).process_response_params(answer[0], [])
        try:
            client.process_response_params(params, [])
        except NegotiationError:
            pass


def check(data: bytes) -> None:
    fuzz = split_input(data)
    mode = fuzz.config & 3
    if mode == 1:
        check_response_mode(fuzz)
    elif mode == 2:
        check_extensions_mode(fuzz)
    else:
        check_request_mode(fuzz, policy=mode == 3)


def test_one_input(data: bytes) -> None:
    check(data)


# -- seeds -------------------------------------------------------------------------------------


def seeds() -> dict[str, bytes]:
    request = (
        b"GET /chat?x=1 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Origin: https://app.example.org\r\n"
        b"Authorization: Basic " + base64.b64encode("alice:sésame".encode()) + b"\r\n"
        b"Sec-WebSocket-Protocol: superchat, chat\r\n"
        b'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo; a="b"\r\n'
        b"\r\n\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    )
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n"
        b"\r\n"
    )
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nno!\r\n"
    plain = 0x0C | 0x30 | 0x40  # max_line 8192, 128 headers, EOF
    return {
        "seed-request": FuzzInput.build(plain, [], request),
        "seed-request-policy": FuzzInput.build(plain | 3, [10, 1, 1, 200], request),
        "seed-request-small-limits": FuzzInput.build(0x04 | 0x10, [], request),
        "seed-response": FuzzInput.build(plain | 1 | 0x80, [5, 5], response),
        "seed-refusal": FuzzInput.build(plain | 1, [], refusal),
        "seed-refusal-to-eof": FuzzInput.build(plain | 1, [], b"HTTP/1.0 500 Oops\r\n\r\nbody until EOF"),
        "seed-extensions": FuzzInput.build(
            2,
            [],
            b'permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate\n'
            b'permessage-deflate; server_no_context_takeover; client_max_window_bits="9"\n'
            b'x-webkit-deflate-frame; a=b; c="d\\e"',
        ),
    }


if __name__ == "__main__":
    sys.setrecursionlimit(10000)
    fuzz_main(test_one_input)
