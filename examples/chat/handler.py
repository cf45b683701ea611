"""The chat room's one handler class, mounted unchanged by every stack in this folder.

Protocol (JSON text messages):
  client -> server  {"type": "join", "name": "ann"}   then   {"type": "say", "text": "hi"}
  server -> client  {"type": "presence", "online": ["ann", "bob"]}
                    {"type": "message", "from": "ann", "text": "hi"}
                    {"type": "error", "text": "..."}
"""

from __future__ import annotations

import json
import threading
from typing import Any, ClassVar

from ws4web import WebSocket
from ws4web.messages import Message

MAX_NAME = 32
MAX_TEXT = 2000


class ChatHandler(WebSocket):
    """One chat participant. The room is class-level state shared by all connections."""

    room: ClassVar[dict[ChatHandler, str]] = {}
    room_lock: ClassVar[threading.Lock] = threading.Lock()

    def received_message(self, message: Message) -> None:
        try:
            event = json.loads(message.data)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            self._send({"type": "error", "text": "expected a JSON object with a 'type'"})
            return
        if kind == "join":
            name = str(event.get("name", "")).strip()[:MAX_NAME] or "anonymous"
            with self.room_lock:
                self.room[self] = name
            self._broadcast_presence()
        elif kind == "say":
            with self.room_lock:
                sender = self.room.get(self)
            if sender is None:
                self._send({"type": "error", "text": "join first"})
                return
            self._broadcast({"type": "message", "from": sender, "text": str(event.get("text", ""))[:MAX_TEXT]})
        else:
            self._send({"type": "error", "text": f"unknown type {kind!r}"})

    def closed(self, code: int, reason: str | None = None) -> None:
        with self.room_lock:
            was_in = self.room.pop(self, None) is not None
        if was_in:
            self._broadcast_presence()

    def _send(self, event: dict[str, Any]) -> None:
        self.send(json.dumps(event))

    def _broadcast(self, event: dict[str, Any]) -> None:
        text = json.dumps(event)
        with self.room_lock:
            members = list(self.room)
        for member in members:
            try:
                member.send(text)
            except Exception:  # a member that just left must not stop the others
                pass

    def _broadcast_presence(self) -> None:
        with self.room_lock:
            online = sorted(self.room.values())
        self._broadcast({"type": "presence", "online": online})
