"""One ASGI WebSocket as a :class:`~ws4web.drivers.Driver`: the server frames, this driver maps ``websocket.*`` events.

Theory of operation
===================

The loop. The ASGI server calls the door on its event loop; the door's task
runs :meth:`ASGIDriver.serve`, the only reader of ``receive()``. It takes one
event at a time and delivers it at once; what the hook sent is written with
``send()`` before the next ``receive()``, as a plain ASGI endpoint does, so a
peer that does not read is not read either. Other threads never call the ASGI
callables: they queue in the *outbox* and the loop writes it.

Who runs a hook — :data:`RUNNERS`, the legal values of ``ASGIDriver._runner``,
and :data:`TRANSITIONS`. An ``async def`` callback is awaited by the door's
task. A plain one runs *inline* on the loop thread, no thread hop, watched by
the :class:`Watchdog` — except ``opened()``, where pull style lives, which runs
in a *thread* once; and except every plain callback of a class found
*blocking*, which from then on runs in a thread. A class is found blocking
when the watchdog finds one of its inline callbacks holding the loop thread
for a ``budget`` of its own time (on the CPU or asleep — not the time the
system gave other threads), or when one calls on the loop thread a method that
would wait (``recv()``, ``wait_closed()``). One WARNING names the class.
The callback that overran held the loop for as long as it ran: that is the
price of quick callbacks without a thread hop (docs/adapters-asgi.md).

Threads are spares (:class:`~ws4web.concurrency.Spares`), held only while a connection has hooks
to deliver: an idle connection holds none. Items reach the *inbox* in order
(open, messages, close) and exactly one runner delivers a connection's hooks
at a time, so a handler sees them in order.

Bounds. While a thread runs the hooks, messages wait in the inbox; at
``max_queue`` of them the door's task stops calling ``receive()`` until it
drains to half (the server then stops reading the peer). The outbox counts
bytes plus a charge per entry: past ``max_send_buffer`` a sender in a thread
waits, ``asend()`` awaits room, and any other sender on the loop thread, which
must not wait, gets :class:`~ws4web.exceptions.SendQueueFull`. Only an inline
callback's own replies may pass the bound: they are written before the next
``receive()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..concurrency import Spares
from ..exceptions import ConnectionClosed, ConnectionClosedError, SendQueueFull, closed_exception
from ..frames import Close, CloseCode, Frame, Opcode
from ..logs import ConnectionLog
from ..messages import BinaryMessage, Data, Message, TextMessage, iter_fragments
from ..protocol import State
from . import DEFAULT_LIMITS, Handler, Limits
from .base import PingWaiter

__all__ = [
    "AWAIT",
    "INLINE",
    "RUNNERS",
    "SKIP",
    "THREAD",
    "TRANSITIONS",
    "ASGIDriver",
    "AsyncCallbacks",
    "Plan",
    "UnsupportedByASGI",
    "Watchdog",
]

logger = logging.getLogger("ws4web.drivers.asgi")

#: An ASGI event: a dict whose values are of many types (the ASGI spec's, not ours).
Event = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Event]]
Send = Callable[[Event], Awaitable[None]]

# How a hook runs (Plan fields).
SKIP: Final = "skip"  # not overridden: nothing to call
INLINE: Final = "inline"  # plain def, on the loop thread (in a thread once the class is blocking)
THREAD: Final = "thread"  # plain def, in a thread
AWAIT: Final = "await"  # async def, awaited on the loop

IDLE: Final = "idle"

#: Who runs a connection's hooks.
RUNNERS = {
    IDLE: "the door's task runs the next one: inline, or awaited",
    THREAD: "a spare thread delivers the inbox, in order, then lets go",
}

#: (runner, event) -> next runner, and who makes the move.
TRANSITIONS = {
    (IDLE, "a hook for a thread is due (plain opened(), a blocking class)"): (THREAD, "the door's task"),
    (THREAD, "inbox empty, or left to a recv() waiter"): (IDLE, "the thread, which goes back to the spares"),
}

# What an outbox entry costs beyond its payload (dict, tuple, deque slot): charged
# against max_send_buffer so that many tiny messages count as memory.
_ENTRY_COST = 64
#: The watchdog looks in on its loop every LOOKS budgets (see Watchdog).
LOOKS = 5
# Enum members read as module globals: State.OPEN costs a class attribute lookup each time.
_CONNECTING, _OPEN, _CLOSING, _CLOSED = State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED
_TEXT = Opcode.TEXT
_monotonic = time.monotonic


class UnsupportedByASGI(NotImplementedError):
    """A handler feature that ASGI cannot carry (docs/adapters-asgi.md has the table)."""

    def __init__(self, feature: str, hint: str = "") -> None:
        text = f"ws4web ASGI adapter: {feature} cannot be carried over ASGI"
        super().__init__(f"{text}; {hint}" if hint else text)
        self.feature = feature


@dataclass
class Plan:
    """How the hooks of one handler class run; the door builds one per class, its connections share it.

    ``open`` is SKIP, THREAD or AWAIT; ``message`` and ``close`` are INLINE or
    AWAIT. ``budget``: seconds an inline callback may hold the loop thread.
    """

    name: str
    open: str = SKIP
    message: str = INLINE
    close: str = INLINE
    budget: float = 0.01
    #: True once a plain callback of this class blocked the loop: they all run in threads now.
    blocking: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def found_blocking(self, why: str) -> None:
        """Move this class's plain callbacks to threads, saying so once."""
        with self._lock:
            if self.blocking:
                return
            self.blocking = True
        logger.warning("%s %s: its plain callbacks run in threads from now on", self.name, why)


