"""Loopback load-and-faults test: 1,000 concurrent echo connections plus 50 mid-frame resets per socket-owning adapter.

Each adapter's echo example runs as a subprocess (so its threads, RSS and fds can be
read from ``/proc/<pid>``). One single-threaded selector client in this process opens
1,000 WebSockets, waits until all are open at once, then pushes 20 numbered messages
of mixed sizes (10 B, 1 KiB, 64 KiB, 300 KiB; text and binary) through each, with a
window of a few messages in flight, and checks every echo byte for byte and in order.
While that runs, 50 extra clients send half of a 300 KiB frame and reset the TCP
connection (SO_LINGER 0). The whole load runs twice on the same server. After each
round the server must be alive and its fd count back to the baseline; at the end its
thread count must be back near the baseline, and RSS growth is bounded for round 1
(allocator retention) and, much tighter, for round 2 (leaks).

Client frames use one fixed non-zero masking key (RFC 6455 section 5.3 requires
masking, not a fresh key for a server to accept), so the bulk of each frame is
masked once up front and only the 8-byte (connection, sequence) tags at both ends of
a payload are masked per message: the client stays cheaper than the server.
"""

from __future__ import annotations

import base64
import collections
import errno
import hashlib
import os
import platform
import random
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# ``load``: about 4.5 minutes for the whole file on 2 cores, so CI may deselect it (-m "not load").
pytestmark = [pytest.mark.load, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>")]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HOST = "127.0.0.1"

CONNECTIONS = 1000
MESSAGES = 20  # per connection
SIZES = (10, 1024, 64 * 1024, 300 * 1024)  # cycled by sequence number
WINDOW = 4  # echoes a connection may wait for at once: in order, but pipelined
FAULTS = 50  # half-frame + RST clients launched while the load runs
MAX_HANDSHAKES = 64  # connects in flight at once: cherrypy/wsgiref listen with a backlog of 128
NOFILE_WANTED = 4096  # 1,000 load + 50 fault sockets + slack, on each side
LOAD_DEADLINE = 75.0  # seconds for connect + all messages + close handshakes
FD_SETTLE = 20.0  # seconds for the server to release every socket after the clients left
# The selector loop (ws4web.drivers.selector) keeps its leader and watchdog; a callback that
# blocks (a send past max_send_buffer to a client that has not read yet) or overruns the
# loop's budget moves the loop to another thread, and such threads wait 10 s for another
# task before they end (Loop.spares): poll 30 s for them to be gone.
SELECTOR_SETTLE = 30.0
# Measured on 2 shared cores: no thread over the baseline at the 0.25 s samples, stdlib
# and CherryPy alike. The bound leaves room for a few overlapping moves on a busier
# machine and is far under the CONNECTIONS threads a thread per connection would take.
SELECTOR_PEAK_THREADS = 16
THREAD_SETTLE = 20.0  # thread-per-connection and greenlet adapters: threads end with their sockets
THREAD_MARGIN = 2  # threads over the pre-load baseline still accepted after settling
# RSS: the load runs twice on one server. Allocators keep freed memory (glibc keeps an
# arena per thread that ran, and thread-per-connection servers ran 1,000 threads; Python
# keeps its small-object pools), so round 1 may leave up to RSS_RETAINED_BOUND behind
# (measured: 80-255 MiB; keeping one 300 KiB message per connection alone would be 293 MiB
# on top). Round 2 reuses that memory, so what it adds is the leak: one round moves
# 1.78 GiB each way, and RSS_LEAK_BOUND (64 MiB) is crossed by leaking 64 KiB per
# connection or 3.5 % of the payload bytes.
RSS_RETAINED_BOUND = 384 * 2**20
RSS_LEAK_BOUND = 64 * 2**20

# glibc raises its mmap threshold dynamically to the largest block freed (up to 32 MiB), so
# after the first 300 KiB message every large buffer comes from the heap, which is rarely
# trimmed: RSS then stays at its peak and says nothing about leaks. A fixed threshold
# keeps blocks >= 64 KiB (the test's 64 KiB and 300 KiB messages) in mmap, returned to the
# kernel on free, so the RSS left after the run is what the server still holds (plus
# small-object arenas). At 128 KiB the 64 KiB messages in flight (up to 250 MiB) stayed
# in a fragmented heap and round 2 grew by up to 70 MiB without any leak (tracemalloc).
SERVER_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024), "MALLOC_TRIM_THRESHOLD_": str(1024 * 1024)}

