"""A Redis pub/sub backplane for :class:`~ws4web.pubsub.Hub`: groups and presence shared by every process on one Redis.

Delivery is at most once, as Redis pub/sub is: a message published while Redis is
unreachable, or while a subscriber is reconnecting, is lost for the other
processes. It is never hidden, though. Every envelope carries its origin (one id
per process) and a sequence number counted per origin and group, so a receiver
sees a jump and reports it as a :class:`Gap` (``on_gap`` callback, a warning in
the ``ws4web.pubsub`` log, counters in :meth:`RedisBackplane.stats`), with the
length of the receiver's own outage when the gap spans one.

Two threads per backplane:

* the subscriber holds a pub/sub connection subscribed to one channel per group
  with local members, hands incoming messages to the hub, pings Redis every
  ``heartbeat`` seconds, and on any error reconnects with bounded exponential
  backoff (``backoff_initial`` doubling up to ``backoff_max``) and resubscribes;
* the keeper publishes what the hub sends out (in pipelined batches, from an
  outbox bounded in envelopes and bytes) and maintains presence. A publisher
  waits up to ``outbox_wait`` seconds for room in a full outbox (Redis is slower
  than the publishers: they are paced), then the envelope is lost, counted and
  logged; while Redis is unreachable nothing waits.

Inbound, the subscriber hands each message to the hub in its own thread (no
queue between them); envelopes over ``max_message_size`` are dropped, and the
per-stream sequence state is bounded by ``max_streams`` (the least recently heard
stream is forgotten first).

The ``redis`` client library is imported when a backplane is created, not when
this module is: the rest of ws4web never needs it.

Presence: one sorted set per group, ``<prefix>:presence:<group>``, member
``<origin>|<name>``, score = expiry time on the Redis server's clock (so
processes on hosts with skewed clocks agree). The keeper refreshes its entries
every ``heartbeat`` seconds to ``presence_ttl`` seconds ahead; entries of a
process that died without cleaning up expire after ``presence_ttl``. Needs
Redis >= 5 (scripts that read TIME and then write).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..drivers.selector import leave_loop
from ..frames import Opcode
from .hub import Backplane

__all__ = ["Gap", "RedisBackplane"]

logger = logging.getLogger("ws4web.pubsub")

# Envelope: magic, version, opcode, sequence number, origin length; then origin, then payload.
_HEAD = struct.Struct("!2sBBQB")
_MAGIC = b"W4"
_VERSION = 1
# What an outbox entry costs beyond its envelope: the tuple, the channel name, the deque slot.
_ENTRY_COST = 160

# Presence scripts run on the server so that expiry times use one clock: Redis's.
_REFRESH = """
local t = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local expires = tonumber(t[1]) + tonumber(t[2]) / 1000000 + ttl
for i = 2, #ARGV do
    redis.call('ZADD', KEYS[1], expires, ARGV[i])
end
local keep = math.ceil(ttl * 2000)
if redis.call('PTTL', KEYS[1]) < keep then
    redis.call('PEXPIRE', KEYS[1], keep)
end
return #ARGV - 1
"""

_QUERY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""

if TYPE_CHECKING:
    import redis


def _import_redis() -> Any:
    """The redis client library, imported when a backplane is made: importing this
    module needs the standard library only (the core stays importable without it)."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("RedisBackplane needs the redis package: pip install 'ws4web[redis]'") from exc
    return redis


@dataclass(frozen=True)
class Gap:
    """Messages from one origin to one group that this process never received."""

    origin: str  #: the publishing process
    group: str
    missed: int  #: how many (from the sequence numbers)
    first_missing: int  #: sequence number of the first one missed
    outage: float | None  #: seconds this process's subscriber was disconnected, if the gap spans that
    detected_at: float  #: time.time() when the gap showed


def encode_envelope(origin: bytes, seq: int, opcode: Opcode, payload: bytes) -> bytes:
    return _HEAD.pack(_MAGIC, _VERSION, opcode, seq, len(origin)) + origin + payload


def decode_envelope(data: bytes) -> tuple[bytes, int, Opcode, bytes]:
    """(origin, seq, opcode, payload); ValueError if ``data`` is not an envelope of ours."""
    if len(data) < _HEAD.size:
        raise ValueError("envelope too short")
    magic, version, opcode, seq, size = _HEAD.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        raise ValueError("not a ws4web envelope")
    if opcode not in (Opcode.TEXT, Opcode.BINARY):
        raise ValueError(f"bad opcode {opcode}")
    end = _HEAD.size + size
    if len(data) < end:
        raise ValueError("truncated origin")
    return bytes(data[_HEAD.size : end]), seq, Opcode(opcode), bytes(data[end:])


