"""The bad-input table, end to end, on every server door: hostile bytes from a raw socket.

Each door of tests/doors.py runs with its real framework on 127.0.0.1:0 (fixture ``door``,
started once per module), with a short request-head deadline. Each serves three endpoints: ``echo``
(a handler that records how its connection ended), ``auth`` (the same behind an Origin
allow-list and HTTP Basic) and ``ws4py`` (a handler whose ``__init__`` has ws4py's exact
signature).

For every hostile input the tests check the answer (the HTTP status, or the close code of the
server's close frame), that no 101 came before a refusal, that the door lets the connection go,
and that a well-behaved connection opened before still echoes. Where a framework answers
before ws4web sees the request (or parses the frames, under ASGI), the expected answer is
written per door and row (``DOOR_ANSWERS``, ``FRAME_DOOR_ANSWERS``), with who gives it; a door
that does not meet a row yet is an ``xfail`` that names the gap (strict: it fails once the
door is fixed, so the mark goes). docs/security.md holds the same table, one column per door.
The TLS and memory cases run on the standard-library server (the memory cases in a
subprocess, whose RSS they read from /proc).
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import queue
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NamedTuple

import pytest

from ws4web import WebSocket, connect
from ws4web.auth import basic_auth
from ws4web.messages import Message

from .conftest import (
    TIMEOUT,
    Outcome,
    RawConnections,
    RawFrame,
    RawPeer,
    ServerFactory,
    close_payload,
    encode_frame,
    read_until_closed,
    status_or_eof,
    trickle_until_cut,
    upgrade_request,
    wait_until,
)
from .doors import DOORS, AcceptingListener, Door, Endpoint, running

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MiB = 2**20

#: The request-head deadline every door is given (seconds): short, to keep the slow cases fast.
HEAD_TIMEOUT = 1.5

KEY = base64.b64encode(b"0123456789abcdef").decode()
AUTH_OK = "Authorization: Basic " + base64.b64encode(b"alice:open sesame").decode()
ORIGIN_OK = "Origin: https://good.example"
POLICY: dict[str, Any] = {"origins": ["https://good.example"], "authenticate": basic_auth({"alice": "open sesame"})}


# -- the server side -----------------------------------------------------------------------------


class Tracked(WebSocket):
    """Echoes; remembers how its connection ended, keyed by the request target the client sent."""

    #: by request target: every connection of a run asks for a path of its own (unique_path)
    instances: ClassVar[dict[str, Tracked]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ended = threading.Event()
        self.code: int | None = None
        self.messages: list[bytes] = []

    def opened(self) -> None:
        assert self.request is not None
        type(self).instances[self.request.path] = self

    def received_message(self, message: Message) -> None:
        self.messages.append(bytes(message.data))
        self.send(message)

    def closed(self, code: int, reason: str | None = None) -> None:
        self.code = code
        self.ended.set()


class Ws4pySignature(WebSocket):
    """A handler written for ws4py: ``__init__`` with exactly ws4py's signature, positional pass-through."""

    def __init__(
        self, sock: Any, protocols: Any = None, extensions: Any = None, environ: Any = None, heartbeat_freq: Any = None
    ) -> None:
        super().__init__(sock, protocols, extensions, environ, heartbeat_freq)
        self.prefix = "ws4py:"

    def received_message(self, message: Message) -> None:
        self.send(self.prefix + message.text)


def start_door(name: str) -> Iterator[Door]:
    """The door ``name`` with this module's endpoints, its short head deadline and close timeout."""
    endpoints = {"echo": Endpoint(Tracked), "auth": Endpoint(Tracked, POLICY), "ws4py": Endpoint(Ws4pySignature)}
    if DOORS[name].options_per_request:
        # ws4py's option for the version it speaks: unknown to ws4web (500 before any 101).
        endpoints["bogus"] = Endpoint(Ws4pySignature, {"version": 13})
    with running(name, endpoints, head_timeout=HEAD_TIMEOUT, close_timeout=2.0) as door:
        yield door


@pytest.fixture(scope="module", params=list(DOORS))
def door(request: pytest.FixtureRequest) -> Iterator[Door]:
    yield from start_door(request.param)


def opened_handler(path: str) -> Tracked:
    """The echo handler of the connection that asked for ``path`` (once its opened() ran)."""
    instances = Tracked.instances
    assert wait_until(lambda: path in instances, TIMEOUT), f"no handler opened for {path}"
    return instances[path]


# -- clients -----------------------------------------------------------------------------------------

_connections = itertools.count()


def unique_path(door: Door, endpoint: str = "echo") -> str:
    """The endpoint's path with a query no other connection of this run has: the handler's key."""
    return f"{door.path(endpoint)}?c={next(_connections)}"


