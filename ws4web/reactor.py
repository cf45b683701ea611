"""Many connections on few threads: one selector loop, handlers on a worker pool.

The :class:`Reactor` thread owns every socket: it reads whatever is available into
one shared buffer, feeds each connection's sans-I/O protocol, writes pending
bytes without blocking, and runs timers (close timeouts, keepalive). Handler
callbacks run on a :class:`~ws4web.workers.WorkerPool`, one :class:`Lane` per
connection, so each connection sees its messages in order and a slow handler
delays only its own connection. Outgoing bytes are bounded per connection: a
sender waits while more than ``max_send_buffer`` bytes are queued. Incoming
messages are bounded too: reading stops while a handler lags ``max_queue``
messages behind, so TCP pushes back on the peer.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .connection import Sender, end_write_side
from .exceptions import ConnectionClosed, ConnectionClosedError
from .frames import CloseCode, Frame, Opcode
from .logs import ConnectionLog, connection_log
from .messages import Assembler, Message
from .protocol import SEND_EOF, Protocol, State
from .workers import Lane, WorkerPool

__all__ = ["Reactor", "ReactorConnection", "default_reactor"]

_protocol_logger = logging.getLogger("ws4web.protocol")
logger = logging.getLogger("ws4web.reactor")

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_RETRY = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    """A selector loop in one thread, plus the worker pool its handlers run on."""

    def __init__(self, max_workers: int = 64, recv_size: int = 262144, name: str = "ws4web-reactor") -> None:
        self.pool = WorkerPool(max_workers)
        self.name = name
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._selector.register(self._wakeup_r, _READ, None)
        self._calls: deque[Callable[[], Any]] = deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        # One receive buffer for every connection: idle connections hold none.
        self._buffer = bytearray(recv_size)
        self._view = memoryview(self._buffer)
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self.connections: set[ReactorConnection] = set()

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> Reactor:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop; connections still open are dropped."""
        self._stopping = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for connection in list(self.connections):
            connection._teardown()
        self.pool.shutdown(timeout)
        self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()

    @property
    def in_loop(self) -> bool:
        return threading.get_ident() == self._ident

    # -- scheduling -------------------------------------------------------------------

    def call_soon(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` in the loop thread (thread-safe)."""
        self._calls.append(callback)
        if not self.in_loop:
            self._wake()

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Timer:
        """Run ``callback`` in the loop thread after ``delay`` seconds (loop thread only)."""
        timer = Timer(_monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def _wake(self) -> None:
        try:
            self._wakeup_w.send(b"\0")
        except (BlockingIOError, OSError):  # already awake, or shutting down
            pass

    # -- registration (loop thread only) ---------------------------------------------------

    def register(self, sock: Any, events: int, handler: Any) -> None:
        self._selector.register(sock, events, handler)

    def modify(self, sock: Any, events: int, handler: Any) -> None:
        self._selector.modify(sock, events, handler)

    def unregister(self, sock: Any) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        self._ident = threading.get_ident()
        selector = self._selector
        calls = self._calls
        timers = self._timers
        while not self._stopping:
            timeout: float | None = None
            if calls:
                timeout = 0
            elif timers:
                timeout = max(0.0, timers[0][0] - _monotonic())
            for key, mask in selector.select(timeout):
                handler = key.data
                if handler is None:
                    try:
                        while self._wakeup_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                    continue
                try:
                    handler._on_io(mask)
                except Exception:  # one broken connection must not stop the loop
                    getattr(handler, "log", logger).exception("I/O handler %r failed", handler)
                    handler._teardown()
            now = _monotonic()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if not timer.cancelled:
                    self._call(timer.callback)
            for _ in range(len(calls)):
                self._call(calls.popleft())

    @staticmethod
    def _call(callback: Callable[[], Any]) -> None:
        try:
            callback()
        except Exception:
            logger.exception("callback %r failed", callback)

    def recv_into(self, sock: Any) -> memoryview | None:
        """Read what ``sock`` has into the shared buffer; None if nothing yet (loop thread)."""
        try:
            n = sock.recv_into(self._buffer)
        except _RETRY:
            return None
        except (OSError, ValueError):
            n = 0
        return self._view[:n]


_monotonic = time.monotonic

_default: Reactor | None = None
_default_lock = threading.Lock()


def default_reactor() -> Reactor:
    """The process-wide reactor, started on first use."""
    global _default
    with _default_lock:
        if _default is None or _default._stopping:
            _default = Reactor().start()
        return _default


class ReactorConnection(Sender):
    """The :class:`~ws4web.connection.Connection` interface, driven by a Reactor.

    Callbacks only: the handler's callbacks run on its lane; ``recv()`` is not
    available (a blocking pull loop would hold a pool worker for the life of the
    connection — use the thread-per-connection mode for that).
    """

    def __init__(
        self,
        sock: Any,
        protocol: Protocol,
        reactor: Reactor,
        *,
        close_timeout: float | None = 10.0,
        subprotocol: str | None = None,
        max_send_buffer: int = 4 * 2**20,
        max_queue: int = 32,
        conn_id: str | None = None,
    ) -> None:
        self.sock = sock
        #: tags every log record about this connection (``[ws12 127.0.0.1:50312] ...``)
        self.log: ConnectionLog = connection_log(logger, sock, conn_id)
        self.id = self.log.conn_id
        protocol.logger = self.log.child(_protocol_logger)
        self.protocol = protocol
        self.reactor = reactor
        self.close_timeout = close_timeout
        self.subprotocol = subprotocol
        self.max_send_buffer = max_send_buffer
        self.max_queue = max_queue
        self.on_ping: Any = None
        self.on_pong: Any = None
        self._lock: threading.Lock = threading.Lock()  # narrower than Sender's LockLike: a Condition needs it
        # Created on first need: a Condition or Event holds a deque of ~700 bytes,
        # and most connections never wait on either.
        self._drained: threading.Condition | None = None
        self._closed_event: threading.Event | None = None
        self._is_closed = False
        self._send_lock = threading.Lock()
        self._out: list[bytes | memoryview] = []
        self._out_size = 0
        self._eof_pending = False
        self._events = 0  # selector interest currently registered
        self._registered = False
        self._paused = False
        self._assembler = Assembler()
        self._pings: dict[bytes, Any] = {}
        self._lane = Lane(reactor.pool)
        self._lane.on_drained = self._lane_drained
        self._handler: Any = None
        self._handler_failed = False
        self._close_timer: Timer | None = None
        self._torn_down = False
        #: called in the loop thread once the connection is fully released
        self.on_teardown: Callable[[], None] | None = None
        sock.setblocking(False)
        _nodelay(sock)

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def closed(self) -> bool:
        return self._is_closed

    @property
    def close_code(self) -> int:
        return self.protocol.close_code

    @property
    def close_reason(self) -> str:
        return self.protocol.close_reason

    @property
    def buffered_amount(self) -> int:
        """Bytes queued for the peer that the socket has not taken yet."""
        return self._out_size

    def wait_closed(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._is_closed:
                return True
            if self._closed_event is None:
                self._closed_event = threading.Event()
            event = self._closed_event
        return event.wait(timeout)

    # -- starting --------------------------------------------------------------------------

    def start(self, handler: Any) -> None:
        """Begin delivering callbacks to ``handler`` (a WebSocket)."""
        self._handler = handler
        self._lane.submit(lambda: self._run_callback(handler.opened))
        self.reactor.connections.add(self)
        self.reactor.call_soon(self._attach)

    def _attach(self) -> None:
        with self._lock:
            self._flush()
            events = self.protocol.events_received()
        self._registered = True
        self._update_events()
        self._dispatch(events)
        self._check_closed()

    # -- sending (any thread) ------------------------------------------------------------------

    def _after_write(self) -> None:
        self._wait_drained()

    def _new_event(self) -> threading.Event:
        return threading.Event()

    def _clock(self) -> float:
        return _monotonic()

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame; the reactor finishes the handshake (never blocks)."""
        with self._lock:
            if self.protocol.state is not State.OPEN:
                return
            self.protocol.send_close(code, reason)
            self._flush()
        self.reactor.call_soon(self._arm_close_timer)

    def abort(self) -> None:
        self.reactor.call_soon(self._teardown)
        if not self.reactor.in_loop:
            self.wait_closed(5.0)

    def recv_message(self, timeout: float | None = None) -> Message:
        raise NotImplementedError(
            "recv() is not available on reactor-driven connections; "
            "use callbacks, or the thread-per-connection mode (io='threads')"
        )

    recv_frame = recv_message

    def start_keepalive(self, interval: float, timeout: float | None = None) -> None:
        timeout = interval if timeout is None else timeout

        def tick() -> None:
            if self._is_closed or self.protocol.state is not State.OPEN:
                return
            try:
                waiter = self.ping()
            except (ConnectionClosed, ValueError):
                return

            def check() -> None:
                if not waiter.wait(0) and not self._is_closed:
                    self.log.warning("no pong within %.1f s: closing with 1011", timeout)
                    with self._lock:
                        self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive timeout")
                        self._flush()
                    self._teardown()
                else:
                    self.reactor.call_later(max(0.0, interval - timeout), tick)

            self.reactor.call_later(timeout, check)

        self.reactor.call_soon(lambda: self.reactor.call_later(interval, tick))

    # -- internals --------------------------------------------------------------------------

    def _flush(self) -> None:
        """Queue what the protocol produced and write as much as the socket takes (lock held)."""
        writes = self.protocol.data_to_send()
        if writes:
            if writes[-1] == SEND_EOF:
                writes.pop()
                self._eof_pending = True
            for data in writes:
                self._out.append(data)
                self._out_size += len(data)
        if self._out or self._eof_pending:
            self._write()

    def _write(self) -> None:
        out = self._out
        sock = self.sock
        while out:
            data = out[0]
            try:
                sent = sock.send(data)
            except _RETRY:
                break
            except (OSError, ValueError):
                self._lost()
                return
            self._out_size -= sent
            if sent < len(data):
                out[0] = memoryview(data)[sent:]
                break
            del out[0]
        if not out:
            if self._eof_pending and not self._torn_down:
                self._eof_pending = False
                try:
                    end_write_side(sock)
                except OSError:
                    pass
            if self._drained is not None and self._out_size <= self.max_send_buffer:
                self._drained.notify_all()
            if self._paused and self._lane.backlog <= self.max_queue // 2:
                self.reactor.call_soon(self._resume)
        self._want(_WRITE, bool(out))

    def _wait_drained(self) -> None:
        # A handler that sends faster than the peer reads waits here instead of
        # growing the buffer without bound; the loop thread itself never waits.
        while self._out_size > self.max_send_buffer and not self._torn_down and not self.reactor.in_loop:
            if self._drained is None:
                self._drained = threading.Condition(self._lock)
            self._drained.wait(1.0)
        if self._torn_down and self.protocol.state is not State.CLOSED:
            raise ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "", None)

    def _lost(self) -> None:
        self.protocol.receive_eof()
        self.protocol.data_to_send()
        self._out.clear()
        self._out_size = 0
        if self._drained is not None:
            self._drained.notify_all()
        self.reactor.call_soon(self._teardown)

    def _want(self, event: int, on: bool) -> None:
        wanted = (self._events | event) if on else (self._events & ~event)
        if wanted != self._events or not self._registered:
            if self.reactor.in_loop:
                self._update_events()
            else:
                self.reactor.call_soon(self._update_events)

    def _update_events(self) -> None:
        """Loop thread: register what we want to hear about."""
        if self._torn_down or not self._registered:
            return
        # No lock: callers may hold it, and a stale read only costs one more wakeup.
        events = (0 if self._paused else _READ) | (_WRITE if self._out else 0)
        if events == self._events:
            return
        if self._events == 0:
            if events:
                self.reactor.register(self.sock, events, self)
        elif events == 0:
            self.reactor.unregister(self.sock)
        else:
            self.reactor.modify(self.sock, events, self)
        self._events = events

    def _on_io(self, mask: int) -> None:
        if mask & _WRITE:
            with self._lock:
                self._write()
        if mask & _READ:
            self._on_readable()

    def _on_readable(self) -> None:
        sock = self.sock
        for _ in range(16):  # TLS may hold more decrypted bytes than one read returns
            data = self.reactor.recv_into(sock)
            if data is None:
                break
            with self._lock:
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.protocol.receive_eof()
                events = self.protocol.events_received()
                self._flush()
            self._dispatch(events)
            if not data or not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break
        self._check_closed()

    def _dispatch(self, frames: list[Frame]) -> None:
        lane = self._lane
        for frame in frames:
            if frame.opcode < 8:
                message = self._assembler.feed(frame)
                if message is not None:
                    lane.submit(_Deliver(self, message))
            elif frame.opcode is Opcode.PONG:
                self._resolve_pings(frame.data)
                if self.on_pong is not None:
                    lane.submit(functools.partial(self._run_callback, self.on_pong, frame))
            elif frame.opcode is Opcode.PING and self.on_ping is not None:
                lane.submit(functools.partial(self._run_callback, self.on_ping, frame))
        if (lane.backlog > self.max_queue or self._out_size > self.max_send_buffer) and not self._paused:
            # Stop reading: TCP flow control pushes back on the peer. Either the
            # handler lags, or the peer sends (pings, say) but does not read our
            # answers, which would otherwise pile up here without bound.
            self._paused = True
            self._update_events()
        if self.protocol.close_expected():
            self._arm_close_timer()

    def _lane_drained(self) -> None:
        if self._paused:
            self.reactor.call_soon(self._resume)

    def _resume(self) -> None:
        if self._paused and self._lane.backlog <= self.max_queue // 2 and self._out_size <= self.max_send_buffer:
            self._paused = False
            self._update_events()

    def _run_callback(self, callback: Any, *args: Any) -> None:
        if self._handler_failed:
            return
        try:
            if not self._handler._guard(callback, *args):
                self._handler_failed = True
        except ConnectionClosed:
            pass  # the peer closed while the handler was sending: not an error

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self.close_timeout is not None and not self._torn_down:
            self._close_timer = self.reactor.call_later(self.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        if not self._torn_down:
            self.log.debug("peer did not finish the closing handshake in time")
            self._teardown()

    def _check_closed(self) -> None:
        if self.protocol.state is State.CLOSED:
            self._teardown()

    def _teardown(self) -> None:
        """Loop thread (or reactor stop): release everything, then tell the handler."""
        if self._torn_down:
            return
        with self._lock:
            self._torn_down = True
            if self.protocol.state is not State.CLOSED:
                self.protocol.receive_eof()
                self.protocol.data_to_send()
            self._out.clear()
            self._out_size = 0
            if self._drained is not None:
                self._drained.notify_all()
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._events:
            self.reactor.unregister(self.sock)
            self._events = 0
        try:
            self.sock.close()
        except OSError:
            pass
        self.reactor.connections.discard(self)
        with self._lock:
            self._is_closed = True
            if self._closed_event is not None:
                self._closed_event.set()
        if self.on_teardown is not None:
            self.reactor._call(self.on_teardown)
        handler = self._handler
        if handler is not None:
            self._lane.submit(handler._fire_closed)


class _Deliver:
    """One message for a handler (a class, not a closure: cheaper per message)."""

    __slots__ = ("connection", "message")

    def __init__(self, connection: ReactorConnection, message: Message) -> None:
        self.connection = connection
        self.message = message

    def __call__(self) -> None:
        connection = self.connection
        connection._run_callback(connection._handler.received_message, self.message)


def _nodelay(sock: Any) -> None:
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass
