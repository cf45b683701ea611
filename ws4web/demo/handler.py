"""The chat room's one handler class, mounted unchanged by every app of this package.

Theory of operation
===================

Every message to the room goes through a :class:`ws4web.pubsub.Hub`: framed once, written
to every member, a member that stops reading dropped instead of stalling the room. Set
``WS4WEB_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/0``) and the room spans every process
sharing that Redis, whatever stack each one runs: each process announces its own
members' comings and goings, and a welcome lists every process's members (Redis pub/sub
is at most once: a page may miss an update lost in an outage until it reconnects).

What a stranger could abuse, and what bounds it:

* presence: a :class:`ChatRoom` publishes an update only when its membership changed,
  coalesced over a ``debounce`` window (0.25 s): a burst of joins and leaves is one
  update, and a connection that comes and goes within it costs nothing. An update
  names who joined and who left since the last one (the pages print "ann joined" /
  "ann left" once per change), never the whole room: its size is what changed, not
  the room's size. A member gets the whole list once, in its welcome;
* names: checked (:func:`check_name`) and made unique by a suffix the server adds,
  ``ann (2)``, which no one can type (parentheses are not allowed in a name). A
  suffix rather than a refusal: a page that reconnects after a lost connection must
  get in even while the server still holds its old connection under that name;
* ``say``: charged to the speaker's :data:`SAY_LIMIT` (a burst of 10 lines, then 3 a
  second); past it the hub closes the connection with 1008 (Policy Violation), so a
  flooder stops costing the server anything. No person typing reaches it; a script
  that does is gone, and the page explains why and reconnects with backoff;
* replies (``welcome``, ``error``) go through ``hub.send``: they keep their place among
  the room's messages, whatever the stack (docs/pubsub.md, Ordering);
* the room holds at most :data:`MAX_MEMBERS`; lines are at most :data:`MAX_TEXT`
  characters; the apps cap a message at ``MAX_MESSAGE`` bytes and admit pages of
  their own origin only.

Protocol (JSON text messages; ``id`` is a member's connection id, what marks "me")::

  client -> server  {"type": "join", "name": "ann"}      then  {"type": "say", "text": "hi"}
  server -> client  {"type": "welcome", "id": "ws3.1f2e", "name": "ann", "online": [MEMBER...]}
                    {"type": "presence", "joined": [MEMBER...], "left": [MEMBER...]}
                    {"type": "message", "id": "ws3.1f2e", "from": "ann", "text": "hi"}
                    {"type": "error", "code": "bad-name", "text": "..."}
  MEMBER = {"id": "ws3.1f2e", "name": "ann"}, lists sorted by name
  error codes: bad-request, bad-name, already-joined, room-full, not-joined, bad-text,
  too-fast (only under a RateLimit whose action is "drop")

The server closes with 1008 a member over its rate, 1013 one that reads too slowly
(the hub's eviction), 1009 a message over ``MAX_MESSAGE``, 1001 when it stops.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import unicodedata
from collections.abc import Callable
from typing import Any, ClassVar

from ws4web import WebSocket
from ws4web.exceptions import ConnectionClosed
from ws4web.messages import Message
from ws4web.pubsub import Hub, RateLimit

#: characters in a name (before the server's suffix)
MAX_NAME = 24
#: characters in a line
MAX_TEXT = 2000
#: members in the room, every process counted
MAX_MEMBERS = 100
#: the hub group of the room
ROOM = "chat"
#: seconds: the window in which membership changes are coalesced into one presence update
DEBOUNCE = 0.25
#: what a member may say: a burst of 10 lines, then 3 a second; past it, closed with 1008
SAY_LIMIT = RateLimit(rate=3, burst=10, action="close")

# Besides letters, digits and combining marks: no comma (lists), no parentheses (the
# server's suffixes), no control or format characters (invisible, or moving text).
_NAME_PUNCTUATION = frozenset(" -_.'")

#: ``schedule(delay, action)``: run ``action`` once, ``delay`` seconds from now, in another thread
Schedule = Callable[[float, Callable[[], None]], object]


class ChatError(Exception):
    """A request the room refuses: ``code`` for the page, ``text`` for the person."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def check_name(raw: object) -> str:
    """The name as the room shows it (NFKC, runs of spaces collapsed), or ChatError("bad-name")."""
    if not isinstance(raw, str):
        raise ChatError("bad-name", "a name is a string")
    name = " ".join(part for part in unicodedata.normalize("NFKC", raw).split(" ") if part)
    if not name:
        raise ChatError("bad-name", "a name needs at least one letter or digit")
    if len(name) > MAX_NAME:
        raise ChatError("bad-name", f"a name has at most {MAX_NAME} characters")
    for index, char in enumerate(name):
        kind = unicodedata.category(char)[0]
        if kind in "LN" or char in _NAME_PUNCTUATION or (kind == "M" and index > 0):
            continue
        raise ChatError("bad-name", f"{char!r} is not allowed in a name: use letters, digits, spaces and - _ . '")
    if not any(unicodedata.category(char)[0] in "LN" for char in name):
        raise ChatError("bad-name", "a name needs at least one letter or digit")
    return name


