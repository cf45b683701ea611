"""The bad-input table, end to end: hostile bytes from a raw socket against a real WebSocketServer.

Every case runs on 127.0.0.1 with a client that writes exact bytes. For each hostile input the test
checks the answer (the close code read from the server's close frame, or the HTTP
status), that the server lets the connection go (it ends TCP, so ``recv`` returns
``b""``; the handler's ``closed()`` runs; ``server.websockets`` drops it), and that
a well-behaved connection opened before the attack still echoes afterwards.
The memory cases run the server in a subprocess and read its RSS from /proc.
docs/security.md holds the same table.
"""

from __future__ import annotations

import base64
import os
import queue
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from ws4web import WebSocket, WebSocketServer
from ws4web.auth import basic_auth
from ws4web.messages import Message

from .conftest import TIMEOUT, RawFrame, RawPeer, ServerFactory, close_payload, encode_frame, wait_until

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MiB = 2**20


# -- the server side: an echo handler that records how each connection ended --------------------


class Tracked(WebSocket):
    """Echoes; remembers its connection's close code, keyed by the client's port."""

    instances: ClassVar[dict[int, Tracked]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ended = threading.Event()
        self.code: int | None = None
        self.messages: list[bytes] = []
        try:
            self.client_port = int(self.sock.getpeername()[1])
        except OSError:  # the client is already gone
            self.client_port = -1
        type(self).instances[self.client_port] = self

    def received_message(self, message: Message) -> None:
        self.messages.append(bytes(message.data))
        self.send(message)

    def closed(self, code: int, reason: str | None = None) -> None:
        self.code = code
        self.ended.set()


def request_bytes(
    *extra: str,
    key: str | None = None,
    method: str = "GET",
    version: str = "HTTP/1.1",
    skip: tuple[str, ...] = (),
    end: bool = True,
) -> bytes:
    """An upgrade request; ``skip`` drops standard headers by name, ``extra`` adds lines."""
    standard = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key or base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    lines = [f"{method} /chat {version}"]
    lines += [f"{name}: {value}" for name, value in standard.items() if name not in skip]
    lines += extra
    return ("\r\n".join(lines) + "\r\n" + ("\r\n" if end else "")).encode("latin-1")


class HTTPAnswer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        parts = lines[0].split(" ", 2)
        assert parts[0].startswith("HTTP/1."), f"not an HTTP response: {raw[:80]!r}"
        self.status = int(parts[1])
        self.headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


def read_until_closed(sock: socket.socket, timeout: float = TIMEOUT) -> tuple[bytes, bool]:
    """Everything the server sends until it closes TCP; (data, True) if it did within ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


class Bench:
    """A server, a well-behaved client opened first, and raw hostile clients."""

    def __init__(self, make_server: ServerFactory, **options: Any) -> None:
        self.handler_cls: type[Tracked] = type("TrackedHere", (Tracked,), {"instances": {}})
        self.server: WebSocketServer = make_server(self.handler_cls, **options)
        self.good_headers: tuple[str, ...] = ()
        self.sockets: list[socket.socket] = []
        self._good: RawPeer | None = None
        self._echoes = 0

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=TIMEOUT)
        self.sockets.append(sock)
        return sock

    def handshake(self, *extra: str) -> RawPeer:
        """A raw client past a successful opening handshake."""
        sock = self.connect()
        sock.sendall(request_bytes(*extra))
        head = b""
        deadline = time.monotonic() + TIMEOUT
        while b"\r\n\r\n" not in head:
            assert time.monotonic() < deadline, "no handshake answer"
            chunk = sock.recv(4096)
            assert chunk, f"closed during the handshake after {head!r}"
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        peer = RawPeer(sock, masked=True)
        peer.buffer += rest
        return peer

    def open_good(self) -> None:
        self._good = self.handshake(*self.good_headers)
        self.good_echoes()

    def good_echoes(self) -> None:
        """The well-behaved connection still round-trips a message."""
        assert self._good is not None
        self._echoes += 1
        payload = f"still here {self._echoes}".encode()
        self._good.send_frame(TEXT, payload)
        frame = self._good.read_data_frame(TIMEOUT)
        assert (frame.opcode, frame.payload) == (TEXT, payload)

    def handler_of(self, sock: socket.socket) -> Tracked:
        port = sock.getsockname()[1]
        assert wait_until(lambda: port in self.handler_cls.instances, TIMEOUT), "no handler for the connection"
        return self.handler_cls.instances[port]

    def released(self, handler: Tracked) -> None:
        """The server ran closed() and dropped the connection from server.websockets."""
        assert handler.ended.wait(TIMEOUT), "the handler's closed() never ran"
        assert wait_until(lambda: handler not in self.server.websockets, TIMEOUT), "server.websockets kept it"

    def http(self, raw: bytes) -> HTTPAnswer:
        """Send a request; the server must answer and close TCP."""
        sock = self.connect()
        sock.sendall(raw)
        data, closed = read_until_closed(sock)
        assert closed, f"the server kept the connection open after {data[:80]!r}"
        return HTTPAnswer(data)

    def close_all(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def bench_factory(make_server: ServerFactory) -> Iterator[Callable[..., Bench]]:
    benches: list[Bench] = []

    def factory(good_headers: tuple[str, ...] = (), **options: Any) -> Bench:
        options.setdefault("handshake_timeout", 5.0)
        bench = Bench(make_server, **options)
        bench.good_headers = good_headers
        bench.open_good()
        benches.append(bench)
        return bench

    yield factory
    for bench in benches:
        bench.close_all()


# -- frames: the close code for each broken rule --------------------------------------------------


def raw_header(first: int, length_field: bytes) -> bytes:
    """A masked frame header written byte by byte (no payload follows)."""
    return bytes([first]) + length_field + os.urandom(4)


FRAME_CASES: list[Any] = [
    pytest.param(lambda: encode_frame(TEXT, b"hi", masked=False), 1002, id="unmasked-client-frame"),
    pytest.param(lambda: encode_frame(TEXT, b"hi", rsv=0x40), 1002, id="rsv1-without-extension"),
    pytest.param(lambda: encode_frame(TEXT, b"hi", rsv=0x20), 1002, id="rsv2-without-extension"),
    pytest.param(lambda: encode_frame(BINARY, b"hi", rsv=0x10), 1002, id="rsv3-without-extension"),
    *(pytest.param(lambda op=op: encode_frame(op, b"x"), 1002, id=f"reserved-opcode-{op:#x}") for op in
      (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)),
    pytest.param(lambda: encode_frame(PING, b"x", fin=False), 1002, id="fragmented-ping"),
    pytest.param(lambda: encode_frame(CLOSE, close_payload(1000), fin=False), 1002, id="fragmented-close"),
    pytest.param(lambda: encode_frame(PING, b"x" * 126), 1002, id="ping-over-125-bytes"),
    pytest.param(lambda: encode_frame(CLOSE, close_payload(1000, "x" * 124)), 1002, id="close-over-125-bytes"),
    pytest.param(lambda: encode_frame(CONT, b"x"), 1002, id="continuation-without-start"),
    pytest.param(
        lambda: encode_frame(TEXT, b"a", fin=False) + encode_frame(TEXT, b"b"), 1002, id="new-message-inside-fragmented"
    ),
    pytest.param(
        lambda: encode_frame(BINARY, b"a", fin=False) + encode_frame(PING, b"ok") + encode_frame(BINARY, b"b"),
        1002,
        id="new-message-after-interleaved-ping",
    ),
    pytest.param(
        lambda: raw_header(0x82, bytes([0x80 | 127]) + struct.pack("!Q", (1 << 63) | 5)) + b"x" * 5,
        1002,
        id="64-bit-length-top-bit",
    ),
    # Only a header: the server must refuse on the declared length, before any payload (RFC 6455 §10.4).
    pytest.param(
        lambda: raw_header(0x82, bytes([0x80 | 127]) + struct.pack("!Q", 1 << 40)), 1009, id="declared-1-TiB"
    ),
    pytest.param(
        lambda: raw_header(0x82, bytes([0x80 | 127]) + struct.pack("!Q", MiB + 1)), 1009, id="declared-limit-plus-1"
    ),
    pytest.param(
        lambda: encode_frame(TEXT, b"a" * 1000, fin=False)
        + raw_header(0x80, bytes([0x80 | 127]) + struct.pack("!Q", MiB)),
        1009,
        id="fragments-add-up-past-limit",
    ),
    pytest.param(
        lambda: encode_frame(TEXT, "κ".encode()[:1], fin=False) + encode_frame(CONT, b"(\xff"),
        1007,
        id="invalid-utf8-across-fragments",
    ),
    pytest.param(
        lambda: encode_frame(TEXT, b"ok \xe2\x82", fin=False) + encode_frame(CONT, b""),
        1007,
        id="utf8-truncated-at-message-end",
    ),
    # Fail fast (RFC 6455 §8.1): the first fragment alone is already invalid; the message never ends.
    pytest.param(lambda: encode_frame(TEXT, b"\xc0\xaf", fin=False), 1007, id="invalid-utf8-first-fragment"),
    pytest.param(lambda: encode_frame(TEXT, b"\xed\xa0\x80"), 1007, id="utf8-surrogate"),
    *(pytest.param(lambda code=code: encode_frame(CLOSE, struct.pack("!H", code)), 1002, id=f"close-code-{code}") for
      code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000)),
    pytest.param(lambda: encode_frame(CLOSE, b"\x03"), 1002, id="close-payload-1-byte"),
    pytest.param(lambda: encode_frame(CLOSE, close_payload(1000) + b"\xff"), 1007, id="close-reason-invalid-utf8"),
]


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


@pytest.mark.parametrize(("hostile", "code"), FRAME_CASES)
def test_bad_frame_fails_the_connection(
    bench_factory: Callable[..., Bench], hostile: Callable[[], bytes], code: int
) -> None:
    bench = bench_factory()
    bad = bench.handshake()
    handler = bench.handler_of(bad.sock)
    bad.send(hostile())
    close, before = read_close(bad)
    assert close.close_code == code, f"closed with {close.close_code} ({close.payload[2:]!r})"
    assert all(f.opcode == PONG for f in before), f"unexpected frames before the close: {before}"
    assert bad.at_eof(TIMEOUT), "the server did not end TCP after failing the connection"
    bad.sock.close()
    bench.released(handler)
    assert handler.code == code
    assert handler.messages == []
    bench.good_echoes()


def test_data_after_close_is_ignored(bench_factory: Callable[..., Bench]) -> None:
    bench = bench_factory()
    bad = bench.handshake()
    handler = bench.handler_of(bad.sock)
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
    assert close.payload == close_payload(1000), "the close frame is answered with its code (RFC 6455 §5.5.1)"
    assert bad.at_eof(TIMEOUT)
    bad.sock.close()
    bench.released(handler)
    assert handler.code == 1000
    assert handler.messages == [b"before"]
    bench.good_echoes()


def test_reset_mid_frame_gives_1006(bench_factory: Callable[..., Bench]) -> None:
    bench = bench_factory()
    bad = bench.handshake()
    handler = bench.handler_of(bad.sock)
    frame = encode_frame(BINARY, os.urandom(1000))
    bad.send(frame[:300])
    bench.good_echoes()  # the server has had time to read the partial frame
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bad.sock.close()
    bench.released(handler)
    assert handler.code == 1006
    assert handler.messages == []
    bench.good_echoes()


# -- the opening handshake: the HTTP status for each bad request --------------------------------------

KEY = base64.b64encode(b"0123456789abcdef").decode()
AUTH_OK = "Authorization: Basic " + base64.b64encode(b"alice:open sesame").decode()
ORIGIN_OK = "Origin: https://good.example"
POLICY = {"origins": ["https://good.example"], "authenticate": basic_auth({"alice": "open sesame"})}


def too_many_headers() -> bytes:
    # Exactly max_headers + 1 header lines and nothing after: the server has read
    # every byte when it refuses, so closing sends FIN, not RST (which could destroy
    # the 431 before the client reads it).
    head = request_bytes(end=False)
    filler = 129 - (head.count(b"\r\n") - 1)
    return head + b"".join(b"X-Filler-%d: x\r\n" % i for i in range(filler))


def header_line_too_long() -> bytes:
    # One header line of max_line + 3 bytes without its CRLF: the limit (8192 and
    # the CRLF) is crossed by the very last byte sent.
    prefix = b"X-Long: "
    return request_bytes(end=False) + prefix + b"a" * (8192 + 3 - len(prefix))


HANDSHAKE_CASES: list[Any] = [
    pytest.param(lambda: request_bytes(skip=("Sec-WebSocket-Key",)), 400, {}, {}, id="missing-key"),
    pytest.param(lambda: request_bytes(f"Sec-WebSocket-Key: {KEY}", key=KEY), 400, {}, {}, id="duplicate-key"),
    pytest.param(lambda: request_bytes(key="not base64 at all!"), 400, {}, {}, id="malformed-key"),
    pytest.param(lambda: request_bytes(key=base64.b64encode(b"short").decode()), 400, {}, {}, id="key-not-16-bytes"),
    pytest.param(
        lambda: request_bytes("Sec-WebSocket-Version: 8", skip=("Sec-WebSocket-Version",)),
        426,
        {"sec-websocket-version": "13"},
        {},
        id="wrong-version",
    ),
    pytest.param(
        lambda: request_bytes(skip=("Sec-WebSocket-Version",)),
        426,
        {"sec-websocket-version": "13"},
        {},
        id="missing-version",
    ),
    pytest.param(lambda: request_bytes(method="POST"), 405, {"allow": "GET"}, {}, id="post"),
    pytest.param(lambda: request_bytes(version="HTTP/1.0"), 400, {}, {}, id="http-1.0"),
    pytest.param(lambda: request_bytes(skip=("Upgrade",)), 426, {}, {}, id="missing-upgrade"),
    pytest.param(lambda: request_bytes(skip=("Connection",)), 426, {}, {}, id="missing-connection"),
    pytest.param(lambda: request_bytes(skip=("Host",)), 400, {}, {}, id="missing-host"),
    pytest.param(lambda: b"GET /\r\n\r\n", 400, {}, {}, id="malformed-request-line"),
    pytest.param(lambda: b"GET / HTTP/1.1\nHost: x\n\n", 400, {}, {}, id="bare-lf-line-ends"),
    pytest.param(too_many_headers, 431, {}, {}, id="too-many-headers"),
    pytest.param(header_line_too_long, 431, {}, {}, id="header-line-too-long"),
    pytest.param(
        lambda: request_bytes("Origin: https://evil.example", AUTH_OK), 403, {}, POLICY, id="origin-refused"
    ),
    pytest.param(lambda: request_bytes(AUTH_OK), 403, {}, POLICY, id="origin-missing"),
    pytest.param(
        lambda: request_bytes(ORIGIN_OK, "Origin: https://evil.example", AUTH_OK), 403, {}, POLICY, id="origin-twice"
    ),
    pytest.param(
        lambda: request_bytes(ORIGIN_OK), 401, {"www-authenticate": 'Basic realm="ws4web"'}, POLICY, id="auth-missing"
    ),
    pytest.param(
        lambda: request_bytes(ORIGIN_OK, "Authorization: Basic " + base64.b64encode(b"alice:guess").decode()),
        401,
        {"www-authenticate": 'Basic realm="ws4web"'},
        POLICY,
        id="auth-wrong-password",
    ),
    pytest.param(
        lambda: request_bytes(ORIGIN_OK, "Authorization: Bearer abc"),
        401,
        {"www-authenticate": 'Basic realm="ws4web"'},
        POLICY,
        id="auth-wrong-scheme",
    ),
    # Found by fuzzing/fuzz_http.py: a non-ASCII Basic token (0xE9 on the wire).
    pytest.param(
        lambda: request_bytes(ORIGIN_OK, "Authorization: Basic \xe9t\xe9"),
        401,
        {"www-authenticate": 'Basic realm="ws4web"'},
        POLICY,
        id="auth-non-ascii-token",
    ),
]


@pytest.mark.parametrize(("build", "status", "headers", "options"), HANDSHAKE_CASES)
def test_bad_handshake_is_refused(
    bench_factory: Callable[..., Bench],
    build: Callable[[], bytes],
    status: int,
    headers: dict[str, str],
    options: dict[str, Any],
) -> None:
    good = (ORIGIN_OK, AUTH_OK) if options else ()
    bench = bench_factory(good_headers=good, **options)
    answer = bench.http(build())
    assert answer.status == status, answer.status_line
    for name, value in headers.items():
        assert any(v.startswith(value) for v in answer.header(name)), f"{name}: {answer.header(name)}"
    if answer.header("content-length"):
        assert len(answer.body) == int(answer.header("content-length")[0])
    assert wait_until(lambda: len(bench.server.websockets) == 1, TIMEOUT), "a refused request became a WebSocket"
    bench.good_echoes()


def test_slow_request_is_cut_at_the_handshake_timeout(bench_factory: Callable[..., Bench]) -> None:
    bench = bench_factory(handshake_timeout=1.0)
    request = request_bytes()
    sock = bench.connect()
    # One byte every 0.1 s: the whole request would take about 15 s.
    cut, sent = trickle_until_cut(sock, request, 0.1)
    assert cut, "the server waited for the whole slow request"
    assert sent < len(request)
    data, closed = read_until_closed(sock)
    assert closed
    # 408 Request Timeout, or just a closed socket (a reset may destroy the answer).
    assert data == b"" or HTTPAnswer(data).status == 408, data[:80]
    bench.good_echoes()


def trickle_until_cut(sock: socket.socket, data: bytes, delay: float) -> tuple[bool, int]:
    """Send ``data`` a byte at a time until the server answers or drops us: (cut, bytes sent)."""
    sent = 0
    started = time.monotonic()
    while sent < len(data) and time.monotonic() - started < TIMEOUT:
        readable, _, _ = select.select([sock], [], [], delay)
        if readable:
            return True, sent
        try:
            sock.sendall(data[sent : sent + 1])
        except OSError:  # reset: the server already gave up
            return True, sent
        sent += 1
    return False, sent


def test_slow_tls_handshake_is_cut_at_the_handshake_timeout(
    make_server: ServerFactory, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """The deadline covers the TLS handshake too, not each read (a byte every 0.3 s must not keep it alive)."""
    server = make_server(Tracked, ssl_context=server_ssl_context, handshake_timeout=1.0)
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
        sock.sendall(request_bytes())
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


def test_ping_flood_is_answered_in_bounded_memory(server_process: ServerProcess, clients: ProcessClients) -> None:
    good = clients.handshake()
    echo(good, b"before")
    baseline = server_process.rss_mb()
    bad = clients.handshake()
    bad.send(b"".join(encode_frame(PING, i.to_bytes(4, "big")) for i in range(10_000)))
    # Every ping gets its pong, in order (RFC 6455 §5.5.2; Autobahn 2.10 checks it).
    answered = -1
    deadline = time.monotonic() + 30
    while answered < 9_999:
        frame = bad.read_frame(max(0.1, deadline - time.monotonic()))
        if frame.opcode == CLOSE:  # failing the connection is an acceptable answer too
            assert frame.close_code in (1008, 1011, 1013), frame.close_code
            break
        assert frame.opcode == PONG
        number = int.from_bytes(frame.payload, "big")
        assert number == answered + 1, "pongs out of order, or one missing"
        answered = number
    growth = server_process.rss_mb() - baseline
    assert growth < 32, f"the server grew by {growth:.0f} MB answering 10,000 pings"
    echo(good, b"after")
    bad.sock.close()
    server_process.expect("closed")


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
