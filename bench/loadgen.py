"""The one load client every target shares: raw sockets, frames masked once in advance, one scenario per function.

The client does the same, small amount of work for every target: each frame it
sends is built and masked once before the clock starts, and replies are counted
by length (the exact bytes are checked on a round trip before and after each
timed window) rather than parsed. The raw-TCP floor is sent the very same bytes
(handshake request, masked frames, close frame) and echoes them back, so it
moves the same byte counts without any WebSocket work on the server.

Each scenario warms up, then measures a fixed window and returns a
:class:`Measurement` with the server's CPU time over that window (from
/proc/<pid>/stat), so cost per operation can be compared even when the machine
is shared.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import select
import signal
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

MASK_KEY = b"\x37\xfa\x21\x3d"  # fixed and non-zero: servers must really unmask
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's sample key; any valid key will do
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"  # what browsers offer
SMALL = 64
BIG = 2**20
DEFLATE_SIZE = 16 * 1024
DEFLATE_TEXTS = 32  # distinct messages the deflate scenario cycles through
CONCURRENT = 100
WINDOW = 256  # stream scenario: messages in flight
BATCH = 64  # stream scenario: messages per write
IO_TIMEOUT = 10.0  # no single wait in a healthy run comes near this
CLK_TCK = os.sysconf("SC_CLK_TCK")


class ScenarioSkipped(Exception):
    """The target cannot take part in this scenario (e.g. it does not negotiate permessage-deflate)."""


class BenchError(Exception):
    """The target answered something other than the expected echo."""


@dataclass
class Endpoint:
    host: str
    port: int
    pid: int
    floor: bool = False  # raw TCP echo: same bytes back instead of WebSocket replies


@dataclass
class Measurement:
    value: float  # in the scenario's unit
    ops: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0  # seconds of CPU the server process used in the window
    client_cpu: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def server_us_per_op(self) -> float | None:
        return self.server_cpu * 1e6 / self.ops if self.ops else None

    @property
    def client_load(self) -> float | None:
        return self.client_cpu / self.seconds if self.seconds else None


# --- frames ----------------------------------------------------------------------------


def mask(data: bytes, key: bytes = MASK_KEY) -> bytes:
    """XOR with the repeated key (RFC 6455 §5.3), a whole buffer at once; only used before timing."""
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(len(data), "little")


def _header(first: int, length: int, masked: bool) -> bytes:
    bit = 0x80 if masked else 0
    if length < 126:
        return struct.pack("!BB", first, bit | length)
    if length < 65536:
        return struct.pack("!BBH", first, bit | 126, length)
    return struct.pack("!BBQ", first, bit | 127, length)


def client_frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """A final, masked frame as a client sends it."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    return _header(first, len(payload), True) + MASK_KEY + mask(payload)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked frame as the server echoes it."""
    return _header(0x80 | opcode, len(payload), False) + payload


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def json_text(size: int = DEFLATE_SIZE, seed: int = 7) -> bytes:
    """JSON-like text of exactly ``size`` bytes: records of ids, names, numbers, tags, dates."""
    rng = random.Random(seed)
    words = [
        *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"),
        *("lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform"),
        *("victor", "whiskey", "xray", "yankee", "zulu", "admin", "editor", "viewer", "pending", "active"),
    ]
    records: list[dict[str, Any]] = []
    text = "[]"
    while True:
        first, last = rng.choice(words), rng.choice(words)
        record = {
            "id": len(records) + 1000,
            "name": f"{first.title()} {last.title()}",
            "email": f"{first}.{last}{rng.randint(1, 999)}@example.org",
            "active": rng.random() < 0.7,
            "score": round(rng.uniform(0, 100), 3),
            "role": rng.choice(words[-5:]),
            "tags": rng.sample(words, 3),
            "created": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
        }
        candidate = json.dumps([*records, record])
        if len(candidate) > size:
            break
        records.append(record)
        text = candidate
    return (text[:-1] + " " * (size - len(text)) + "]").encode()


