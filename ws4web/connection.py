"""The blocking driver: a :class:`~ws4web.protocol.Protocol` over a connected socket.

:class:`Connection` hides control frames (pongs go out by themselves, pings can be
awaited), reassembles fragments into messages, runs the closing handshake with a
timeout, and is safe to send from many threads: one lock guards the protocol and
the writes it produces, so frames never interleave, and a second lock keeps a
fragmented message whole. Reading happens in whichever thread asks for a message;
there is no hidden reader thread.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any

from .concurrency import THREADING, EventLike, LockLike, Primitives
from .exceptions import ConnectionClosed, ConnectionClosedError
from .frames import CloseCode, Frame, Opcode
from .logs import ConnectionLog, connection_log
from .messages import Assembler, Data, Message, iter_fragments
from .protocol import SEND_EOF, Protocol, State

__all__ = ["Connection", "PingWaiter", "Sender"]

logger = logging.getLogger("ws4web.connection")

# Writes up to this total are joined into one sendall(): one syscall per batch.
_JOIN_LIMIT = 65536


class PingWaiter:
    """Returned by :meth:`Connection.ping`: wait on it for the pong, read the latency."""

    __slots__ = ("_clock", "_event", "_pump", "latency", "payload", "sent_at")

    def __init__(self, payload: bytes, event: EventLike, clock: Any) -> None:
        self.payload = payload
        self._event = event
        self._clock = clock
        #: the driver's way to read while waiting, where nobody else may be reading
        self._pump: Any = None
        self.sent_at: float = clock()
        #: Seconds between the ping and its pong, once the pong arrived.
        self.latency: float | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pong arrives (True) or the timeout passes (False).

        In pull style nothing may be reading the socket: then this reads it
        (keeping the messages that arrive for ``recv()``) until the pong comes.
        """
        if self._pump is not None and not self._event.is_set():
            result: bool = self._pump(self, timeout)
            return result
        return self._event.wait(timeout)

    def _resolve(self) -> None:
        self.latency = self._clock() - self.sent_at
        self._event.set()


