"""Shared fixtures for the blocking I/O tests: test certificates, socket pairs, raw peers, servers, workers."""

from __future__ import annotations

import base64
import gc
import itertools
import logging
import operator
import os
import queue
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest

from ws4web import CLIENT, SERVER, WebSocket, WebSocketServer
from ws4web.accept import new_protocol, split_limits
from ws4web.drivers.blocking import BlockingDriver
from ws4web.logs import connection_log
from ws4web.messages import Message
from ws4web.upgrade import wrap_socket

# A shell runs a background job with SIGINT ignored, and an ignored signal stays ignored
# across exec: every program the tests start would then shrug off the Ctrl-C they send
# it. A handler (not SIG_IGN) here is reset to the default in each child, where Python
# installs its own KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs")
CA_FILE = os.path.join(CERTS, "ca.pem")
SERVER_CERT = os.path.join(CERTS, "server.pem")
SERVER_KEY = os.path.join(CERTS, "server.key")

# Every blocking wait in these tests is bounded by this (seconds) unless a test says less.
TIMEOUT = 10.0


# -- threads -------------------------------------------------------------------------


class Worker:
    """Run ``target`` in a thread; ``join()`` returns its result or re-raises its exception."""

    def __init__(self, target: Callable[..., Any], *args: Any, thread_name: str = "test-worker", **kwargs: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target, args, kwargs), name=thread_name, daemon=True)
        self.thread.start()

    def _run(self, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            self.result = target(*args, **kwargs)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = TIMEOUT) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.thread.name} did not finish within {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result

    def raised(self, timeout: float = TIMEOUT) -> BaseException:
        """Join and return the exception the target raised (failing if it raised none)."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.thread.name} did not finish within {timeout} s"
        assert self.error is not None, f"expected an exception, got the result {self.result!r}"
        return self.error


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def idle_spare(thread: threading.Thread) -> bool:
    """A thread of the ASGI driver's process-wide pool waiting for its next task (it
    ends by itself once idle long enough): not a leak."""
    if not thread.name.startswith("ws4web-asgi-") or thread.name.endswith("watchdog"):
        return False
    asgi = sys.modules.get("ws4web.drivers.asgi")
    return asgi is not None and asgi.THREADS.busy == 0


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail the test if a thread it started is still alive shortly after it ended.

    The garbage collector runs at the end so that a socket left open warns here
    (ResourceWarning, turned into an error by the test modules) and not in a
    later test.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    leaked = []
    for thread in threading.enumerate():
        if thread in before or thread is threading.current_thread() or idle_spare(thread):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread.name)
    gc.collect()
    assert not leaked, f"threads still running after the test: {leaked}"


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server_ssl_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(SERVER_CERT, SERVER_KEY)
    return context


@pytest.fixture(scope="session")
def client_ssl_context() -> ssl.SSLContext:
    """Verifies certificates and host names, trusting only the test CA."""
    return ssl.create_default_context(cafile=CA_FILE)


@pytest.fixture
def tls_pair(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    """(server side, client side): a TCP connection on 127.0.0.1 with TLS done on both ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    client_raw = socket.create_connection(listener.getsockname()[:2], timeout=TIMEOUT)
    server_raw, _ = listener.accept()
    listener.close()
    server_raw.settimeout(TIMEOUT)
    worker = Worker(server_ssl_context.wrap_socket, server_raw, True)  # server_side=True
    try:
        client = client_ssl_context.wrap_socket(client_raw, server_hostname="localhost")
    except BaseException:
        client_raw.close()
        server_raw.close()
        raise
    server: ssl.SSLSocket = worker.join()
    server.settimeout(None)
    client.settimeout(None)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


# -- socket pairs ------------------------------------------------------------------------


