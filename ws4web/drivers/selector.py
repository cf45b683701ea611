"""Many connections on one selector loop: quick callbacks run on the loop thread, one that blocks gets a thread.

Theory of operation
===================

Threads. The *leader* is the one thread running the :class:`Loop` at a time. It
waits on the selector, reads each readable socket into one shared buffer, feeds
that connection's protocol, runs the connection's callbacks right there, and
writes the replies of the batch with one send. Nothing is handed to another
thread per message.

A callback may block: pull style (``recv()`` with nothing queued),
``ping().wait()``, a send past ``max_send_buffer``, ``wait_closed()`` — or
anything else that takes long (a database call), which the *watchdog* notices
once it has run for ``budget`` seconds. Either way the loop must go on for the
other connections, so leadership passes to a new thread, and the old leader,
now the *owner* of that connection, finishes the callback and delivers whatever
queued for the connection meanwhile, then ends. A thousand pull-style handlers
are a thousand owners; a thousand idle callback handlers are no thread at all.

Who reads a socket: only the leader. Owners and other threads never read; the
leader queues what it parsed in the connection's *inbox*. Who writes: any
thread holding the connection's ``_lock``, without blocking; what the socket
does not take waits in ``_out`` and the leader writes it when the socket is
writable. A sender past ``max_send_buffer`` waits (after giving up leadership,
if it had it); a connection whose inbox holds ``max_queue`` messages, or whose
``_out`` is over ``max_send_buffer``, is not read until it drains to half
(TCP then pushes back on the peer).

Who runs a connection's callbacks — :data:`RUNNERS`, the only legal values of
``SelectorDriver._runner``, and :data:`TRANSITIONS`, the only legal moves.
Items reach the inbox in order (open, frames, close); exactly one thread runs
a connection's callbacks at a time, so a handler sees them in order.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import select
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..concurrency import Spares
from ..exceptions import ConnectionClosed
from ..frames import Frame, Opcode
from ..logs import ConnectionLog
from ..messages import Assembler, Message
from ..protocol import Protocol, State
from . import DEFAULT_LIMITS, Handler, Limits
from .base import DriverBase, PingWaiter, closed_error, end_write_side, set_nodelay

__all__ = ["RUNNERS", "TRANSITIONS", "Loop", "SelectorDriver", "default_loop", "leave_loop"]

logger = logging.getLogger("ws4web.drivers.selector")

IDLE: Final = "idle"
INLINE: Final = "inline"
OWNED: Final = "owned"

#: Who runs a connection's callbacks.
RUNNERS = {
    IDLE: "nobody now: the leader runs the next one inline",
    INLINE: "the leader is running one now",
    OWNED: "a thread of its own (a former leader) runs them from the inbox; the leader only queues",
}

#: (runner, event) -> next runner, and who makes the move.
TRANSITIONS = {
    (IDLE, "items queued"): (INLINE, "leader"),
    (INLINE, "inbox empty"): (IDLE, "leader"),
    (INLINE, "callback blocks or overruns"): (OWNED, "whoever moves the leadership (the blocking call, the watchdog)"),
    (OWNED, "inbox empty"): (IDLE, "owner, which then ends"),
}

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
# epoll reports a hang-up or an error as such: the next read says which (EOF, reset).
_EPOLL_READ = getattr(select, "EPOLLIN", 1) | getattr(select, "EPOLLHUP", 16) | getattr(select, "EPOLLERR", 8)
_EPOLL_WRITE = getattr(select, "EPOLLOUT", 4)


def _epoll_mask(events: int) -> int:
    return (select.EPOLLIN if events & _READ else 0) | (select.EPOLLOUT if events & _WRITE else 0)
_RETRY = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
# Small writes are joined into one buffer (no object per 2-byte pong); larger ones
# are queued as they are (no copy of a large payload).
_COALESCE = 16384
# What an entry of _out costs beyond its bytes (object header, list slot): charged
# against max_send_buffer so that many tiny frames count as memory, not as payload.
_ENTRY_COST = 64
_monotonic = time.monotonic


class _Open:
    """Inbox item: deliver ``handle_open``."""


class _Close:
    """Inbox item: deliver ``handle_close`` (the connection has ended)."""


_OPEN = _Open()
_CLOSE = _Close()
_Item = Frame | _Open | _Close


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class IOHandler:
    """What the loop calls for a registered socket (connections, handshakes, listeners)."""

    __slots__ = ()

    def on_io(self, mask: int) -> bool:
        """Handle readiness; False if this thread lost the leadership meanwhile."""
        raise NotImplementedError

    def on_error(self) -> None:
        """on_io raised: release everything."""


class _Wakeup(IOHandler):
    """The loop's own socketpair end: another thread wrote a byte to wake the loop."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def on_io(self, mask: int) -> bool:
        try:
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
        return True


