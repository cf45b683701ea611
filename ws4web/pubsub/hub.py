"""The pub/sub hub: named groups of connections; a message is framed once and written in the publisher's thread.

Theory of operation
===================

``publish(group, message)`` frames and serializes the message once, takes the
group's lock (every member sees a group's messages in one order), offers the same
bytes to each member in turn, in the publisher's own thread, and then hands the
message to the backplane (outside the lock, since that may wait for room, but in
the lock's order: a ticket taken under it). Offering to a member:

* a member on a selector loop (:class:`~ws4web.drivers.selector.SelectorDriver`:
  the standard-library server, CherryPy, wsgiref) with nothing waiting in the hub
  and at most ``send_buffer`` bytes in its connection's buffer is written at once
  with ``send_prepared``; such a write does not wait for the peer;
* otherwise the message waits in the member's queue, bounded in messages and in
  bytes (each entry charged its overhead too; the connection's buffer counts);
  when it is full the overflow policy applies.

There is no queue in front of the members: a publisher pays for its room in its
own time, which paces a flooder (the loop reads its connection no faster than it
publishes), and what waits is what the members' bounds allow.

A loop member's queue drains when its connection reports its buffer empty
(``SelectorDriver.when_drained``): a *drainer* thread writes what fits; and a
publisher that finds room in the buffer writes the backlog itself before its own
message (under the member's lock, so in order). A member whose writes block (the
blocking driver, ASGI) is never written by a publisher: one task at a time on the
*sender* pool drains its queue, so a peer that stops reading pins one sender,
never a publisher or the loop.

Waiting: a publisher may wait for a member's lock (another thread writing to it),
for its turn to hand a message to the backplane and, under the ``"block"`` policy,
for room; before any of these (past a 2 ms grace for a lock) it calls
:func:`~ws4web.drivers.selector.leave_loop`, so a loop thread hands its loop over
instead of stalling it. It also hands the loop over when a member of its own loop
has no room and nothing queued: the member may be the publisher's own connection,
whose writes wait for the end of the callback the loop thread runs.

A member's drain state: :data:`STATES`, the only legal values of
``_Member.state``, and :data:`TRANSITIONS`, the only legal moves.
docs/pubsub.md is the manual (API, policies, ordering guarantees).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..drivers.selector import SelectorDriver, leave_loop
from ..frames import CloseCode, Frame, Opcode
from ..messages import Message
from .pool import WorkerPool

__all__ = ["STATES", "TRANSITIONS", "Backplane", "Hub", "HubStats", "Overflow", "RateLimit"]

logger = logging.getLogger("ws4web.pubsub")

Overflow = Literal["close", "drop_oldest", "block"]
_POLICIES = ("close", "drop_oldest", "block")

IDLE: Final = "idle"
WAITING: Final = "waiting"
DRAINING: Final = "draining"
GONE: Final = "gone"

#: A member's drain state.
STATES = {
    IDLE: "its queue is empty: a publisher writes a loop member at once (if its buffer has room), "
    "queues for a blocking one",
    WAITING: "a loop member with a queue: its connection calls back once its buffer has emptied",
    DRAINING: "a drain is queued or running (a drainer for a loop member, a sender for a blocking one)",
    GONE: "left, evicted or failed: nothing more is queued or written",
}

#: (state, event) -> next state, and who makes the move.
TRANSITIONS = {
    (IDLE, "loop member, buffer past send_buffer: queue"): (WAITING, "publisher"),
    (IDLE, "blocking member: queue"): (DRAINING, "publisher"),
    (WAITING, "buffer emptied"): (DRAINING, "the connection's callback (queues a drainer task)"),
    (WAITING, "a publisher finds room and writes the whole backlog"): (IDLE, "publisher"),
    (DRAINING, "a publisher finds room and writes the whole backlog"): (IDLE, "publisher"),
    (DRAINING, "queue empty"): (IDLE, "drainer or sender"),
    (DRAINING, "loop member, buffer past send_buffer again"): (WAITING, "drainer"),
    (IDLE, "leave, eviction, failed write"): (GONE, "whoever removes it"),
    (WAITING, "leave, eviction, failed write"): (GONE, "whoever removes it"),
    (DRAINING, "leave, eviction, failed write"): (GONE, "whoever removes it"),
}

# A drain writes at most this many messages, then goes to the back of its pool's
# queue: one member with a long backlog cannot starve the others.
_BATCH = 64
# What a queued message costs a member beyond its bytes: the (frame, bytes) tuple,
# its deque slot, and headroom for the frame object, which a hub.send() does not share.
_ENTRY_COST = 128
# How often the timer thread looks at eviction deadlines.
_TICK = 0.02
# Under "block", how often a waiting publisher looks again at a loop member whose
# connection buffer (not the hub's queue) holds the room it waits for.
_POLL = 0.01
# How long a loop thread waits for a lock held by another thread before it hands its
# loop over: drains and writes hold a member's lock for well under this; a fifth of the
# loop's default watchdog budget.
_GRACE = 0.002
# Attribute of a handler holding the hubs it belongs to (set by Hub.join).
_HUBS_ATTR = "_ws4web_pubsub_hubs"

# What _offer() did with one message for one member.
_WRITTEN: Final = "written"
_QUEUED: Final = "queued"
_DISCARDED: Final = "discarded"  # the member is gone
_EVICT: Final = "evict"  # its queue is full under the "close" policy (or "block" timed out)
_FAILED: Final = "failed"  # the write raised: the connection is gone
_DELIVERED = (_WRITTEN, _QUEUED)


def make_origin() -> str:
    """A name for this process (and hub) that no other process will reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Backplane:
    """How a hub reaches hubs in other processes. This base class is the in-process
    default: there are no other processes, so every method is local or a no-op.

    A backplane gets its hub in :meth:`attach`. The hub calls :meth:`publish` after
    delivering a message locally, one message of a group at a time, in the order of
    the local delivery (so a group's messages have the same order here and elsewhere;
    ``publish`` may wait for room), and :meth:`membership_changed` after any join or
    leave; the backplane calls ``hub.deliver(group, opcode, payload)``
    for messages from elsewhere and reads ``hub.membership()`` for the groups and
    names to subscribe to and advertise.
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


@dataclass(frozen=True)
class RateLimit:
    """A per-connection publish rate: a token bucket of ``burst`` messages refilled at ``rate`` per second.

    Past it, ``action`` decides: ``"drop"`` refuses the publish (``publish`` returns
    0, ``HubStats.rate_limited`` counts it, the first one per sender is logged);
    ``"close"`` also closes the sender with ``close_code`` (1008, Policy Violation:
    the peer broke a rule) and refuses everything it publishes afterwards.
    """

    rate: float
    burst: int = 1
    action: Literal["drop", "close"] = "drop"
    close_code: int = CloseCode.POLICY_VIOLATION

    def __post_init__(self) -> None:
        if not isinstance(self.rate, (int, float)) or self.rate <= 0:
            raise ValueError(f"rate must be a positive number of messages per second, not {self.rate!r}")
        if not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be a positive int, not {self.burst!r}")
        if self.action not in ("drop", "close"):
            raise ValueError(f"action must be 'drop' or 'close', not {self.action!r}")


@dataclass
class HubStats:
    """Counters since the hub started (a snapshot: see :meth:`Hub.stats`).

    Once nothing is pending, ``deliveries == written + dropped + discarded``.
    """

    published: int = 0  #: publish() calls delivered (those refused by the rate limit are in rate_limited)
    sent: int = 0  #: send() calls to one member
    received: int = 0  #: messages that came in through the backplane
    rate_limited: int = 0  #: publish() calls refused by the rate limit
    deliveries: int = 0  #: (message, member) pairs addressed to local members
    deferred: int = 0  #: of those, pairs that waited in a member's queue instead of being written at once
    written: int = 0  #: pairs handed to a connection
    dropped: int = 0  #: pairs discarded by the drop_oldest policy
    discarded: int = 0  #: pairs lost with their member: it left, was evicted or its connection failed
    evicted: int = 0  #: members closed because their queue was full
    failed: int = 0  #: members removed because a write to them failed (connection gone)
    peak_pending_messages: int = 0  #: the longest member queue seen
    #: the most bytes seen waiting for one member (its queue, entries' overhead included, and its
    #: connection's buffer), measured whenever a message is queued
    peak_pending_bytes: int = 0


class _Turns:
    """A group's lock, and tickets that hand its messages to the backplane in the order the lock gave."""

    __slots__ = ("_issued", "_served", "_turn", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._turn = threading.Condition(threading.Lock())
        self._issued = 0
        self._served = 0

    def take(self) -> int:
        """The next ticket (``lock`` held)."""
        ticket = self._issued
        self._issued += 1
        return ticket

    def wait(self, ticket: int) -> None:
        with self._turn:
            if self._served != ticket:
                leave_loop()  # an earlier message waits in the backplane: hand the loop over
                while self._served != ticket:
                    self._turn.wait()

    def done(self) -> None:
        with self._turn:
            self._served += 1
            self._turn.notify_all()


class _Bucket:
    """One sender's token bucket (see RateLimit)."""

    __slots__ = ("refused", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.refused = 0


class _Member:
    """One connection in the hub: its queue, its drain state, its place in groups."""

    __slots__ = (
        "armed",
        "cond",
        "connection",
        "discarded",
        "dropped",
        "groups",
        "handler",
        "lock",
        "max_send_buffer",
        "name",
        "on_loop",
        "peak_bytes",
        "peak_messages",
        "prepared",
        "queue",
        "queued_bytes",
        "send_buffer",
        "state",
    )

    def __init__(self, handler: Any, connection: Any, name: str, hub: Hub) -> None:
        self.handler = handler
        self.connection = connection
        self.name = name  # default presence name
        self.groups: dict[str, str] = {}  # group -> presence name
        # Orders the writes to this member (publishers, drains) and guards what follows.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)  # room freed (the "block" policy waits on it)
        self.state: str = IDLE
        self.armed = False  # a when_drained() callback is pending in the connection
        self.queue: deque[tuple[Frame, bytes]] = deque()
        self.queued_bytes = 0  # the queue's bytes plus _ENTRY_COST per entry
        self.peak_messages = 0
        self.peak_bytes = 0
        self.dropped = 0  # by the drop_oldest policy
        self.discarded = 0  # left in the queue when the member went
        # A loop connection never makes its writer wait while its buffer has room;
        # anything else may block the thread that writes.
        self.on_loop = isinstance(connection, SelectorDriver)
        if self.on_loop:
            self.max_send_buffer = connection.limits.max_send_buffer
            self.send_buffer = max(1, min(hub.send_buffer, self.max_send_buffer // 2))
        else:
            self.max_send_buffer = self.send_buffer = 0
        self.prepared = hasattr(connection, "send_prepared")

    def buffered(self) -> int:
        """Bytes already handed to the connection and not yet given to the kernel."""
        return int(getattr(self.connection, "buffered_amount", 0))

    def fits(self, size: int) -> bool:
        """Whether a loop member's connection takes ``size`` more bytes without making the writer wait."""
        buffered = self.buffered()
        return buffered == 0 or (buffered <= self.send_buffer and buffered + size <= self.max_send_buffer)

    def write(self, frame: Frame, wire: bytes) -> None:
        if self.prepared:
            self.connection.send_prepared(frame, wire)
        else:  # a bare connection without send_prepared
            self.connection.send_message(frame.data, frame.opcode is Opcode.BINARY)


def _acquire(lock: threading.Lock) -> None:
    """Take ``lock``; if another thread keeps it past a short grace, first hand over the loop
    this thread may be running (the holder may be stuck writing to a peer)."""
    if not lock.acquire(timeout=_GRACE):
        leave_loop()
        lock.acquire()


class Hub:
    """Named groups of WebSocket connections and a ``publish`` that reaches them all.

    In a handler::

        hub = Hub()                      # or Hub(RedisBackplane("redis://..."))

        class Chat(WebSocket):
            def opened(self):
                hub.join("room", self, name="ann")
            def received_message(self, message):
                hub.publish("room", message, sender=self)   # a Message keeps its type

    Members leave automatically when their connection closes (the hub wraps the
    handler's ``closed()``, which every door calls once). Parameters:

    ``max_queue`` / ``max_queue_bytes``
        bound what waits for each member: messages, and bytes (each entry's
        overhead and the bytes in its connection's own buffer included).
    ``overflow``
        ``"close"`` (default): evict the member, close it with ``close_code`` (1013,
        Try Again Later) and log a warning; ``"drop_oldest"``: discard its oldest
        queued messages; ``"block"``: the publisher waits up to ``block_timeout``
        for room, then evicts as ``"close"`` does.
    ``send_buffer``
        how many bytes a loop member's connection may hold before the hub queues
        for it instead of writing (at most half its ``max_send_buffer``).
    ``max_senders``
        sender threads at most, for members whose writes block (the blocking
        driver, ASGI); one whose peer stopped reading pins a sender until evicted.
    ``evict_grace``
        an evicted member whose close frame cannot be written within this many
        seconds (its peer reads nothing) has its TCP connection dropped.
    ``on_evict``
        ``on_evict(handler, code, reason)`` after a member was evicted (called in the
        publisher's thread: do not block in it).
    ``rate_limit``
        a :class:`RateLimit` applied to each ``sender=`` of :meth:`publish`
        (default None: no limit).

    ``publish``, ``send``, ``join``, ``leave`` and the rest may be called from any thread.
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
        rate_limit: RateLimit | None = None,
        name: str = "ws4web-hub",
    ) -> None:
        if overflow not in _POLICIES:
            raise ValueError(f"overflow must be one of {_POLICIES}, not {overflow!r}")
        if max_queue < 1 or max_queue_bytes < 1:
            raise ValueError("max_queue and max_queue_bytes must be positive")
        if max_senders < 1:
            raise ValueError("max_senders must be at least 1")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError(f"rate_limit must be a RateLimit, not {rate_limit!r}")
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
        self.rate_limit = rate_limit
        self.name = name
        self.backplane = backplane if backplane is not None else Backplane()

        self._lock = threading.Lock()  # membership
        self._members: dict[int, _Member] = {}  # id(handler) -> member
        self._groups: dict[str, dict[_Member, str]] = {}  # group -> {member: presence name}
        # Copy-on-write tuples of each group's members: publish iterates without the membership lock.
        self._snapshots: dict[str, tuple[_Member, ...]] = {}
        # Per group with local members: its messages go out one at a time, then onward in that order.
        self._group_locks: dict[str, _Turns] = {}
        self._names = itertools.count(1)
        self._closed = False

        self._stats = HubStats()
        self._stats_lock = threading.Lock()
        self._buckets: weakref.WeakKeyDictionary[Any, _Bucket] = weakref.WeakKeyDictionary()
        self._buckets_lock = threading.Lock()

        # Drains of loop members: short (they write what the buffer takes, never wait for a peer).
        self._drainers = WorkerPool(4, idle_timeout=10.0, name=f"{name}-drainer")
        # Drains of members whose writes block: a stuck peer pins one of these.
        self._senders = WorkerPool(max_senders, idle_timeout=10.0, name=f"{name}-sender")
        # Closing an evicted connection may block (its lock is held by a stuck write):
        # never on the sender pool, whose threads may all be the stuck ones.
        self._closers = WorkerPool(4, idle_timeout=10.0, name=f"{name}-closer")

        self._timer_lock = threading.Lock()
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
        _acquire(self._lock)
        try:
            if self._closed:
                raise RuntimeError("the hub is closed")
            record = self._members.get(id(member))
            if record is None:
                record = _Member(member, connection, f"{self.backplane.origin}#{next(self._names)}", self)
                self._members[id(member)] = record
            presence_name = name if name is not None else record.groups.get(group, record.name)
            record.groups[group] = presence_name
            self._groups.setdefault(group, {})[record] = presence_name
            self._snapshots[group] = tuple(self._groups[group])
            if group not in self._group_locks:
                self._group_locks[group] = _Turns()
        finally:
            self._lock.release()
        _observe_close(member, self)
        self.backplane.membership_changed()
        if bool(getattr(connection, "closed", False)):
            # It closed before (or while) we wrapped closed(): its callback may have run already.
            self.leave_all(member)

    def leave(self, group: str, member: Any) -> None:
        """Remove ``member`` from ``group`` (no error if it was not there)."""
        _acquire(self._lock)
        try:
            record = self._members.get(id(member))
            if record is None or group not in record.groups:
                return
            del record.groups[group]
            self._unlink(group, record)
            if not record.groups:
                self._forget(record)
        finally:
            self._lock.release()
        self.backplane.membership_changed()

    def leave_all(self, member: Any) -> None:
        """Remove ``member`` from every group (done for you when it closes)."""
        _acquire(self._lock)
        try:
            record = self._members.get(id(member))
            if record is None:
                return
            self._remove(record)
        finally:
            self._lock.release()
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
        """(messages, bytes) waiting for ``member``: its queue (with entry overhead) and its connection's buffer."""
        record = self._members.get(id(member))
        if record is None:
            return (0, 0)
        _acquire(record.lock)
        try:
            return (len(record.queue), record.queued_bytes + record.buffered())
        finally:
            record.lock.release()

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
            self._group_locks.pop(group, None)

    def _remove(self, record: _Member) -> None:
        for group in list(record.groups):
            self._unlink(group, record)
        record.groups.clear()
        self._forget(record)

    def _forget(self, record: _Member) -> None:
        if self._members.get(id(record.handler)) is record:
            del self._members[id(record.handler)]
        _acquire(record.lock)
        try:
            record.state = GONE
            record.discarded += len(record.queue)
            record.queue.clear()
            record.queued_bytes = 0
            record.cond.notify_all()
            peak_messages, peak_bytes = record.peak_messages, record.peak_bytes
            dropped, discarded = record.dropped, record.discarded
            record.dropped = record.discarded = 0
        finally:
            record.lock.release()
        with self._stats_lock:
            stats = self._stats
            stats.peak_pending_messages = max(stats.peak_pending_messages, peak_messages)
            stats.peak_pending_bytes = max(stats.peak_pending_bytes, peak_bytes)
            stats.dropped += dropped
            stats.discarded += discarded

    # -- publishing ----------------------------------------------------------------

    def publish(
        self,
        group: str,
        message: str | bytes | bytearray | memoryview | Message,
        binary: bool | None = None,
        *,
        sender: Any = None,
    ) -> int:
        """Send ``message`` to every member of ``group``, here and (through the backplane) elsewhere.

        ``str`` goes as a text message, bytes as binary, a Message as its own type;
        ``binary`` forces the type (bytes sent as text must be UTF-8). ``sender``,
        the handler publishing, is charged against ``rate_limit``. Returns the
        number of local members the message was written or queued for (0 when the
        rate limit refused it). The local members have it, or have it queued, when
        this returns.
        """
        opcode, payload = _encode(message, binary)
        if sender is not None and self.rate_limit is not None and not self._allow(sender):
            return 0
        return self._fan_out(group, opcode, payload, remote=False)

    def deliver(self, group: str, opcode: Opcode, payload: bytes, *, remote: bool = False) -> int:
        """Deliver one message to this process's members of ``group`` (the backplane's entry point).

        The frame is built and serialized here, once, whatever the number of members.
        """
        return self._fan_out(group, opcode, payload, remote=remote, onward=False)

    def send(
        self, member: Any, message: str | bytes | bytearray | memoryview | Message, binary: bool | None = None
    ) -> bool:
        """Send ``message`` to one member, in order with what the hub delivers to it.

        A reply sent this way reaches the member after every message the hub took
        for it before, and before every one it takes after (``self.send()`` writes
        straight to the connection and can overtake messages queued in the hub).
        For a member that is in no group this is the connection's own send. True if
        the message was written or queued; False if the member is gone, or was
        evicted because its queue was full.
        """
        opcode, payload = _encode(message, binary)
        record = self._members.get(id(member))
        if record is None or record.handler is not member:
            # Nothing of ours waits for it: the connection's own send keeps the order.
            _connection_of(member).send_message(payload, opcode is Opcode.BINARY)
            with self._stats_lock:
                self._stats.sent += 1
            return True
        frame = Frame(opcode, payload)
        wire = b"".join(frame.serialize(mask=False))
        outcome = self._offer(record, frame, wire)
        self._account([outcome], sent=1)
        self._after_offers([(record, outcome)])
        return outcome in _DELIVERED

    def _fan_out(self, group: str, opcode: Opcode, payload: bytes, *, remote: bool, onward: bool = True) -> int:
        """Offer one message to every local member of ``group``, in this thread, then pass it on."""
        turns = self._group_locks.get(group)
        if turns is None:  # no local member
            if onward:
                self.backplane.publish(group, opcode, payload)
            self._account([], published=int(onward), received=int(remote))
            return 0
        frame = Frame(opcode, payload)
        wire = b"".join(frame.serialize(mask=False))
        outcomes: list[str] = []
        trouble: list[tuple[_Member, str]] = []
        ticket = -1
        _acquire(turns.lock)
        try:
            offer = self._offer
            for record in self._snapshots.get(group, ()):
                outcome = offer(record, frame, wire)
                outcomes.append(outcome)
                if outcome in (_EVICT, _FAILED):
                    trouble.append((record, outcome))
            if onward:
                ticket = turns.take()
        finally:
            turns.lock.release()
        if onward:
            # Outside the group's lock (the backplane may wait for room: deliveries from
            # other processes must not wait behind that), yet in the order taken under it.
            turns.wait(ticket)
            try:
                self.backplane.publish(group, opcode, payload)
            finally:
                turns.done()
        self._account(outcomes, published=int(onward), received=int(remote))
        if trouble:
            self._after_offers(trouble)
        return sum(1 for outcome in outcomes if outcome in _DELIVERED)

    def _offer(self, record: _Member, frame: Frame, wire: bytes) -> str:
        """Write one message to ``record`` now, or queue it, or apply the overflow policy."""
        lock = record.lock
        caught_up = 0  # queued messages this publisher wrote on the way
        _acquire(lock)
        try:
            state = record.state
            if state is GONE:
                return _DISCARDED
            if record.on_loop:
                queue = record.queue
                if queue and record.fits(len(queue[0][1])):
                    # Its buffer has room again: the publisher writes the backlog first
                    # (it pays for its room), in order, without waiting for a drainer.
                    caught_up, failed = self._write_queued(record, len(queue))
                    if failed:
                        return _FAILED
                    if not queue:
                        record.state = state = IDLE  # a drainer still due finds nothing to do
                direct = not queue and record.fits(len(wire))
                if not queue and not direct and record.connection.loop.is_leader():
                    # This thread runs the member's loop, maybe this member's own callback,
                    # whose writes wait for the callback's end (the batch's replies go out
                    # together): hand the loop over, and this write sends them all now.
                    leave_loop()
                    direct = record.buffered() + len(wire) <= record.max_send_buffer
                if direct:
                    # Nothing of ours waits for it, and its buffer has room: the write
                    # does not wait for the peer. Under the member's lock, so that a
                    # drain or another publisher cannot slip in between.
                    try:
                        record.write(frame, wire)
                    except Exception as exc:
                        logger.debug("write to %r failed (%s): removing it", record.handler, exc)
                        return _FAILED
                    return _WRITTEN
            cost = len(wire) + _ENTRY_COST
            if self._full(record, cost):
                if self.overflow == "drop_oldest":
                    queue = record.queue
                    while queue and self._full(record, cost):
                        _, old = queue.popleft()
                        record.queued_bytes -= len(old) + _ENTRY_COST
                        record.dropped += 1
                elif self.overflow == "block":
                    if not self._wait_for_room(record, cost):
                        return _DISCARDED if record.state is GONE else _EVICT
                    state = record.state
                else:
                    return _EVICT
            record.queue.append((frame, wire))
            record.queued_bytes += cost
            # Peaks are kept per member, under the lock held anyway, and summed up in stats().
            record.peak_messages = max(record.peak_messages, len(record.queue))
            record.peak_bytes = max(record.peak_bytes, record.queued_bytes + record.buffered())
            if state is IDLE:
                if record.on_loop:
                    record.state = WAITING
                    self._arm(record)
                else:
                    record.state = DRAINING
                    self._submit(self._senders, self._drain_blocking, record)
            return _QUEUED
        finally:
            lock.release()
            self._count_written(caught_up)

    def _write_queued(self, record: _Member, limit: int) -> tuple[int, bool]:
        """Write up to ``limit`` messages from the head of a loop member's queue while its
        buffer takes them (its lock held); (how many, whether a write failed)."""
        queue = record.queue
        written = 0
        failed = False
        while queue and written < limit and record.fits(len(queue[0][1])):
            frame, wire = queue.popleft()
            record.queued_bytes -= len(wire) + _ENTRY_COST
            try:
                record.write(frame, wire)
            except Exception as exc:
                logger.debug("write to %r failed (%s): removing it", record.handler, exc)
                record.discarded += 1
                failed = True
                break
            written += 1
        if written:
            record.cond.notify_all()
        return written, failed

    def _full(self, record: _Member, cost: int) -> bool:
        """Whether one more entry costing ``cost`` bytes would overflow ``record`` (its lock held)."""
        pending = record.queued_bytes + record.buffered()
        # An idle member takes any one message, however large: it must be sendable at all.
        return len(record.queue) >= self.max_queue or (pending > 0 and pending + cost > self.max_queue_bytes)

    def _wait_for_room(self, record: _Member, cost: int) -> bool:
        """The "block" policy (the member's lock held): wait up to block_timeout; False if there is still no room."""
        leave_loop()  # this thread may run a loop: hand it over before waiting
        deadline = time.monotonic() + self.block_timeout
        while self._full(record, cost):
            if record.state is GONE:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Drains notify; room that frees up in a loop connection's own buffer does not:
            # look again soon, and write what fits meanwhile.
            record.cond.wait(min(left, _POLL) if record.on_loop else left)
            if record.on_loop and record.state is not GONE and record.queue:
                written, failed = self._write_queued(record, len(record.queue))
                self._count_written(written)
                if failed:
                    return False
        return record.state is not GONE

    def _after_offers(self, outcomes: list[tuple[_Member, str]]) -> None:
        """Evict the members that overflowed, forget those whose write failed (no lock held)."""
        for record, outcome in outcomes:
            if outcome == _EVICT:
                self._evict(
                    record,
                    f"slow consumer: outgoing queue full ({self.max_queue} messages / {self.max_queue_bytes} bytes)",
                )
            elif outcome == _FAILED:
                self._fail(record)

    def _account(self, outcomes: list[str], *, published: int = 0, received: int = 0, sent: int = 0) -> None:
        written = deferred = discarded = 0
        for outcome in outcomes:
            if outcome == _WRITTEN:
                written += 1
            elif outcome == _QUEUED:
                deferred += 1
            else:  # gone, evicted, failed: the message is lost with the member
                discarded += 1
        with self._stats_lock:
            stats = self._stats
            stats.published += published
            stats.received += received
            stats.sent += sent
            stats.deliveries += len(outcomes)
            stats.written += written
            stats.deferred += deferred
            stats.discarded += discarded

    # -- the rate limit -----------------------------------------------------------------

    def _allow(self, sender: Any) -> bool:
        """Take a token from ``sender``'s bucket; False (and the limit's action) if there is none."""
        limit = self.rate_limit
        assert limit is not None
        now = time.monotonic()
        with self._buckets_lock:
            try:
                bucket = self._buckets.get(sender)
            except TypeError:
                raise TypeError(f"sender must be the publishing handler (a WebSocket), not {sender!r}") from None
            if bucket is None:
                bucket = self._buckets[sender] = _Bucket(float(limit.burst), now)
            elif not (limit.action == "close" and bucket.refused):
                bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.stamp) * limit.rate)
                bucket.stamp = now
            if bucket.tokens >= 1.0 and not (limit.action == "close" and bucket.refused):
                bucket.tokens -= 1.0
                return True
            bucket.refused += 1
            first = bucket.refused == 1
        with self._stats_lock:
            self._stats.rate_limited += 1
        if first:
            if limit.action == "close":
                logger.info(
                    "%r publishes faster than %g/s (burst %d): closing it with %d",
                    sender,
                    limit.rate,
                    limit.burst,
                    limit.close_code,
                )
                try:
                    _connection_of(sender).close(limit.close_code, "publishing too fast")
                except Exception as exc:
                    logger.debug("closing %r: %s", sender, exc)
            else:
                logger.info(
                    "%r publishes faster than %g/s (burst %d): dropping what is over", sender, limit.rate, limit.burst
                )
        return False

    # -- drains --------------------------------------------------------------------------

    def _submit(self, pool: WorkerPool, task: Callable[[_Member], None], record: _Member) -> None:
        try:
            pool.submit(functools.partial(task, record))
        except RuntimeError:  # the hub is closing: nothing more goes out
            pass

    def _arm(self, record: _Member) -> None:
        """Have ``record`` drained once its connection's buffer has emptied (its lock held, state WAITING).

        At most one callback per member is pending in its connection: a drainer clears ``armed``.
        """
        if not record.armed:
            record.armed = True
            record.connection.when_drained(functools.partial(self._submit, self._drainers, self._drained, record))

    def _drained(self, record: _Member) -> None:
        """A drainer, after the connection's callback: that callback is no longer pending."""
        self._drain_loop(record, fired=True)

    def _drain_loop(self, record: _Member, fired: bool = False) -> None:
        """A drainer: write what a loop member's buffer takes, in order, under the member's lock."""
        with record.lock:  # a drainer thread may wait for it: it runs no loop
            if fired:
                record.armed = False
            if record.state is not WAITING and record.state is not DRAINING:
                return  # gone, or a publisher wrote the backlog already
            record.state = DRAINING
            queue = record.queue
            written, failed = self._write_queued(record, _BATCH)
            if failed:
                pass
            elif not queue:
                record.state = IDLE
            elif written == _BATCH and record.fits(len(queue[0][1])):
                self._submit(self._drainers, self._drain_loop, record)  # to the back of the line
            else:
                record.state = WAITING
                self._arm(record)
        self._count_written(written)
        if failed:
            self._fail(record)

    def _drain_blocking(self, record: _Member) -> None:
        """A sender: write a blocking member's queue, in order, one message at a time (each may block)."""
        written = 0
        try:
            for _ in range(_BATCH):
                with record.lock:
                    if record.state is GONE:
                        return
                    if not record.queue:
                        record.state = IDLE
                        return
                    frame, wire = record.queue.popleft()
                    record.queued_bytes -= len(wire) + _ENTRY_COST
                    record.cond.notify_all()
                # Outside the lock: publishers only ever queue for this member, and
                # this task is its only writer, so the order holds.
                try:
                    record.write(frame, wire)
                except Exception as exc:
                    logger.debug("write to %r failed (%s): removing it", record.handler, exc)
                    with self._stats_lock:
                        self._stats.discarded += 1
                    self._fail(record)
                    return
                written += 1
            self._submit(self._senders, self._drain_blocking, record)  # more to do: to the back of the line
        finally:
            self._count_written(written)

    def _count_written(self, written: int) -> None:
        if written:
            with self._stats_lock:
                self._stats.written += written

    # -- failures and eviction ----------------------------------------------------------

    def _drop_member(self, record: _Member) -> bool:
        """Remove ``record``; False if it was gone already."""
        _acquire(self._lock)
        try:
            if record.state is GONE:
                return False
            self._remove(record)
            return True
        finally:
            self._lock.release()

    def _fail(self, record: _Member) -> None:
        """A write to ``record`` failed: its connection is gone; forget it."""
        if not self._drop_member(record):
            return
        with self._stats_lock:
            self._stats.failed += 1
        self.backplane.membership_changed()

    def _evict(self, record: _Member, reason: str) -> None:
        if not self._drop_member(record):
            return
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
            # A blocking connection: waits while a write of ours to this peer is stuck
            # (it holds the connection's lock); the timer thread then drops TCP, which
            # ends both. A loop connection's close() never waits.
            record.connection.close(self.close_code, reason[:120])
        except Exception as exc:
            logger.debug("closing %r: %s", record.handler, exc)
        finally:
            done.set()

    def _start_timer(self) -> None:
        """Start the timer thread if it is not running (``_timer_lock`` held)."""
        if self._timer is None and not self._stopping.is_set():
            self._timer = threading.Thread(target=self._run_timer, name=f"{self.name}-timer", daemon=True)
            self._timer.start()

    def _run_timer(self) -> None:
        """Drop the TCP connection of evicted members whose close frame is stuck past evict_grace."""
        while not self._stopping.wait(_TICK):
            with self._timer_lock:
                if not self._deadlines:
                    self._timer = None  # idle: exit; the next eviction starts a new one
                    return
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
            _acquire(record.lock)
            try:
                stats.peak_pending_messages = max(stats.peak_pending_messages, record.peak_messages)
                stats.peak_pending_bytes = max(stats.peak_pending_bytes, record.peak_bytes)
                stats.dropped += record.dropped
                stats.discarded += record.discarded
            finally:
                record.lock.release()
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
            timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(timeout)
        for pool in (self._drainers, self._senders, self._closers):
            pool.shutdown(timeout)

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
    """Make ``member.closed()`` (called once by every door) leave ``hub`` first.

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
