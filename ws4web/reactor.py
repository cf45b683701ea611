"""Many connections on few threads: one selector loop, handlers on a small worker pool.

The :class:`Reactor` thread owns every socket: it reads whatever is available into
one shared buffer, feeds each connection's sans-I/O protocol, writes pending
bytes without blocking, and runs timers (close timeouts, keepalive). Each
connection's callbacks run through a :class:`~ws4web.workers.Lane`, one at a
time and in order, so a slow handler delays only its own connection.

By default the callbacks run on a :class:`~ws4web.workers.WorkerPool`, and the
worker that ran a handler *follows* the connection: it reads the next message
itself for up to ``follow`` seconds (1 ms) before handing the socket back to the
loop, so request/response traffic costs one wake-up per message, as with a
thread per connection, while idle connections hold no thread. At most
``max_followers`` workers follow at once.

``inline=True`` runs the callbacks in the loop thread itself, as an event loop
does; a watchdog hands the loop to a fresh thread when a callback overruns
``handler_budget`` (5 ms), and a callback that must wait for its peer to read
hands it over at once, so a slow handler still delays only its own connection.

Outgoing bytes are bounded per connection: a sender waits while more than
``max_send_buffer`` bytes are queued. Incoming messages are bounded too: reading
stops while a handler lags ``max_queue`` messages behind, so TCP pushes back on
the peer.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import os
import select
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
from .messages import Assembler, Message
from .protocol import SEND_EOF, Protocol, State
from .workers import Lane, WorkerPool

__all__ = ["Reactor", "ReactorConnection", "default_reactor"]

logger = logging.getLogger("ws4web.reactor")

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
# Frames of a burst of replies are held back until the burst ends, up to this many bytes.
_CORK_LIMIT = 65536
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

    def __init__(
        self,
        max_workers: int = 64,
        recv_size: int = 262144,
        name: str = "ws4web-reactor",
        *,
        inline: bool = False,
        handler_budget: float = 0.005,
        follow: float = 0.001,
    ) -> None:
        self.pool = WorkerPool(max_workers)
        self.name = name
        #: Run handlers in the loop thread itself, as an event loop does. A handler
        #: that runs longer than ``handler_budget`` seconds (it blocks, or computes)
        #: does not hold the other connections up: a watchdog hands the loop to a
        #: new thread, and the old one finishes that handler as an ordinary worker
        #: (see :meth:`run_inline`). Measured on the bench, the worker pool with
        #: following is as fast with many connections and faster for one (that is
        #: the default).
        self.inline = inline and max_workers > 0
        self.handler_budget = handler_budget
        #: Seconds a worker that just ran a connection's handler keeps reading that
        #: connection itself before handing it back to the loop (0: never), so a
        #: quick reply needs no loop -> worker hand-off (not with ``inline``).
        self.follow = follow if max_workers > 0 and not self.inline else 0.0
        #: At most this many workers follow at once. Under the GIL more followers add
        #: no parallelism, only threads waking to wait their turn: on the bench (2
        #: cores, 100 busy connections) 1 follower gave 16.3k round trips/s, 4 gave
        #: 14.1k, 16 gave 12.6k and 64 gave 10.4k, with one connection alike.
        self.max_followers = max(1, (os.cpu_count() or 2) // 2)
        self.followers = 0
        self._followers_lock = threading.Lock()
        # Loop ownership: the thread whose ident is _ident runs the loop; a promotion
        # bumps _generation, and a thread that sees a newer generation stops.
        self._generation = 0
        self._leader_lock = threading.Lock()
        self._inline_since: float | None = None
        self._watchdog: threading.Thread | None = None
        self._watchdog_wake = threading.Event()
        self._watchdog_resting = False
        #: threads demoted while running a slow handler, still running it
        self.demoted = 0
        #: how many times the loop moved to a new thread (a measure of slow handlers)
        self.promotions = 0
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
        self._watchdog_wake.set()
        with self._leader_lock:
            thread = self._thread  # the current leader (promotions replace it)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._watchdog is not None:
            self._watchdog.join(timeout)
        for connection in list(self.connections):
            connection._teardown()
        self.pool.shutdown(timeout)
        self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()

    @property
    def in_loop(self) -> bool:
        return threading.get_ident() == self._ident

    def count_follower(self, delta: int) -> None:
        with self._followers_lock:
            self.followers += delta

    # -- handlers in the loop thread --------------------------------------------------------

    def run_inline(self, drain: Callable[[], Any]) -> None:
        """Loop thread: run ``drain`` (a lane's tasks) right here.

        The watchdog may promote a new loop thread while ``drain`` runs; this
        thread then carries on as a worker (``in_loop`` turns False for it, and
        :meth:`_run` returns as soon as the handler is done).
        """
        if self._watchdog is None:
            self._start_watchdog()
        elif self._watchdog_resting:
            self._watchdog_wake.set()
        self._inline_since = _monotonic()
        try:
            drain()
        finally:
            with self._leader_lock:
                self._inline_since = None

    def leave_loop(self) -> None:
        """Loop thread, inside a handler that must block (waiting for the peer to
        read, say): hand the loop to a new thread now instead of stalling it."""
        with self._leader_lock:
            if self.in_loop and not self._stopping:
                self._promote()

    def _promote(self) -> None:
        """Start a new loop thread; the current one becomes a worker (leader lock held)."""
        self._generation += 1
        self._ident = None  # nobody is "in the loop" until the new thread runs
        self._inline_since = None
        self.demoted += 1
        self.promotions += 1
        thread = threading.Thread(target=self._run, name=f"{self.name}-{self.promotions}", daemon=True)
        self._thread = thread
        thread.start()

    def _start_watchdog(self) -> None:
        self._watchdog = threading.Thread(target=self._watch, name=f"{self.name}-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        """Promote a new loop thread when a handler runs inline past its budget.

        Polls instead of being told about each handler (that would cost a wake-up
        per message): every ``budget / 2`` while handlers run, and it rests
        (``run_inline`` wakes it) after a quiet second.
        """
        budget = self.handler_budget
        quiet = 0
        while not self._stopping:
            if quiet > int(1.0 / (budget / 2)):
                self._watchdog_resting = True
                self._watchdog_wake.wait()
                self._watchdog_wake.clear()
                self._watchdog_resting = False
                quiet = 0
            else:
                self._watchdog_wake.wait(budget / 2)
            since = self._inline_since
            if since is None:
                quiet += 1
                continue
            quiet = 0
            if _monotonic() - since > budget:
                with self._leader_lock:
                    # Under the lock: the loop thread cannot leave run_inline (and go
                    # back to the loop) while we hand the loop to another thread.
                    stuck = self._inline_since
                    if (
                        stuck is not None
                        and stuck == since
                        and not self._stopping
                        and self.demoted < self.pool.max_workers
                    ):
                        self._promote()

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
        with self._leader_lock:
            self._ident = threading.get_ident()
            generation = self._generation
        try:
            self._loop(generation)
        finally:
            if self._generation != generation:
                with self._leader_lock:
                    self.demoted -= 1

    def _loop(self, generation: int) -> None:
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
                if self._generation != generation:
                    return  # a slow handler ran here: another thread has the loop now
            now = _monotonic()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if not timer.cancelled:
                    self._call(timer.callback)
                    if self._generation != generation:
                        return
            for _ in range(len(calls)):
                self._call(calls.popleft())
                if self._generation != generation:
                    return

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

# Per worker thread: a receive buffer for following connections.
_local = threading.local()


def _recv_buffer() -> bytearray:
    try:
        buffer: bytearray = _local.buffer
    except AttributeError:
        buffer = _local.buffer = bytearray(65536)
    return buffer

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

    # Slots: thousands of idle connections each keep one of these, and past 30
    # attributes an instance dict stops sharing its keys (about 1.5 KiB more each).
    __slots__ = (
        "_assembler",
        "_close_timer",
        "_closed_event",
        "_corked",
        "_drained",
        "_eof_pending",
        "_events",
        "_follow_ms",
        "_handler",
        "_handler_failed",
        "_is_closed",
        "_lane",
        "_lock",
        "_out",
        "_out_size",
        "_paused",
        "_pings",
        "_poller",
        "_registered",
        "_send_lock",
        "_tls",
        "_torn_down",
        "close_timeout",
        "max_queue",
        "max_send_buffer",
        "on_ping",
        "on_pong",
        "on_teardown",
        "protocol",
        "reactor",
        "sock",
        "subprotocol",
    )

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
        self.protocol = protocol
        self._tag_logs(logger, conn_id)
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
        self._lane.on_idle = self._uncork
        self._corked = False
        self._poller: Any = None  # select.poll, created the first time a worker follows
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._follow_ms = reactor.follow * 1000.0
        if reactor.follow > 0:
            self._lane.follow = self._follow
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
            events = [e for batch in iter(self.protocol.events_received, []) for e in batch]
        self._registered = True
        self._update_events()
        self._dispatch(events)
        if self.reactor.in_loop:
            self._check_closed()
        else:  # a slow handler ran inline: the loop is another thread's now
            self.reactor.call_soon(self._check_closed)

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
            lane = self._lane
            if (
                lane.backlog
                and lane.draining == threading.get_ident()
                and self._out_size < _CORK_LIMIT
                and not self._eof_pending
            ):
                # A handler answering one of several queued messages: its frames
                # go out with the others' in one write when the burst ends
                # (Lane.on_idle), not in one syscall each.
                self._corked = True
                return
            self._write()

    def _uncork(self) -> None:
        """The lane's burst ended (worker thread): write what it queued."""
        if self._corked:
            with self._lock:
                self._corked = False
                if self._out or self._eof_pending:
                    self._write()

    def _write(self) -> None:
        out = self._out
        sock = self.sock
        if len(out) > 1 and self._out_size <= _CORK_LIMIT:
            # Many small frames (a burst of replies): one buffer, one syscall. Large
            # payloads are never copied just to be joined to their headers.
            out[:] = [b"".join(out)]
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
        if self._out_size > self.max_send_buffer and self.reactor.in_loop and self.reactor.pool.max_workers > 0:
            # An inline handler must wait for the peer to read: give the loop to
            # another thread first, then wait here like any worker.
            self._lock.release()
            try:
                self.reactor.leave_loop()
            finally:
                self._lock.acquire()
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
        events = (0 if self._paused or self._lane.following else _READ) | (_WRITE if self._out else 0)
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
                events = [e for batch in iter(self.protocol.events_received, []) for e in batch]
                self._flush()
            self._dispatch(events)
            if not self.reactor.in_loop:
                # A slow handler ran inline and the loop moved to another thread:
                # this one must not read again (nor touch the shared buffer).
                self.reactor.call_soon(self._check_closed)
                return
            if not data or self._lane.following or not (self._tls and sock.pending()):
                break
        if self._lane.following:
            self._update_events()  # the worker reads now; the loop must not
        self._check_closed()

    def _dispatch(self, frames: list[Frame]) -> None:
        lane = self._lane
        reactor = self.reactor
        tasks: list[Callable[[], Any]] = []
        # Assemble the whole batch first: a handler run inline below may outlast the
        # loop's budget, and then the next read happens in another thread.
        for frame in frames:
            if frame.opcode < 8:
                message = self._assembler.feed(frame)
                if message is not None:
                    tasks.append(_Deliver(self, message))
            elif frame.opcode is Opcode.PONG:
                self._resolve_pings(frame.data)
                if self.on_pong is not None:
                    tasks.append(functools.partial(self._run_callback, self.on_pong, frame))
            elif frame.opcode is Opcode.PING and self.on_ping is not None:
                tasks.append(functools.partial(self._run_callback, self.on_ping, frame))
        if tasks:
            # In the loop with inline handlers on, an idle lane runs right here.
            # (Doing so also whenever every follower is busy made 100 busy
            # connections 1.5x faster, but under the load-and-faults test the
            # promoted threads left RSS 124 MiB higher after each round: not taken.)
            lane.submit_all(tasks, reactor.run_inline if reactor.inline and reactor.in_loop else None)
        if (
            frames
            and lane.follow is not None
            and not self._paused
            and self.protocol.state is State.OPEN
            and self.reactor.in_loop
            and self.reactor.followers < self.reactor.max_followers
            and not self.reactor.pool.saturated
            and lane.hand_over()
        ):
            self.reactor.count_follower(+1)
        if (
            (lane.backlog > self.max_queue or self._out_size > self.max_send_buffer)
            and not self._paused
            and self.reactor.in_loop
        ):
            # Stop reading: TCP flow control pushes back on the peer. Either the
            # handler lags, or the peer sends (pings, say) but does not read our
            # answers, which would otherwise pile up here without bound.
            self._paused = True
            self._update_events()
        if self.protocol.close_expected():
            if self.reactor.in_loop:
                self._arm_close_timer()
            else:
                self.reactor.call_soon(self._arm_close_timer)

    def _lane_drained(self) -> None:
        if self._paused:
            self.reactor.call_soon(self._resume)

    def _follow(self) -> bool:
        """Worker thread, lane drained: read our socket directly for a short while.

        True when a read produced work for the lane (it keeps draining and comes
        back here); False once the socket is handed back to the loop. The loop does
        not read meanwhile (no READ interest while ``lane.following``), so exactly
        one thread reads at a time and bytes stay in order.
        """
        lane = self._lane
        sock = self.sock
        if self._torn_down or self.protocol.state is not State.OPEN or self.reactor.pool.saturated:
            return self._unfollow()
        if not (self._tls and sock.pending()):
            poller = self._poller
            if poller is None:
                # Kept while the connection lives: registering once is cheaper than
                # per wait. Never read through the raw fd (it could be reused after
                # a close); the socket object is what we read from.
                fd = sock.fileno()
                if fd < 0:
                    return self._unfollow()
                poller = self._poller = select.poll()
                poller.register(fd, select.POLLIN)
            if not poller.poll(self._follow_ms):
                return self._unfollow()
        buffer = _recv_buffer()
        try:
            n = sock.recv_into(buffer)
        except _RETRY:
            return True  # spurious wake-up (TLS record not complete): poll again
        except (OSError, ValueError):
            n = 0  # reset, or torn down by the loop meanwhile
        with self._lock:
            if self._torn_down:
                return self._unfollow()
            if n:
                self.protocol.receive_data(memoryview(buffer)[:n])
            else:
                self.protocol.receive_eof()
            events = [e for batch in iter(self.protocol.events_received, []) for e in batch]
            self._flush()
        self._dispatch(events)
        if self._out_size > self.max_send_buffer:
            # The peer does not read what we send: let the loop pause reading.
            return self._unfollow()
        if not n or self.protocol.state is not State.OPEN:
            # Closing: the loop owns timers and teardown.
            lane.stop_following()
            self.reactor.count_follower(-1)
            self.reactor.call_soon(self._after_follow)
            return True
        return True

    def _unfollow(self) -> bool:
        more = self._lane.stop_following()
        self.reactor.count_follower(-1)
        self.reactor.call_soon(self._after_follow)
        return more

    def _after_follow(self) -> None:
        """Loop thread: take the socket back (or finish closing)."""
        if self.protocol.close_expected():
            self._arm_close_timer()
        self._update_events()
        self._check_closed()

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
        self._poller = None
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
            reactor = self.reactor
            self._lane.submit(handler._fire_closed, reactor.run_inline if reactor.inline and reactor.in_loop else None)


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