class Loop:
    """One selector, its timers and its leadership; started once, shared by many connections.

    ``budget`` is how long a callback may run on the loop thread before the
    watchdog moves the loop to a new thread.
    """

    def __init__(self, name: str = "ws4web-loop", *, budget: float = 0.01, recv_size: int = 262144) -> None:
        self.name = name
        self.budget = budget
        self.spares = Spares(f"{name}-thread")
        # epoll where the platform has it, driven directly (the selectors module costs a
        # Python call per ready socket); any other platform's best through selectors.
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._selector = selectors.DefaultSelector() if self._epoll is None else None
        self._fds: dict[int, IOHandler | None] = {}  # epoll: fd -> its handler
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self.register(self._wakeup_r, _READ, _Wakeup(self._wakeup_r))
        self._calls: deque[Callable[[], Any]] = deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        # One receive buffer for every connection: idle connections hold none.
        self.buffer = bytearray(recv_size)
        self.view = memoryview(self.buffer)
        # Leadership: the thread whose ident is _leader runs the loop. _leader_lock
        # orders a callback's end against the watchdog's decision to move the loop.
        self._leader: int | None = None
        self._leader_lock = threading.Lock()
        self._in_callback = False
        self._running: SelectorDriver | None = None
        self._serial = 0
        self._watchdog: threading.Thread | None = None
        self._watch_wake = threading.Event()
        self._watch_resting = False
        self._started = False
        self._stopping = False
        self._stopped = threading.Event()
        self._start_lock = threading.Lock()
        #: Times the loop moved to a new thread (a measure of blocking callbacks).
        self.moves = 0
        #: Open connections (for stop()).
        self.connections: set[SelectorDriver] = set()

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Loop:
        with self._start_lock:
            if not self._started:
                self._started = True
                self._new_leader()
                self._watchdog = threading.Thread(target=self._watch, name=f"{self.name}-watchdog", daemon=True)
                self._watchdog.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop; connections still open are dropped (their handlers see 1006)."""
        with self._start_lock:
            if self._stopping:
                return
            self._stopping = True
        self.call_soon(self._drop_all)
        self._watch_wake.set()
        if self._started and not self.is_leader():
            self._stopped.wait(timeout)
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout)
        if not self._started or self.is_leader():
            self._drop_all()
        handlers = (
            list(self._fds.values())
            if self._selector is None
            else [key.data for key in self._selector.get_map().values()]
        )
        for handler in handlers:
            if isinstance(handler, IOHandler):
                handler.on_error()
        self.spares.stop()
        if self._epoll is not None:
            self._epoll.close()
        if self._selector is not None:
            self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()

    def _drop_all(self) -> None:
        for connection in list(self.connections):
            connection._teardown()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- leadership ---------------------------------------------------------------------

    def is_leader(self) -> bool:
        return threading.get_ident() == self._leader

    def _new_leader(self) -> None:
        self.spares.run(self._lead)

    def leave(self) -> None:
        """Called before a blocking wait: if this thread leads the loop, hand the loop
        to a new thread; this one becomes the owner of the connection whose
        callback it runs."""
        if threading.get_ident() != self._leader:
            return
        with self._leader_lock:
            if threading.get_ident() == self._leader and not self._stopping:
                self._move()

    def _move(self) -> None:
        """Give the loop to a new thread (``_leader_lock`` held)."""
        leader = self._leader
        running = self._running
        self._leader = None
        self._in_callback = False
        self._running = None
        try:
            self._new_leader()
        except RuntimeError:  # no more threads: keep leading, the callback blocks the loop
            logger.error("could not start a loop thread; a blocking callback holds up the loop")
            self._leader = leader
            self._running = running
            return
        self.moves += 1
        if running is not None:
            # Its callbacks are the old leader's now; the new leader goes on with the
            # rest (bytes parsed lazily, replies of the batch).
            running._become_owned()
            self._calls.append(running._continue)
            self._wake()

    def run_callback(self, connection: SelectorDriver | None, callback: Callable[..., Any], *args: Any) -> bool:
        """Leader: run user code on the loop thread under the watchdog's eye.

        Returns False when the loop moved to another thread meanwhile (this
        thread is then the owner of ``connection``).
        """
        self._running = connection
        self._serial += 1
        self._in_callback = True  # before looking at _watch_resting: see _watch
        if self._watch_resting:
            self._watch_wake.set()
        try:
            callback(*args)
        finally:
            with self._leader_lock:
                self._in_callback = False
                self._running = None
                leading = threading.get_ident() == self._leader
        return leading

    def _watch(self) -> None:
        """Move the loop when a callback overruns its budget.

        Polls instead of being told about each callback (that would cost a wake-up
        per message): every ``budget / 2`` while callbacks run; it rests after a
        quiet second until run_callback wakes it.
        """
        half = self.budget / 2
        quiet = 0
        seen = (-1, -1)
        since = 0.0
        while not self._stopping:
            if quiet > 1.0 / half:
                # Resting is announced before looking at _in_callback, and run_callback
                # sets _in_callback before looking at _watch_resting: one sees the other.
                self._watch_resting = True
                if not self._in_callback:
                    self._watch_wake.wait()
                self._watch_wake.clear()
                self._watch_resting = False
                quiet = 0
            else:
                self._watch_wake.wait(half)
            if not self._in_callback:
                quiet += 1
                seen = (-1, -1)
                continue
            quiet = 0
            now = _monotonic()
            current = (self._serial, self._leader or 0)
            if current != seen:
                seen, since = current, now
                continue
            if now - since >= self.budget:
                with self._leader_lock:
                    if self._in_callback and (self._serial, self._leader or 0) == seen and not self._stopping:
                        name = type(self._running._handler).__name__ if self._running is not None else "a hook"
                        logger.debug("callback of %s ran over %.0f ms: the loop moves on", name, self.budget * 1000)
                        self._move()
                seen = (-1, -1)

    # -- scheduling ---------------------------------------------------------------------

    def call_soon(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` on the loop thread (any thread may call this)."""
        self._calls.append(callback)
        if threading.get_ident() != self._leader:
            self._wake()

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Timer:
        """Run ``callback`` on the loop thread after ``delay`` seconds (any thread may
        call this; ``cancel()`` the result to call it off)."""
        timer = Timer(_monotonic() + delay, callback)
        if threading.get_ident() == self._leader:
            heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        else:
            self.call_soon(lambda: heapq.heappush(self._timers, (timer.when, next(self._seq), timer)))
        return timer

    def _wake(self) -> None:
        try:
            self._wakeup_w.send(b"\0")
        except OSError:  # already awake (buffer full), or shutting down
            pass

    # -- registration (loop thread only) ----------------------------------------------------

    def register(self, sock: Any, events: int, handler: IOHandler | None) -> None:
        if self._selector is not None:
            self._selector.register(sock, events, handler)
            return
        assert self._epoll is not None
        fd = sock.fileno()
        self._epoll.register(fd, _epoll_mask(events))
        self._fds[fd] = handler

    def modify(self, sock: Any, events: int, handler: IOHandler) -> None:
        if self._selector is not None:
            self._selector.modify(sock, events, handler)
            return
        assert self._epoll is not None
        fd = sock.fileno()
        self._epoll.modify(fd, _epoll_mask(events))
        self._fds[fd] = handler

    def unregister(self, sock: Any) -> None:
        try:
            if self._selector is not None:
                self._selector.unregister(sock)
                return
            assert self._epoll is not None
            fd = sock.fileno()
            if self._fds.pop(fd, None) is not None or fd >= 0:
                self._epoll.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def _ready(self, timeout: float | None) -> list[tuple[IOHandler | None, int]]:
        """What is ready: (handler, mask of _READ/_WRITE); None for a socket gone meanwhile."""
        if self._epoll is not None:
            fds = self._fds
            return [
                (fds.get(fd), (_READ if events & _EPOLL_READ else 0) | (_WRITE if events & _EPOLL_WRITE else 0))
                for fd, events in self._epoll.poll(-1 if timeout is None else timeout)
            ]
        assert self._selector is not None
        return [(key.data, mask) for key, mask in self._selector.select(timeout)]

    # -- the loop -------------------------------------------------------------------------

    def _lead(self) -> None:
        with self._leader_lock:
            self._leader = threading.get_ident()
        _current.loop = self
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug: keep the process serving
            logger.exception("the loop failed; starting another thread")
            with self._leader_lock:
                if self.is_leader() and not self._stopping:
                    self._leader = None
                    self._new_leader()
        finally:
            with self._leader_lock:
                if self.is_leader():
                    self._leader = None
                    self._stopped.set()

    def _loop(self) -> None:
        me = threading.get_ident()
        calls = self._calls
        timers = self._timers
        while not self._stopping:
            timeout: float | None = None
            if calls:
                timeout = 0
            elif timers:
                timeout = max(0.0, timers[0][0] - _monotonic())
            try:
                ready = self._ready(timeout)
            except InterruptedError:  # pragma: no cover - a signal; Python retries for us
                continue
            for handler, mask in ready:
                if handler is None:
                    continue
                try:
                    leading = handler.on_io(mask)
                except Exception:  # one broken connection must not stop the loop
                    logger.exception("I/O handler %r failed", handler)
                    handler.on_error()
                    leading = self._leader == me
                if not leading:
                    return
            if timers:
                now = _monotonic()
                while timers and timers[0][0] <= now:
                    timer = heapq.heappop(timers)[2]
                    if not timer.cancelled:
                        self._call(timer.callback)
                        if self._leader != me:
                            return
            for _ in range(len(calls)):
                self._call(calls.popleft())
                if self._leader != me:
                    return
        if self._stopping and self._leader == me:
            self._drop_all()

    @staticmethod
    def _call(callback: Callable[[], Any]) -> None:
        try:
            callback()
        except Exception:
            logger.exception("loop callback %r failed", callback)

    def recv_into(self, sock: Any) -> memoryview | None:
        """Read what ``sock`` has into the shared buffer; None if nothing yet (leader only)."""
        try:
            n = sock.recv_into(self.buffer)
        except _RETRY:
            return None
        except (OSError, ValueError):
            n = 0
        return self.view[:n]