def _timer(delay: float, action: Callable[[], None]) -> object:
    timer = threading.Timer(delay, action)
    timer.daemon = True  # a pending presence update never holds a stopping server
    timer.start()
    return timer


class ChatRoom:
    """One room on a hub: its members in this process, and their presence, coalesced.

    ``schedule`` runs the coalesced update (default: a timer thread); tests inject their
    own to decide when it runs. ``tag`` ends this process's member ids (unique across
    the processes a Redis backplane joins).
    """

    def __init__(
        self,
        hub: Hub,
        group: str = ROOM,
        *,
        debounce: float = DEBOUNCE,
        max_members: int = MAX_MEMBERS,
        schedule: Schedule = _timer,
        tag: str | None = None,
    ) -> None:
        self.hub = hub
        self.group = group
        self.debounce = debounce
        self.max_members = max_members
        self.schedule = schedule
        self.tag = tag if tag is not None else secrets.token_hex(2)
        # One presence update at a time, each published before the next is computed; a
        # welcome is taken under it too, so it is never older than an update sent after it.
        # Taken before _lock, never after.
        self._publishing = threading.Lock()
        self._lock = threading.Lock()  # what follows
        self._members: dict[str, str] = {}  # member id -> name, this process's members
        self._announced: dict[str, str] = {}  # what the last presence update said about them
        self._due = False  # an update is scheduled

    # -- membership --------------------------------------------------------------------

    def member_id(self, handler: WebSocket) -> str:
        """The member id of a connection: its log id (``ws3``) and this process's tag."""
        return f"{handler.id}.{self.tag}"

    def join(self, handler: WebSocket, requested: object) -> tuple[str, str]:
        """Add ``handler`` under a unique form of ``requested`` and send it its welcome;
        return (member id, name). ChatError if the name is invalid or the room full."""
        name = check_name(requested)
        member = self.member_id(handler)
        with self._publishing:
            with self._lock:
                remote = self._remote()
                if len(remote) + len(self._members) >= self.max_members:
                    raise ChatError("room-full", f"the room is full ({self.max_members} people)")
                taken = {other.casefold() for other in (*remote.values(), *self._members.values())}
                unique, suffix = name, 2
                while unique.casefold() in taken:
                    unique, suffix = f"{name} ({suffix})", suffix + 1
                self._members[member] = unique
                self._changed()
                # What the room has been told, and itself: the next updates it gets are changes
                # to this (one that joins and leaves before it is told appears in neither).
                shown = {**remote, **self._announced, member: unique}
            self.hub.join(self.group, handler, name=f"{member} {unique}")
            # After the join, through the hub: in order with the room's messages to it.
            _reply(self.hub, handler, {"type": "welcome", "id": member, "name": unique, "online": _listed(shown)})
        return member, unique

    def leave(self, member: str) -> None:
        """``member``'s connection closed (the hub has removed it already)."""
        with self._lock:
            if self._members.pop(member, None) is not None:
                self._changed()

    def say(self, handler: WebSocket, member: str, name: str, text: str) -> bool:
        """Publish one line; False if the rate limit refused it (the hub has then closed
        the connection, or, under a ``"drop"`` limit, the speaker is told)."""
        with self._lock:
            unannounced = member not in self._announced
        if unannounced:
            self.flush()  # "ann joined" before ann's first line
        line = json.dumps({"type": "message", "id": member, "from": name, "text": text})
        if self.hub.publish(self.group, line, sender=handler):
            return True
        limit = self.hub.rate_limit
        if limit is not None and limit.action == "drop":
            _reply(self.hub, handler, {"type": "error", "code": "too-fast", "text": "too fast: that line was not sent"})
        return False

    # -- presence ----------------------------------------------------------------------

    def _changed(self) -> None:
        """Membership changed (``_lock`` held): make sure an update is coming."""
        if not self._due:
            self._due = True
            self.schedule(self.debounce, self._scheduled)

    def _scheduled(self) -> None:
        with self._lock:
            self._due = False  # changes from now on schedule the next update
        self.flush()

    def flush(self) -> bool:
        """Publish one presence update if this process's membership changed since the last; True if it did.

        The update carries the changes only: its size is what changed, not the room's size
        (a page has the whole list from its welcome).
        """
        with self._publishing:
            with self._lock:
                joined = {m: n for m, n in self._members.items() if m not in self._announced}
                left = {m: n for m, n in self._announced.items() if m not in self._members}
                if not joined and not left:
                    return False
                self._announced = dict(self._members)
            update = {"type": "presence", "joined": _listed(joined), "left": _listed(left)}
            self.hub.publish(self.group, json.dumps(update))
            return True

    def _remote(self) -> dict[str, str]:
        """The members of other processes (``_lock`` held), as the backplane lists them."""
        remote: dict[str, str] = {}
        for entry in self.hub.presence(self.group):
            member, _, name = entry.partition(" ")
            if name and not member.endswith("." + self.tag):
                remote[member] = name
        return remote