class RedisBackplane(Backplane):
    """Carry a hub's groups over Redis pub/sub: ``Hub(RedisBackplane("redis://host:6379/0"))``.

    ``client`` may replace ``url`` with a ready ``redis.Redis``; give it no
    automatic retries (``retry=Retry(NoBackoff(), 0)``), or outages are retried
    inside redis-py where this backplane cannot see and report them.
    ``on_gap(gap)`` is called (in the subscriber thread) for every gap found;
    ``on_reconnect(seconds)`` after the subscriber recovered from an outage.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: redis.Redis | None = None,
        prefix: str = "ws4web",
        heartbeat: float = 5.0,
        presence_ttl: float = 15.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        socket_timeout: float = 2.0,
        max_outbox: int = 10000,
        max_outbox_bytes: int = 8 * 2**20,
        outbox_wait: float = 1.0,
        max_message_size: int | None = 2**20,
        max_streams: int = 10000,
        batch: int = 512,
        poll: float = 0.05,
        on_gap: Callable[[Gap], None] | None = None,
        on_reconnect: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__()
        if presence_ttl <= heartbeat:
            raise ValueError("presence_ttl must be longer than heartbeat, or live members flicker out")
        if max_outbox < 1 or max_outbox_bytes < 1 or max_streams < 1:
            raise ValueError("max_outbox, max_outbox_bytes and max_streams must be positive")
        self._redis = _import_redis()
        #: what a failed Redis call raises (redis-py wraps most socket errors, not all)
        self._errors: tuple[type[BaseException], ...] = (self._redis.RedisError, OSError)
        if client is None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            client = self._redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 0),  # we reconnect ourselves, and report it
                health_check_interval=0,
            )
        self.client = client
        self.prefix = prefix
        self.heartbeat = heartbeat
        self.presence_ttl = presence_ttl
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_outbox = max_outbox
        self.max_outbox_bytes = max_outbox_bytes
        self.outbox_wait = outbox_wait
        self.max_message_size = max_message_size
        self.max_streams = max_streams
        self.batch = batch
        self.poll = poll
        self.on_gap = on_gap
        self.on_reconnect = on_reconnect
        self._origin = self.origin.encode()

        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stats_lock = threading.Lock()
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "published",  # envelopes Redis accepted
                "lost_publishing",  # envelopes not sent: Redis unreachable, or the outbox full
                "outbox_full",  # of those, envelopes that found the outbox full for outbox_wait
                "outbox_waits",  # publishes that waited for room in the outbox
                "peak_outbox_bytes",  # the most bytes the outbox held (envelopes and entry overhead)
                "received",  # envelopes from other processes delivered to the hub
                "gaps",
                "missed",  # messages from other processes known (by sequence) to be lost
                "duplicates",  # envelopes older than one already seen (dropped)
                "invalid",  # messages on our channels that are not envelopes
                "invalid_text",  # text envelopes whose payload is not UTF-8 (dropped, never relayed)
                "oversize",  # envelopes over max_message_size (dropped, never relayed)
                "streams_forgotten",  # (origin, group) sequence states dropped to stay within max_streams
                "outages",  # subscriber disconnections
                "presence_errors",  # presence() answered from local members only
            ),
            0,
        )
        #: recent gaps, newest last
        self.gaps: deque[Gap] = deque(maxlen=256)
        #: recent subscriber outages in seconds, newest last
        self.outages: deque[float] = deque(maxlen=64)

        # Publishing (the keeper drains the outbox).
        self._out_lock = threading.Lock()
        self._wake = threading.Condition(self._out_lock)
        self._room = threading.Condition(self._out_lock)  # the keeper took a batch
        self._outbox: deque[tuple[bytes, bytes]] = deque()
        self._outbox_bytes = 0  # envelopes plus _ENTRY_COST each
        self._full_since: float | None = None  # the outbox overflowed: logged once per episode
        self._seqs: dict[str, int] = {}
        self._presence_dirty = True
        self._membership_version = 0
        self._keeper_down_since: float | None = None
        self._lost_this_outage = 0
        self._written: set[tuple[str, str]] = set()  # presence entries in Redis: (group, name)

        # Receiving (the subscriber thread).
        self._sub_lock = threading.Lock()
        self._confirmed: set[bytes] = set()
        self._sub_up = False
        # (origin, group) -> next sequence number, least recently heard first (bounded by max_streams)
        self._expected: dict[tuple[bytes, str], int] = {}
        self._last_seen: dict[tuple[bytes, str], float] = {}
        self._outage_spans: deque[tuple[float, float]] = deque(maxlen=64)  # (start, end), monotonic

    # -- Backplane interface ---------------------------------------------------------

    def attach(self, hub: Any) -> None:
        super().attach(hub)
        if not self._threads:
            for target, name in ((self._run_subscriber, "ws4web-redis-sub"), (self._run_keeper, "ws4web-redis-keeper")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                self._threads.append(thread)
                thread.start()

    def publish(self, group: str, opcode: Opcode, payload: bytes) -> None:
        """Queue one envelope for the keeper; wait up to outbox_wait for room, else lose it (counted)."""
        channel = self._channel(group)
        full = waited = False
        with self._out_lock:
            seq = self._seqs.get(group, 0) + 1
            self._seqs[group] = seq  # consumed even if the envelope is lost: receivers see the gap
            envelope = encode_envelope(self._origin, seq, opcode, payload)
            cost = len(envelope) + len(channel) + _ENTRY_COST
            if self._outbox_full(cost) and self._keeper_down_since is None and not self._stop.is_set():
                # Redis takes envelopes slower than they come: the publisher waits (and
                # so reads its own peer no faster), within bounds.
                waited = True
                leave_loop()  # this thread may run a loop: hand it over before waiting
                deadline = time.monotonic() + self.outbox_wait
                while self._outbox_full(cost) and self._keeper_down_since is None and not self._stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._room.wait(left)
            if self._keeper_down_since is not None or self._stop.is_set():
                lost = True
            elif self._outbox_full(cost):
                lost = full = True
                first = self._full_since is None
                if first:
                    self._full_since = time.monotonic()
            else:
                lost = False
                self._outbox.append((channel, envelope))
                self._outbox_bytes += cost
                self._wake.notify()
                peak = self._outbox_bytes
        if waited:
            self._count("outbox_waits")
        if lost:
            self._count("lost_publishing")
            if full:
                self._count("outbox_full")
                if first:
                    logger.warning(
                        "the Redis outbox is full (%d envelopes / %d bytes) for over %.1f s: "
                        "messages published here reach this process's members only",
                        self.max_outbox,
                        self.max_outbox_bytes,
                        self.outbox_wait,
                    )
            with self._out_lock:
                self._lost_this_outage += 1
        else:
            with self._stats_lock:
                counters = self._counters
                counters["peak_outbox_bytes"] = max(counters["peak_outbox_bytes"], peak)

    def _outbox_full(self, cost: int) -> bool:
        """Whether an entry costing ``cost`` bytes would not fit (``_out_lock`` held); an empty outbox takes any one."""
        outbox = self._outbox
        return len(outbox) >= self.max_outbox or (bool(outbox) and self._outbox_bytes + cost > self.max_outbox_bytes)

    def membership_changed(self) -> None:
        with self._out_lock:
            self._presence_dirty = True
            self._membership_version += 1  # the subscriber re-reads the groups when this moves
            self._wake.notify()

    def presence(self, group: str) -> list[str]:
        """Names in ``group`` across processes; this process's alone (logged) if Redis is unreachable."""
        try:
            entries = self.client.eval(_QUERY, 1, self._presence_key(group))
        except self._errors as exc:
            self._count("presence_errors")
            logger.warning("presence(%r): Redis unreachable (%s); answering with local members only", group, exc)
            return super().presence(group)
        names = set()
        for entry in entries:
            _origin, _, name = _text(entry).partition("|")
            names.add(name)
        return sorted(names)

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            stats: dict[str, Any] = dict(self._counters)
        stats["connected"] = self.connected
        with self._out_lock:
            stats["outbox"] = len(self._outbox)
            stats["outbox_bytes"] = self._outbox_bytes
        stats["streams"] = len(self._expected)
        return stats

    @property
    def connected(self) -> bool:
        """Both threads are talking to Redis (the subscriber is connected, the keeper's last try worked)."""
        return self._sub_up and self._keeper_down_since is None

    def ready(self) -> bool:
        """Connected, subscribed to every local group, and presence written for every local member."""
        hub = self.hub
        if hub is None or not self.connected:
            return False
        membership = hub.membership()
        channels = {self._channel(group) for group in membership}
        entries = {(group, name) for group, names in membership.items() for name in names}
        with self._sub_lock:
            subscribed = channels <= self._confirmed
        with self._out_lock:
            written = entries == self._written and not self._presence_dirty
        return subscribed and written

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`ready` (e.g. after a join, before telling
        the client it will now see everything published to the group)."""
        if self.ready():
            return True
        leave_loop()  # called from a handler on a loop thread: hand the loop over before waiting
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() >= deadline or self._stop.wait(0.01):
                return False
        return True

    def close(self) -> None:
        self._stop.set()
        with self._out_lock:
            self._wake.notify_all()
            self._room.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(self.backoff_max + 5.0)
        try:
            self.client.close()
        except self._errors:  # pragma: no cover - closing a pool does not talk to Redis
            pass

    # -- the keeper: publishing and presence -----------------------------------------------

    def _run_keeper(self) -> None:
        next_beat = 0.0
        attempt = 0
        while not self._stop.is_set():
            with self._out_lock:
                now = time.monotonic()
                if not self._outbox and not self._presence_dirty and now < next_beat:
                    self._wake.wait(next_beat - now)
                if self._stop.is_set():
                    break
                batch = self._take_batch()
                dirty, self._presence_dirty = self._presence_dirty, False
                down_since = self._keeper_down_since
            now = time.monotonic()
            if down_since is not None:
                if now < next_beat:  # still backing off: nothing can go out
                    self._lost(len(batch))
                    with self._out_lock:
                        self._presence_dirty = self._presence_dirty or dirty
                        if not self._outbox and not self._stop.is_set():
                            self._wake.wait(max(0.0, next_beat - now))
                    continue
                try:
                    self.client.ping()
                except self._errors:
                    attempt += 1
                    next_beat = time.monotonic() + self._backoff(attempt)
                    self._lost(len(batch))
                    with self._out_lock:
                        self._presence_dirty = True
                    continue
                with self._out_lock:
                    self._keeper_down_since = None
                    lost, self._lost_this_outage = self._lost_this_outage, 0
                    self._written.clear()  # Redis may have restarted empty: write presence afresh
                logger.warning(
                    "Redis reachable again after %.1f s; %d message(s) published here meanwhile reached this "
                    "process's members only",
                    now - down_since,
                    lost,
                )
                attempt = 0
                dirty = True
                next_beat = 0.0
            try:
                if batch:
                    pipe = self.client.pipeline(transaction=False)
                    for channel, envelope in batch:
                        pipe.publish(channel, envelope)
                    pipe.execute()
                    self._count("published", len(batch))
                    batch = []
                beat = time.monotonic() >= next_beat
                if dirty or beat:
                    self._sync_presence(refresh=beat)
                    if beat:
                        next_beat = time.monotonic() + self.heartbeat
            except self._errors as exc:
                now = time.monotonic()
                logger.warning(
                    "Redis unreachable (%s): messages published here now reach this process's members only", exc
                )
                self._lost(len(batch))
                with self._out_lock:
                    self._keeper_down_since = now
                    self._presence_dirty = True
                    # Whatever is queued would go out late, after newer local deliveries: drop it.
                    dropped = len(self._outbox)
                    self._outbox.clear()
                    self._outbox_bytes = 0
                    self._room.notify_all()  # publishers waiting for room: nothing goes out now
                self._lost(dropped)
                attempt = 0
                next_beat = now + self._backoff(attempt)
        self._remove_own_presence()

    def _take_batch(self) -> list[tuple[bytes, bytes]]:
        """Up to ``batch`` envelopes off the outbox (``_out_lock`` held); wakes publishers waiting for room."""
        outbox = self._outbox
        batch = [outbox.popleft() for _ in range(min(self.batch, len(outbox)))]
        if batch:
            self._outbox_bytes -= sum(len(channel) + len(envelope) + _ENTRY_COST for channel, envelope in batch)
            if not outbox:
                self._full_since = None
            self._room.notify_all()
        return batch

    def _lost(self, count: int) -> None:
        if count:
            self._count("lost_publishing", count)
            with self._out_lock:
                self._lost_this_outage += count

    def _sync_presence(self, refresh: bool) -> None:
        """Write this process's presence entries: new ones (all of them on ``refresh``), remove gone ones."""
        hub = self.hub
        if hub is None:
            return
        desired = {(group, name) for group, names in hub.membership().items() for name in names}
        with self._out_lock:
            written = set(self._written)
        add = desired if refresh else desired - written
        remove = written - desired
        if not add and not remove:
            return
        pipe = self.client.pipeline(transaction=False)
        for group, names in _by_group(add).items():
            pipe.eval(_REFRESH, 1, self._presence_key(group), repr(self.presence_ttl), *self._entries(names))
        for group, names in _by_group(remove).items():
            pipe.zrem(self._presence_key(group), *self._entries(names))
        pipe.execute()
        with self._out_lock:
            self._written = desired

    def _remove_own_presence(self) -> None:
        with self._out_lock:
            written = set(self._written)
            self._written.clear()
        if not written:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for group, names in _by_group(written).items():
                pipe.zrem(self._presence_key(group), *self._entries(names))
            pipe.execute()
        except self._errors as exc:
            logger.info("could not remove presence entries (%s); they expire in %.0f s", exc, self.presence_ttl)

    # -- the subscriber -------------------------------------------------------------------------

    def _run_subscriber(self) -> None:
        pubsub: Any = None
        requested: set[bytes] = set()
        outage_start: float | None = None
        attempt = 0
        last_heard = ping_due = 0.0
        desired: set[bytes] = set()
        seen_version = -1
        pubsub_fresh = True
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    if outage_start is not None:
                        attempt += 1
                        if self._stop.wait(self._backoff(attempt - 1)):
                            break
                    self.client.ping()  # fails fast while Redis is down
                    pubsub = self.client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
                    pubsub_fresh = True
                    requested = set()
                    with self._sub_lock:
                        self._confirmed.clear()
                    last_heard = time.monotonic()
                    ping_due = last_heard + self.heartbeat
                version = self._membership_version
                if version != seen_version or pubsub_fresh:
                    hub = self.hub
                    desired = {self._channel(group) for group in (hub.groups() if hub is not None else ())}
                    seen_version, pubsub_fresh = version, False
                subscribe = desired - requested
                unsubscribe = requested - desired
                if subscribe:
                    pubsub.subscribe(*subscribe)
                    requested |= subscribe
                if unsubscribe:
                    pubsub.unsubscribe(*unsubscribe)
                    requested -= unsubscribe
                now = time.monotonic()
                if requested:
                    if now >= ping_due:
                        pubsub.ping()
                        ping_due = now + self.heartbeat
                    if now - last_heard > 3 * self.heartbeat:
                        raise self._redis.ConnectionError(f"no answer from Redis for {now - last_heard:.1f} s")
                    message = pubsub.get_message(timeout=self.poll)
                    handled = 0
                    while message is not None:  # take what has arrived, in one go
                        self._on_message(message)
                        handled += 1
                        if handled >= self.batch:
                            break
                        message = pubsub.get_message(timeout=0)
                    if handled:
                        last_heard = time.monotonic()
                else:
                    self._stop.wait(self.poll)
                with self._sub_lock:
                    complete = requested <= self._confirmed
                if outage_start is not None and complete:
                    end = time.monotonic()
                    duration = end - outage_start
                    self._outage_spans.append((outage_start, end))
                    self.outages.append(duration)
                    outage_start = None
                    attempt = 0
                    with self._out_lock:
                        # Redis may have restarted empty: have the keeper write presence afresh now,
                        # not at its next heartbeat (ready() stays False until it has).
                        self._written.clear()
                        self._presence_dirty = True
                        self._wake.notify()
                    logger.warning(
                        "Redis subscription restored after %.1f s; messages published elsewhere meanwhile are lost "
                        "(reported as gaps when their origins publish again)",
                        duration,
                    )
                    if self.on_reconnect is not None:
                        try:
                            self.on_reconnect(duration)
                        except Exception:
                            logger.exception("on_reconnect raised")
                self._sub_up = outage_start is None
            except self._errors as exc:
                self._sub_up = False
                if outage_start is None:
                    outage_start = time.monotonic()
                    self._count("outages")
                    logger.warning("Redis subscription lost (%s); reconnecting", exc)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except self._errors:
                        pass
                    pubsub = None
        self._sub_up = False
        if pubsub is not None:
            try:
                pubsub.close()
            except self._errors:
                pass

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = _text(message.get("type", ""))
        channel = message.get("channel")
        if kind == "subscribe" and isinstance(channel, bytes):
            with self._sub_lock:
                self._confirmed.add(channel)
        elif kind == "unsubscribe" and isinstance(channel, bytes):
            with self._sub_lock:
                self._confirmed.discard(channel)
            # Not listening any more: a later subscription starts a new count.
            group = self._group_of(channel)
            for key in [key for key in self._expected if key[1] == group]:
                del self._expected[key]
                self._last_seen.pop(key, None)
        elif kind == "message" and isinstance(channel, bytes):
            self._on_envelope(self._group_of(channel), message.get("data"))

    def _on_envelope(self, group: str, data: Any) -> None:
        try:
            if not isinstance(data, bytes):
                raise ValueError("not bytes")
            origin, seq, opcode, payload = decode_envelope(data)
        except ValueError as exc:
            self._count("invalid")
            logger.debug("ignoring a message on %r: %s", group, exc)
            return
        if origin == self._origin:
            return  # ours: the hub delivered it locally when it was published
        key = (origin, group)
        now = time.monotonic()
        expected = self._expected.pop(key, None)  # popped and put back: the dicts stay in order of last heard
        previous = self._last_seen.pop(key, None)
        self._last_seen[key] = now
        if expected is None and len(self._expected) >= self.max_streams:
            # A stranger on our channels can make up origins: forget the stream heard
            # least recently (its next message starts a new count: no false gap).
            oldest = next(iter(self._expected))
            del self._expected[oldest]
            self._last_seen.pop(oldest, None)
            self._count("streams_forgotten")
        gap: Gap | None = None
        if expected is not None and seq < expected:
            self._expected[key] = expected
            self._count("duplicates")
            return
        if expected is not None and seq > expected:
            gap = Gap(
                origin.decode(errors="replace"),
                group,
                seq - expected,
                expected,
                self._outage_since(previous),
                time.time(),
            )
        self._expected[key] = seq + 1  # even if dropped below: it arrived, its number is no gap
        if self.max_message_size is not None and len(payload) > self.max_message_size:
            # Members' clients would fail it with 1009 anyway; the hub must not frame and queue it.
            self._count("oversize")
            logger.warning(
                "dropped a %d-byte message to %r from %r: over max_message_size (%d)",
                len(payload),
                group,
                origin.decode(errors="replace"),
                self.max_message_size,
            )
        elif opcode is Opcode.TEXT and not _is_utf8(payload):
            # Relayed, it would make every member's client fail its connection with 1007
            # (RFC 6455 §8.1): a publisher's bug, or a stranger on the Redis channel.
            self._count("invalid_text")
            logger.warning(
                "dropped a text message to %r from %r: its %d bytes are not UTF-8",
                group,
                origin.decode(errors="replace"),
                len(payload),
            )
        else:
            hub = self.hub
            if hub is not None:
                hub.deliver(group, opcode, payload, remote=True)
            self._count("received")
        if gap is not None:
            self._report(gap)

    def _outage_since(self, previous: float | None) -> float | None:
        """Seconds of subscriber outage after ``previous`` (when the last message of that stream came)."""
        if previous is None:
            return None
        spans = [end - start for start, end in self._outage_spans if end >= previous]
        return sum(spans) if spans else None

    def _report(self, gap: Gap) -> None:
        with self._stats_lock:
            self._counters["gaps"] += 1
            self._counters["missed"] += gap.missed
        self.gaps.append(gap)
        if gap.outage is not None:
            logger.warning(
                "missed %d message(s) from %s to %r (sequence %d on) during a %.1f s Redis outage",
                gap.missed,
                gap.origin,
                gap.group,
                gap.first_missing,
                gap.outage,
            )
        else:
            logger.warning(
                "missed %d message(s) from %s to %r (sequence %d on): lost between that process and this one",
                gap.missed,
                gap.origin,
                gap.group,
                gap.first_missing,
            )
        if self.on_gap is not None:
            try:
                self.on_gap(gap)
            except Exception:
                logger.exception("on_gap raised")

    # -- small helpers ---------------------------------------------------------------------

    def _channel(self, group: str) -> bytes:
        return f"{self.prefix}:msg:{group}".encode()

    def _group_of(self, channel: bytes) -> str:
        return channel.decode(errors="replace")[len(self.prefix) + 5 :]

    def _presence_key(self, group: str) -> str:
        return f"{self.prefix}:presence:{group}"

    def _entries(self, names: Iterable[str]) -> list[str]:
        return [f"{self.origin}|{name}" for name in names]

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff_max, self.backoff_initial * 2 ** min(attempt, 30)))

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self._counters[name] += amount


def _by_group(entries: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for group, name in entries:
        groups.setdefault(group, []).append(name)
    return groups


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
