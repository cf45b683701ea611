"""The pub/sub hub: groups of WebSocket connections; each message is framed once and fanned out via bounded queues.

Design (docs/pubsub.md has the long version):

* ``publish(group, message)`` serializes the message into one frame, once, and
  hands ``(members, frame, wire)`` to the hub's dispatcher thread. It never
  writes to a socket, so it returns without waiting for any peer (except under
  the ``"block"`` overflow policy, which asks for exactly that).
* Each member has an outgoing queue, bounded in messages (``max_queue``) and bytes
  (``max_queue_bytes``). The dispatcher writes each message to every member with
  ``send_prepared`` (the same bytes object for all), or appends it to the
  member's queue when the member has a backlog or its writes may block.
* Selector-driven connections never block on a write, so the dispatcher writes to
  them itself, in one thread, in order. It stops feeding one while more than
  ``send_buffer`` bytes wait in the connection's own buffer (the member is
  *parked*; those bytes count against ``max_queue_bytes``); the hub's timer
  thread resumes it once that buffer has drained to half.
* Connections whose writes block (the blocking driver, ASGI) are drained by
  one task per member at a time on a small elastic pool of sender threads: a
  peer that stops reading pins one sender, never the dispatcher or the others.
* When a queue is full the overflow policy decides: ``"close"`` (default) evicts
  the member and closes its connection with 1013 (Try Again Later); ``"drop_oldest"``
  discards its oldest queued messages; ``"block"`` makes the publisher wait up to
  ``block_timeout`` for room, then evicts as ``"close"`` does.
* A :class:`Backplane` carries publishes to other processes (the default one has
  none: everything stays in this process); :mod:`ws4web.pubsub.redis` has one over
  Redis pub/sub.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import queue
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..drivers.selector import SelectorDriver
from ..frames import CloseCode, Frame, Opcode
from ..messages import Message
from .pool import WorkerPool

__all__ = ["Backplane", "Hub", "HubStats", "Overflow"]

logger = logging.getLogger("ws4web.pubsub")

Overflow = Literal["close", "drop_oldest", "block"]
_POLICIES = ("close", "drop_oldest", "block")

# A drain task writes at most this many messages, then goes to the back of the
# pool's queue: one member with a long backlog cannot starve the others.
_BATCH = 64
# How often the timer thread looks at parked members and eviction deadlines.
_TICK = 0.005
# Attribute of a handler holding the hubs it belongs to (set by Hub.join).
_HUBS_ATTR = "_ws4web_pubsub_hubs"


def make_origin() -> str:
    """A name for this process (and hub) that no other process will reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Backplane:
    """How a hub reaches hubs in other processes. This base class is the in-process
    default: there are no other processes, so every method is local or a no-op.

    A backplane gets its hub in :meth:`attach`. The hub calls :meth:`publish` after
    delivering a message locally, and :meth:`membership_changed` after any join or
    leave; the backplane calls ``hub.deliver(group, opcode, payload)`` for messages
    from elsewhere and reads ``hub.membership()`` for the groups and names to
    subscribe to and advertise.
    """

    def __init__(self) -> None:
        #: This process's name in envelopes and presence entries.
        self.origin = make_origin()
        self.hub: Hub | None = None

    def attach(self, hub: Hub) -> None:
        if self.hub is not None and self.hub is not hub:
            raise RuntimeError("a backplane serves one hub")
        self.hub = hub

    def publish(self, group: str, opcode: Opcode, payload: bytes) -> None:
        """Carry a message published here to the group's members elsewhere."""

    def membership_changed(self) -> None:
        """Some local member joined or left some group."""

    def presence(self, group: str) -> list[str]:
        """The names of the group's members, in every process this backplane reaches."""
        return self.hub.local_presence(group) if self.hub is not None else []

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Stop talking to the other processes (the hub calls this in its close())."""


@dataclass
class HubStats:
    """Counters since the hub started (a snapshot: see :meth:`Hub.stats`)."""

    published: int = 0  #: publish() calls
    received: int = 0  #: messages that came in through the backplane
    queued: int = 0  #: (message, member) pairs to deliver to local members
    written: int = 0  #: (message, member) pairs handed to a connection
    dropped: int = 0  #: messages discarded by the drop_oldest policy
    evicted: int = 0  #: members closed because their queue was full
    failed: int = 0  #: members removed because a write to them failed (connection gone)
    peak_pending_messages: int = 0  #: the longest member queue seen
    #: the most bytes seen waiting for one member (its queue + its connection's buffer), measured
    #: whenever a message is queued; a message written at once finds at most ``send_buffer`` there
    peak_pending_bytes: int = 0


class _Member:
    """One connection in the hub: its queue and its place in groups."""

    __slots__ = (
        "cond",
        "connection",
        "dead",
        "dropped",
        "groups",
        "handler",
        "lock",
        "name",
        "nonblocking",
        "parked",
        "peak_bytes",
        "peak_messages",
        "prepared",
        "queue",
        "queued_bytes",
        "scheduled",
    )

    def __init__(self, handler: Any, connection: Any, name: str) -> None:
        self.handler = handler
        self.connection = connection
        self.name = name  # default presence name
        self.groups: dict[str, str] = {}  # group -> presence name
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)  # room freed (the "block" policy waits on it)
        self.queue: deque[tuple[Frame, bytes]] = deque()
        self.queued_bytes = 0
        self.scheduled = False  # a drain task is queued or running (or the member is parked)
        self.parked = False  # waiting for its connection's buffer to drain
        self.dead = False  # evicted or removed: queue nothing more
        self.peak_messages = 0
        self.peak_bytes = 0
        self.dropped = 0  # by the drop_oldest policy
        # Writes to a selector-driven connection never wait: they queue in its own
        # buffer. Every driver has buffered_amount; only this one never blocks a writer.
        self.nonblocking = isinstance(connection, SelectorDriver)
        self.prepared = hasattr(connection, "send_prepared")

    def buffered(self) -> int:
        """Bytes already handed to the connection and not yet on the wire."""
        if self.nonblocking:
            return int(self.connection.buffered_amount)
        return 0  # a blocking connection holds nothing: its writes wait instead


class Hub:
    """Named groups of WebSocket connections and a ``publish`` that reaches them all.

    In a handler::

        hub = Hub()                      # or Hub(RedisBackplane("redis://..."))

        class Chat(WebSocket):
            def opened(self):
                hub.join("room", self, name="ann")
            def received_message(self, message):
                hub.publish("room", message)   # a Message keeps its type (text/binary)

    Members leave automatically when their connection closes (the hub wraps the
    handler's ``closed()``, which every adapter calls once). Parameters:

    ``max_queue`` / ``max_queue_bytes``
        bound each member's pending messages (count, and bytes including those in
        its connection's own output buffer).
    ``overflow``
        ``"close"`` (default): evict the member, close it with ``close_code`` (1013,
        Try Again Later) and log a warning; ``"drop_oldest"``: discard the oldest
        queued messages; ``"block"``: the publisher waits up to ``block_timeout``
        for room, then evicts as ``"close"`` does.
    ``send_buffer``
        how many bytes a non-blocking (selector-driven) connection may hold in its own
        buffer before the hub stops feeding it.
    ``max_senders``
        sender threads at most, for members whose writes block (the blocking driver,
        ASGI); one whose peer stopped reading pins a sender until evicted.
        Selector-driven connections are all written by the hub's one dispatcher thread.
    ``evict_grace``
        an evicted member whose close frame cannot be written within this many
        seconds (its peer reads nothing) has its TCP connection dropped.
    ``on_evict``
        ``on_evict(handler, code, reason)`` after a member was evicted (called in the
        thread that found the queue full, usually the dispatcher: do not block in it).

    ``publish``, ``join``, ``leave`` and the rest may be called from any thread.
    """

    def __init__(
        self,
        backplane: Backplane | None = None,
        *,
        max_queue: int = 1024,
        max_queue_bytes: int = 2**20,
        overflow: Overflow = "close",
        block_timeout: float = 1.0,
        close_code: int = CloseCode.TRY_AGAIN_LATER,
        send_buffer: int = 2**16,
        max_senders: int = 16,
        evict_grace: float = 2.0,
        on_evict: Callable[[Any, int, str], None] | None = None,
        name: str = "ws4web-hub",
    ) -> None:
        if overflow not in _POLICIES:
            raise ValueError(f"overflow must be one of {_POLICIES}, not {overflow!r}")
        if max_queue < 1 or max_queue_bytes < 1:
            raise ValueError("max_queue and max_queue_bytes must be positive")
        if max_senders < 1:
            raise ValueError("max_senders must be at least 1")
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.overflow: Overflow = overflow
        self.block_timeout = block_timeout
        self.close_code = close_code
        # Never let the connection's buffer take the whole byte budget: the hub's
        # own queue is where drop_oldest and block can still act.
        self.send_buffer = max(1, min(send_buffer, max_queue_bytes // 2))
        self.evict_grace = evict_grace
        self.on_evict = on_evict
        self.name = name
        self.backplane = backplane if backplane is not None else Backplane()

        self._lock = threading.Lock()  # membership
        self._members: dict[int, _Member] = {}  # id(handler) -> member
        self._groups: dict[str, dict[_Member, str]] = {}  # group -> {member: presence name}
        # Copy-on-write tuples of each group's members: publish iterates without a lock.
        self._snapshots: dict[str, tuple[_Member, ...]] = {}
        self._names = itertools.count(1)
        self._closed = False

        self._stats = HubStats()
        self._stats_lock = threading.Lock()

        self._senders = WorkerPool(max_senders, idle_timeout=10.0, name=f"{name}-sender")
        # Closing an evicted connection may block (its lock is held by a stuck write):
        # never on the sender pool, whose threads may all be the stuck ones.
        self._closers = WorkerPool(4, idle_timeout=10.0, name=f"{name}-closer")

        # The dispatcher's work: (members, frame, wire) to deliver, a member to drain, None to stop.
        self._inbox: queue.SimpleQueue[tuple[tuple[_Member, ...], Frame, bytes] | _Member | None] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None

        self._timer_lock = threading.Lock()
        self._parked: set[_Member] = set()
        self._deadlines: dict[_Member, tuple[float, threading.Event]] = {}
        self._timer: threading.Thread | None = None
        self._stopping = threading.Event()

        self.backplane.attach(self)

    # -- membership ----------------------------------------------------------------

    def join(self, group: str, member: Any, name: str | None = None) -> None:
        """Add ``member`` (a WebSocket handler, or a connection) to ``group``.

        ``name`` is how the member appears in :meth:`presence` (default: a unique
        id). Joining a group twice only updates the name. A member whose
        connection is already closed is not added.
        """
        if self._closed:
            raise RuntimeError("the hub is closed")
        connection = _connection_of(member)
        with self._lock:
            if self._closed:
                raise RuntimeError("the hub is closed")
            record = self._members.get(id(member))
            if record is None:
                record = _Member(member, connection, f"{self.backplane.origin}#{next(self._names)}")
                self._members[id(member)] = record
            presence_name = name if name is not None else record.groups.get(group, record.name)
            record.groups[group] = presence_name
            self._groups.setdefault(group, {})[record] = presence_name
            self._snapshots[group] = tuple(self._groups[group])
        _observe_close(member, self)
        self.backplane.membership_changed()
        if bool(getattr(connection, "closed", False)):
            # It closed before (or while) we wrapped closed(): its callback may have run already.
            self.leave_all(member)

    def leave(self, group: str, member: Any) -> None:
        """Remove ``member`` from ``group`` (no error if it was not there)."""
        with self._lock:
            record = self._members.get(id(member))
            if record is None or group not in record.groups:
                return
            del record.groups[group]
            self._unlink(group, record)
            if not record.groups:
                self._forget(record)
        self.backplane.membership_changed()

    def leave_all(self, member: Any) -> None:
        """Remove ``member`` from every group (done for you when it closes)."""
        with self._lock:
            record = self._members.get(id(member))
            if record is None:
                return
            self._remove(record)
        self.backplane.membership_changed()

    def members(self, group: str) -> list[Any]:
        """This process's members of ``group`` (the objects given to :meth:`join`)."""
        return [record.handler for record in self._snapshots.get(group, ())]

    def groups(self) -> list[str]:
        """The groups with at least one member in this process."""
        with self._lock:
            return sorted(self._groups)

    def local_presence(self, group: str) -> list[str]:
        """The presence names of this process's members of ``group``, sorted, without repeats."""
        with self._lock:
            return sorted(set(self._groups.get(group, {}).values()))

    def presence(self, group: str) -> list[str]:
        """The presence names of ``group``'s members in every process the backplane reaches."""
        return self.backplane.presence(group)

    def membership(self) -> dict[str, set[str]]:
        """{group: presence names} for this process (what a backplane advertises)."""
        with self._lock:
            return {group: set(members.values()) for group, members in self._groups.items()}

    def pending(self, member: Any) -> tuple[int, int]:
        """(messages, bytes) waiting for ``member``: its queue plus its connection's buffer."""
        record = self._members.get(id(member))
        if record is None:
            return (0, 0)
        with record.lock:
            return (len(record.queue), record.queued_bytes + record.buffered())

    # (the next three are called with self._lock held)

    def _unlink(self, group: str, record: _Member) -> None:
        members = self._groups.get(group)
        if members is None:
            return
        members.pop(record, None)
        if members:
            self._snapshots[group] = tuple(members)
        else:
            del self._groups[group]
            self._snapshots.pop(group, None)

    def _remove(self, record: _Member) -> None:
        for group in list(record.groups):
            self._unlink(group, record)
        record.groups.clear()
        self._forget(record)

    def _forget(self, record: _Member) -> None:
        if self._members.get(id(record.handler)) is record:
            del self._members[id(record.handler)]
        with record.lock:
            record.dead = True
            record.queue.clear()
            record.queued_bytes = 0
            record.cond.notify_all()
            peak_messages, peak_bytes, dropped = record.peak_messages, record.peak_bytes, record.dropped
            record.dropped = 0
        with self._stats_lock:
            stats = self._stats
            stats.peak_pending_messages = max(stats.peak_pending_messages, peak_messages)
            stats.peak_pending_bytes = max(stats.peak_pending_bytes, peak_bytes)
            stats.dropped += dropped

    # -- publishing ----------------------------------------------------------------

    def publish(
        self, group: str, message: str | bytes | bytearray | memoryview | Message, binary: bool | None = None
    ) -> int:
        """Send ``message`` to every member of ``group``, here and (through the backplane) elsewhere.

        ``str`` goes as a text message, bytes as binary, a Message as its own type;
        ``binary`` forces the type (bytes sent as text must be UTF-8). Returns the
        number of local members it was queued for, without waiting for any write.
        """
        opcode, payload = _encode(message, binary)
        count = self.deliver(group, opcode, payload)
        with self._stats_lock:
            self._stats.published += 1
        self.backplane.publish(group, opcode, payload)
        return count

    def deliver(self, group: str, opcode: Opcode, payload: bytes, *, remote: bool = False) -> int:
        """Deliver one message to this process's members of ``group`` (the backplane's entry point).

        The frame is built and serialized here, once, whatever the number of members.
        """
        members = self._snapshots.get(group)
        with self._stats_lock:
            self._stats.received += remote
            self._stats.queued += len(members) if members else 0
        if not members:
            return 0
        frame = Frame(opcode, payload)
        wire = b"".join(frame.serialize(mask=False))
        if self.overflow == "block":
            # The publisher itself waits for room, member by member.
            for record in members:
                self._offer(record, frame, wire)
        else:
            self._post((members, frame, wire))
        return len(members)

    def _post(self, item: tuple[tuple[_Member, ...], Frame, bytes] | _Member) -> None:
        if self._dispatcher is None:
            with self._lock:
                if self._dispatcher is None and not self._closed:
                    self._dispatcher = threading.Thread(
                        target=self._run_dispatcher, name=f"{self.name}-dispatcher", daemon=True
                    )
                    self._dispatcher.start()
        self._inbox.put(item)

    def _full(self, record: _Member, size: int) -> bool:
        """Whether one more message of ``size`` bytes would overflow ``record`` (lock held)."""
        pending = record.queued_bytes + record.buffered()
        # An idle member takes any one message, however large: it must be sendable at all.
        return len(record.queue) >= self.max_queue or (pending > 0 and pending + size > self.max_queue_bytes)

    def _offer(self, record: _Member, frame: Frame, wire: bytes) -> bool:
        """Queue one message for ``record``, applying the overflow policy; False if it was not queued."""
        size = len(wire)
        schedule = evict = False
        with record.lock:
            if record.dead:
                return False
            if self._full(record, size):
                if self.overflow == "drop_oldest":
                    while record.queue and self._full(record, size):
                        _, old = record.queue.popleft()
                        record.queued_bytes -= len(old)
                        record.dropped += 1
                elif self.overflow == "block":
                    deadline = time.monotonic() + self.block_timeout
                    while self._full(record, size) and not record.dead:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            evict = True
                            break
                        # A selector member's buffer drains without telling us: poll it.
                        record.cond.wait(min(left, _TICK * 2) if record.nonblocking else left)
                    if record.dead and not evict:
                        return False
                else:
                    evict = True
            if not evict:
                backlog = record.queue
                backlog.append((frame, wire))
                record.queued_bytes += size
                # Peaks are kept per member, under the lock held anyway, and summed up in stats().
                record.peak_messages = max(record.peak_messages, len(backlog))
                record.peak_bytes = max(record.peak_bytes, record.queued_bytes + record.buffered())
                if not record.scheduled:
                    record.scheduled = schedule = True
        if evict:
            self._evict(
                record, f"slow consumer: outgoing queue full ({self.max_queue} messages / {self.max_queue_bytes} bytes)"
            )
            return False
        if schedule:
            self._schedule(record)
        return True

    def _schedule(self, record: _Member) -> None:
        """Have ``record``'s queue drained: by the dispatcher if its writes never block, else on the pool."""
        if record.nonblocking:
            self._post(record)
            return
        try:
            self._senders.submit(functools.partial(self._drain_task, record))
        except RuntimeError:  # the hub is closing: nothing more goes out
            pass

    # -- the dispatcher and the senders ----------------------------------------------------

    def _run_dispatcher(self) -> None:
        get = self._inbox.get
        while True:
            item = get()
            if item is None:
                return
            try:
                if isinstance(item, _Member):
                    if self._drain(item):
                        self._inbox.put(item)  # more to do: to the back of the line
                else:
                    self._dispatch(*item)
            except Exception:  # pragma: no cover - a bug; the dispatcher must survive it
                logger.exception("pub/sub dispatcher failed on %r", item)

    def _dispatch(self, members: tuple[_Member, ...], frame: Frame, wire: bytes) -> None:
        """Deliver one message (the dispatcher thread, policies other than "block")."""
        send_buffer = self.send_buffer
        written = 0
        for record in members:
            if record.dead:
                continue
            # Only this thread appends to (and drains) a non-blocking member's queue, so
            # an empty queue means nothing older is waiting: write now, in order.
            if record.nonblocking and not record.queue and not record.parked and record.buffered() <= send_buffer:
                if self._write(record, frame, wire):
                    written += 1
            else:
                self._offer(record, frame, wire)
        if written:
            with self._stats_lock:
                self._stats.written += written

    def _write(self, record: _Member, frame: Frame, wire: bytes) -> bool:
        """Write one message to ``record``'s connection; on failure forget the member."""
        try:
            if record.prepared:
                record.connection.send_prepared(frame, wire)
            else:  # e.g. ASGI: the server frames the message itself
                record.connection.send_message(frame.data, frame.opcode is Opcode.BINARY)
            return True
        except Exception as exc:  # the connection is gone (or going)
            logger.debug("write to %r failed (%s): removing it", record.handler, exc)
            with self._lock:
                self._remove(record)
            with self._stats_lock:
                self._stats.failed += 1
            self.backplane.membership_changed()
            return False

    def _drain_task(self, record: _Member) -> None:
        """Drain one member whose writes may block (its own task: a stuck write pins this thread only)."""
        if self._drain(record):
            self._schedule(record)  # more to do: to the back of the line

    def _drain(self, record: _Member) -> bool:
        """Write up to a batch of ``record``'s queue, in order; True if more is left to write."""
        notify = self.overflow == "block"
        written = 0
        try:
            for _ in range(_BATCH):
                with record.lock:
                    if record.dead or not record.queue:
                        record.scheduled = False
                        return False
                    if record.nonblocking and record.buffered() > self.send_buffer:
                        record.parked = True  # stays scheduled: the timer thread resumes it
                        self._park(record)
                        return False
                    frame, wire = record.queue.popleft()
                    record.queued_bytes -= len(wire)
                    if notify:
                        record.cond.notify_all()
                if not self._write(record, frame, wire):
                    return False
                written += 1
            return True
        finally:
            if written:
                with self._stats_lock:
                    self._stats.written += written

    # -- eviction --------------------------------------------------------------------

    def _evict(self, record: _Member, reason: str) -> None:
        with self._lock:
            if record.dead:
                return
            self._remove(record)
        with self._stats_lock:
            self._stats.evicted += 1
        logger.warning("closing %r with %d: %s", record.handler, self.close_code, reason)
        self.backplane.membership_changed()
        try:
            self._closers.submit(functools.partial(self._close_evicted, record, reason))
        except RuntimeError:  # the hub is closing
            _drop_tcp(record.connection)
        if self.on_evict is not None:
            try:
                self.on_evict(record.handler, self.close_code, reason)
            except Exception:
                logger.exception("on_evict raised")

    def _close_evicted(self, record: _Member, reason: str) -> None:
        """Send the close frame; drop TCP if that cannot happen within evict_grace."""
        done = threading.Event()
        with self._timer_lock:
            if self._stopping.is_set():  # no timer any more to bound the wait: just drop it
                _drop_tcp(record.connection)
                return
            self._deadlines[record] = (time.monotonic() + self.evict_grace, done)
            self._start_timer()
        try:
            # Blocks while a write of ours to this peer is stuck (it holds the
            # connection's lock); the timer thread then drops TCP, which ends both.
            record.connection.close(self.close_code, reason[:120])
        except Exception as exc:
            logger.debug("closing %r: %s", record.handler, exc)
        finally:
            done.set()

    # -- the timer thread: parked members and eviction deadlines -------------------------

    def _park(self, record: _Member) -> None:
        with self._timer_lock:
            self._parked.add(record)
            self._start_timer()

    def _start_timer(self) -> None:
        """Start the timer thread if it is not running (``_timer_lock`` held)."""
        if self._timer is None and not self._stopping.is_set():
            self._timer = threading.Thread(target=self._run_timer, name=f"{self.name}-timer", daemon=True)
            self._timer.start()

    def _run_timer(self) -> None:
        resume_below = self.send_buffer // 2
        while not self._stopping.wait(_TICK):
            with self._timer_lock:
                if not self._parked and not self._deadlines:
                    self._timer = None  # idle: exit; the next park starts a new one
                    return
                parked = list(self._parked)
                now = time.monotonic()
                expired = [r for r, (when, done) in self._deadlines.items() if done.is_set() or when <= now]
                for record in expired:
                    _when, done = self._deadlines.pop(record)
                    if not done.is_set():
                        logger.info(
                            "%r did not take its close frame within %.1f s: dropping TCP",
                            record.handler,
                            self.evict_grace,
                        )
                        _drop_tcp(record.connection)
            for record in parked:
                with record.lock:
                    if not record.dead and record.buffered() > resume_below:
                        continue
                    record.parked = False
                    dead = record.dead
                    if dead:
                        record.scheduled = False
                with self._timer_lock:
                    self._parked.discard(record)
                if not dead:
                    self._post(record)
        with self._timer_lock:
            self._timer = None

    # -- the rest --------------------------------------------------------------------------

    def stats(self) -> HubStats:
        """A snapshot of the counters."""
        with self._lock:
            records = list(self._members.values())
        with self._stats_lock:
            stats = HubStats(**vars(self._stats))
        for record in records:  # members still here hold their own peaks
            with record.lock:
                stats.peak_pending_messages = max(stats.peak_pending_messages, record.peak_messages)
                stats.peak_pending_bytes = max(stats.peak_pending_bytes, record.peak_bytes)
                stats.dropped += record.dropped
        return stats

    def close(self, timeout: float = 5.0) -> None:
        """Stop the backplane and the hub's threads; connections stay open."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for record in list(self._members.values()):
                self._remove(record)
        self.backplane.close()
        with self._timer_lock:
            self._stopping.set()
            # Evictions still waiting for their close frame: the timer that would
            # bound the wait stops now, so end them here.
            for record, (_when, done) in self._deadlines.items():
                if not done.is_set():
                    _drop_tcp(record.connection)
            self._deadlines.clear()
        self._inbox.put(None)
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not threading.current_thread():
            dispatcher.join(timeout)
        with self._timer_lock:
            timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(timeout)
        self._senders.shutdown(timeout)
        self._closers.shutdown(timeout)

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Hub {self.name} origin={self.backplane.origin} groups={len(self._snapshots)}>"


# -- helpers ----------------------------------------------------------------------------------


def _connection_of(member: Any) -> Any:
    connection = getattr(member, "connection", None)
    if connection is None and hasattr(member, "send_message"):
        connection = member  # a bare connection
    if connection is None or not hasattr(connection, "send_message"):
        raise TypeError(f"{member!r} is neither a WebSocket handler nor a connection")
    return connection


def _observe_close(member: Any, hub: Hub) -> None:
    """Make ``member.closed()`` (called once by every adapter) leave ``hub`` first.

    One wrapper per handler, whatever the number of hubs: it holds a weak set of them.
    """
    if not callable(getattr(member, "closed", None)) or member is _connection_of(member):
        return  # a bare connection: removed on its first failed write instead
    hubs = vars(member).get(_HUBS_ATTR)
    if hubs is None:
        hubs = weakref.WeakSet()
        original = member.closed

        def closed(code: int, reason: str | None = None) -> Any:
            # Leave before the handler's own closed() runs: whatever it publishes
            # ("ann left") and presence() it reads no longer include itself.
            for joined in list(hubs):
                try:
                    joined.leave_all(member)
                except Exception:  # pragma: no cover - leave_all does not raise
                    logger.exception("leaving %r failed", joined)
            return original(code, reason)

        setattr(member, _HUBS_ATTR, hubs)
        member.closed = closed
    hubs.add(hub)


def _encode(message: str | bytes | bytearray | memoryview | Message, binary: bool | None) -> tuple[Opcode, bytes]:
    if isinstance(message, str):
        return (Opcode.BINARY if binary else Opcode.TEXT), message.encode()
    if isinstance(message, Message):
        is_text = message.opcode is Opcode.TEXT if binary is None else not binary
        return (Opcode.TEXT if is_text else Opcode.BINARY), bytes(message.data)
    payload = bytes(message)
    if binary is False:
        payload.decode("utf-8")  # a text frame must carry UTF-8 (RFC 6455 §5.6): fail here, not at the peer
        return Opcode.TEXT, payload
    return Opcode.BINARY, payload


def _drop_tcp(connection: Any) -> None:
    """End a connection whose peer does not read: shut its socket (waking a blocked write)."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass
        return
    try:
        connection.abort()
    except Exception as exc:
        logger.debug("aborting %r: %s", connection, exc)