MASK_KEY = b"\x5a\x17\xc3\x8e"
TAG = 8  # bytes of (connection id, sequence number) at each end of a payload

# Sets the fd limit inside the child, then runs the script as __main__ (argv[2:]).
WRAPPER = """\
import resource, runpy, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass(frozen=True)
class Adapter:
    name: str
    threading: str  # "selector" (the selector loop), "per-connection" or "greenlets"


ADAPTERS = [
    Adapter("stdlib", "selector"),
    Adapter("cherrypy", "selector"),
    Adapter("gevent", "greenlets"),
    Adapter("wsgiref", "per-connection"),
]


def _server_argv(adapter: Adapter, port: int) -> list[str]:
    common = ["--port", str(port), "--host", HOST]
    if adapter.name == "stdlib":
        return [str(EXAMPLES / "echo_stdlib.py"), *common]
    if adapter.name == "cherrypy":
        return [str(EXAMPLES / "echo_cherrypy.py"), *common]
    if adapter.name == "gevent":
        return [str(EXAMPLES / "echo_gevent.py"), *common]
    assert adapter.name == "wsgiref"
    return [str(EXAMPLES / "echo_wsgiref.py"), *common]


# -- payloads and frames -----------------------------------------------------------------


def _mask(data: bytes, offset: int) -> bytes:
    """RFC 6455 section 5.3: XOR with the key, byte i of the payload with key[i % 4]."""
    if not data:
        return b""
    shift = offset % 4
    key = MASK_KEY[shift:] + MASK_KEY[:shift]
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    masked = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(data), "big")


@dataclass(frozen=True)
class Shape:
    """One (size, text?) kind of message: its filler and the filler pre-masked."""

    size: int
    text: bool
    body: bytes  # the payload between the tags (or after the lone tag when size < 2 * TAG)
    masked_body: bytes


def _make_shape(size: int, text: bool) -> Shape:
    rng = random.Random(size * 2 + text)
    n = size - 2 * TAG if size >= 2 * TAG else size - TAG
    if text:
        alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;-_"
        body = bytes(rng.choices(alphabet, k=n))
    else:
        body = rng.randbytes(n)
    return Shape(size, text, body, _mask(body, TAG))


SHAPES = {(size, text): _make_shape(size, text) for size in SIZES for text in (False, True)}


def _shape(cid: int, seq: int) -> Shape:
    # Sizes cycle with the sequence number; text/binary alternates per cycle and per
    # connection, so every size is sent both ways.
    return SHAPES[SIZES[seq % len(SIZES)], (seq // len(SIZES) + cid) % 2 == 0]


def _tag(cid: int, seq: int) -> bytes:
    return b"%04d%04d" % (cid, seq)  # ASCII, so text payloads stay valid UTF-8


def _frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes([first, 0x80 | length]) + MASK_KEY
    if length < 2**16:
        return struct.pack("!BBH", first, 0x80 | 126, length) + MASK_KEY
    return struct.pack("!BBQ", first, 0x80 | 127, length) + MASK_KEY


def _message_frame(cid: int, seq: int) -> bytes:
    shape = _shape(cid, seq)
    tag = _tag(cid, seq)
    parts = [_frame_header(1 if shape.text else 2, shape.size), _mask(tag, 0), shape.masked_body]
    if shape.size >= 2 * TAG:
        parts.append(_mask(tag, shape.size - TAG))
    return b"".join(parts)


def _echo_ok(cid: int, seq: int, opcode: int, payload: bytes) -> bool:
    shape = _shape(cid, seq)
    if opcode != (1 if shape.text else 2) or len(payload) != shape.size:
        return False
    tag = _tag(cid, seq)
    if payload[:TAG] != tag:
        return False
    if shape.size < 2 * TAG:
        return payload[TAG:] == shape.body
    return payload[-TAG:] == tag and memoryview(payload)[TAG:-TAG] == shape.body


CLOSE_FRAME = _frame_header(8, 2) + _mask(struct.pack("!H", 1000), 0)
# The fault clients announce a 300 KiB binary frame and send half of it.
HALF_FRAME = _frame_header(2, SIZES[-1]) + SHAPES[SIZES[-1], False].masked_body[: SIZES[-1] // 2]


# -- the client --------------------------------------------------------------------------


@dataclass(eq=False)
class Conn:
    cid: int
    sock: socket.socket
    fault: bool = False
    state: str = "connecting"  # connecting, handshake, open, closing, done
    key: str = ""
    out: collections.deque[memoryview] = field(default_factory=collections.deque)
    inbuf: bytearray = field(default_factory=bytearray)
    events: int = 0
    sent: int = 0
    received: int = 0
    fragments: list[bytes] = field(default_factory=list)
    fragment_opcode: int = 0
    server_closed: bool = False


@dataclass
class Stats:
    messages: int = 0
    bytes: int = 0  # payload bytes sent (the same count comes back)
    faults_started: int = 0
    faults_reset: int = 0
    peak_threads: int = 0
    peak_fds: int = 0
    fds_when_all_open: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def _proc_status(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("Threads", "VmRSS", "VmHWM"):
                number = int(rest.split()[0])
                values[name] = number * 1024 if name.startswith("Vm") else number
    return values


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class LoadClient:
    """Single-threaded selector client driving CONNECTIONS echo connections and FAULTS resets."""

    def __init__(self, port: int, server_pid: int) -> None:
        self.port = port
        self.pid = server_pid
        self.selector = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.faults: list[Conn] = []
        self.stats = Stats()
        self.open_count = 0
        self.done_count = 0
        self.handshaking = 0
        self.started = False  # the barrier: no message before all CONNECTIONS are open
        total = CONNECTIONS * MESSAGES
        # Launch the fault clients spread over the run, at these counts of echoed messages.
        self.fault_marks = collections.deque(total * (k + 1) // (FAULTS + 2) for k in range(FAULTS))

    # registration ---------------------------------------------------------------------

    def _update(self, conn: Conn) -> None:
        events = selectors.EVENT_READ
        if conn.state == "connecting" or conn.out:
            events |= selectors.EVENT_WRITE
        if events != conn.events:
            if conn.events:
                self.selector.modify(conn.sock, events, conn)
            else:
                self.selector.register(conn.sock, events, conn)
            conn.events = events

    def _connect(self, cid: int, fault: bool) -> Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((HOST, self.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, f"connect #{cid}: {os.strerror(err)}")
        conn = Conn(cid, sock, fault=fault)
        conn.events = selectors.EVENT_WRITE
        self.selector.register(sock, conn.events, conn)
        self.handshaking += 1
        return conn

    def _queue(self, conn: Conn, data: bytes) -> None:
        conn.out.append(memoryview(data))

    def _error(self, conn: Conn, text: str) -> None:
        if len(self.stats.errors) < 20:
            self.stats.errors.append(f"conn {conn.cid}{' (fault)' if conn.fault else ''}: {text}")

    def _finish(self, conn: Conn, state: str = "done") -> None:
        if conn.events:
            self.selector.unregister(conn.sock)
            conn.events = 0
        conn.sock.close()
        conn.state = state

    # I/O ------------------------------------------------------------------------------

    def _on_writable(self, conn: Conn) -> None:
        if conn.state == "connecting":
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._error(conn, f"connect failed: {os.strerror(err)}")
                self.handshaking -= 1
                self._finish(conn, "failed")
                return
            conn.state = "handshake"
            conn.key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET /load/{conn.cid} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {conn.key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            self._queue(conn, request.encode())
        while conn.out:
            try:
                n = conn.sock.send(conn.out[0])
            except BlockingIOError:
                break
            if n < len(conn.out[0]):
                conn.out[0] = conn.out[0][n:]
                break
            conn.out.popleft()
        if conn.fault and conn.state == "open" and not conn.out:
            # Half the frame is in the kernel: reset instead of finishing it.
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._finish(conn, "reset")
            self.stats.faults_reset += 1
            return
        self._update(conn)

    def _on_readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError as exc:
            self._error(conn, f"recv failed in state {conn.state}: {exc!r}")
            self._finish(conn, "failed")
            return
        if not data:
            if conn.state == "closing" and conn.server_closed:
                self._finish(conn)
                self.done_count += 1
            else:
                self._error(conn, f"EOF in state {conn.state} after {conn.received} echoes")
                self._finish(conn, "failed")
            return
        conn.inbuf += data
        if conn.state == "handshake":
            self._read_handshake(conn)
        if conn.state in ("open", "closing"):
            self._read_frames(conn)
        if conn.state not in ("done", "failed", "reset"):
            self._update(conn)

    def _read_handshake(self, conn: Conn) -> None:
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbuf) > 8192:
                self._error(conn, "handshake response too long")
                self._finish(conn, "failed")
            return
        head = bytes(conn.inbuf[:end]).decode("latin-1")
        del conn.inbuf[: end + 4]
        lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        # RFC 6455 section 4.1: the accept value is base64(SHA-1(key + GUID)).
        guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1((conn.key + guid).encode()).digest()).decode()
        self.handshaking -= 1
        if not lines[0].startswith("HTTP/1.1 101") or headers.get("sec-websocket-accept") != accept:
            self._error(conn, f"bad handshake response: {lines[0]!r}")
            self._finish(conn, "failed")
            return
        if "sec-websocket-extensions" in headers:
            self._error(conn, f"extension not offered but accepted: {headers['sec-websocket-extensions']}")
        conn.state = "open"
        if conn.fault:
            self._queue(conn, HALF_FRAME)
            return
        self.open_count += 1
        if self.started:
            self._send_next(conn)

    def _send_next(self, conn: Conn) -> None:
        while conn.sent < MESSAGES and conn.sent - conn.received < WINDOW:
            self._queue(conn, _message_frame(conn.cid, conn.sent))
            self.stats.bytes += _shape(conn.cid, conn.sent).size
            conn.sent += 1
        if conn.received == MESSAGES and conn.state == "open":
            self._queue(conn, CLOSE_FRAME)
            conn.state = "closing"

    def _read_frames(self, conn: Conn) -> None:
        buf = conn.inbuf
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            length = second & 0x7F
            start = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                start = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                start = 10
            if len(buf) < start + length:
                return
            payload = bytes(buf[start : start + length])
            del buf[: start + length]
            # RFC 6455 section 5.1/5.2: a server never masks; no extension was negotiated, so no RSV bit.
            if second & 0x80 or first & 0x70:
                self._error(conn, f"bad frame header {first:#x} {second:#x}")
                self._finish(conn, "failed")
                return
            self._on_frame(conn, bool(first & 0x80), first & 0x0F, payload)
            if conn.state in ("failed", "done"):
                return

    def _on_frame(self, conn: Conn, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == 9:  # ping: answer with the same payload (RFC 6455 section 5.5.2)
            self._queue(conn, _frame_header(10, len(payload)) + _mask(payload, 0))
            return
        if opcode == 10:
            return
        if opcode == 8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            if conn.state != "closing" or code != 1000:
                self._error(conn, f"server closed with {code} in state {conn.state} after {conn.received} echoes")
                self._finish(conn, "failed")
                return
            conn.server_closed = True
            return
        if opcode in (1, 2):
            conn.fragment_opcode = opcode
            conn.fragments = [payload]
        elif opcode == 0:
            conn.fragments.append(payload)
        else:
            self._error(conn, f"unexpected opcode {opcode}")
            self._finish(conn, "failed")
            return
        if not fin:
            return
        message = conn.fragments[0] if len(conn.fragments) == 1 else b"".join(conn.fragments)
        conn.fragments = []
        if conn.received >= conn.sent or not _echo_ok(conn.cid, conn.received, conn.fragment_opcode, message):
            self._error(conn, f"echo #{conn.received} wrong: opcode {conn.fragment_opcode}, {len(message)} bytes")
            self._finish(conn, "failed")
            return
        conn.received += 1
        self.stats.messages += 1
        while self.fault_marks and self.stats.messages >= self.fault_marks[0]:
            self.fault_marks.popleft()
            self.faults.append(self._connect(CONNECTIONS + len(self.faults), fault=True))
            self.stats.faults_started += 1
        self._send_next(conn)

    def _faults_running(self) -> bool:
        return any(f.state not in ("done", "failed", "reset") for f in self.faults)

    def _sample(self) -> None:
        status = _proc_status(self.pid)
        self.stats.peak_threads = max(self.stats.peak_threads, status["Threads"])
        self.stats.peak_fds = max(self.stats.peak_fds, _fd_count(self.pid))

    def run(self) -> Stats:
        start = time.monotonic()
        deadline = start + LOAD_DEADLINE
        next_sample = 0.0
        to_open = iter(range(CONNECTIONS))
        pending = True
        try:
            # Until every echo connection is done and every fault started has run its course:
            # the last fault starts ~4 % before the end and may still be in its handshake.
            while self.done_count < CONNECTIONS or self._faults_running():
                now = time.monotonic()
                if now > deadline:
                    break
                while pending and self.handshaking < MAX_HANDSHAKES:
                    cid = next(to_open, None)
                    if cid is None:
                        pending = False
                        break
                    self.conns.append(self._connect(cid, fault=False))
                if not self.started and self.open_count == CONNECTIONS:
                    # Every connection is open at once: read the server's fds now, then start.
                    self.stats.fds_when_all_open = _fd_count(self.pid)
                    self.started = True
                    for conn in self.conns:
                        self._send_next(conn)
                        self._update(conn)
                if now >= next_sample:
                    self._sample()
                    next_sample = now + 0.25
                if len(self.stats.errors) >= 20:  # enough to diagnose; stop early
                    break
                for key, events in self.selector.select(timeout=0.1):
                    conn = key.data
                    if events & selectors.EVENT_WRITE and conn.state not in ("done", "failed", "reset"):
                        self._on_writable(conn)
                    if events & selectors.EVENT_READ and conn.state not in ("done", "failed", "reset"):
                        self._on_readable(conn)
            self._sample()
        finally:
            self.stats.seconds = time.monotonic() - start
            for conn in self.conns + self.faults:
                if conn.state not in ("done", "failed", "reset"):
                    self._finish(conn, conn.state)
                    conn.sock.close()
            self.selector.close()
        return self.stats


# -- the test ----------------------------------------------------------------------------


@pytest.fixture
def nofile() -> Iterator[int]:
    """Raise this process's fd limit to NOFILE_WANTED (skip if the hard limit forbids it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < NOFILE_WANTED:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {NOFILE_WANTED}")
    wanted = max(soft, NOFILE_WANTED)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        pytest.skip(f"cannot raise RLIMIT_NOFILE to {wanted}: {exc}")
    try:
        yield wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server not listening on {port} after {timeout} s")