class Sender:
    """The sending half both drivers share (this module's Connection and the reactor's).

    A message (maybe fragmented) holds ``_send_lock`` so frames of two messages never
    interleave; every protocol call holds ``_lock`` and ends with ``_flush()``, so
    control frames from the reading side still get through between fragments.
    ``_after_write()`` is the driver's back-pressure hook.
    """

    __slots__ = ("id", "log")  # slots throughout: ReactorConnection has no instance dict

    sock: Any
    protocol: Protocol
    log: ConnectionLog
    id: str
    _lock: LockLike
    _send_lock: LockLike
    _pings: dict[bytes, PingWaiter]

    def _tag_logs(self, logger: logging.Logger, conn_id: str | None) -> None:
        """Give this connection (and its protocol) a logger that tags every record
        with the connection id and peer: ``[ws12 127.0.0.1:50312] ...``."""
        self.log = connection_log(logger, self.sock, conn_id)
        self.id = self.log.conn_id
        self.protocol.logger = self.log  # one tagger per connection, shared

    def _flush(self) -> None:
        raise NotImplementedError

    def _after_write(self) -> None:
        """Called after each data frame is queued (``_lock`` held)."""

    def _new_event(self) -> EventLike:
        raise NotImplementedError

    def _clock(self) -> float:
        raise NotImplementedError

    def send_message(self, data: Data, binary: bool | None = None, *, compress: bool = True) -> None:
        """Send one message: ``str`` as text, bytes-like as binary, or a Message.

        ``binary`` forces the type (``binary=False`` with bytes sends text, as
        ws4py did; the bytes must then be UTF-8).
        """
        if isinstance(data, str):
            payload = data.encode()
            is_text = binary is not True
        elif isinstance(data, Message):
            payload = data.data
            is_text = data.opcode is Opcode.TEXT if binary is None else not binary
        else:
            payload = data if isinstance(data, bytes) else bytes(data)
            is_text = binary is False
        with self._send_lock, self._lock:
            if not compress:
                _skip_compression(self.protocol)
            if is_text:
                self.protocol.send_text(payload)
            else:
                self.protocol.send_binary(payload)
            self._flush()
            self._after_write()

    def send_fragments(
        self, chunks: Iterable[str | bytes], binary: bool | None = None, *, compress: bool = True
    ) -> None:
        """Send one message in fragments, one per chunk of ``chunks``."""
        with self._send_lock:
            for opcode, payload, fin in iter_fragments(chunks, binary):
                with self._lock:
                    if not compress and opcode is not Opcode.CONTINUATION:
                        _skip_compression(self.protocol)
                    if opcode is Opcode.TEXT:
                        self.protocol.send_text(payload, fin)
                    elif opcode is Opcode.BINARY:
                        self.protocol.send_binary(payload, fin)
                    else:
                        self.protocol.send_continuation(payload, fin)
                    self._flush()
                    self._after_write()

    def send_prepared(self, message: Frame, wire: bytes) -> None:
        """Send a frame serialized once for many recipients (see Protocol.send_prepared)."""
        with self._send_lock, self._lock:
            self.protocol.send_prepared(message, wire)
            self._flush()

    def send_frame(self, frame: Frame) -> None:
        """Send any frame as it is (low-level access)."""
        with self._send_lock, self._lock:
            self.protocol.send_frame(frame)
            self._flush()

    def ping(self, data: bytes | None = None) -> PingWaiter:
        """Send a ping; the returned waiter resolves when its pong arrives.

        A pong answers its ping and every earlier one (RFC 6455 §5.5.3 lets a
        peer answer only the latest).
        """
        with self._lock:
            if data is None:
                data = os.urandom(4)
                while data in self._pings:
                    data = os.urandom(4)
            if data in self._pings:
                raise ValueError("a ping with this payload is already waiting")
            waiter = PingWaiter(data, self._new_event(), self._clock)
            self.protocol.send_ping(data)
            self._pings[data] = waiter
            self._flush()
        return waiter

    def pong(self, data: bytes = b"") -> None:
        """Send an unsolicited pong (a unidirectional heartbeat, §5.5.3)."""
        with self._lock:
            self.protocol.send_pong(data)
            self._flush()

    def _resolve_pings(self, payload: bytes) -> None:
        """A pong answers its ping and every earlier one (RFC 6455 §5.5.3)."""
        with self._lock:
            waiter = self._pings.get(payload)
            if waiter is not None:
                for key in list(self._pings):
                    earlier = self._pings.pop(key)
                    earlier._resolve()
                    if earlier is waiter:
                        break


