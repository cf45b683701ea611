"""The seam between a handler and whatever runs its connection: the :class:`Driver` contract.

A *driver* owns one connection's I/O: it feeds the sans-I/O
:class:`~ws4web.protocol.Protocol`, writes what it produces, and calls the
:class:`Handler` hooks. :class:`~ws4web.websocket.WebSocket` (the handler API)
only ever talks to a :class:`Driver`; it never builds one. The front doors
(server, adapters, client, :mod:`ws4web.upgrade`) choose the driver:

* :mod:`ws4web.drivers.blocking` — a blocking socket, read by the thread (or
  greenlet, with injected primitives) that runs the handler;
* :mod:`ws4web.drivers.selector` — many sockets on one selector loop, quick
  callbacks run on the loop thread, a callback that blocks moves to a thread of
  its own;
* :mod:`ws4web.drivers.asgi` — the ASGI server frames; the driver maps ASGI
  messages, quick callbacks run on the event loop.

docs/drivers.md has the long version (who reads the socket, when).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..frames import Frame
from ..logs import ConnectionLog
from ..messages import Data, Message
from ..protocol import State
from .base import PingWaiter

__all__ = ["DEFAULT_LIMITS", "LIMIT_NAMES", "Driver", "Handler", "Limits", "PingWaiter"]


@dataclass(frozen=True)
class Limits:
    """Per-connection limits and timers, given by a front door to the driver it opens.

    ``max_message_size`` / ``max_frame_size``: bytes (None lifts the limit; 1009 past
    it). ``close_timeout``: seconds to wait for the peer's end of the closing
    handshake. ``ping_interval`` / ``ping_timeout``: keepalive (None: off).
    ``max_send_buffer``: bytes queued for a peer before a sender waits and the
    driver stops reading that peer. ``max_queue``: messages waiting for a busy
    handler before the driver stops reading that peer.
    """

    max_message_size: int | None = 2**20
    max_frame_size: int | None = None
    close_timeout: float | None = 10.0
    ping_interval: float | None = None
    ping_timeout: float | None = None
    max_send_buffer: int = 2**20
    max_queue: int = 32

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_frame_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")
        for name in ("close_timeout", "ping_interval", "ping_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name} must be a positive number of seconds or None, not {value!r}")
        if not isinstance(self.max_send_buffer, int) or self.max_send_buffer < 1:
            raise ValueError(f"max_send_buffer must be a positive int, not {self.max_send_buffer!r}")
        if not isinstance(self.max_queue, int) or self.max_queue < 1:
            raise ValueError(f"max_queue must be a positive int, not {self.max_queue!r}")


#: The defaults, as one object.
DEFAULT_LIMITS = Limits()

#: The names of :class:`Limits`' fields: the per-connection options every door takes.
LIMIT_NAMES = frozenset(Limits.__dataclass_fields__)


class Handler(Protocol):
    """What a driver calls on the handler it runs, in order, one call at a time.

    ``handle_open`` first, then ``handle_message`` / ``handle_pong`` as frames
    arrive, then ``handle_close`` exactly once when the connection has ended.
    Each returns False when the handler failed (it raised, and the connection is
    closing with 1011): the driver then delivers nothing more but
    ``handle_close``.
    """

    def handle_open(self) -> bool: ...

    def handle_message(self, message: Message) -> bool: ...

    def handle_pong(self, payload: bytes) -> bool: ...

    def handle_close(self) -> None: ...


class Driver(Protocol):
    """Everything a handler may ask of whatever runs its connection.

    Sending, closing and pinging are safe from any thread. ``start`` delivers
    the attached handler's hooks in the background and returns; ``run``
    returns once the connection has ended (a blocking driver delivers them in
    the calling thread meanwhile).
    """

    @property
    def id(self) -> str:
        """Process-unique connection id (``ws12``), the one in its log records."""
        ...

    @property
    def log(self) -> ConnectionLog: ...

    @property
    def state(self) -> State: ...

    @property
    def closed(self) -> bool:
        """True once the connection has ended and its resources are released."""
        ...

    @property
    def close_code(self) -> int: ...

    @property
    def close_reason(self) -> str: ...

    @property
    def buffered_amount(self) -> int:
        """Bytes handed to the driver that the peer has not been sent yet."""
        ...

    def attach(self, handler: Handler) -> None:
        """The handler whose hooks this driver calls (set once, by WebSocket.bind)."""
        ...

    def start(self) -> None: ...

    def run(self) -> None: ...

    def send_message(self, data: Data, binary: bool | None = None, *, compress: bool = True) -> None: ...

    def send_fragments(
        self, chunks: Iterable[str | bytes], binary: bool | None = None, *, compress: bool = True
    ) -> None: ...

    def send_frame(self, frame: Frame) -> None: ...

    def send_prepared(self, message: Frame, wire: bytes) -> None: ...

    def ping(self, data: bytes | None = None) -> PingWaiter: ...

    def pong(self, data: bytes = b"") -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...

    def abort(self) -> None: ...

    def recv_message(self, timeout: float | None = None) -> Message: ...

    def recv_frame(self, timeout: float | None = None) -> Frame: ...

    def start_keepalive(self, interval: float, timeout: float | None = None) -> None: ...

    def wait_closed(self, timeout: float | None = None) -> bool: ...

    async def asend(self, data: Data, binary: bool | None = None) -> None:
        """Send from an ``async def`` callback (ASGI); other drivers raise RuntimeError."""
        ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None: ...