def _warm_up(port: int) -> None:
    """Three sequential echoes, so lazily created server state (a loop, its threads) exists before the baseline."""
    for cid in range(3):
        with socket.create_connection((HOST, port), timeout=10.0) as sock:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET / HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                assert chunk, "server closed during warm-up handshake"
                data += chunk
            assert data.startswith(b"HTTP/1.1 101"), data[:80]
            data = data[data.index(b"\r\n\r\n") + 4 :]
            # The close goes only after the echo arrived: a close in the same segment may be
            # answered before the echo is written, and then the echo is dropped.
            sock.sendall(_message_frame(cid, 1))
            while len(data) < 4 + SIZES[1]:  # echo of 1 KiB: 4-byte header (126 form), unmasked
                chunk = sock.recv(1 << 16)
                assert chunk, "server closed before the warm-up echo"
                data += chunk
            assert data[:4] == b"\x81\x7e\x04\x00" or data[:4] == b"\x82\x7e\x04\x00", data[:8]
            assert _echo_ok(cid, 1, data[0] & 0x0F, data[4 : 4 + SIZES[1]]), data[:40]
            sock.sendall(CLOSE_FRAME)
            data = data[4 + SIZES[1] :]
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
            assert data == b"\x88\x02\x03\xe8", data[:8]