def handshake(door: Door, raw: RawConnections, endpoint: str = "echo", *extra: str) -> tuple[RawPeer, str]:
    """A raw client past a successful opening handshake, and the request target it used."""
    path = unique_path(door, endpoint)
    sock = raw.open(door.port(endpoint), upgrade_request(path, *extra))
    peer = RawPeer(sock, masked=True)
    head = peer.read_head(TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return peer, path


class Good:
    """A well-behaved connection opened before an attack, which must still echo after it."""

    def __init__(self, door: Door, raw: RawConnections, endpoint: str = "echo", *extra: str) -> None:
        self.peer, path = handshake(door, raw, endpoint, *extra)
        self.echoes = 0
        self.echo()
        self.handler = opened_handler(path)

    def echo(self) -> None:
        self.echoes += 1
        payload = f"still here {self.echoes}".encode()
        self.peer.send_frame(TEXT, payload)
        frame = self.peer.read_data_frame(TIMEOUT)
        assert (frame.opcode, frame.payload) == (TEXT, payload)

    def close(self) -> None:
        self.peer.send_frame(CLOSE, close_payload(1000))
        assert self.peer.read_data_frame(TIMEOUT).opcode == CLOSE
        self.peer.sock.close()  # the closing handshake is over: end TCP too
        assert self.handler.ended.wait(TIMEOUT)


@pytest.fixture
def good(door: Door, raw: RawConnections) -> Iterator[Good]:
    connection = Good(door, raw)
    yield connection
    connection.echo()
    connection.close()


# -- the opening handshake: one row per hostile request, one answer per door -----------------------------

SMUGGLED = encode_frame(TEXT, b"smuggled")  # a body that would be read as a frame after a 101


def too_many_headers(path: str) -> bytes:
    # Exactly max_headers + 1 = 129 header lines, then the blank line.
    head = upgrade_request(path, end=False)
    filler = 129 - (head.count(b"\r\n") - 1)
    return head + b"".join(b"X-Filler-%d: x\r\n" % i for i in range(filler)) + b"\r\n"


class Row(NamedTuple):
    build: Callable[[str], bytes]  # the request, for the endpoint's path
    status: int
    headers: dict[str, str] = {}
    endpoint: str = "echo"


class Answer(NamedTuple):
    """What a door answers a row where it differs from the row's answer."""

    status: int | None  # None: an HTTP/0.9 answer, a body without a status line
    by: str  # who answers: the framework, before ws4web sees the request, or "ws4web"
    closes: bool = True  # whether the door ends TCP after it (else: HTTP keep-alive)


AUTH_FAILS = {"www-authenticate": 'Basic realm="ws4web"'}

HANDSHAKE_ROWS: dict[str, Row] = {
    "body-content-length": Row(
        lambda p: upgrade_request(p, f"Content-Length: {len(SMUGGLED)}") + SMUGGLED, 400
    ),
    "body-chunked": Row(
        lambda p: upgrade_request(p, "Transfer-Encoding: chunked")
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
        400,
    ),
    "missing-key": Row(lambda p: upgrade_request(p, skip=("Sec-WebSocket-Key",)), 400),
    "duplicate-key": Row(lambda p: upgrade_request(p, f"Sec-WebSocket-Key: {KEY}", key=KEY), 400),
    "comma-joined-key": Row(lambda p: upgrade_request(p, key=f"{KEY}, {KEY}"), 400),
    "malformed-key": Row(lambda p: upgrade_request(p, key="not base64 at all!"), 400),
    "key-not-16-bytes": Row(lambda p: upgrade_request(p, key=base64.b64encode(b"short").decode()), 400),
    "duplicate-version": Row(lambda p: upgrade_request(p, "Sec-WebSocket-Version: 13"), 400),
    "comma-joined-version": Row(
        lambda p: upgrade_request(p, "Sec-WebSocket-Version: 13, 13", skip=("Sec-WebSocket-Version",)), 400
    ),
    "wrong-version": Row(
        lambda p: upgrade_request(p, "Sec-WebSocket-Version: 8", skip=("Sec-WebSocket-Version",)),
        426,
        {"sec-websocket-version": "13"},
    ),
    "missing-version": Row(
        lambda p: upgrade_request(p, skip=("Sec-WebSocket-Version",)), 426, {"sec-websocket-version": "13"}
    ),
    "post": Row(lambda p: upgrade_request(p, "Content-Length: 0", method="POST"), 405, {"allow": "GET"}),
    "http-1.0": Row(lambda p: upgrade_request(p, version="HTTP/1.0"), 400),
    "missing-upgrade": Row(lambda p: upgrade_request(p, skip=("Upgrade",)), 426, {"upgrade": "websocket"}),
    "missing-connection": Row(lambda p: upgrade_request(p, skip=("Connection",)), 426, {"upgrade": "websocket"}),
    "missing-host": Row(lambda p: upgrade_request(p, skip=("Host",)), 400),
    "malformed-request-line": Row(lambda p: b"GET %s\r\n\r\n" % p.encode(), 400),
    "bare-lf-line-ends": Row(lambda p: b"GET %s HTTP/1.1\nHost: x\n\n" % p.encode(), 400),
    "too-many-headers": Row(too_many_headers, 431),
    "header-line-too-long": Row(lambda p: upgrade_request(p, "X-Long: " + "a" * 8190), 431),
    "origin-refused": Row(lambda p: upgrade_request(p, "Origin: https://evil.example", AUTH_OK), 403, {}, "auth"),
    "origin-missing": Row(lambda p: upgrade_request(p, AUTH_OK), 403, {}, "auth"),
    "origin-twice": Row(
        lambda p: upgrade_request(p, ORIGIN_OK, "Origin: https://evil.example", AUTH_OK), 403, {}, "auth"
    ),
    "auth-missing": Row(lambda p: upgrade_request(p, ORIGIN_OK), 401, AUTH_FAILS, "auth"),
    "auth-wrong-password": Row(
        lambda p: upgrade_request(p, ORIGIN_OK, "Authorization: Basic " + base64.b64encode(b"alice:guess").decode()),
        401,
        AUTH_FAILS,
        "auth",
    ),
    "auth-wrong-scheme": Row(
        lambda p: upgrade_request(p, ORIGIN_OK, "Authorization: Bearer abc"), 401, AUTH_FAILS, "auth"
    ),
    # Found by fuzzing/fuzz_http.py: a non-ASCII Basic token (0xE9 on the wire).
    "auth-non-ascii-token": Row(
        lambda p: upgrade_request(p, ORIGIN_OK, "Authorization: Basic \xe9t\xe9"), 401, AUTH_FAILS, "auth"
    ),
}

# Where a door answers otherwise, and who answers, by (row, door). Anything not listed is
# ws4web's own answer, the row's.
DOOR_ANSWERS: dict[tuple[str, str], Answer] = {
    ("missing-host", "cherrypy"): Answer(400, "CherryPy", closes=False),
    ("malformed-request-line", "cherrypy"): Answer(400, "cheroot"),
    # http.server takes "GET /path" for HTTP/0.9: no status line in the answer.
    ("malformed-request-line", "wsgiref"): Answer(None, "http.server (HTTP/0.9), then ws4web"),
    ("malformed-request-line", "werkzeug"): Answer(None, "http.server (HTTP/0.9), then the wrapped app"),
    ("bare-lf-line-ends", "cherrypy"): Answer(400, "cheroot"),
    # RFC 9112 §2.2 lets a recipient take a bare LF for a line end: these do, and the
    # request (no Upgrade) goes on as any other.
    ("bare-lf-line-ends", "gevent"): Answer(426, "pywsgi reads it; ws4web: no Upgrade"),
    ("bare-lf-line-ends", "wsgiref"): Answer(426, "http.server reads it; ws4web: no Upgrade"),
    ("bare-lf-line-ends", "werkzeug"): Answer(200, "Werkzeug reads it; not an upgrade: the wrapped app"),
    ("bare-lf-line-ends", "uvicorn"): Answer(404, "h11 reads it; not an upgrade: the app's HTTP answer", False),
    ("missing-upgrade", "werkzeug"): Answer(200, "not an upgrade: the wrapped app"),
    ("missing-upgrade", "uvicorn"): Answer(404, "not an upgrade: the app's HTTP answer", closes=False),
    ("missing-connection", "uvicorn"): Answer(404, "not an upgrade: the app's HTTP answer", closes=False),
    # http.client's header parser takes at most 100 lines.
    ("too-many-headers", "gevent"): Answer(431, "pywsgi (over 100 lines)"),
    ("too-many-headers", "wsgiref"): Answer(431, "http.server (over 100 lines)"),
    ("too-many-headers", "werkzeug"): Answer(431, "http.server (over 100 lines)"),
    ("too-many-headers", "uvicorn"): Answer(431, "uvicorn (websockets)"),
    ("header-line-too-long", "uvicorn"): Answer(431, "uvicorn (websockets)"),
    ("post", "uvicorn"): Answer(405, "uvicorn (websockets)"),
    ("origin-twice", "uvicorn"): Answer(400, "uvicorn (websockets: two Origin headers)"),
    **{
        (row, "uvicorn"): Answer(400, "uvicorn (websockets)")
        for row in (
            "body-content-length", "body-chunked", "missing-key", "duplicate-key", "comma-joined-key",
            "malformed-key", "key-not-16-bytes", "duplicate-version", "comma-joined-version", "wrong-version",
            "missing-version", "missing-host",
        )
    },
}

#: Rows a door does not meet yet: xfail (strict) with the reason, until the door is fixed.
GAPS: dict[tuple[str, str], str] = {
    ("uvicorn", "http-1.0"): "uvicorn upgrades an HTTP/1.0 request and tells the app it was HTTP/1.1",
}


def answer_for(door: Door, row_id: str) -> Answer:
    override = DOOR_ANSWERS.get((row_id, door.name))
    return override if override is not None else Answer(HANDSHAKE_ROWS[row_id].status, "ws4web")


def mark_gap(request: pytest.FixtureRequest, door: Door, row_id: str) -> None:
    reason = GAPS.get((door.name, row_id))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.mark.parametrize("row_id", list(HANDSHAKE_ROWS))
def test_bad_handshake_is_refused(
    door: Door, raw: RawConnections, request: pytest.FixtureRequest, row_id: str
) -> None:
    mark_gap(request, door, row_id)
    row = HANDSHAKE_ROWS[row_id]
    expected = answer_for(door, row_id)
    good = Good(door, raw, row.endpoint, *((ORIGIN_OK, AUTH_OK) if row.endpoint == "auth" else ()))
    before = door.websockets()
    sock = raw.open(door.port(row.endpoint), row.build(door.path(row.endpoint)))
    outcome = status_or_eof(sock, TIMEOUT, wait_close=expected.closes)
    assert outcome.status != 101, "a hostile request was upgraded"
    assert outcome.status == expected.status, f"answered {outcome.data[:80]!r}, expected {expected}"
    if expected.by == "ws4web":
        answer = outcome.answer
        for name, value in row.headers.items():
            assert any(v.startswith(value) for v in answer.header(name)), f"{name}: {answer.header(name)}"
        if answer.header("content-length"):
            assert len(answer.body) == int(answer.header("content-length")[0])
    if expected.closes:
        assert outcome.closed, f"the door kept the connection open after {outcome.data[:80]!r}"
    assert not door.websockets() - before, "a refused request became a WebSocket"
    good.echo()
    good.close()


def test_accept_socket_with_authenticate_answers_401_before_any_101(raw: RawConnections) -> None:
    """ws4py's accept_socket(sock, authenticate=...) used to raise TypeError after sending the 101."""
    listener = AcceptingListener(WebSocket, {"authenticate": basic_auth({"alice": "open sesame"})})
    try:
        sock = raw.open(listener.port, upgrade_request("/"))
        outcome = status_or_eof(sock, TIMEOUT)
        assert (outcome.status, outcome.closed) == (401, True), outcome.data[:80]
        assert outcome.answer.header("www-authenticate") == ['Basic realm="ws4web", charset="UTF-8"']
        wrong = "Authorization: Basic " + base64.b64encode(b"alice:guess").decode()
        assert status_or_eof(raw.open(listener.port, upgrade_request("/", wrong)), TIMEOUT)[:2] == (401, True)
        assert status_or_eof(raw.open(listener.port, upgrade_request("/", AUTH_OK)), TIMEOUT).status == 101
    finally:
        listener.stop()


# -- request heads that never end ---------------------------------------------------------------


def assert_cut(door: Door, outcome: Outcome) -> None:
    assert outcome.closed, f"the {door.name} door still held the connection {HEAD_TIMEOUT + 3} s after it began"
    # 408 Request Timeout, or just a closed socket (a reset may destroy the answer).
    assert outcome.data == b"" or outcome.status == 408, outcome.data[:80]


SLOW_GAPS = {"uvicorn": "uvicorn sets no deadline on a request head (its keep-alive timeout starts after a response)"}


def test_request_head_dripped_a_byte_at_a_time_is_cut(
    door: Door, raw: RawConnections, good: Good, request: pytest.FixtureRequest
) -> None:
    if door.name in SLOW_GAPS:
        request.applymarker(pytest.mark.xfail(reason=SLOW_GAPS[door.name], strict=True))
    head = upgrade_request(door.path("echo"))
    sock = raw.open(door.port("echo"))
    started = time.monotonic()
    # One byte every 0.1 s: the whole head would take about 15 s.
    cut, sent = trickle_until_cut(sock, head, 0.1, limit=HEAD_TIMEOUT + 3)
    assert cut, f"the door still read the head after {sent} bytes"
    assert sent < len(head)
    assert_cut(door, status_or_eof(sock, max(0.1, started + HEAD_TIMEOUT + 3 - time.monotonic())))


def test_half_sent_request_left_idle_is_cut(
    door: Door, raw: RawConnections, good: Good, request: pytest.FixtureRequest
) -> None:
    if door.name in SLOW_GAPS:
        request.applymarker(pytest.mark.xfail(reason=SLOW_GAPS[door.name], strict=True))
    sock = raw.open(door.port("echo"), upgrade_request(door.path("echo"))[:40])
    assert_cut(door, status_or_eof(sock, HEAD_TIMEOUT + 3))


def test_tcp_probe_that_sends_nothing_is_closed_quietly(
    door: Door, raw: RawConnections, good: Good, caplog: pytest.LogCaptureFixture
) -> None:
    """A health check or port scan: connects, sends nothing, half-closes. The door ends the
    connection, and ws4web logs it at DEBUG at most."""
    caplog.set_level(logging.DEBUG, logger="ws4web")
    before = door.websockets()
    sock = raw.open(door.port("echo"))
    probe = f":{sock.getsockname()[1]}"
    sock.shutdown(socket.SHUT_WR)
    outcome = status_or_eof(sock, TIMEOUT)
    assert outcome.closed, f"the door kept a probe's connection open ({outcome.data[:80]!r})"
    assert outcome.status in PROBE_ANSWERS.get(door.name, {None}), outcome.data[:80]
    good.echo()  # by now the door has dealt with the probe
    about_the_probe = [
        r for r in caplog.records
        if r.name.startswith("ws4web")
        and (probe in r.getMessage() or probe in str(getattr(r, "ws4web_peer", "")) or "refused" in r.getMessage())
    ]  # fmt: skip
    assert about_the_probe or door.name not in PROBE_ANSWERS, "the door's refusal of the probe was not logged"
    loud = [r for r in about_the_probe if r.levelno > logging.DEBUG]
    assert not loud, [r.getMessage() for r in loud]
    assert not door.websockets() - before


# The doors that parse the head themselves answer the empty request (the probe has gone
# by then, unless it only half-closed, as here); the frameworks close without a word.
PROBE_ANSWERS = {"stdlib": {400}, "accept_socket": {400}}


# -- options: checked before any 101 -------------------------------------------------------------


def test_unknown_option_fails_before_any_101(door: Door, raw: RawConnections, request: pytest.FixtureRequest) -> None:
    """ws4py's ``version`` option is unknown to ws4web: TypeError when the door is built, or,
    where options arrive per request (CherryPy config), 500 to that request; never a 101."""
    if door.options_per_request:
        sock = raw.open(door.port("echo"), upgrade_request("/bogus"))
        outcome = status_or_eof(sock, TIMEOUT)
        assert outcome.status == 500, outcome.data[:80]
        assert b"version" not in outcome.data, "the option's name is for the log, not the client"
        return
    with pytest.raises(TypeError, match="version"):
        door.build(Ws4pySignature, version=13)


def test_client_refuses_an_unknown_option_before_connecting() -> None:
    """ws4py's client took ``ssl_options=``; ws4web's refuses it before any TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.5)
        with pytest.raises(TypeError, match="ssl_options"):
            connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", ssl_options={"cert_reqs": 0}, timeout=TIMEOUT)
        with pytest.raises(TimeoutError):
            listener.accept()[0].close()


def test_handler_with_ws4py_signature_echoes(door: Door, raw: RawConnections) -> None:
    peer, _ = handshake(door, raw, "ws4py")
    peer.send_frame(TEXT, b"hello")
    frame = peer.read_data_frame(TIMEOUT)
    assert (frame.opcode, frame.payload) == (TEXT, b"ws4py:hello")
    peer.send_frame(CLOSE, close_payload(1000))
    assert peer.read_data_frame(TIMEOUT).opcode == CLOSE
    peer.sock.close()


# -- frames: the close code for each broken rule --------------------------------------------------


def raw_header(first: int, length_field: bytes) -> bytes:
    """A masked frame header written byte by byte (no payload follows)."""
    return bytes([first]) + length_field + os.urandom(4)


FRAME_CASES: dict[str, tuple[Callable[[], bytes], int]] = {
    "unmasked-client-frame": (lambda: encode_frame(TEXT, b"hi", masked=False), 1002),
    "rsv1-without-extension": (lambda: encode_frame(TEXT, b"hi", rsv=0x40), 1002),
    "rsv2-without-extension": (lambda: encode_frame(TEXT, b"hi", rsv=0x20), 1002),
    "rsv3-without-extension": (lambda: encode_frame(BINARY, b"hi", rsv=0x10), 1002),
    **{
        f"reserved-opcode-{op:#x}": ((lambda op=op: encode_frame(op, b"x")), 1002)
        for op in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)
    },
    "fragmented-ping": (lambda: encode_frame(PING, b"x", fin=False), 1002),
    "fragmented-close": (lambda: encode_frame(CLOSE, close_payload(1000), fin=False), 1002),
    "ping-over-125-bytes": (lambda: encode_frame(PING, b"x" * 126), 1002),
    "close-over-125-bytes": (lambda: encode_frame(CLOSE, close_payload(1000, "x" * 124)), 1002),
    "continuation-without-start": (lambda: encode_frame(CONT, b"x"), 1002),
    "new-message-inside-fragmented": (lambda: encode_frame(TEXT, b"a", fin=False) + encode_frame(TEXT, b"b"), 1002),
    "new-message-after-interleaved-ping": (
        lambda: encode_frame(BINARY, b"a", fin=False) + encode_frame(PING, b"ok") + encode_frame(BINARY, b"b"),
        1002,
    ),
    "64-bit-length-top-bit": (
        lambda: raw_header(0x82, bytes([0x80 | 127]) + struct.pack("!Q", (1 << 63) | 5)) + b"x" * 5,
        1002,
    ),
    # Only a header: the server must refuse on the declared length, before any payload (RFC 6455 §10.4).
    "declared-1-TiB": (lambda: raw_header(0x82, bytes([0x80 | 127]) + struct.pack("!Q", 1 << 40)), 1009),
    "declared-limit-plus-1": (lambda: raw_header(0x82, bytes([0x80 | 127]) + struct.pack("!Q", MiB + 1)), 1009),
    "fragments-add-up-past-limit": (
        lambda: encode_frame(TEXT, b"a" * 1000, fin=False)
        + raw_header(0x80, bytes([0x80 | 127]) + struct.pack("!Q", MiB)),
        1009,
    ),
    "invalid-utf8-across-fragments": (
        lambda: encode_frame(TEXT, "κ".encode()[:1], fin=False) + encode_frame(CONT, b"(\xff"),
        1007,
    ),
    "utf8-truncated-at-message-end": (
        lambda: encode_frame(TEXT, b"ok \xe2\x82", fin=False) + encode_frame(CONT, b""),
        1007,
    ),
    # Fail fast (RFC 6455 §8.1): the first fragment alone is already invalid; the message never ends.
    "invalid-utf8-first-fragment": (lambda: encode_frame(TEXT, b"\xc0\xaf", fin=False), 1007),
    "utf8-surrogate": (lambda: encode_frame(TEXT, b"\xed\xa0\x80"), 1007),
    **{
        f"close-code-{code}": ((lambda code=code: encode_frame(CLOSE, struct.pack("!H", code))), 1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000)
    },
    "close-payload-1-byte": (lambda: encode_frame(CLOSE, b"\x03"), 1002),
    "close-reason-invalid-utf8": (lambda: encode_frame(CLOSE, close_payload(1000) + b"\xff"), 1007),
}


class FrameAnswer(NamedTuple):
    """What a door answers a frame case where it differs from the case's answer."""

    code: int
    by: str  # who answers
    then: bytes = b""  # what the peer must send before that answer comes


# Under ASGI the server parses the frames (uvicorn: the websockets library); the adapter
# sees messages only. Everything not listed is the case's answer, ws4web's.
FRAME_DOOR_ANSWERS: dict[tuple[str, str], FrameAnswer] = {
    ("64-bit-length-top-bit", "uvicorn"): FrameAnswer(1009, "uvicorn (websockets: a length past ws_max_size)"),
    ("invalid-utf8-first-fragment", "uvicorn"): FrameAnswer(
        1007, "uvicorn (websockets: UTF-8 checked once the message ends)", then=encode_frame(CONT, b"")
    ),
}


def read_close(peer: RawPeer) -> tuple[RawFrame, list[RawFrame]]:
    """The server's close frame, and the frames that came before it."""
    before: list[RawFrame] = []
    deadline = time.monotonic() + TIMEOUT
    while True:
        frame = peer.read_frame(max(0.1, deadline - time.monotonic()))
        assert not frame.masked, "the server masked a frame (RFC 6455 §5.1)"
        if frame.opcode == CLOSE:
            return frame, before
        before.append(frame)


def released(door: Door, handler: Tracked) -> None:
    """The door ran closed() and dropped the connection from its open WebSockets."""
    assert handler.ended.wait(TIMEOUT), "the handler's closed() never ran"
    assert wait_until(lambda: handler not in door.websockets(), TIMEOUT), "the door kept it among its WebSockets"


@pytest.mark.parametrize("case", list(FRAME_CASES))
def test_bad_frame_fails_the_connection(door: Door, raw: RawConnections, good: Good, case: str) -> None:
    hostile, code = FRAME_CASES[case]
    then = b""
    override = FRAME_DOOR_ANSWERS.get((case, door.name))
    if override is not None:
        code, then = override.code, override.then
    bad, path = handshake(door, raw)
    handler = opened_handler(path)
    bad.send(hostile() + then)
    close, before = read_close(bad)
    assert close.close_code == code, f"closed with {close.close_code} ({close.payload[2:]!r})"
    assert all(f.opcode == PONG for f in before), f"unexpected frames before the close: {before}"
    assert bad.at_eof(TIMEOUT), "the server did not end TCP after failing the connection"
    bad.sock.close()
    released(door, handler)
    assert handler.code == code
    assert handler.messages == []


def test_data_after_close_is_ignored(door: Door, raw: RawConnections, good: Good) -> None:
    bad, path = handshake(door, raw)
    handler = opened_handler(path)
    bad.send(
        encode_frame(TEXT, b"before")
        + encode_frame(CLOSE, close_payload(1000, "bye"))
        + encode_frame(TEXT, b"after the close")
        + encode_frame(0x3, b"not even valid")
    )
    close, before = read_close(bad)
    # The protocol answers the close frame as soon as it parses it (RFC 6455 §5.5.1), so
    # the handler's echo of "before" may or may not make it out first; nothing else may.
    assert [(f.opcode, f.payload) for f in before] in ([], [(TEXT, b"before")])
    # The close frame is answered with its code (RFC 6455 §5.5.1); uvicorn echoes the reason too.
    assert close.payload == close_payload(1000, "bye" if door.name == "uvicorn" else "")
    assert bad.at_eof(TIMEOUT)
    bad.sock.close()
    released(door, handler)
    assert handler.code == 1000
    assert handler.messages == [b"before"]


def test_reset_mid_frame_gives_1006(door: Door, raw: RawConnections, good: Good) -> None:
    bad, path = handshake(door, raw)
    handler = opened_handler(path)
    frame = encode_frame(BINARY, os.urandom(1000))
    bad.send(frame[:300])
    good.echo()  # the door has had time to read the partial frame
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bad.sock.close()
    released(door, handler)
    # Under ASGI the handler gets the code the server reports: uvicorn says 1005.
    assert handler.code == (1005 if door.name == "uvicorn" else 1006)
    assert handler.messages == []


# -- TLS (the standard-library server) -------------------------------------------------------------------------


@pytest.mark.usefixtures("no_leaks")
def test_slow_tls_handshake_is_cut_at_the_handshake_timeout(
    make_server: ServerFactory, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """The deadline covers the TLS handshake too, not each read (a byte every 0.3 s must not keep it alive)."""
    server = make_server(WebSocket, ssl_context=server_ssl_context, handshake_timeout=1.0)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_ssl_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()  # a real ClientHello, some 500 bytes: 150 s at this pace
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        cut, sent = trickle_until_cut(sock, hello, 0.3)
        assert cut, f"the server still waited after {sent} bytes of TLS handshake"
        assert sent < len(hello)
        _, closed = read_until_closed(sock)
        assert closed
    assert wait_until(lambda: not server.websockets, TIMEOUT)


# -- memory: floods against a server in a subprocess, whose RSS we read ----------------------------------

SERVER_SCRIPT = r"""
import sys
from ws4web import WebSocket, WebSocketServer

class Handler(WebSocket):
    def opened(self):
        self.port = self.peer_address[1]
        print("opened", self.port, flush=True)

    def received_message(self, message):
        if message.data.startswith(b"flood "):
            _, count, size = message.data.split()
            for i in range(int(count)):
                self.send(bytes([i % 256]) * int(size), binary=True)  # a new object each time
        else:
            self.send(message)

    def closed(self, code, reason=None):
        print("closed", getattr(self, "port", None), code, flush=True)

server = WebSocketServer(Handler, "127.0.0.1", 0, close_timeout=2.0).start()
print("port", server.port, flush=True)
sys.stdin.read()  # until the test closes our stdin
server.shutdown(timeout=3.0)
print("stopped", flush=True)
"""


class ServerProcess:
    """The echo server of SERVER_SCRIPT in its own process, so its memory can be measured."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, name="server-process-stdout", daemon=True)
        self.reader.start()
        self.port = int(self.expect("port").split()[1])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the server process never printed {prefix!r}") from None
            if line.startswith(prefix):
                return line

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")  # pragma: no cover

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hang is reported, then killed
            self.process.kill()
            self.process.wait(5)
            raise AssertionError("the server process did not shut down") from None
        finally:
            self.reader.join(TIMEOUT)
            if self.process.stdout is not None:
                self.process.stdout.close()


@pytest.fixture
def server_process() -> Iterator[ServerProcess]:
    server = ServerProcess()
    try:
        yield server
    finally:
        server.stop()


class ProcessClients:
    """Raw clients of a ServerProcess."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.sockets: list[socket.socket] = []

    def handshake(self, rcvbuf: int | None = None) -> RawPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sockets.append(sock)
        if rcvbuf is not None:  # set before connect: it bounds the TCP window we offer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(TIMEOUT)
        sock.connect(("127.0.0.1", self.server.port))
        sock.sendall(upgrade_request("/"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)  # byte by byte: nothing past the handshake is taken
            assert chunk, "closed during the handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.server.expect("opened")
        return RawPeer(sock, masked=True)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def clients(server_process: ServerProcess) -> Iterator[ProcessClients]:
    pool = ProcessClients(server_process)
    try:
        yield pool
    finally:
        pool.close()


def echo(peer: RawPeer, payload: bytes) -> None:
    peer.send_frame(TEXT, payload)
    frame = peer.read_data_frame(TIMEOUT)
    assert (frame.opcode, frame.payload) == (TEXT, payload)


@pytest.mark.usefixtures("no_leaks")
def test_ping_flood_is_answered_in_bounded_memory(server_process: ServerProcess, clients: ProcessClients) -> None:
    good = clients.handshake()
    echo(good, b"before")
    baseline = server_process.rss_mb()
    bad = clients.handshake()
    bad.send(b"".join(encode_frame(PING, i.to_bytes(4, "big")) for i in range(10_000)))
    # Every ping gets its pong, in order (RFC 6455 §5.5.2; Autobahn 2.10/2.11 check it).
    answered = -1
    deadline = time.monotonic() + 30
    while answered < 9_999:
        frame = bad.read_frame(max(0.1, deadline - time.monotonic()))
        if frame.opcode == CLOSE:  # failing the connection is an acceptable answer too
            assert frame.close_code in (1008, 1011, 1013), frame.close_code
            break
        assert frame.opcode == PONG
        number = int.from_bytes(frame.payload, "big")
        assert number == answered + 1, f"pong for ping {number} after the pong for {answered}"
        answered = number
    growth = server_process.rss_mb() - baseline
    assert growth < 32, f"the server grew by {growth:.0f} MB answering 10,000 pings"
    echo(good, b"after")
    bad.sock.close()
    server_process.expect("closed")


@pytest.mark.usefixtures("no_leaks")
def test_ping_flood_from_a_peer_that_never_reads_is_bounded(
    server_process: ServerProcess, clients: ProcessClients
) -> None:
    """Pings keep coming, pongs are never read: the server must push back, not queue pongs forever."""
    good = clients.handshake()
    echo(good, b"before")
    baseline = server_process.rss_mb()
    bad = clients.handshake(rcvbuf=65536)
    ping = encode_frame(PING, b"p" * 125)  # the largest control frame: 131 bytes in, a 127-byte pong out
    block = ping * 8000  # about 1 MB
    sent = 0
    bad.sock.settimeout(2.0)
    started = time.monotonic()
    try:
        while sent < 24 * MiB and time.monotonic() - started < 20:
            bad.sock.sendall(block)
            sent += len(block)
    except TimeoutError:
        pass  # the server stopped reading: TCP pushed back on us, as it should
    except OSError:
        pass  # or it dropped us
    peak = server_process.rss_mb()
    growth = peak - baseline
    # Kernel buffers (not RSS) absorb a few MB either way; what is over is queued pongs.
    assert growth < 10, f"the server holds {growth:.0f} MB after {sent / MiB:.0f} MB of unread pings"
    echo(good, b"after")
    bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bad.sock.close()
    server_process.expect("closed")
    echo(good, b"after the reset")


@pytest.mark.usefixtures("no_leaks")
def test_peer_that_stops_reading_cannot_grow_the_server(
    server_process: ServerProcess, clients: ProcessClients
) -> None:
    """The handler sends 200 x 1 MiB; the peer reads nothing. Sends must block, not buffer."""
    good = clients.handshake()
    echo(good, b"before")
    baseline = server_process.rss_mb()
    slow = clients.handshake(rcvbuf=65536)
    slow.send_frame(TEXT, b"flood 200 1048576")
    peak = baseline
    deadline = time.monotonic() + 2.0  # without backpressure the 200 MiB would be there well within this
    while time.monotonic() < deadline:
        peak = max(peak, server_process.rss_mb())
        time.sleep(0.05)
    growth = peak - baseline
    assert growth < 48, f"the server grew by {growth:.0f} MB for a peer that does not read"
    echo(good, b"while the other one is stuck")  # the stuck sender blocks only its own connection
    slow.sock.close()  # unread data: this resets the connection, and the blocked send fails
    line = server_process.expect("closed")
    assert line.split()[2] == "1006", line
    echo(good, b"after")
