"""The chat room's one handler class, mounted unchanged by every app of this package.

Messages go through a :class:`ws4web.pubsub.Hub`: each is framed once and written to
every member; a member that stops reading is dropped instead of stalling the room.
Set ``WS4WEB_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/0``) and the room spans every
process sharing that Redis, whatever stack each one runs.

Protocol (JSON text messages)::

  client -> server  {"type": "join", "name": "ann"}   then   {"type": "say", "text": "hi"}
  server -> client  {"type": "presence", "online": ["ann", "bob"]}
                    {"type": "message", "from": "ann", "text": "hi"}
                    {"type": "error", "text": "..."}
"""

from __future__ import annotations

import json
import os
from typing import Any

from ws4web import WebSocket
from ws4web.messages import Message
from ws4web.pubsub import Hub

MAX_NAME = 32
MAX_TEXT = 2000
ROOM = "chat"


def _make_hub() -> Hub:
    url = os.environ.get("WS4WEB_REDIS_URL")
    if url:
        from ws4web.pubsub.redis import RedisBackplane

        return Hub(RedisBackplane(url))
    return Hub()


hub = _make_hub()


class ChatHandler(WebSocket):
    """One chat participant."""

    name: str | None = None

    def received_message(self, message: Message) -> None:
        try:
            event = json.loads(message.data)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            self._send({"type": "error", "text": "expected a JSON object with a 'type'"})
            return
        if kind == "join":
            if self.name is None:
                self.name = str(event.get("name", "")).strip()[:MAX_NAME] or "anonymous"
                hub.join(ROOM, self, name=self.name)
            self._publish_presence()
        elif kind == "say":
            if self.name is None:
                self._send({"type": "error", "text": "join first"})
                return
            text = str(event.get("text", ""))[:MAX_TEXT]
            hub.publish(ROOM, json.dumps({"type": "message", "from": self.name, "text": text}))
        else:
            self._send({"type": "error", "text": f"unknown type {kind!r}"})

    def closed(self, code: int, reason: str | None = None) -> None:
        # The hub has already removed this member (it wraps closed()).
        if self.name is not None:
            self._publish_presence()

    def _send(self, event: dict[str, Any]) -> None:
        self.send(json.dumps(event))

    def _publish_presence(self) -> None:
        hub.publish(ROOM, json.dumps({"type": "presence", "online": hub.presence(ROOM)}))