def upgrade_request(host: str, port: int, extensions: str | None = None) -> bytes:
    lines = [
        "GET / HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {WS_KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


CLOSE_FRAME = client_frame(0x8, struct.pack("!H", 1000))

# --- process accounting ----------------------------------------------------------------


def server_cpu(pid: int) -> float:
    """utime + stime of a process, all threads, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_status(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, thread count) from /proc/<pid>/status."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


class Window:
    """Brackets the timed part of a scenario: wall clock, server CPU, client CPU."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def start(self) -> None:
        self.c0 = client_cpu()
        self.s0 = server_cpu(self.pid)
        self.t0 = time.perf_counter()

    def stop(self, ops: int, value: Callable[[int, float], float]) -> Measurement:
        seconds = time.perf_counter() - self.t0
        s1 = server_cpu(self.pid)
        c1 = client_cpu()
        return Measurement(value(ops, seconds), ops, seconds, s1 - self.s0, c1 - self.c0)


def per_second(ops: int, seconds: float) -> float:
    return ops / seconds


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound a whole scenario: hot loops use blocking sockets with no timeout (a timeout
    costs a poll() per call), so SIGALRM is what stops a wedged target."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"scenario took longer than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- connections -----------------------------------------------------------------------


def read_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> tuple[bytes, bytes]:
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise BenchError(f"connection closed during the handshake after {data[:200]!r}")
        data += chunk
        end = data.find(marker)
        if end >= 0:
            end += len(marker)
            return data[:end], data[end:]
        if len(data) > limit:
            raise BenchError("handshake response too long")


def read_exactly(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise BenchError("connection closed by the server")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def connect(ep: Endpoint, extensions: str | None = None) -> tuple[socket.socket, str | None]:
    """Open a connection and do the opening handshake; return the socket (blocking, no
    timeout) and the negotiated Sec-WebSocket-Extensions value."""
    sock = socket.create_connection((ep.host, ep.port), timeout=IO_TIMEOUT)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = upgrade_request(ep.host, ep.port, extensions)
        sock.sendall(request)
        head, rest = read_until(sock, b"\r\n\r\n")
        negotiated = None
        if ep.floor:
            if head != request:
                raise BenchError("the floor did not echo the request")
        else:
            if not head.startswith(b"HTTP/1.1 101"):
                status = head.split(b"\r\n", 1)[0]
                raise BenchError(f"handshake refused: {status!r}")
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-extensions":
                    negotiated = value.strip() if negotiated is None else f"{negotiated}, {value.strip()}"
        if rest:
            raise BenchError(f"unexpected bytes after the handshake: {rest[:50]!r}")
        sock.settimeout(None)
        return sock, negotiated
    except BaseException:
        sock.close()
        raise


def expected_reply(ep: Endpoint, frame: bytes, opcode: int, data: bytes) -> bytes:
    return frame if ep.floor else server_frame(opcode, data)


def verify_roundtrip(sock: socket.socket, frame: bytes, reply: bytes) -> None:
    sock.settimeout(IO_TIMEOUT)
    try:
        sock.sendall(frame)
        got = read_exactly(sock, len(reply))
    finally:
        sock.settimeout(None)
    if got != reply:
        raise BenchError(f"wrong echo: expected {reply[:16]!r}..., got {got[:16]!r}...")


def close_all(socks: list[socket.socket], timeout: float = 10.0) -> None:
    """Close politely and in bulk: a close frame to each, half-close, then wait for every
    server to close its side (RFC 6455 §7.1.1: the server closes TCP first)."""
    poller = select.epoll()
    pending: dict[int, socket.socket] = {}
    try:
        for sock in socks:
            try:
                sock.setblocking(True)
                sock.sendall(CLOSE_FRAME)
                sock.shutdown(socket.SHUT_WR)
                sock.setblocking(False)
                poller.register(sock.fileno(), select.EPOLLIN)
                pending[sock.fileno()] = sock
            except OSError:
                sock.close()
        end = time.monotonic() + timeout
        while pending and time.monotonic() < end:
            for fd, _ in poller.poll(0.2):
                sock = pending[fd]
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    poller.unregister(fd)
                    del pending[fd]
                    sock.close()
    finally:
        poller.close()
        for sock in pending.values():
            sock.close()


# --- scenarios -------------------------------------------------------------------------


def rt64(ep: Endpoint, duration: float, warmup: float) -> Measurement:
    """(a) one 64-byte binary message at a time: round trips per second."""
    data = payload(SMALL)
    frame = client_frame(0x2, data)
    reply = expected_reply(ep, frame, 0x2, data)
    need = len(reply)
    sock, _ = connect(ep)
    try:
        verify_roundtrip(sock, frame, reply)
        sendall, recv_into = sock.sendall, sock.recv_into
        buf = bytearray(65536)
        perf_counter = time.perf_counter

        def run(seconds: float) -> int:
            n = 0
            end = perf_counter() + seconds
            while True:
                sendall(frame)
                got = 0
                while got < need:
                    r = recv_into(buf)
                    if not r:
                        raise BenchError("connection closed by the server")
                    got += r
                if got != need:
                    raise BenchError("more bytes than one echo")
                n += 1
                if perf_counter() >= end:
                    return n

        run(warmup)
        window = Window(ep.pid)
        window.start()
        n = run(duration)
        result = window.stop(n, per_second)
        verify_roundtrip(sock, frame, reply)
        return result
    finally:
        close_all([sock])


def stream64(ep: Endpoint, duration: float, warmup: float) -> Measurement:
    """(b) 64-byte messages streamed with WINDOW in flight, written BATCH at a time: messages per second."""
    data = payload(SMALL)
    frame = client_frame(0x2, data)
    reply = expected_reply(ep, frame, 0x2, data)
    need = len(reply)
    batch = frame * BATCH
    sock, _ = connect(ep)
    try:
        verify_roundtrip(sock, frame, reply)
        sendall, recv_into = sock.sendall, sock.recv_into
        buf = bytearray(262144)
        perf_counter = time.perf_counter
        sent = received = 0  # messages sent, bytes received

        while sent < WINDOW:
            sendall(batch)
            sent += BATCH

        def run(seconds: float) -> int:
            nonlocal sent, received
            start = received // need
            end = perf_counter() + seconds
            refill = WINDOW - BATCH
            while perf_counter() < end:
                r = recv_into(buf)
                if not r:
                    raise BenchError("connection closed by the server")
                received += r
                done = received // need
                while sent - done <= refill:
                    sendall(batch)
                    sent += BATCH
            return received // need - start

        run(warmup)
        window = Window(ep.pid)
        window.start()
        n = run(duration)
        result = window.stop(n, per_second)
        while received < sent * need:  # drain what is still in flight
            r = recv_into(buf)
            if not r:
                raise BenchError("connection closed by the server")
            received += r
        if received != sent * need:
            raise BenchError("stream out of step: more bytes than echoes")
        verify_roundtrip(sock, frame, reply)
        return result
    finally:
        close_all([sock])


def big1m(ep: Endpoint, duration: float, warmup: float) -> Measurement:
    """(c) 1 MiB binary messages, one at a time; GB/s of payload each way.

    Sending and receiving overlap (the floor echoes while we still send), so this one
    uses a non-blocking socket and poll()."""
    data = payload(BIG, seed=2)
    frame = client_frame(0x2, data)
    reply = expected_reply(ep, frame, 0x2, data)
    need = len(reply)
    sock, _ = connect(ep)
    try:
        verify_roundtrip(sock, frame, reply)
        sock.setblocking(False)
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLOUT)
        out = memoryview(frame)
        size = len(frame)
        buf = bytearray(1 << 20)
        perf_counter = time.perf_counter

        def one() -> None:
            pos = got = 0
            poller.modify(sock, select.POLLIN | select.POLLOUT)
            while got < need:
                events = poller.poll(IO_TIMEOUT * 1000)
                if not events:
                    raise TimeoutError("no progress on a 1 MiB echo")
                for _, ev in events:
                    if ev & select.POLLOUT and pos < size:
                        try:
                            pos += sock.send(out[pos:])
                        except BlockingIOError:
                            pass
                        if pos == size:
                            poller.modify(sock, select.POLLIN)
                    if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        try:
                            r = sock.recv_into(buf)
                        except BlockingIOError:
                            continue
                        if not r:
                            raise BenchError("connection closed by the server")
                        got += r
            if got != need:
                raise BenchError("more bytes than one echo")

        def run(seconds: float) -> int:
            n = 0
            end = perf_counter() + seconds
            while True:
                one()
                n += 1
                if perf_counter() >= end:
                    return n

        run(warmup)
        window = Window(ep.pid)
        window.start()
        n = run(duration)
        result = window.stop(n, lambda ops, s: ops * BIG / s / 1e9)
        sock.setblocking(True)
        verify_roundtrip(sock, frame, reply)
        return result
    finally:
        close_all([sock])


def handshake(ep: Endpoint, duration: float, warmup: float) -> Measurement:
    """(d) whole connections per second: connect, opening handshake, one 64-byte echo,
    closing handshake, and the server's end of TCP."""
    data = payload(SMALL)
    frame = client_frame(0x2, data)
    reply = expected_reply(ep, frame, 0x2, data)
    request = upgrade_request(ep.host, ep.port)
    close_reply = CLOSE_FRAME if ep.floor else server_frame(0x8, struct.pack("!H", 1000))
    address = (ep.host, ep.port)
    perf_counter = time.perf_counter

    def one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(IO_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(address)
            sock.sendall(request)
            head, rest = read_until(sock, b"\r\n\r\n")
            if rest or not (head == request if ep.floor else head.startswith(b"HTTP/1.1 101")):
                raise BenchError(f"bad handshake answer {head[:40]!r}")
            sock.sendall(frame)
            if read_exactly(sock, len(reply)) != reply:
                raise BenchError("wrong echo")
            sock.sendall(CLOSE_FRAME)
            sock.shutdown(socket.SHUT_WR)
            tail = b""
            while True:  # the close reply, then the server's FIN
                chunk = sock.recv(4096)
                if not chunk:
                    break
                tail += chunk
            if tail[:1] != close_reply[:1]:
                raise BenchError(f"no close frame in reply: {tail[:20]!r}")
        finally:
            sock.close()

    def run(seconds: float) -> int:
        n = 0
        end = perf_counter() + seconds
        while True:
            one()
            n += 1
            if perf_counter() >= end:
                return n

    run(warmup)
    window = Window(ep.pid)
    window.start()
    n = run(duration)
    return window.stop(n, per_second)


def conc100(ep: Endpoint, duration: float, warmup: float) -> Measurement:
    """(e) CONCURRENT connections, each with one 64-byte round trip in flight: total round trips/s.

    One client process, one level-triggered epoll loop over non-blocking sockets: per
    reply it costs one recv_into and one send of a prebuilt frame, a few µs, which keeps
    the client well under one core on this machine (its CPU use is in the result)."""
    data = payload(SMALL)
    frame = client_frame(0x2, data)
    reply = expected_reply(ep, frame, 0x2, data)
    need = len(reply)
    socks = []
    try:
        for _ in range(CONCURRENT):
            sock, _ = connect(ep)
            socks.append(sock)
        verify_roundtrip(socks[0], frame, reply)
        poller = select.epoll()
        by_fd: dict[int, socket.socket] = {}
        left: dict[int, int] = {}
        for sock in socks:
            sock.setblocking(False)
            fd = sock.fileno()
            by_fd[fd] = sock
            left[fd] = need
            poller.register(fd, select.EPOLLIN)
        for sock in socks:
            sock.send(frame)
        buf = bytearray(65536)
        perf_counter = time.perf_counter
        resend = True

        def run(seconds: float) -> int:
            n = 0
            end = perf_counter() + seconds
            while True:
                events = poller.poll(IO_TIMEOUT)
                if not events:
                    raise TimeoutError("no replies for a while")
                for fd, _ in events:
                    sock = by_fd[fd]
                    try:
                        r = sock.recv_into(buf)
                    except BlockingIOError:
                        continue
                    if not r:
                        raise BenchError("connection closed by the server")
                    rest = left[fd] - r
                    if rest == 0:
                        n += 1
                        if resend:
                            sock.send(frame)
                            rest = need
                    elif rest < 0:
                        raise BenchError("more bytes than one echo")
                    left[fd] = rest
                if perf_counter() >= end:
                    return n

        run(warmup)
        window = Window(ep.pid)
        window.start()
        n = run(duration)
        result = window.stop(n, per_second)
        resend = False
        end = time.monotonic() + IO_TIMEOUT
        while any(left.values()) and time.monotonic() < end:
            run(0)
        poller.close()
        return result
    finally:
        close_all(socks)


def idle1k(ep: Endpoint, count: int, settle: float = 1.0) -> Measurement:
    """(f) memory and threads per idle connection: open ``count`` connections (handshake
    only) and read the server's VmRSS and thread count before and after."""
    rss0, threads0 = proc_status(ep.pid)
    socks = []
    window = Window(ep.pid)
    window.start()
    try:
        for _ in range(count):
            sock, _ = connect(ep)
            socks.append(sock)
        time.sleep(settle)  # let lazily started threads and buffers appear
        rss1, threads1 = proc_status(ep.pid)
        result = window.stop(count, lambda ops, s: (rss1 - rss0) / count)
        result.extra = {
            "threads_per_conn": (threads1 - threads0) / count,
            "threads": f"{threads0}→{threads1}",
            "rss_mib": f"{rss0 / 1024:.1f}→{rss1 / 1024:.1f}",
        }
        return result
    finally:
        close_all(socks)


def deflate16k(ep: Endpoint, duration: float, warmup: float) -> Measurement:
    """(g) permessage-deflate (RFC 7692) on 16 KiB of JSON-like text, one message at a time.

    The messages cycle through DEFLATE_TEXTS distinct texts (different records, same
    structure): one text repeated would let a server whose window exceeds the message
    compress each echo into a few back-references to the previous one, which flatters
    large windows (bench/deflate_settings.py measures both shapes). The client compresses
    each text once, without context takeover, so its frames are valid in any order
    (§7.1.1.1: a client may always forgo its context); the server compresses with whatever
    it negotiated, so replies are walked frame by frame. The floor echoes the frames."""
    texts = [json_text(seed=7 + i) for i in range(DEFLATE_TEXTS)]
    sock, negotiated = connect(ep, DEFLATE_OFFER)
    try:
        if not ep.floor and (negotiated is None or "permessage-deflate" not in negotiated):
            raise ScenarioSkipped("does not negotiate permessage-deflate")
        bits = 15
        for param in (negotiated or "").split(";"):
            name, _, value = param.strip().partition("=")
            if name == "client_max_window_bits" and value:
                bits = max(9, int(value.strip('"')))  # zlib cannot do raw deflate with 8
        bodies = []
        for text in texts:
            compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits)
            body = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
            assert body.endswith(b"\x00\x00\xff\xff")
            bodies.append(body[:-4])
        frames = [client_frame(0x1, body, rsv1=True) for body in bodies]
        sent = 0
        recv_into = sock.recv_into
        sendall = sock.sendall
        buf = bytearray(262144)
        view = memoryview(buf)
        pending = bytearray()
        perf_counter = time.perf_counter

        def one(keep: bool = False) -> bytes:
            """Send the next frame, read frames until a final data frame; return its payload if keep."""
            nonlocal sent
            sendall(frames[sent % DEFLATE_TEXTS])
            sent += 1
            kept = b""
            while True:
                while True:  # is a whole frame buffered?
                    have = len(pending)
                    if have >= 2:
                        b1 = pending[1]
                        length = b1 & 0x7F
                        offset = 2
                        if length == 126:
                            offset = 4
                            length = int.from_bytes(pending[2:4], "big") if have >= 4 else -1
                        elif length == 127:
                            offset = 10
                            length = int.from_bytes(pending[2:10], "big") if have >= 10 else -1
                        if b1 & 0x80:
                            offset += 4
                        if length >= 0 and have >= offset + length:
                            b0 = pending[0]
                            if keep:
                                kept += bytes(pending[offset : offset + length])
                            del pending[: offset + length]
                            opcode = b0 & 0x0F
                            if opcode < 8 and b0 & 0x80:
                                if pending:
                                    raise BenchError("more than one echo")
                                return kept
                            continue
                    break
                r = recv_into(buf)
                if not r:
                    raise BenchError("connection closed by the server")
                pending.extend(view[:r])

        # The server's replies share one compression context: inflate a whole cycle with one.
        inflater = zlib.decompressobj(-15)
        for i in range(DEFLATE_TEXTS):
            echoed = one(keep=True)
            if ep.floor:
                if echoed != mask(bodies[i]):
                    raise BenchError("the floor did not echo the compressed frame")
            elif inflater.decompress(echoed + b"\x00\x00\xff\xff") != texts[i]:
                raise BenchError("the compressed echo does not inflate to the text sent")

        def run(seconds: float) -> int:
            n = 0
            end = perf_counter() + seconds
            while True:
                one()
                n += 1
                if perf_counter() >= end:
                    return n

        run(warmup)
        window = Window(ep.pid)
        window.start()
        n = run(duration)
        result = window.stop(n, per_second)
        result.extra = {"negotiated": negotiated or "", "compressed_bytes": sum(map(len, bodies)) // len(bodies)}
        return result
    finally:
        close_all([sock])