@dataclass(frozen=True)
class AsyncCallbacks:
    """A handler's ``async def`` callbacks, bound (the door gives those its Plan awaits)."""

    opened: Callable[[], Awaitable[object]] | None = None
    received_message: Callable[[Message], Awaitable[object]] | None = None
    closed: Callable[[int, str], Awaitable[object]] | None = None


#: The threads that run hooks off the loop (plain opened(), blocking classes).
THREADS = Spares("ws4web-asgi")


class Watchdog:
    """Notices an inline callback that holds its event loop thread past its plan's budget.

    One per loop, while the loop has connections (``watching()``). The door's
    task marks a callback's start (``serial``, ``plan``) and end (``plan =
    None``): attribute writes, no wake-up per message. This thread looks in
    every ``LOOKS`` budgets; when it finds a callback running, it lets go
    of the GIL for one budget and looks again: a quick callback has ended
    meanwhile, even one that had to wait for the GIL this thread took to look
    (Python makes the holder wait until the asker runs, which on a busy
    machine takes a while). One still there after a budget of its own time
    (on the CPU or asleep: where Linux tells, in ``/proc/.../schedstat``, the
    time the loop thread waited for a CPU does not count) is blocking.

    Looking in rarely keeps this thread's cost per message near nothing (each
    look is a thread switch); the price is that a callback that blocks for
    less than a few budgets may stall the loop a few times before it is seen.
    It rests after a quiet second, and ends after a quiet second without
    connections.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.serial = 0
        #: the plan of the callback running on the loop thread now; None between callbacks
        self.plan: Plan | None = None
        self.resting = False
        self.wake = threading.Event()
        self.users = 0  # connections being served (under _watchdogs_lock)
        self._loop = weakref.ref(loop)
        self._schedstat = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        self._thread = threading.Thread(target=self._watch, name="ws4web-asgi-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            fd: int | None = os.open(self._schedstat, os.O_RDONLY)
        except OSError:
            fd = None
        try:
            self._watch_loop(fd)
        finally:
            if fd is not None:
                os.close(fd)

    def _retire(self) -> bool:
        """Resting and quiet: end if the loop has no connection left (or is gone)."""
        with _watchdogs_lock:
            loop = self._loop()
            if self.users and loop is not None and not loop.is_closed():
                return False
            if loop is not None and _watchdogs.get(loop) is self:
                del _watchdogs[loop]
            return True

    def _watch_loop(self, fd: int | None) -> None:
        period = LOOKS * Plan.budget
        quiet = 0.0  # seconds without a callback seen
        done = -1  # the last callback found blocking
        while True:
            if quiet > 1.0:
                # Resting is announced before looking at plan, and the door's task sets
                # plan before looking at resting: one sees the other.
                self.resting = True
                while self.plan is None and not self.wake.wait(1.0):
                    if self._retire():
                        return
                self.wake.clear()
                self.resting = False
                quiet = 0.0
            else:
                self.wake.wait(period)
            plan = self.plan
            if plan is None:
                quiet += period
                continue
            quiet = 0.0
            period = LOOKS * plan.budget
            serial = self.serial
            if serial == done:
                continue
            start = _own_clock(fd)
            time.sleep(plan.budget)  # without the GIL: a quick callback ends now
            if self.serial != serial or self.plan is not plan:
                continue
            if _own_clock(fd)[0] - start[0] < plan.budget / 2:
                continue  # it waited for a CPU: look again later
            held = (_monotonic() - start[1]) * 1000
            plan.found_blocking(
                f"held the event loop thread for over {held:.0f} ms (budget {plan.budget * 1000:.0f} ms)"
            )
            done = serial


def _own_clock(fd: int | None) -> tuple[float, float]:
    """(seconds the loop thread was not waiting for a CPU, now): ``now`` minus its run-queue
    wait where Linux tells (``fd``: its schedstat), ``now`` itself elsewhere."""
    now = _monotonic()
    if fd is None:
        return now, now
    try:
        waited = int(os.pread(fd, 128, 0).split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return now, now
    return now - waited, now


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = weakref.WeakKeyDictionary()
_watchdogs_lock = threading.Lock()


def watching(loop: asyncio.AbstractEventLoop) -> Watchdog:
    """The watchdog of ``loop`` for one more connection (call on the loop's thread; then :func:`unwatch`)."""
    with _watchdogs_lock:
        watch = _watchdogs.get(loop)
        if watch is None:
            watch = _watchdogs[loop] = Watchdog(loop)
        watch.users += 1
        return watch


def unwatch(watch: Watchdog) -> None:
    """One connection fewer for ``watch``."""
    with _watchdogs_lock:
        watch.users -= 1


class _Open:
    """Inbox item: deliver ``handle_open``."""


class _Close:
    """Inbox item: deliver the close (the connection has ended)."""


_OPENED = _Open()
_ENDED = _Close()
_Item = Message | _Open | _Close


class ASGIDriver:
    """One ASGI WebSocket connection (see the module docstring for who does what).

    Built on the event loop by the door, which then :meth:`accept` s and awaits
    :meth:`serve` in the ASGI call. ``on_ended`` (the door's) is called once,
    after the handler's ``closed()``.
    """

    def __init__(
        self,
        receive: Receive,
        send: Send,
        log: ConnectionLog,
        *,
        plan: Plan,
        limits: Limits = DEFAULT_LIMITS,
        callbacks: AsyncCallbacks = AsyncCallbacks(),
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.limits = limits
        self.plan = plan
        #: the door's: called once, after the handler's closed() returned
        self.on_ended: Callable[[], object] | None = None
        self._loop_thread = threading.get_ident()
        self._receive = receive
        self._send = send
        self._log = log
        self._callbacks = callbacks
        self._handler: Handler | None = None
        self._task: asyncio.Task[Any] | None = None
        self._background: asyncio.Task[None] | None = None  # the last writer or close task (held: not collected)
        self._state = _CONNECTING
        self._close_code: int = CloseCode.ABNORMAL_CLOSURE
        self._close_reason = ""
        self._sent_code: int | None = None
        self._failed = False  # a hook raised: deliver nothing more but the close
        self._in_hook = False  # an inline callback of this connection runs now
        self._interrupted = False  # we cancelled our own task (abort, close timeout)
        self._close_timer: asyncio.TimerHandle | None = None
        self._closed_event = threading.Event()
        self._closed_waiter: asyncio.Future[None] | None = None
        # Sending: _lock guards the outbox, its counters, _state and _writing.
        self._lock = threading.Lock()
        self._drained: threading.Condition | None = None  # threads waiting for room
        self._out: deque[tuple[Event, int]] = deque()
        self._out_size = 0  # payload bytes in _out (buffered_amount)
        self._queued = 0  # entries ever queued
        self._written = 0  # entries ever written
        self._writing = False  # a coroutine is writing the outbox (set on the loop thread only)
        self._replies: list[Event] = []  # an inline callback's replies, when nothing else was queued
        self._kicked = False  # a writer is being started
        self._seq_waiters: list[tuple[int, asyncio.Future[None]]] = []  # coroutines waiting for a write
        self._room_waiters: list[asyncio.Future[None]] = []  # asend() waiting for room
        # Delivering: _state_lock guards the runner, the inbox and its waiters.
        self._state_lock = threading.Lock()
        self._runner = IDLE
        self._inbox: deque[_Item] = deque()
        self._messages = 0  # Messages in the inbox
        self._waiters = 0  # threads waiting in recv()
        self._cond: threading.Condition | None = None
        self._room: asyncio.Future[None] | None = None  # the door's task waits for the inbox to drain
        self._ended = False  # the close is queued or delivered: no more items

    # -- state ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._log.conn_id

    @property
    def log(self) -> ConnectionLog:
        return self._log

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        """True once the server reported the end (or we gave up waiting for it)."""
        return self._state is _CLOSED

    @property
    def close_code(self) -> int:
        """The code of ``websocket.disconnect``; 1006 when there was none."""
        return self._close_code

    @property
    def close_reason(self) -> str:
        return self._close_reason

    @property
    def buffered_amount(self) -> int:
        return self._out_size

    def attach(self, handler: Handler) -> None:
        self._handler = handler

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _close_exc(self) -> ConnectionClosed:
        return closed_exception(self._close_code, self._close_reason, self._sent_code)

    def _blocking_call(self, what: str) -> RuntimeError:
        """``what`` was called on the loop thread, where it would wait forever."""
        if not self._in_hook:  # an async def callback, or other code on the loop
            return RuntimeError(f"{what} would block the event loop; from a coroutine, await asend()/aclose()")
        self.plan.found_blocking(f"called {what} on the event loop thread")
        return RuntimeError(
            f"{what} would block the event loop; {self.plan.name}'s plain callbacks run in threads from now on"
        )

    # -- running (the door) -----------------------------------------------------------------

    def start(self) -> None:
        raise RuntimeError("under ASGI the door runs the connection (ASGIDriver.serve)")

    def run(self) -> None:
        """Wait, in a thread, until the connection has ended (the door delivers the hooks)."""
        self.wait_closed()

    async def accept(self, subprotocol: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Send ``websocket.accept``; the connection is open."""
        event: Event = {"type": "websocket.accept", "subprotocol": subprotocol}
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        if extra:  # ASGI spec 2.1+; only sent when there are some
            event["headers"] = extra
        await self._send(event)
        self._state = _OPEN

    async def serve(self) -> None:
        """The door's task: deliver open, then each message, until the connection ends; then the close."""
        task = self._task = asyncio.current_task()
        watch = watching(self.loop)
        try:
            try:
                await self._open()
                await self._read(watch)
            except asyncio.CancelledError:
                if not self._interrupted:
                    raise
                self._interrupted = False
                if sys.version_info >= (3, 11) and task is not None:
                    task.uncancel()
            self._end(CloseCode.ABNORMAL_CLOSURE, "")  # (when the loop ended without a disconnect)
            await self._deliver_close(watch)
        except BaseException:  # the server cancelled the app (its shutdown), or a bug
            self._end(CloseCode.ABNORMAL_CLOSURE, "")
            self._deliver_close_later()
            raise
        finally:
            unwatch(watch)

    async def _open(self) -> None:
        how = self.plan.open
        if how is SKIP:
            return
        if how is AWAIT:
            if not await self._awaited(self._callbacks.opened):
                self._failed = True
            await self._flush()
        else:
            self._to_thread(_OPENED)

    async def _read(self, watch: Watchdog) -> None:
        """Read events until the connection ends; deliver each message as it comes."""
        receive = self._receive
        send = self._send
        plan = self.plan
        on_message = self._callbacks.received_message if plan.message is AWAIT else None
        handler = self._handler
        assert handler is not None
        limit = self.limits.max_message_size
        max_queue = self.limits.max_queue
        while self._state is not _CLOSED:
            if self._messages >= max_queue:
                await self._wait_for_room()
                continue
            event = await receive()
            kind = event["type"]
            if kind == "websocket.receive":
                if self._state is not _OPEN or self._failed:
                    continue  # after our close (or a failed hook) nothing received is wanted
                text = event.get("text")
                message = BinaryMessage(event.get("bytes") or b"") if text is None else TextMessage(text)
                if limit is not None and len(message.data) > limit:
                    # RFC 6455 §7.4.1: 1009 for a message too big to process. The server
                    # buffered it whole first: it holds the real bound (its max size).
                    self._log.info("message of %d bytes over max_message_size: closing with 1009", len(message.data))
                    self.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
                    await self._flush()
                    continue
                if (
                    plan.message is INLINE
                    and self._runner is IDLE
                    and not plan.blocking
                    and not self._inbox
                    and not self._waiters
                ):
                    # The fast path: the callback right here, under the watchdog's eye.
                    watch.serial += 1
                    watch.plan = plan
                    if watch.resting:
                        watch.wake.set()
                    self._in_hook = True
                    try:
                        ok = handler.handle_message(message)
                    finally:
                        self._in_hook = False
                        watch.plan = None
                    if not ok:
                        self._failed = True
                    replies = self._replies
                    if replies:
                        # Its replies, straight to the server: nobody else was writing when
                        # they were queued. (Threads read _writing under the lock, and look
                        # again after queueing: claiming and releasing it here needs none.
                        # Only this task's inline callbacks add to the list.)
                        self._writing = True
                        for reply in replies:
                            try:
                                await send(reply)
                            except BaseException as exc:
                                replies.clear()
                                self._send_failed(exc)
                                break
                        else:
                            replies.clear()
                            self._writing = False
                            if self._out:  # queued by others meanwhile
                                self._writing = True
                                await self._write_out()
                    elif self._out or self._writing:
                        await self._flush()
                elif on_message is not None and self._runner is IDLE and not self._inbox and not self._waiters:
                    try:
                        await on_message(message)
                    except ConnectionClosed:
                        pass  # the peer left while the callback was sending: not the handler's fault
                    except Exception:
                        self._hook_raised()
                    if self._out or self._writing:
                        await self._flush()
                else:
                    self._to_thread(message)
            elif kind == "websocket.disconnect":
                self._end(int(event.get("code") or CloseCode.NO_STATUS_RCVD), str(event.get("reason") or ""))
            else:
                self._log.debug("ignoring ASGI event %r", kind)

    async def _wait_for_room(self) -> None:
        """The inbox is full: wait until the thread drains it to half (or the connection ends)."""
        with self._state_lock:
            if self._messages < self.limits.max_queue:
                return
            room = self._room = self.loop.create_future()
        await room

    def _room_made(self) -> None:
        """A thread took a message (``_state_lock`` held)."""
        self._messages -= 1
        room = self._room
        if room is not None and self._messages <= self.limits.max_queue // 2:
            self._room = None
            self._call_soon(_resolve, room)

    async def _awaited(self, callback: Callable[..., Awaitable[object]] | None, *args: object) -> bool:
        """Await an ``async def`` callback; if it raises, log it, close with 1011 and return False."""
        if callback is None:
            return True
        try:
            await callback(*args)
            return True
        except ConnectionClosed:
            return True  # the peer left while the callback was sending: not the handler's fault
        except Exception:
            self._hook_raised()
            return False

    def _hook_raised(self) -> None:
        """An ``async def`` callback raised (we are in its ``except``): log it, close with 1011."""
        self._failed = True
        self._log.exception("handler %s raised; closing with 1011", self.plan.name)
        self.close(CloseCode.INTERNAL_ERROR, "internal error")

    # -- the close hook ---------------------------------------------------------------------

    async def _deliver_close(self, watch: Watchdog) -> None:
        """The connection has ended: the handler's closed(), after whatever is queued for it."""
        how = self.plan.close
        with self._state_lock:
            to_thread = self._runner is not IDLE or bool(self._inbox) or (how is INLINE and self.plan.blocking)
            if not to_thread:
                if self._ended:
                    return
                self._ended = True
        if to_thread:
            self._to_thread(_ENDED)
            return
        try:
            if how is AWAIT:
                await self._awaited_close()
            else:
                handler = self._handler
                assert handler is not None
                watch.serial += 1
                watch.plan = self.plan
                if watch.resting:
                    watch.wake.set()
                try:
                    handler.handle_close()
                finally:
                    watch.plan = None
        finally:
            self._ended_hook()

    def _deliver_close_later(self) -> None:
        """The door's task is going away (cancelled, or a bug): deliver the close without it."""
        with self._state_lock:
            if self._ended and self._runner is IDLE:
                return
        if self.plan.close is AWAIT and self._runner is IDLE and not self._ended and not self.loop.is_closed():
            self._ended = True

            async def close_hook() -> None:
                try:
                    await self._awaited_close()
                finally:
                    self._ended_hook()

            self._background = self.loop.create_task(close_hook())
            return
        self._to_thread(_ENDED)

    async def _awaited_close(self) -> None:
        callback = self._callbacks.closed
        if callback is None:
            return
        self._log.debug("closed: %d %s", self._close_code, self._close_reason)
        try:
            await callback(self._close_code, self._close_reason)
        except Exception:
            self._log.exception("closed() of %s raised", self.plan.name)

    def _ended_hook(self) -> None:
        ended = self.on_ended
        if ended is not None:
            self.on_ended = None
            ended()

    # -- threads -------------------------------------------------------------------------------

    def _to_thread(self, item: _Item) -> None:
        """Queue ``item`` for a thread; start one if none is delivering (loop thread)."""
        with self._state_lock:
            if self._ended:
                return
            if item is _ENDED:
                self._ended = True
            self._inbox.append(item)
            if type(item) is not _Open and type(item) is not _Close:
                self._messages += 1
            if self._cond is not None and self._waiters:
                self._cond.notify_all()
                if item is not _ENDED:
                    return  # a recv() waiter takes it
            if self._runner is not IDLE:
                return
            self._runner = THREAD
        THREADS.run(self._run_thread)

    def _run_thread(self) -> None:
        """A spare thread: deliver the inbox in order, then let go."""
        while True:
            with self._state_lock:
                inbox = self._inbox
                if not inbox or (self._waiters and isinstance(inbox[0], Message)):
                    self._runner = IDLE
                    return
                item = inbox.popleft()
                if isinstance(item, Message):
                    self._room_made()
            self._deliver_in_thread(item)

    def _deliver_in_thread(self, item: _Item) -> None:
        handler = self._handler
        assert handler is not None
        if item is _ENDED:
            try:
                if self.plan.close is AWAIT:
                    self._await_from_thread(self._awaited_close())
                else:
                    handler.handle_close()
            finally:
                self._ended_hook()
            return
        if self._failed:
            return
        if item is _OPENED:
            ok = handler.handle_open()
        elif isinstance(item, Message):
            if self.plan.message is AWAIT:
                ok = self._await_from_thread(self._awaited(self._callbacks.received_message, item)) is True
            else:
                ok = handler.handle_message(item)
        else:  # pragma: no cover - no other items
            return
        if not ok:
            self._failed = True

    def _await_from_thread(self, coro: Awaitable[Any]) -> object:
        """Run an ``async def`` hook on the loop from a runner thread, in turn, and wait for it."""

        async def run() -> object:
            result = await coro
            await self._flush()
            return result

        job = run()
        try:
            future = asyncio.run_coroutine_threadsafe(job, self.loop)
        except RuntimeError:  # the loop is closed
            job.close()
            if inspect.iscoroutine(coro):
                coro.close()
            return False
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if self.loop.is_closed():  # stopped without cancelling its tasks: nothing will come
                    return False
            except (concurrent.futures.CancelledError, asyncio.CancelledError, ConnectionClosed):
                return False

    # -- sending ---------------------------------------------------------------------------------

    def send_message(self, data: Data, binary: bool | None = None, *, compress: bool = True) -> None:
        """Queue one message (the server compresses, or not, on its own).

        A thread waits while the outbox is past ``max_send_buffer``; on the loop
        thread nothing waits (see the module docstring for the bound).
        """
        event, size = _send_event(data, binary)
        if self._in_hook and not self._out and not self._writing and threading.get_ident() == self._loop_thread:
            # An inline callback's reply, nothing else queued: the door's task sends it
            # right after the callback, before the next receive().
            if self._state is not _OPEN:
                raise self._close_exc()
            self._replies.append(event)
            return
        self._enqueue(event, size)

    def send_fragments(
        self, chunks: Iterable[str | bytes], binary: bool | None = None, *, compress: bool = True
    ) -> None:
        """ASGI has no fragments: the chunks are joined and sent as one message, once all are there."""
        text: bool | None = None
        parts: list[bytes] = []
        for opcode, payload, _fin in iter_fragments(chunks, binary):
            if text is None:
                text = opcode is Opcode.TEXT
            parts.append(payload)
        self.send_message(b"".join(parts), binary=not text)

    def send_prepared(self, message: Frame, wire: bytes) -> None:
        self.send_message(message.data, message.opcode is not Opcode.TEXT)

    def send_frame(self, frame: Frame) -> None:
        raise UnsupportedByASGI("send_frame (raw frames)", "send messages with send()")

    def ping(self, data: bytes | None = None) -> PingWaiter:
        raise UnsupportedByASGI(
            "ping() and its latency",
            "the server sends keepalive pings itself (uvicorn --ws-ping-interval, hypercorn websocket_ping_interval)",
        )

    def pong(self, data: bytes = b"") -> None:
        raise UnsupportedByASGI("pong()", "the server answers pings by itself")

    def start_keepalive(self, interval: float, timeout: float | None = None) -> None:
        raise UnsupportedByASGI("keepalive pings (ping_interval)", "configure the server's own keepalive")

    def _enqueue(self, event: Event, size: int, *, closing: bool = False) -> bool:
        """Queue an event for the writer, in call order (any thread); False for a close while not open."""
        on_loop = threading.get_ident() == self._loop_thread
        own = on_loop and self._in_hook  # an inline callback's: written before the next receive()
        limit = self.limits.max_send_buffer
        with self._lock:
            if closing:
                if self._state is not _OPEN:
                    return False
                self._state = _CLOSING  # from now on send() raises, as in the core
            elif self._state is not _OPEN:
                raise self._close_exc()
            elif on_loop and not own and self._out_size + _ENTRY_COST * len(self._out) > limit:
                raise SendQueueFull(
                    f"{self.id}: the peer reads slower than it is sent to: {self._out_size} bytes wait "
                    f"(max_send_buffer={limit}); this message was not sent"
                )
            self._out.append((event, size))
            self._out_size += size
            self._queued += 1
            kick = not own and not self._writing and not self._kicked
            if kick:
                self._kicked = True
        if kick:
            if on_loop:
                self._kick()
            else:
                self._call_soon(self._kick)
        if not on_loop and not closing:
            self._wait_for_room_in_thread(limit)
        return True

    def _wait_for_room_in_thread(self, limit: int) -> None:
        with self._lock:
            while self._out_size + _ENTRY_COST * len(self._out) > limit and self._state is not _CLOSED:
                if self._drained is None:
                    self._drained = threading.Condition(self._lock)
                self._drained.wait(1.0)

    def _kick(self) -> None:
        """Loop thread: start a writer task for what other threads or tasks queued."""
        with self._lock:
            self._kicked = False
            if self._writing or not self._out:
                return
            self._writing = True
        self._background = self.loop.create_task(self._write_out())

    async def _flush(self) -> None:
        """Loop thread: return once everything in the outbox so far is written (or dropped)."""
        if self._writing:
            await self._written_through(self._queued)
        elif self._out:
            self._writing = True
            await self._write_out()

    async def _written_through(self, seq: int) -> None:
        if self._written >= seq or self._state is _CLOSED:
            return
        future = self.loop.create_future()
        self._seq_waiters.append((seq, future))
        await future

    def _send_failed(self, exc: BaseException) -> None:
        """send() raised: the connection is ending (e.g. uvicorn's ClientDisconnected), or we were cancelled."""
        with self._lock:
            self._writing = False
            if isinstance(exc, Exception) and self._state is _OPEN:
                self._state = _CLOSING  # from now on send() raises, as in the core
        if not isinstance(exc, Exception):
            raise exc
        self._log.debug("send() failed: %r", exc)
        # Not the end yet: uvicorn refuses a send once the peer's close frame came in (say,
        # right behind the message this is the echo of), and the websocket.disconnect still
        # to be read holds the peer's code, which closed() must get, not 1006. The door's task
        # ends the connection on that event; the close timer, if the server never sends it.
        self._drop_outbox()
        self._arm_close_timer()

    async def _write_out(self) -> None:
        """Write the outbox with send(), in order, until it is empty; the caller claimed ``_writing``."""
        out = self._out
        send = self._send
        limit = self.limits.max_send_buffer
        event: Event | None = None
        size = 0
        while True:
            room = False
            with self._lock:
                if event is not None:  # the one just written
                    self._out_size -= size
                    self._written += 1
                    room = self._out_size + _ENTRY_COST * len(out) <= limit // 2
                    if room and self._drained is not None:
                        self._drained.notify_all()
                written = event
                if out and self._state is not _CLOSED:
                    event, size = out.popleft()
                else:
                    self._writing = False
                    event = None
            if written is not None:
                if self._seq_waiters:
                    self._wake_seq_waiters()
                if room and self._room_waiters:
                    waiters, self._room_waiters = self._room_waiters, []
                    for future in waiters:
                        _resolve(future)
                if written["type"] == "websocket.close":
                    self._arm_close_timer()
            if event is None:
                return
            try:
                await send(event)
            except BaseException as exc:
                self._send_failed(exc)
                return

    def _wake_seq_waiters(self) -> None:
        written = self._written
        waiting = []
        for seq, future in self._seq_waiters:
            if seq <= written:
                _resolve(future)
            else:
                waiting.append((seq, future))
        self._seq_waiters = waiting

    async def asend(self, data: Data, binary: bool | None = None) -> None:
        """Send one message from the loop and wait until the server took it."""
        if threading.get_ident() != self._loop_thread:
            raise RuntimeError("asend() is awaited on the server's event loop; use send() from threads")
        event, size = _send_event(data, binary)
        if self._state is not _OPEN:
            raise self._close_exc()
        if not self._writing and not self._out and not self._replies:
            # Nothing queued, nobody writing: straight to the server, from this task.
            self._writing = True
            try:
                await self._send(event)
            except BaseException as exc:
                self._send_failed(exc)
                raise ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "", self._sent_code) from exc
            self._writing = False  # (see _read: released without the lock, then looked again)
            if self._out:
                self._writing = True
                await self._write_out()
            return
        limit = self.limits.max_send_buffer
        while self._out_size + _ENTRY_COST * len(self._out) > limit and self._state is _OPEN:
            future = self.loop.create_future()
            self._room_waiters.append(future)
            await future
        with self._lock:
            if self._state is not _OPEN:
                raise self._close_exc()
            self._out.append((event, size))
            self._out_size += size
            self._queued += 1
            seq = self._queued
        await self._flush()
        if self._written < seq:
            await self._written_through(seq)
        if self._written < seq:
            raise ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "", self._sent_code)

    # -- closing -------------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; never waits (the door's task sees the end)."""
        Close(code, reason).serialize()  # ValueError for what cannot be sent (RFC 6455 §7.4)
        event: Event = {"type": "websocket.close", "reason": reason}
        if code != CloseCode.NO_STATUS_RCVD:  # 1005 = no code: the server sends its default
            event["code"] = code
        if self._enqueue(event, 0, closing=True):
            self._sent_code = code

    async def aclose(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close from the loop and wait for the end of the handshake (bounded by ``close_timeout``)."""
        if not self._on_loop():
            raise RuntimeError("aclose() is awaited on the server's event loop; use close() from threads")
        self.close(code, reason)
        await self._flush()
        if asyncio.current_task() is self._task:
            # Called from a callback the door's task awaits: nobody else reads, so read here.
            while self._state is not _CLOSED:
                event = await self._receive()
                if event["type"] == "websocket.disconnect":
                    self._end(int(event.get("code") or CloseCode.NO_STATUS_RCVD), str(event.get("reason") or ""))
            return
        if self._state is not _CLOSED:
            if self._closed_waiter is None:
                self._closed_waiter = self.loop.create_future()
            await asyncio.shield(self._closed_waiter)

    def _arm_close_timer(self) -> None:
        timeout = self.limits.close_timeout
        if timeout is not None and self._close_timer is None and self._state is not _CLOSED:
            # RFC 6455 §7.1.1: do not wait forever for the peer's end of the handshake.
            self._close_timer = self.loop.call_later(timeout, self._give_up)

    def _give_up(self) -> None:
        self._log.debug("the server did not report the end of the closing handshake in time")
        self._end(CloseCode.ABNORMAL_CLOSURE, "")
        self._interrupt()

    def abort(self) -> None:
        """End now without a close of ours: the app returns and the server ends the connection its own way."""
        if self._on_loop():
            self._abort()
        else:
            self._call_soon(self._abort)

    def _abort(self) -> None:
        if self._state is _CLOSED:
            return
        self._end(CloseCode.ABNORMAL_CLOSURE, "")
        self._interrupt()

    def _interrupt(self) -> None:
        """Loop thread: stop the door's task where it waits (receive(), room, a send)."""
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            self._interrupted = True
            task.cancel()

    def _end(self, code: int, reason: str) -> None:
        """Loop thread: the connection has ended; fail what waits on it."""
        with self._lock:
            if self._state is _CLOSED:
                return
            self._state = _CLOSED
            self._close_code = code
            self._close_reason = reason
        self._drop_outbox()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        with self._state_lock:
            room, self._room = self._room, None
            if self._cond is not None:
                self._cond.notify_all()
        if room is not None:
            _resolve(room)
        if self._closed_waiter is not None:
            _resolve(self._closed_waiter)
        self._closed_event.set()

    def _drop_outbox(self) -> None:
        """Loop thread: nothing more will be written: drop what waits, wake whoever waits on it."""
        with self._lock:
            dropped = len(self._out) + len(self._replies)
            self._out.clear()
            self._replies.clear()
            self._out_size = 0
            if self._drained is not None:
                self._drained.notify_all()
        if dropped:
            self._log.debug("%d queued sends dropped: the connection is ending", dropped)
        for _seq, future in self._seq_waiters:
            _resolve(future)
        self._seq_waiters = []
        for future in self._room_waiters:
            _resolve(future)
        self._room_waiters = []

    def _call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback`` on the loop, from any thread; nothing if the loop is gone."""
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed
            pass

    # -- waiting (threads) ---------------------------------------------------------------------

    def wait_closed(self, timeout: float | None = None) -> bool:
        if self._closed_event.is_set():
            return True
        if self._on_loop():
            raise self._blocking_call("wait_closed()")
        return self._closed_event.wait(timeout)

    def recv_message(self, timeout: float | None = None) -> Message:
        """The next message, in a thread; ConnectionClosed once closed; TimeoutError on timeout."""
        if self._on_loop():
            raise self._blocking_call("recv()")
        deadline = None if timeout is None else _monotonic() + timeout
        with self._state_lock:
            if self._cond is None:
                self._cond = threading.Condition(self._state_lock)
            self._waiters += 1
            try:
                while True:
                    inbox = self._inbox
                    head = inbox[0] if inbox else None
                    if isinstance(head, Message):
                        inbox.popleft()
                        self._room_made()
                        return head
                    if head is _ENDED or (head is None and self._state is _CLOSED):
                        raise self._close_exc()
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
                restart = not self._waiters and bool(self._inbox) and self._runner is IDLE
                if restart:
                    self._runner = THREAD
        if restart:  # what is left is the callbacks'
            THREADS.run(self._run_thread)

    def recv_frame(self, timeout: float | None = None) -> Frame:
        raise UnsupportedByASGI("recv_frame (raw frames)", "the server assembles messages; use recv()")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _send_event(data: Data, binary: bool | None) -> tuple[Event, int]:
    """The ``websocket.send`` event for ``data``, typed as send() types it, and its size."""
    if binary is None:  # the common cases first: an echo or a broadcast, bytes, text
        if isinstance(data, BinaryMessage):
            return {"type": "websocket.send", "bytes": data.data}, len(data.data)
        if isinstance(data, str):
            return {"type": "websocket.send", "text": data}, len(data)
        if isinstance(data, bytes):
            return {"type": "websocket.send", "bytes": data}, len(data)
        if isinstance(data, TextMessage):
            return {"type": "websocket.send", "text": data.text}, len(data.data)
    if isinstance(data, Message):
        size = len(data.data)
        if data.opcode is _TEXT if binary is None else not binary:
            text = data.text if isinstance(data, TextMessage) else bytes(data.data).decode()
            return {"type": "websocket.send", "text": text}, size
        return {"type": "websocket.send", "bytes": bytes(data.data)}, size
    if isinstance(data, str):
        if binary is True:
            encoded = data.encode()
            return {"type": "websocket.send", "bytes": encoded}, len(encoded)
        return {"type": "websocket.send", "text": data}, len(data)
    raw = data if isinstance(data, bytes) else bytes(data)
    if binary is False:  # as ws4py: bytes sent as text (ASGI wants a str, so it must be UTF-8)
        return {"type": "websocket.send", "text": raw.decode()}, len(raw)
    return {"type": "websocket.send", "bytes": raw}, len(raw)