class Connection(Sender):
    """A WebSocket connection over a socket whose handshake is done.

    Hooks, called in the reading thread: ``on_ping(frame)``, ``on_pong(frame)``.
    """

    def __init__(
        self,
        sock: Any,
        protocol: Protocol,
        *,
        primitives: Primitives = THREADING,
        close_timeout: float | None = 10.0,
        recv_size: int = 65536,
        subprotocol: str | None = None,
        conn_id: str | None = None,
    ) -> None:
        self.sock = sock
        self.protocol = protocol
        self._tag_logs(logger, conn_id)
        self.primitives = primitives
        self.close_timeout = close_timeout
        self.recv_size = recv_size
        self.subprotocol = subprotocol
        self.on_ping: Any = None
        self.on_pong: Any = None

        self._lock = primitives.lock()  # the protocol and the socket's write side
        self._send_lock = primitives.lock()  # one message (maybe fragmented) at a time
        self._recv_lock = primitives.lock()  # one reader at a time
        self._closed = primitives.event()
        self._frames: deque[Frame] = deque()
        self._assembler = Assembler()
        self._pings: dict[bytes, PingWaiter] = {}
        self._close_deadline: float | None = None
        self._socket_closed = False
        _set_nodelay(sock)
        # Bytes read past the handshake may already hold frames (and need pongs).
        while events := protocol.events_received():  # at most max_pending frames a call
            self._frames.extend(events)
        with self._lock:
            self._flush()

    def _new_event(self) -> EventLike:
        return self.primitives.event()

    def _clock(self) -> float:
        return self.primitives.monotonic()

    # -- state -----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def closed(self) -> bool:
        """True once the TCP connection is closed and everything is released."""
        return self._closed.is_set()

    @property
    def close_code(self) -> int:
        return self.protocol.close_code

    @property
    def close_reason(self) -> str:
        return self.protocol.close_reason

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    # -- sending ---------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake and, if no other thread is reading, finish it.

        When another thread reads (``run()``, a blocked ``recv()``), that thread
        completes the handshake; it bounds its wait by ``close_timeout``.
        """
        with self._lock:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(code, reason)
                self._flush()
        if self._recv_lock.acquire(blocking=False):
            try:
                # Messages that arrive meanwhile stay queued: recv() still returns
                # them before it reports the close (nothing accepted is lost).
                while not self._closed.is_set():
                    self._receive(None)
            finally:
                self._recv_lock.release()

    def start_keepalive(self, interval: float, timeout: float | None = None) -> None:
        """Ping every ``interval`` seconds; no pong within ``timeout`` fails with 1011.

        A half-open TCP connection (peer gone without FIN or RST) is thus closed
        within ``interval + timeout``. Pongs are only seen while some thread reads
        (``run()``, a ``recv()`` loop).
        """
        timeout = interval if timeout is None else timeout

        def keepalive() -> None:
            while not self._closed.wait(interval):
                try:
                    waiter = self.ping()
                except (ConnectionClosed, ValueError):
                    return
                if not waiter.wait(timeout) and not self._closed.is_set():
                    self.log.warning("no pong within %.1f s: closing with 1011", timeout)
                    with self._lock:
                        self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive timeout")
                        self._flush()
                    self.abort()
                    return

        self.primitives.spawn(keepalive)

    def ping(self, data: bytes | None = None) -> PingWaiter:
        waiter = super().ping(data)
        waiter._pump = self._wait_for_pong
        return waiter

    def _wait_for_pong(self, waiter: PingWaiter, timeout: float | None) -> bool:
        """PingWaiter.wait(): read until its pong arrives, unless another thread reads."""
        if not self._recv_lock.acquire(blocking=False):
            return waiter._event.wait(timeout)  # the reader resolves it
        try:
            deadline = None if timeout is None else self.primitives.monotonic() + timeout
            scanned = 0
            while True:
                # Resolve pongs already queued; the frames stay for recv(), which
                # still calls the pong hooks in order.
                frames = list(self._frames)
                for frame in frames[scanned:]:
                    if frame.opcode is Opcode.PONG:
                        self._resolve_pings(frame.data)
                scanned = len(frames)
                if waiter._event.is_set() or self._closed.is_set():
                    break
                try:
                    self._receive(deadline)
                except TimeoutError:
                    break
        finally:
            self._recv_lock.release()
        return waiter._event.is_set()

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        with self._lock:
            self.protocol.receive_eof()
            self.protocol.data_to_send()
            self._close_socket()
        self._closed.set()

    # -- receiving ---------------------------------------------------------------

    def recv_message(self, timeout: float | None = None) -> Message:
        """The next message; ConnectionClosed once the connection is closed.

        TimeoutError if no message completes within ``timeout`` seconds.
        """
        with self._recv_lock:
            deadline = None if timeout is None else self.primitives.monotonic() + timeout
            while True:
                frames = self._frames
                while frames:
                    frame = frames.popleft()
                    if frame.opcode < 8:
                        message = self._assembler.feed(frame)
                        if message is not None:
                            return message
                    else:
                        self._control(frame)
                if self._closed.is_set():
                    raise self.protocol.close_exc()
                self._receive(deadline)

    def recv_frame(self, timeout: float | None = None) -> Frame:
        """The next frame of any kind, unassembled (low-level access)."""
        with self._recv_lock:
            deadline = None if timeout is None else self.primitives.monotonic() + timeout
            while not self._frames:
                if self._closed.is_set():
                    raise self.protocol.close_exc()
                self._receive(deadline)
            frame = self._frames.popleft()
            if frame.is_control:
                self._control(frame)
            return frame

    # -- internals (callers hold the locks noted) -----------------------------------

    def _control(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            self._resolve_pings(frame.data)
            if self.on_pong is not None:
                self.on_pong(frame)
        elif frame.opcode is Opcode.PING and self.on_ping is not None:
            self.on_ping(frame)

    def _receive(self, deadline: float | None) -> None:
        """Read once from the socket into the protocol (``_recv_lock`` held).

        Raises TimeoutError when ``deadline`` passes first. While closing, the
        wait is bounded by the close timeout and ends with dropping TCP.
        """
        protocol = self.protocol
        timeout = None if deadline is None else deadline - self.primitives.monotonic()
        if protocol.close_expected() and self.close_timeout is not None:
            now = self.primitives.monotonic()
            if self._close_deadline is None:
                self._close_deadline = now + self.close_timeout
            left = self._close_deadline - now
            if timeout is None or left < timeout:
                if not self.primitives.wait_readable(self.sock, left):
                    self.log.debug("peer did not finish the closing handshake in time")
                    self.abort()
                    return
                timeout = None
        if timeout is not None and not self.primitives.wait_readable(self.sock, timeout):
            raise TimeoutError("no message within the timeout")
        try:
            data = self.sock.recv(self.recv_size)
        except (OSError, ValueError):  # reset, or the socket was closed by abort()
            data = b""
        with self._lock:
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            while events := protocol.events_received():  # at most max_pending frames a call
                self._frames.extend(events)
            self._flush()
            if protocol.state is State.CLOSED:
                self._close_socket()
        if protocol.state is State.CLOSED:
            self._closed.set()

    def _flush(self) -> None:
        """Write what the protocol produced (``_lock`` held)."""
        writes = self.protocol.data_to_send()
        if not writes or self._socket_closed:
            return
        eof = writes[-1] == SEND_EOF
        if eof:
            writes.pop()
        try:
            if len(writes) == 1:
                self.sock.sendall(writes[0])
            elif writes:
                if sum(map(len, writes)) <= _JOIN_LIMIT:
                    self.sock.sendall(b"".join(writes))
                else:  # never copy a large payload only to join it to its header
                    for data in writes:
                        self.sock.sendall(data)
            if eof:
                end_write_side(self.sock)
        except (OSError, ValueError) as exc:
            # The peer is gone; the reader will see EOF. The caller learns it now.
            self.log.debug("write failed: %s", exc)
            self.protocol.receive_eof()
            self.protocol.data_to_send()
            self._close_socket()
            if not eof:
                raise ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "", None) from exc

    def _close_socket(self) -> None:
        if self._socket_closed:
            return
        self._socket_closed = True
        # Closing with unread input makes TCP send a reset, and a reset can destroy
        # what we sent last (our close frame) in the peer's receive buffer before
        # the peer reads it. Discard what has already arrived first (no waiting).
        try:
            self.sock.setblocking(False)
            for _ in range(16):
                if not self.sock.recv(65536):
                    break
        except (OSError, ValueError):
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass
        try:
            self.sock.close()
        except (OSError, ValueError):
            pass


def _set_nodelay(sock: Any) -> None:
    # Nagle would hold a small frame back until the previous one is acked: 40 ms
    # stalls on request/response traffic.
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def end_write_side(sock: Any) -> None:
    """Half-close: TLS close_notify first (RFC 6455 §7.1.1 wants the TLS session
    closed cleanly), then TCP FIN.

    ``SSLSocket.shutdown()`` alone would drop the TLS session without a
    close_notify, so a strict peer sees a truncation. ``unwrap()`` sends the
    close_notify and would then wait for the peer's; with a zero timeout it
    returns at once (SSLWantReadError) and we do not wait.
    """
    if isinstance(sock, ssl.SSLSocket):
        timeout = sock.gettimeout()
        try:
            sock.settimeout(0)
            sock.unwrap()
        except (OSError, ValueError):  # SSLWantReadError: our close_notify is out
            pass
        finally:
            try:
                sock.settimeout(timeout)
            except OSError:
                pass
    sock.shutdown(socket.SHUT_WR)


def _skip_compression(protocol: Protocol) -> None:
    """Ask extensions that compress to leave the next message alone (protocol lock held)."""
    for extension in protocol.extensions:
        skip = getattr(extension, "skip_next_message", None)
        if skip is not None:
            skip()