def _poll(pid: int, check: str, limit: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        value = _fd_count(pid) if check == "fds" else _proc_status(pid)["Threads"]
        if value <= limit or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_load_and_faults(adapter: Adapter, nofile: int, tmp_path: Path) -> None:
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(nofile), *_server_argv(adapter, port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=SERVER_ENV,
    )
    try:
        _wait_for_port(port, proc)
        _warm_up(port)
        time.sleep(1.0)  # let the warm-up connections' teardown finish before the baseline
        base = _proc_status(proc.pid)
        base_fds = _fd_count(proc.pid)

        mib = 2**20
        print(f"\n{time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()} {os.cpu_count()} CPUs "
              f"Python {platform.python_version()}")
        rss_after: list[int] = []
        for round_no in (1, 2):
            stats = LoadClient(port, proc.pid).run()

            assert not stats.errors, stats.errors
            assert proc.poll() is None, "server process died under load"
            assert stats.messages == CONNECTIONS * MESSAGES
            assert stats.faults_started == FAULTS and stats.faults_reset == FAULTS
            # The server held every load connection at the same time.
            assert stats.fds_when_all_open >= base_fds + CONNECTIONS

            fds_after = _poll(proc.pid, "fds", base_fds, FD_SETTLE)
            assert fds_after <= base_fds, f"fds {fds_after} > baseline {base_fds} after {FD_SETTLE} s"
            if adapter.threading == "selector":
                # One loop runs every connection; only callbacks that block get a thread, for a while.
                assert stats.peak_threads <= base["Threads"] + SELECTOR_PEAK_THREADS, stats.peak_threads
            elif adapter.threading == "greenlets":
                assert stats.peak_threads <= base["Threads"] + THREAD_MARGIN
            status = _proc_status(proc.pid)
            rss_after.append(status["VmRSS"])
            print(
                f"| {adapter.name} #{round_no} | {CONNECTIONS} (+{FAULTS} resets) | {stats.messages} | "
                f"{stats.bytes / mib:.0f} MiB each way | {stats.seconds:.1f} | {status['VmHWM'] / mib:.0f} MiB "
                f"(baseline {base['VmRSS'] / mib:.0f}, after {status['VmRSS'] / mib:.0f}) | {stats.peak_threads} "
                f"(baseline {base['Threads']}) | {stats.peak_fds} (baseline {base_fds}, after {fds_after}) |"
            )

        settle = SELECTOR_SETTLE if adapter.threading == "selector" else THREAD_SETTLE
        threads_after = _poll(proc.pid, "threads", base["Threads"] + THREAD_MARGIN, settle)
        print(f"| {adapter.name} threads {settle:.0f} s after the run: {threads_after} |")
        assert proc.poll() is None, "server process died after the load"
        assert threads_after <= base["Threads"] + THREAD_MARGIN, (
            f"threads {threads_after} > baseline {base['Threads']} + {THREAD_MARGIN} after {settle} s"
        )
        first = rss_after[0] - base["VmRSS"]
        second = rss_after[1] - rss_after[0]
        assert first <= RSS_RETAINED_BOUND, f"RSS grew {first / mib:.0f} MiB in round 1"
        assert second <= RSS_LEAK_BOUND, f"RSS grew {second / mib:.0f} MiB more in round 2"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10.0)
        log.close()
        output = (tmp_path / "server.log").read_text(errors="replace")
        if output.strip():
            print(f"[{adapter.name} server output, last 2000 chars]\n{output[-2000:]}")