_default: Loop | None = None
_default_lock = threading.Lock()
# The loop this thread leads (or led): see leave_loop().
_current = threading.local()


def leave_loop() -> None:
    """Call before code that will block (a database call, a wait for room in a
    queue): if this thread runs a loop's callbacks inline, hand the loop to another
    thread now, instead of stalling every connection until the watchdog notices.
    Anywhere else it does nothing."""
    loop: Loop | None = getattr(_current, "loop", None)
    if loop is not None:
        loop.leave()


def default_loop() -> Loop:
    """The process-wide loop, started on first use."""
    global _default
    with _default_lock:
        if _default is None or _default.stopping:
            _default = Loop().start()
        return _default


class SelectorDriver(DriverBase, IOHandler):
    """One connection on a :class:`Loop` (see the module docstring for who does what)."""

    # Slots: thousands of idle connections each keep one of these.
    __slots__ = (
        "_assembler",
        "_close_timer",
        "_closed_event",
        "_cond",
        "_drained",
        "_eof_pending",
        "_events",
        "_failed",
        "_handler",
        "_inbox",
        "_is_closed",
        "_messages",
        "_on_drained",
        "_out",
        "_out_size",
        "_paused",
        "_registered",
        "_runner",
        "_slow",
        "_state_lock",
        "_tls",
        "_torn_down",
        "_waiters",
        "limits",
        "loop",
        "on_ended",
    )

    def __init__(
        self, sock: Any, protocol: Protocol, log: ConnectionLog, loop: Loop, *, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.sock = sock
        self.protocol = protocol
        self._tag_logs(log)
        self.loop = loop
        self.limits = limits
        self._lock: threading.Lock = threading.Lock()  # the protocol and _out
        self._send_lock = threading.Lock()  # one message (maybe fragmented) at a time
        self._state_lock = threading.Lock()  # _runner, _inbox, _messages, _waiters, the assembler
        self._cond: threading.Condition | None = None  # created when someone waits in recv()
        self._drained: threading.Condition | None = None  # created when a sender waits
        self._closed_event: threading.Event | None = None
        self._pings: dict[bytes, PingWaiter] = {}
        self._handler: Handler | None = None
        self._runner: str = IDLE
        self._slow = False  # a callback blocked or overran: later ones run on a thread
        self._inbox: deque[_Item] | None = None  # created on first use: idle connections stay small
        self._messages = 0  # complete messages in the inbox
        self._waiters = 0  # threads waiting in recv()
        self._failed = False
        self._assembler = Assembler()
        self._out: list[Any] = []  # bytes, bytearray (small writes joined), memoryview (a partial send)
        self._out_size = 0  # bytes in _out
        self._eof_pending = False
        self._on_drained: list[Callable[[], object]] | None = None  # see when_drained()
        self._events = 0  # selector interest registered now
        self._registered = False
        self._paused = False
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._close_timer: Timer | None = None
        self._torn_down = False
        self._is_closed = False
        #: the door's: called once, after the handler's closed() returned
        self.on_ended: Callable[[], object] | None = None
        sock.setblocking(False)
        set_nodelay(sock)

    # -- state ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._is_closed

    @property
    def buffered_amount(self) -> int:
        return self._out_size

    def _queued_memory(self) -> int:
        """What _out costs: its bytes, and a charge per entry (``_lock`` held)."""
        return self._out_size + _ENTRY_COST * len(self._out)

    def wait_closed(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._is_closed:
                return True
            if self._closed_event is None:
                self._closed_event = threading.Event()
            event = self._closed_event
        self.loop.leave()
        return event.wait(timeout)

    def _new_event(self) -> threading.Event:
        return threading.Event()

    def _clock(self) -> float:
        return _monotonic()

    def _ping_pump(self) -> Callable[[PingWaiter, float | None], bool]:
        return self._wait_for_pong

    def _wait_for_pong(self, waiter: PingWaiter, timeout: float | None) -> bool:
        self.loop.leave()  # the leader resolves pings as it parses
        return waiter.wait_resolved(timeout)

    # -- starting ------------------------------------------------------------------------------

    def send_handshake(self, data: bytes) -> None:
        """Door: write the 101 ahead of any frame (before start())."""
        with self._lock:
            self._out.insert(0, data)
            self._out_size += len(data)
            self._write()

    def attach(self, handler: Handler) -> None:
        self._handler = handler

    def start(self) -> None:
        """Deliver the handler hooks from the loop: open first, then what arrives."""
        if self._handler is None:
            raise RuntimeError("no handler attached")
        self.loop.connections.add(self)
        self._enqueue([_OPEN])
        if self.loop.stopping:
            self.loop.call_soon(self._teardown)
        self.loop.call_soon(self._attach)

    def run(self) -> None:
        """start(), then wait in this thread until the connection has ended."""
        self.start()
        self.wait_closed()

    def _attach(self) -> None:
        """Leader: start reading; first deliver open and what came with the handshake."""
        if self._torn_down:
            return
        self._registered = True
        if self.limits.ping_interval:
            self.start_keepalive(self.limits.ping_interval, self.limits.ping_timeout)
        self._continue()

    # -- sending (any thread) ----------------------------------------------------------------------

    def _flush(self) -> None:
        """Queue what the protocol produced and write it — unless the leader is in the
        middle of this connection's batch: then the batch's end writes (``_lock`` held)."""
        writes = self.protocol.data_to_send()
        if writes:
            out = self._out
            for data in writes:
                size = len(data)
                if not size:  # SEND_EOF
                    self._eof_pending = True
                    continue
                self._out_size += size
                if size < _COALESCE and out:
                    last = out[-1]
                    if len(last) + size <= _COALESCE and type(last) is not memoryview:
                        if type(last) is not bytearray:
                            last = out[-1] = bytearray(last)
                        last += data
                        continue
                out.append(data)
        if self._out or self._eof_pending:
            loop = self.loop
            if loop._running is not self or threading.get_ident() != loop._leader:
                self._write()

    def _write(self) -> None:
        """Write as much as the socket takes now (``_lock`` held); the rest waits for WRITE."""
        out = self._out
        sock = self.sock
        while out:
            try:
                # Many buffers go out in one gathering write (no joining copy);
                # TLS sockets have no sendmsg.
                sent = sock.sendmsg(out[:512]) if len(out) > 1 and not self._tls else sock.send(out[0])
            except _RETRY:
                break
            except (OSError, ValueError):
                self._lost()
                return
            self._out_size -= sent
            while sent:
                first = out[0]
                size = len(first)
                if sent < size:
                    out[0] = memoryview(first)[sent:]
                    break
                sent -= size
                del out[0]
            else:
                continue
            break  # a partial send: the socket is full
        if not out and self._on_drained is not None:
            self._drained_now()
        if not out and self._eof_pending and not self._torn_down:
            self._eof_pending = False
            try:
                end_write_side(sock)
            except OSError:
                pass
        limit = self.limits.max_send_buffer // 2
        if self._drained is not None and self._queued_memory() <= limit:
            self._drained.notify_all()
        if self._paused and self._queued_memory() <= limit:
            self.loop.call_soon(self._resume)
        if bool(out) != bool(self._events & _WRITE) and self._registered:
            if threading.get_ident() == self.loop._leader:
                self._update_events()
            else:
                self.loop.call_soon(self._update_events)

    def when_drained(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once, when everything handed to this connection so far has
        gone to the kernel (at once if nothing waits now), or when the connection ends.

        It runs in whichever thread wrote, with the connection's lock held: it may only
        hand work elsewhere (the pub/sub hub queues a drain of its member on a thread).
        """
        with self._lock:
            if self._out and not self._torn_down:
                if self._on_drained is None:
                    self._on_drained = []
                self._on_drained.append(callback)
                return
        callback()

    def _drained_now(self) -> None:
        """``_out`` is empty or the connection ended (``_lock`` held): run when_drained()'s callbacks."""
        callbacks, self._on_drained = self._on_drained, None
        for callback in callbacks or ():
            callback()

    def _after_write(self) -> None:
        """A sender waits while more than max_send_buffer is queued (``_lock`` held)."""
        limit = self.limits.max_send_buffer
        if self._out_size + _ENTRY_COST * len(self._out) <= limit or self._torn_down:
            return
        self._write()  # a batch's replies may have piled up unwritten: try first
        if self._queued_memory() <= limit:
            return
        if threading.get_ident() == self.loop._leader:
            # The leader must not wait for a peer: give the loop away first.
            self._lock.release()
            try:
                self.loop.leave()
            finally:
                self._lock.acquire()
        while self._queued_memory() > limit and not self._torn_down:
            if self._drained is None:
                self._drained = threading.Condition(self._lock)
            self._drained.wait(1.0)
        if self._torn_down and self.protocol.state is not State.CLOSED:
            raise closed_error()

    def _lost(self) -> None:
        """A write failed: the peer is gone (``_lock`` held)."""
        self.protocol.receive_eof()
        self.protocol.data_to_send()
        self._out.clear()
        self._out_size = 0
        if self._drained is not None:
            self._drained.notify_all()
        self._drained_now()
        self.loop.call_soon(self._teardown)

    # -- closing ----------------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame; the loop finishes the closing handshake (never blocks)."""
        with self._lock:
            if self.protocol.state is not State.OPEN:
                return
            self.protocol.send_close(code, reason)
            self._flush()
        self.loop.call_soon(self._arm_close_timer)

    def abort(self) -> None:
        self.loop.call_soon(self._teardown)
        if threading.get_ident() != self.loop._leader:
            self.wait_closed(5.0)

    def start_keepalive(self, interval: float, timeout: float | None = None) -> None:
        """Ping ``interval`` seconds after the last pong; none within ``timeout`` fails with 1011."""
        wait = interval if timeout is None else timeout
        loop = self.loop

        def tick() -> None:
            if self._torn_down or self.protocol.state is not State.OPEN:
                return
            try:
                waiter = self._send_ping(None, None)
            except (ConnectionClosed, ValueError):
                return
            deadline = loop.call_later(wait, lambda: check(waiter))

            def answered() -> None:  # leader: the pong arrived (or the connection ended)
                deadline.cancel()
                if waiter.latency is not None:
                    loop.call_later(interval, tick)

            waiter.on_done = answered

        def check(waiter: PingWaiter) -> None:
            if self._torn_down or waiter.done:
                return
            with self._lock:
                self._fail_keepalive()
            self._teardown()

        loop.call_later(interval, tick)

    # -- pull style (any thread) ----------------------------------------------------------------------

    def recv_message(self, timeout: float | None = None) -> Message:
        """The next message; ConnectionClosed once closed; TimeoutError on timeout."""
        while True:
            item = self._take(timeout, frames=False)
            if isinstance(item, Message):
                return item

    def recv_frame(self, timeout: float | None = None) -> Frame:
        """The next frame of any kind, unassembled (low-level access)."""
        while True:
            item = self._take(timeout, frames=True)
            if isinstance(item, Frame):
                return item

    def _take(self, timeout: float | None, *, frames: bool) -> Message | Frame | None:
        """Wait for the next frame in the inbox; pull-style readers take it there."""
        self.loop.leave()  # waiting on the loop thread would stop the loop
        deadline = None if timeout is None else _monotonic() + timeout
        pong: bytes | None = None
        with self._state_lock:
            if self._cond is None:
                self._cond = threading.Condition(self._state_lock)
            self._waiters += 1
            try:
                while True:
                    inbox = self._inbox
                    if inbox:
                        head = inbox[0]
                        if isinstance(head, Frame):
                            inbox.popleft()
                            frame = head
                            break
                        if head is _CLOSE:
                            raise self.protocol.close_exc()
                    elif self._is_closed:
                        raise self.protocol.close_exc()
                    # Empty, or open() not delivered yet: its runner goes first.
                    if deadline is None:
                        self._cond.wait()
                    else:
                        left = deadline - _monotonic()
                        if left <= 0:
                            raise TimeoutError("no message within the timeout")
                        self._cond.wait(left)
            finally:
                self._waiters -= 1
                if not self._waiters and self._inbox and self._runner is IDLE:
                    self.loop.call_soon(self._continue)  # what is left is the callbacks'
            result: Message | Frame | None = None
            if frame.fin:  # a message's last frame, or a control frame: both counted in _enqueue
                self._messages -= 1
            if frame.opcode < 8:
                result = frame if frames else self._assembler.feed(frame)
            else:
                if frame.opcode is Opcode.PONG:
                    pong = frame.data
                if frames:  # recv_frame() sees control frames too, as on the blocking driver
                    result = frame
            if self._paused and self._messages <= self.limits.max_queue // 2:
                self.loop.call_soon(self._resume)
        if pong is not None and self._handler is not None:
            self._handler.handle_pong(pong)
        return result

    # -- delivering callbacks ------------------------------------------------------------------------

    def _enqueue(self, items: Sequence[_Item]) -> bool:
        """Queue items for the handler; True if the runner is free (the leader may run them)."""
        with self._state_lock:
            inbox = self._inbox
            if inbox is None:
                inbox = self._inbox = deque()
            inbox.extend(items)
            for item in items:
                # Control frames are always final (RFC 6455 §5.5): they count as messages, so a
                # flood of pings or pongs for a busy handler is bounded by max_queue too.
                if type(item) is Frame and item.fin:
                    self._messages += 1
            if self._waiters and self._cond is not None:
                self._cond.notify_all()
            if self._messages > self.limits.max_queue:
                self._paused = True  # the leader stops reading this peer until it drains
            return self._runner is IDLE

    def _pop(self) -> tuple[_Item, Message | None] | None:
        """The next item for the callbacks, or None: empty, or left to a recv() waiter
        (``_state_lock`` held). Data frames come back assembled when they end a message."""
        inbox = self._inbox
        if not inbox:
            return None
        item = inbox[0]
        if self._waiters and type(item) is Frame:
            return None
        inbox.popleft()
        message = None
        if type(item) is Frame:
            if item.opcode < 8:
                message = self._assembler.feed(item)
            if item.fin:  # counted in _enqueue, control frames included
                self._messages -= 1
                if self._paused and self._messages <= self.limits.max_queue // 2:
                    self.loop.call_soon(self._resume)
        return item, message

    def _drain_inline(self) -> bool:
        """Leader: run this connection's queued callbacks here, one at a time.

        Returns False if the loop moved to another thread meanwhile: this thread
        then owned the connection, delivered the rest, and must stop leading.
        (Loop.run_callback's bookkeeping is written out here: this is the path
        of every message.)
        """
        loop = self.loop
        state_lock = self._state_lock
        leader_lock = loop._leader_lock
        me = threading.get_ident()
        while True:
            if not self._inbox and self._runner is not OWNED:
                with state_lock:
                    if not self._inbox:
                        if self._runner is INLINE:
                            self._runner = IDLE
                        return True
                continue  # an item arrived meanwhile: take it below
            with state_lock:
                if self._runner is OWNED:
                    return True
                if self._slow:
                    # Its callbacks block: they run on a thread, not on the loop's.
                    if self._inbox and not (self._waiters and type(self._inbox[0]) is Frame):
                        self._runner = OWNED
                        loop.spares.run(self._own)
                    return True
                popped = self._pop()
                if popped is None:
                    self._runner = IDLE
                    return True
                self._runner = INLINE
            loop._running = self
            loop._serial += 1
            loop._in_callback = True  # before looking at _watch_resting: see Loop._watch
            if loop._watch_resting:
                loop._watch_wake.set()
            try:
                self._deliver(*popped)
            finally:
                with leader_lock:
                    loop._in_callback = False
                    loop._running = None
                    leading = me == loop._leader
            if not leading:
                self._own()
                return False

    def _become_owned(self) -> None:
        """The leader running our callback is leaving the loop (``Loop._leader_lock`` held)."""
        with self._state_lock:
            self._runner = OWNED
            self._slow = True

    def _own(self) -> None:
        """Owner thread: deliver what queued while the callback ran, then let go."""
        while True:
            with self._state_lock:
                popped = self._pop()
                if popped is None:
                    self._runner = IDLE
                    break
            self._deliver(*popped)
        with self._lock:
            if self._out or self._eof_pending:
                self._write()
        # Items queued between our last look and letting go are the leader's now.
        self.loop.call_soon(self._continue)

    def _continue(self) -> None:
        """Leader: deliver what is queued, parse what is buffered, write, read again."""
        if not self._drain_inline():
            return
        if self._torn_down:
            return
        if self._parse() is False:
            return
        self._end_batch()

    def _deliver(self, item: _Item, message: Message | None) -> None:
        """Run one item's hook (in whichever thread runs this connection's callbacks)."""
        handler = self._handler
        assert handler is not None
        if item is _CLOSE:
            try:
                handler.handle_close()
            finally:
                ended = self.on_ended
                if ended is not None:
                    self.on_ended = None
                    ended()
            return
        if self._failed:
            return
        if item is _OPEN:
            ok = handler.handle_open()
        elif message is not None:
            ok = handler.handle_message(message)
        elif type(item) is Frame and item.opcode is Opcode.PONG:
            ok = handler.handle_pong(item.data)
        else:
            return  # a fragment (the message is not complete yet), a ping or the close frame
        if not ok:
            self._failed = True

    # -- reading (leader) ------------------------------------------------------------------------------

    def on_io(self, mask: int) -> bool:
        if mask & _WRITE:
            with self._lock:
                self._write()
        if mask & _READ and not self._paused:
            return self._on_readable()
        return True

    def on_error(self) -> None:
        self._teardown()

    def _on_readable(self) -> bool:
        sock = self.sock
        loop = self.loop
        protocol = self.protocol
        buffer = loop.buffer
        for _ in range(16):  # TLS may hold more decrypted bytes than one read returns
            try:
                n = sock.recv_into(buffer)
            except _RETRY:
                break
            except (OSError, ValueError):
                n = 0  # reset: the same as EOF here
            with self._lock:
                if n:
                    protocol.receive_data(loop.view[:n])
                else:
                    protocol.receive_eof()
            if self._parse() is False:
                return False
            if not n or self._paused or not (self._tls and sock.pending()):
                break
        self._end_batch()
        return True

    def _parse(self) -> bool | None:
        """Leader: take parsed frames batch by batch and run their callbacks.

        False: the loop moved to another thread meanwhile (stop leading).
        """
        protocol = self.protocol
        while not self._paused:
            with self._lock:
                frames = protocol.events_received()
                if not frames:
                    return True
                controls = False
                for frame in frames:
                    if frame.opcode >= 8:
                        controls = True
                        break
                if controls:
                    self._flush()  # pongs and close answers, in order
                    if self._queued_memory() > self.limits.max_send_buffer:
                        # The peer does not read its pongs: parse no further (the rest of
                        # this read waits in the protocol's buffer) until they drain.
                        self._paused = True
            if controls:
                for frame in frames:
                    if frame.opcode is Opcode.PONG:
                        self._resolve_pings(frame.data)
            # All frames go to the inbox, control frames too (already answered above): recv_frame()
            # returns them as the blocking driver's does; the callbacks skip pings and the close.
            batch: Sequence[_Item] = frames
            if batch and self._enqueue(batch) and not self._drain_inline():
                return False
            limit = protocol.max_pending
            if limit is None or len(frames) < limit:
                return True  # the parser stopped short of its bound: nothing more is parsed yet
        return None

    def _end_batch(self) -> None:
        """Leader: write the batch's replies in one go, then listen for what comes next."""
        protocol = self.protocol
        state = protocol.state
        if self._out or self._eof_pending or state is not State.OPEN:
            with self._lock:
                self._flush()  # and what the protocol produced by itself (a failure's close frame)
        if self._paused or self._out or self._events != _READ:
            self._update_events()
        if state is State.OPEN:
            return
        if state is State.CLOSED and not protocol.events_pending():
            self._teardown()
        elif state is State.CLOSING:
            self._arm_close_timer()

    def _resume(self) -> None:
        limits = self.limits
        if (
            self._paused
            and self._messages <= limits.max_queue // 2
            and self._queued_memory() <= limits.max_send_buffer // 2
            and not self._torn_down
        ):
            self._paused = False
            self._continue()

    def _update_events(self) -> None:
        """Leader: register what we want to hear about."""
        if self._torn_down or not self._registered:
            return
        if not self._paused and self._queued_memory() > self.limits.max_send_buffer:
            # The peer does not read what we send (pongs to its pings, say): stop
            # reading it, so TCP pushes back instead of our buffer growing.
            self._paused = True
        events = (0 if self._paused else _READ) | (_WRITE if self._out or self._eof_pending else 0)
        if events == self._events:
            return
        if self._events == 0:
            self.loop.register(self.sock, events, self)
        elif events == 0:
            self.loop.unregister(self.sock)
        else:
            self.loop.modify(self.sock, events, self)
        self._events = events

    def _arm_close_timer(self) -> None:
        timeout = self.limits.close_timeout
        if self._close_timer is None and timeout is not None and not self._torn_down:
            self._close_timer = self.loop.call_later(timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        if not self._torn_down:
            self._log.debug("peer did not finish the closing handshake in time")
            self._teardown()

    def _teardown(self) -> None:
        """Loop thread (or Loop.stop): release everything, then tell the handler, after
        whatever it has queued."""
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
            self._drained_now()
            self._cancel_pings()
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._events:
            self.loop.unregister(self.sock)
            self._events = 0
        try:
            self.sock.close()
        except OSError:
            pass
        self.loop.connections.discard(self)
        with self._lock:
            self._is_closed = True
            if self._closed_event is not None:
                self._closed_event.set()
        if self._handler is None:
            ended = self.on_ended
            if ended is not None:
                self.on_ended = None
                ended()
            return
        if self._enqueue([_CLOSE]):
            if self.loop.is_leader():
                self._drain_inline()
            else:
                self._own()