@pytest.fixture
def sock_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected stream sockets; closed at teardown whatever the test did."""
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def ws_pair(sock_pair: tuple[socket.socket, socket.socket]) -> Iterator[tuple[WebSocket, WebSocket]]:
    """(server, client): two ws4web WebSockets talking over a socketpair, no HTTP handshake."""
    a, b = sock_pair
    server = wrap_socket(a, side=SERVER, close_timeout=2.0)
    client = wrap_socket(b, side=CLIENT, close_timeout=2.0)
    try:
        yield server, client
    finally:
        server.terminate()
        client.terminate()


def _driver(side: Any, sock: Any, options: dict[str, Any]) -> BlockingDriver:
    data = options.pop("data", b"")
    extensions = options.pop("extensions", [])
    limits = split_limits(options)
    protocol = new_protocol(side, limits, extensions, data)
    log = connection_log(logging.getLogger("ws4web.test"), sock, None)
    return BlockingDriver(sock, protocol, log, limits=limits, **options)


def server_driver(sock: Any, **options: Any) -> BlockingDriver:
    """A server-side BlockingDriver over ``sock``; ``options``: data, extensions, limits, primitives."""
    return _driver(SERVER, sock, dict(options))


def client_driver(sock: Any, **options: Any) -> BlockingDriver:
    return _driver(CLIENT, sock, dict(options))


# -- a raw peer: frames written and read by the test itself ------------------------------


def xor_mask(payload: bytes, key: bytes) -> bytes:
    return bytes(map(operator.xor, payload, itertools.cycle(key)))


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """A frame as RFC 6455 §5.2 lays it out, built here independently of ws4web.frames.

    ``rsv`` holds the RSV bits in place (0x40 = RSV1); clients mask (``masked``).
    """
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + xor_mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


class RawFrame(NamedTuple):
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool

    @property
    def close_code(self) -> int:
        assert self.opcode == 0x8, f"not a close frame: {self}"
        return int(struct.unpack("!H", self.payload[:2])[0]) if self.payload else 1005

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode()


class RawPeer:
    """The far end of a socket, speaking WebSocket frames the test writes by hand."""

    def __init__(self, sock: Any, *, masked: bool = True) -> None:
        self.sock = sock
        self.masked = masked  # a client peer masks what it sends
        self.buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, rsv=rsv, masked=self.masked))

    def send_slowly(self, data: bytes, delay: float = 0.002) -> None:
        """Write one byte at a time, pausing so the reader sees many short reads."""
        for i in range(len(data)):
            self.sock.sendall(data[i : i + 1])
            time.sleep(delay)

    def _fill(self, size: int, deadline: float) -> None:
        while len(self.buffer) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited for {size} bytes, have {len(self.buffer)}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"EOF with {len(self.buffer)} of {size} bytes")
            self.buffer += chunk

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_head(self, timeout: float = TIMEOUT) -> bytes:
        """An HTTP head up to its blank line; bytes after it stay buffered for read_frame()."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            self._fill(len(self.buffer) + 1, deadline)
        end = self.buffer.index(b"\r\n\r\n")
        head = self._take(end)
        del self.buffer[:4]
        return head

    def read_frame(self, timeout: float = TIMEOUT) -> RawFrame:
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        first, second = self.buffer[0], self.buffer[1]
        size = second & 0x7F
        masked = bool(second & 0x80)
        header = 2 + {126: 2, 127: 8}.get(size, 0) + (4 if masked else 0)
        self._fill(header, deadline)
        head = self._take(header)
        if size == 126:
            size = struct.unpack("!H", head[2:4])[0]
        elif size == 127:
            size = struct.unpack("!Q", head[2:10])[0]
        self._fill(size, deadline)
        payload = self._take(size)
        if masked:
            payload = xor_mask(payload, head[-4:])
        return RawFrame(bool(first & 0x80), first & 0x70, first & 0x0F, payload, masked)

    def read_data_frame(self, timeout: float = TIMEOUT) -> RawFrame:
        """The next frame that is not a ping or pong."""
        while True:
            frame = self.read_frame(timeout)
            if frame.opcode not in (0x9, 0xA):
                return frame

    def at_eof(self, timeout: float = TIMEOUT) -> bool:
        """Whether the socket reaches EOF (True) with no more bytes, within ``timeout``."""
        if self.buffer:
            return False
        self.sock.settimeout(timeout)
        try:
            data: bytes = self.sock.recv(1)
        except ConnectionResetError:
            return True
        return data == b""


@pytest.fixture
def raw_client(sock_pair: tuple[socket.socket, socket.socket]) -> tuple[socket.socket, RawPeer]:
    """(server socket for ws4web, RawPeer acting as a masking client)."""
    return sock_pair[0], RawPeer(sock_pair[1], masked=True)


# -- raw HTTP: exact request bytes, and what the server answers ----------------------------------


def upgrade_request(
    path: str = "/",
    *extra: str,
    key: str | None = None,
    method: str = "GET",
    version: str = "HTTP/1.1",
    skip: tuple[str, ...] = (),
    end: bool = True,
) -> bytes:
    """An upgrade request for ``path``; ``skip`` drops standard headers by name, ``extra`` adds
    lines after them; ``end=False`` leaves off the blank line that ends the head."""
    standard = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key or base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    lines = [f"{method} {path} {version}"]
    lines += [f"{name}: {value}" for name, value in standard.items() if name not in skip]
    lines += extra
    return ("\r\n".join(lines) + "\r\n" + ("\r\n" if end else "")).encode("latin-1")


