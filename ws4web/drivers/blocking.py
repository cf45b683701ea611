"""The blocking driver: one connection over a blocking socket, read by whoever asks.

There is no hidden reader: the thread (or greenlet) that runs the handler
(:meth:`BlockingDriver.run`), or that calls ``recv()`` in pull style, reads the
socket. One lock (``_recv_lock``) admits one reader at a time; another
(``_lock``) guards the protocol and the writes it produces, so any thread may
send. Replies a handler sends while more messages of the same read wait for it
are written together, when that batch ends or before anything blocks.
The gevent adapter runs it with gevent's primitives, so no monkey-patching.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from ..concurrency import THREADING, EventLike, Primitives
from ..exceptions import ConnectionClosed
from ..frames import Frame, Opcode
from ..logs import ConnectionLog
from ..messages import Assembler, Message
from ..protocol import SEND_EOF, Protocol, State
from . import DEFAULT_LIMITS, Handler, Limits
from .base import DriverBase, PingWaiter, closed_error, end_write_side, set_nodelay

__all__ = ["BlockingDriver"]

logger = logging.getLogger("ws4web.drivers.blocking")

# Replies held back while a batch is delivered: at most this many bytes.
_CORK_LIMIT = 65536
# Writes up to this total are joined into one buffer where sendmsg() cannot gather them.
_JOIN_LIMIT = 65536


class BlockingDriver(DriverBase):
    """A WebSocket connection over a blocking socket whose handshake is done."""

    __slots__ = (
        "_assembler",
        "_close_deadline",
        "_closed",
        "_cork",
        "_frames",
        "_handler",
        "_out",
        "_out_size",
        "_recv_lock",
        "_socket_closed",
        "limits",
        "primitives",
        "recv_size",
    )

    def __init__(
        self,
        sock: Any,
        protocol: Protocol,
        log: ConnectionLog,
        *,
        limits: Limits = DEFAULT_LIMITS,
        primitives: Primitives = THREADING,
        recv_size: int = 65536,
    ) -> None:
        self.sock = sock
        self.protocol = protocol
        self._tag_logs(log)
        self.limits = limits
        self.primitives = primitives
        self.recv_size = recv_size
        self._handler: Handler | None = None
        self._lock = primitives.lock()  # the protocol and the socket's write side
        self._send_lock = primitives.lock()  # one message (maybe fragmented) at a time
        self._recv_lock = primitives.lock()  # one reader at a time
        self._closed = primitives.event()
        self._frames: deque[Frame] = deque()
        self._assembler = Assembler()
        self._pings: dict[bytes, PingWaiter] = {}
        self._close_deadline: float | None = None
        self._socket_closed = False
        self._out: list[bytes] = []  # held back (corked) or not yet written
        self._out_size = 0
        self._cork: int | None = None  # ident of the reader delivering a batch
        set_nodelay(sock)
        # Bytes read past the handshake may already hold frames (and need pongs).
        with self._lock:
            self._take_batch()
            self._flush()

    def _new_event(self) -> EventLike:
        return self.primitives.event()

    def _clock(self) -> float:
        return self.primitives.monotonic()

    # -- state -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the TCP connection is closed and everything is released."""
        return self._closed.is_set()

    @property
    def buffered_amount(self) -> int:
        return self._out_size

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    # -- the handler ---------------------------------------------------------------------------

    def attach(self, handler: Handler) -> None:
        self._handler = handler

    def start(self) -> None:
        """Run :meth:`run` in a new thread (or greenlet)."""
        self.primitives.spawn(self.run)

    def run(self) -> None:
        """Deliver the handler hooks in this thread until the connection ends."""
        handler = self._handler
        if handler is None:
            raise RuntimeError("no handler attached")
        limits = self.limits
        if limits.ping_interval:
            self.start_keepalive(limits.ping_interval, limits.ping_timeout)
        try:
            if handler.handle_open():
                while handler.handle_message(self._next_message()):
                    pass
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._cork = None
                self._flush()
            if not self._closed.is_set() and self.protocol.state is not State.OPEN:
                self._finish_closing()
            handler.handle_close()

    def _next_message(self) -> Message:
        """recv_message() for run(): replies to a message that has followers in this
        batch are held back and written with theirs (one write per batch)."""
        message = self.recv_message()
        if any(frame.opcode < 8 for frame in self._frames) or self.protocol.events_pending():
            self._cork = self.primitives.ident()
        elif self._cork is not None:
            with self._lock:
                self._cork = None
                self._flush()
        return message

    # -- closing ----------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and, if no other thread is reading, finish it.

        When another thread reads (``run()``, a blocked ``recv()``), that thread
        completes the handshake; it bounds its wait by ``close_timeout``.
        """
        # A sender blocked in a write to a peer that stopped reading holds _lock: past
        # close_timeout the peer is not going to read our close frame either.
        timeout = self.limits.close_timeout
        locked = self._lock.acquire() if timeout is None else self._lock.acquire(timeout=timeout)
        if not locked:
            self._log.debug("a write is stuck: dropping the connection instead of closing it")
            self.abort()
            return
        try:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(code, reason)
                self._cork = None
                self._flush()
        finally:
            self._lock.release()
        self._finish_closing()

    def _finish_closing(self) -> None:
        if self._recv_lock.acquire(blocking=False):
            try:
                # Messages that arrive meanwhile stay queued: recv() still returns
                # them before it reports the close (nothing accepted is lost).
                while not self._closed.is_set():
                    self._receive(None)
            finally:
                self._recv_lock.release()

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        # First unblock a sender stuck in a write (it holds _lock): its write fails.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass
        with self._lock:
            self.protocol.receive_eof()
            self.protocol.data_to_send()
            self._out.clear()
            self._out_size = 0
            self._close_socket()
            self._cancel_pings()
        self._closed.set()

    def start_keepalive(self, interval: float, timeout: float | None = None) -> None:
        """Ping every ``interval`` seconds; no pong within ``timeout`` fails with 1011.

        A half-open TCP connection (peer gone without FIN or RST) is thus closed
        within ``interval + timeout``. Pongs are seen while some thread reads.
        """
        wait = interval if timeout is None else timeout

        def keepalive() -> None:
            while not self._closed.wait(interval):
                try:
                    waiter = self._send_ping(None, None)  # no pump: the reader resolves it
                except (ConnectionClosed, ValueError):
                    return
                if not waiter.wait_resolved(wait) and not self._closed.is_set():
                    with self._lock:
                        self._fail_keepalive()
                    self.abort()
                    return

        self.primitives.spawn(keepalive)

    def _ping_pump(self) -> Callable[[PingWaiter, float | None], bool]:
        return self._wait_for_pong

    def _wait_for_pong(self, waiter: PingWaiter, timeout: float | None) -> bool:
        """PingWaiter.wait(): read until its pong arrives, unless another thread reads."""
        if not self._recv_lock.acquire(blocking=False):
            with self._lock:
                self._cork = None
                self._flush()
            return waiter.wait_resolved(timeout)  # the reader resolves it
        try:
            deadline = None if timeout is None else self.primitives.monotonic() + timeout
            scanned = 0
            while True:
                # Resolve pongs already queued; the frames stay for recv(), which
                # still calls the pong hook in order.
                with self._lock:
                    while self._take_batch():
                        pass
                frames = list(self._frames)
                for frame in frames[scanned:]:
                    if frame.opcode is Opcode.PONG:
                        self._resolve_pings(frame.data)
                scanned = len(frames)
                if waiter.done or self._closed.is_set():
                    break
                try:
                    self._receive(deadline)
                except TimeoutError:
                    break
        finally:
            self._recv_lock.release()
        return waiter.done

    # -- receiving ------------------------------------------------------------------------

    def recv_message(self, timeout: float | None = None) -> Message:
        """The next message; ConnectionClosed once the connection is closed.

        TimeoutError if no message completes within ``timeout`` seconds.
        """
        with self._recv_lock:
            deadline = None if timeout is None else self.primitives.monotonic() + timeout
            frames = self._frames
            while True:
                while frames:
                    frame = frames.popleft()
                    if frame.opcode < 8:
                        message = self._assembler.feed(frame)
                        if message is not None:
                            return message
                    else:
                        self._control(frame)
                if self._more():
                    continue
                if self._closed.is_set():
                    raise self.protocol.close_exc()
                self._receive(deadline)

    def recv_frame(self, timeout: float | None = None) -> Frame:
        """The next frame of any kind, unassembled (low-level access)."""
        with self._recv_lock:
            deadline = None if timeout is None else self.primitives.monotonic() + timeout
            while not self._frames:
                if self._more():
                    continue
                if self._closed.is_set():
                    raise self.protocol.close_exc()
                self._receive(deadline)
            frame = self._frames.popleft()
            if frame.is_control:
                self._control(frame)
            return frame

    # -- internals (callers hold the locks noted) --------------------------------------------

    def _control(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            self._resolve_pings(frame.data)
            handler = self._handler
            if handler is not None:
                handler.handle_pong(frame.data)

    def _take_batch(self) -> bool:
        """Move the next batch the protocol parsed to our queue (``_lock`` held).

        The protocol parses lazily, a bounded batch at a time: unparsed bytes wait
        there, not as frames here.
        """
        events = self.protocol.events_received()
        if not events:
            return False
        self._frames.extend(events)
        return True

    def _more(self) -> bool:
        """Take the next parsed batch, if there is one, and write its answers (pongs)."""
        with self._lock:
            found = self._take_batch()
            if found:
                self._flush()
        if self.protocol.state is State.CLOSED and not found:
            with self._lock:
                self._close_socket()
                self._cancel_pings()
            self._closed.set()
        return found

    def _receive(self, deadline: float | None) -> None:
        """Read once from the socket into the protocol (``_recv_lock`` held).

        Raises TimeoutError when ``deadline`` passes first. While closing, the
        wait is bounded by the close timeout and ends with dropping TCP.
        """
        protocol = self.protocol
        primitives = self.primitives
        if self._out:
            with self._lock:  # nothing held back while we wait for the peer
                self._cork = None
                self._flush()
        timeout = None if deadline is None else deadline - primitives.monotonic()
        close_timeout = self.limits.close_timeout
        if protocol.close_expected() and close_timeout is not None:
            now = primitives.monotonic()
            if self._close_deadline is None:
                self._close_deadline = now + close_timeout
            left = self._close_deadline - now
            if timeout is None or left < timeout:
                if not primitives.wait_readable(self.sock, left):
                    self._log.debug("peer did not finish the closing handshake in time")
                    self.abort()
                    return
                timeout = None
        if timeout is not None and not primitives.wait_readable(self.sock, timeout):
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
            self._take_batch()
            self._flush()
            if protocol.state is State.CLOSED:
                self._close_socket()
                self._cancel_pings()
        if protocol.state is State.CLOSED:
            self._closed.set()

    def _flush(self) -> None:
        """Write what the protocol produced, unless a batch holds it back (``_lock`` held)."""
        writes = self.protocol.data_to_send()
        out = self._out
        eof = False
        for data in writes:
            if data == SEND_EOF:
                eof = True
            else:
                out.append(data)
                self._out_size += len(data)
        if not out and not eof:
            return
        if (
            not eof
            and self._cork is not None
            and self._out_size < _CORK_LIMIT
            and self._cork == self.primitives.ident()
        ):
            return
        if self._socket_closed:
            out.clear()
            self._out_size = 0
            return
        try:
            if out:
                _send_all(self.sock, out, self._out_size)
            if eof:
                end_write_side(self.sock)
        except (OSError, ValueError) as exc:
            # The peer is gone; the reader will see EOF. The caller learns it now.
            self._log.debug("write failed: %s", exc)
            out.clear()
            self._out_size = 0
            self.protocol.receive_eof()
            self.protocol.data_to_send()
            self._close_socket()
            if not eof:
                raise closed_error() from exc
        out.clear()
        self._out_size = 0

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


def _send_all(sock: Any, buffers: list[bytes], total: int) -> None:
    """Write ``buffers`` in order with as few syscalls as the socket allows."""
    if len(buffers) == 1:
        sock.sendall(buffers[0])
        return
    sendmsg: Callable[..., int] | None = getattr(sock, "sendmsg", None)
    if sendmsg is None or not isinstance(sock, socket.socket) or _is_tls(sock):
        if total <= _JOIN_LIMIT:
            sock.sendall(b"".join(buffers))
        else:  # never copy a large payload only to join it to its header
            for data in buffers:
                sock.sendall(data)
        return
    views = [memoryview(b) for b in buffers]
    while views:
        sent = sendmsg(views[:1024])  # IOV_MAX
        while sent:
            first = views[0]
            if sent >= len(first):
                sent -= len(first)
                del views[0]
            else:
                views[0] = first[sent:]
                sent = 0


def _is_tls(sock: Any) -> bool:
    import ssl

    return isinstance(sock, ssl.SSLSocket)
