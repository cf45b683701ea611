"""``ws4py.client.geventclient``: :class:`WebSocketClient` on gevent's sockets and primitives, without monkey-patching.

``connect()`` completes the handshake over a :mod:`gevent.socket` (and
:mod:`gevent.ssl`), then a greenlet runs the connection and queues what arrives;
``receive()`` takes the next message, ``None`` once the connection is closed.
The queue holds at most ``max_queue`` messages (32, each at most
``max_message_size``): past it the greenlet stops reading and TCP pushes back on
the server, so an unread client never grows without bound.
"""

from __future__ import annotations

from typing import Any

import gevent
import gevent.queue
import gevent.socket
import gevent.ssl

from ....adapters.gevent import GEVENT
from ....messages import Message
from . import Network, WebSocketBaseClient

__all__ = ["WebSocketClient"]

#: gevent's cooperative sockets and TLS.
GEVENT_NETWORK = Network(gevent.socket, gevent.ssl)

_CLOSED = object()  # queued after the last message


class WebSocketClient(WebSocketBaseClient):
    """ws4py's gevent client. The constructor is
    :class:`~ws4web.compat.ws4py.client.WebSocketBaseClient`'s; ``messages`` is the queue."""

    network = GEVENT_NETWORK
    primitives = GEVENT

    def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        #: the received messages, waiting for receive() (bounded: ``max_queue``)
        self.messages: Any = gevent.queue.Queue(maxsize=self._limits.max_queue)
        self._greenlet: Any = None

    def handshake_ok(self) -> None:
        """Run the connection in a greenlet of its own."""
        self.run_blocking()
        self._greenlet = gevent.spawn(self.run)

    def received_message(self, message: Message) -> None:
        self.messages.put(message)  # waits (cooperatively) while the queue is full

    def closed(self, code: int, reason: str | None = None) -> None:
        try:
            self.messages.put_nowait(_CLOSED)
        except gevent.queue.Full:
            pass  # receive() sees the end once the queue is drained

    def receive(self, block: bool = True) -> Message | None:
        """The next message; ``None`` once the connection is closed and every message
        was taken. With ``block=False``, ``gevent.queue.Empty`` when none is waiting."""
        if self.terminated and self.messages.empty():
            return None
        item = self.messages.get(block=block)
        if item is _CLOSED:
            return None
        assert isinstance(item, Message)
        return item