def _listed(members: dict[str, str]) -> list[dict[str, str]]:
    return [{"id": member, "name": name} for member, name in sorted(members.items(), key=_by_name)]


def _by_name(item: tuple[str, str]) -> tuple[str, str]:
    return (item[1].casefold(), item[0])


def _reply(hub: Hub, handler: WebSocket, event: dict[str, Any]) -> None:
    """Send ``event`` to one member, in order with what the hub sends it."""
    try:
        hub.send(handler, json.dumps(event))
    except ConnectionClosed:
        pass  # it went away meanwhile: nobody to tell


def _make_hub() -> Hub:
    url = os.environ.get("WS4WEB_REDIS_URL")
    if url:
        from ws4web.pubsub.redis import RedisBackplane

        return Hub(RedisBackplane(url), rate_limit=SAY_LIMIT)
    return Hub(rate_limit=SAY_LIMIT)


#: the room every app mounts
room = ChatRoom(_make_hub())


class ChatHandler(WebSocket):
    """One chat participant."""

    #: the room it talks in (a subclass may name another: tests do)
    room: ClassVar[ChatRoom] = room
    #: its member id and name, once joined
    member: str | None = None
    name: str | None = None

    def received_message(self, message: Message) -> None:
        try:
            event = json.loads(message.data)
            kind = event["type"] if isinstance(event, dict) else None
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: [[[[...]]]]
            kind = None
        try:
            if kind == "join":
                self._join(event)
            elif kind == "say":
                self._say(event)
            else:
                raise ChatError("bad-request", 'expected {"type": "join", "name": ...} or {"type": "say", "text": ...}')
        except ChatError as refused:
            _reply(self.room.hub, self, {"type": "error", "code": refused.code, "text": refused.text})

    def _join(self, event: dict[str, Any]) -> None:
        if self.member is not None:
            raise ChatError("already-joined", f"you are in the room already, as {self.name}")
        self.member, self.name = self.room.join(self, event.get("name"))

    def _say(self, event: dict[str, Any]) -> None:
        if self.member is None or self.name is None:
            raise ChatError("not-joined", "join first")
        text = event.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ChatError("bad-text", "a line needs some text")
        if len(text) > MAX_TEXT:
            raise ChatError("bad-text", f"a line has at most {MAX_TEXT} characters")
        self.room.say(self, self.member, self.name, text)

    def closed(self, code: int, reason: str | None = None) -> None:
        # The hub has already removed this member (it wraps closed()).
        if self.member is not None:
            self.room.leave(self.member)