class HTTPAnswer:
    """An HTTP response as received: status, headers (lower-cased names) and body."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        parts = lines[0].split(" ", 2)
        assert parts[0].startswith("HTTP/1.") and len(parts) > 1, f"not an HTTP response: {raw[:80]!r}"
        self.status = int(parts[1])
        self.headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


class RawConnections:
    """Client sockets to 127.0.0.1 that write exact bytes; all closed at teardown."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def open(self, port: int, data: bytes = b"", timeout: float = TIMEOUT) -> socket.socket:
        """Connect to ``port`` and send ``data`` (the raw handshake sender)."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sockets.append(sock)
        if data:
            sock.sendall(data)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def raw() -> Iterator[RawConnections]:
    connections = RawConnections()
    try:
        yield connections
    finally:
        connections.close()


def read_until_closed(sock: socket.socket, timeout: float = TIMEOUT) -> tuple[bytes, bool]:
    """Everything the server sends until it ends TCP: (data, True) if it did within ``timeout``
    (a reset counts as ended), (data so far, False) if not."""
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


class Outcome(NamedTuple):
    """What a server did with a connection within a time limit: its answer's status
    (None if it sent no complete status line), whether it ended TCP, and the bytes it sent."""

    status: int | None
    closed: bool
    data: bytes

    @property
    def answer(self) -> HTTPAnswer:
        return HTTPAnswer(self.data)


def status_or_eof(sock: socket.socket, timeout: float = TIMEOUT, *, wait_close: bool = True) -> Outcome:
    """Read a status line or EOF within ``timeout``, then until the server ends TCP (same deadline).

    A 101 returns at once, with the TCP connection left open (frames may follow); so does
    any answer with ``wait_close=False``, once its head and ``Content-Length`` body are in.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return Outcome(None, False, data)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return Outcome(None, False, data)
        except ConnectionResetError:
            return Outcome(None, True, data)
        if not chunk:
            return Outcome(None, True, data)
        data += chunk
    parts = data.split(b"\r\n", 1)[0].split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    if status == 101:
        return Outcome(status, False, data)
    if not wait_close:
        return _read_one_response(sock, status, data, deadline)
    rest, closed = read_until_closed(sock, max(0.0, deadline - time.monotonic()))
    return Outcome(status, closed, data + rest)


def _read_one_response(sock: socket.socket, status: int | None, data: bytes, deadline: float) -> Outcome:
    """The rest of one response with a Content-Length body (or none), leaving the connection open."""

    def complete() -> bool:
        if b"\r\n\r\n" not in data:
            return False
        answer = HTTPAnswer(data)
        length = answer.header("content-length")
        return not length or len(answer.body) >= int(length[0])

    while not complete():
        left = deadline - time.monotonic()
        if left <= 0:
            return Outcome(status, False, data)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return Outcome(status, False, data)
        except ConnectionResetError:
            return Outcome(status, True, data)
        if not chunk:
            return Outcome(status, True, data)
        data += chunk
    return Outcome(status, False, data)


def trickle_until_cut(sock: socket.socket, data: bytes, delay: float, limit: float = TIMEOUT) -> tuple[bool, int]:
    """Send ``data`` a byte every ``delay`` s until the server answers or drops us, for at most
    ``limit`` s: (cut, bytes sent)."""
    sent = 0
    started = time.monotonic()
    while sent < len(data) and time.monotonic() - started < limit:
        readable, _, _ = select.select([sock], [], [], delay)
        if readable:
            return True, sent
        try:
            sock.sendall(data[sent : sent + 1])
        except OSError:  # reset: the server already gave up
            return True, sent
        sent += 1
    return False, sent


# -- handlers ---------------------------------------------------------------------------------


class EchoHandler(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


class RecordingHandler(WebSocket):
    """Records every callback; ``events`` gets ("opened",), ("message", m), ("pong", data), ("closed", code, reason)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.closed_with: tuple[int, str | None] | None = None
        self.done = threading.Event()

    def opened(self) -> None:
        self.events.put(("opened",))

    def received_message(self, message: Message) -> None:
        self.events.put(("message", message))

    def ponged(self, message: Message) -> None:
        self.events.put(("pong", message.data))

    def closed(self, code: int, reason: str | None = None) -> None:
        self.closed_with = (code, reason)
        self.events.put(("closed", code, reason))
        self.done.set()

    def next_event(self, timeout: float = TIMEOUT) -> tuple[Any, ...]:
        return self.events.get(timeout=timeout)


# -- servers ------------------------------------------------------------------------------------


ServerFactory = Callable[..., WebSocketServer]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """Start WebSocketServers (127.0.0.1:0 unless told); all are shut down at teardown."""
    started: list[WebSocketServer] = []

    def factory(handler_cls: type[WebSocket] = EchoHandler, **options: Any) -> WebSocketServer:
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 0)
        options.setdefault("close_timeout", 2.0)
        server = WebSocketServer(handler_cls, **options)
        started.append(server.start())
        return server

    yield factory
    for server in started:
        server.shutdown(timeout=5.0)


@pytest.fixture
def echo_server(make_server: ServerFactory) -> WebSocketServer:
    return make_server(EchoHandler)


def ws_url(server: WebSocketServer, path: str = "/", scheme: str = "ws", host: str | None = None) -> str:
    if host is None:
        host = server.address[0]
        if ":" in host:
            host = f"[{host}]"
    return f"{scheme}://{host}:{server.port}{path}"


class CountingSocket:
    """Wraps a socket and counts the writes made on it (send and sendall calls)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes = 0

    def send(self, data: Any, *args: Any) -> int:
        self.writes += 1
        return self._sock.send(data, *args)

    def sendall(self, data: Any, *args: Any) -> None:
        self.writes += 1
        self._sock.sendall(data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
