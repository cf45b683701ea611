"""The sending half every socket driver shares, and :class:`PingWaiter`.

A message (maybe fragmented) holds ``_send_lock`` so the frames of two messages
never interleave; every protocol call holds ``_lock`` and ends with
``_flush()``, so control frames from the reading side still get through between
fragments. A driver supplies ``_flush`` (write or queue what the protocol
produced), ``_after_write`` (its back-pressure wait) and its clock and events.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from ..concurrency import EventLike, LockLike
from ..exceptions import ConnectionClosed, ConnectionClosedError
from ..frames import CloseCode, Frame, Opcode
from ..logs import ConnectionLog
from ..messages import Data, Message, iter_fragments
from ..protocol import Protocol, State

__all__ = ["DriverBase", "PingWaiter", "closed_error", "end_write_side", "set_nodelay"]


class PingWaiter:
    """Returned by ``ping()``: wait on it for the pong, then read ``latency``."""

    __slots__ = ("_clock", "_event", "_pump", "latency", "on_done", "payload", "sent_at")

    def __init__(
        self,
        payload: bytes,
        event: EventLike,
        clock: Callable[[], float],
        pump: Callable[[PingWaiter, float | None], bool] | None = None,
    ) -> None:
        self.payload = payload
        self._event = event
        self._clock = clock
        #: the driver's way to read while waiting, where nobody else reads (pull style)
        self._pump = pump
        self.sent_at: float = clock()
        #: Seconds between the ping and its pong, once the pong arrived.
        self.latency: float | None = None
        #: the driver's: called once, in the thread that resolves or cancels the ping
        self.on_done: Callable[[], object] | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pong arrives (True), or the timeout passes or the
        connection ends first (False).

        In pull style nobody may be reading the socket: then this reads it
        (keeping the messages that arrive for ``recv()``) until the pong comes.
        """
        if self._pump is not None and not self._event.is_set():
            return self._pump(self, timeout)
        return self.wait_resolved(timeout)

    def wait_resolved(self, timeout: float | None = None) -> bool:
        """Wait for the pong without ever reading the socket (another thread reads)."""
        return self._event.wait(timeout) and self.latency is not None

    @property
    def done(self) -> bool:
        """True once the pong arrived, or the connection ended without it."""
        return self._event.is_set()

    def resolve(self) -> None:
        """Called by the driver when this ping's pong (or a later one's) arrived."""
        if not self._event.is_set():
            self.latency = self._clock() - self.sent_at
            self._event.set()
            self._done()

    def cancel(self) -> None:
        """Called by the driver when the connection ended before the pong."""
        if not self._event.is_set():
            self._event.set()
            self._done()

    def _done(self) -> None:
        callback, self.on_done = self.on_done, None
        if callback is not None:
            callback()


class DriverBase:
    """Sending, pinging and the connection's read-only state, for socket drivers."""

    __slots__ = ("_id", "_lock", "_log", "_pings", "_send_lock", "protocol", "sock")

    sock: Any
    protocol: Protocol
    _lock: LockLike
    _send_lock: LockLike
    _pings: dict[bytes, PingWaiter]
    _log: ConnectionLog
    _id: str

    def _tag_logs(self, log: ConnectionLog) -> None:
        """One tagger per connection, shared with its protocol: ``[ws12 127.0.0.1:50312] ...``."""
        self._log = log
        self._id = log.conn_id
        self.protocol.logger = log

    # -- what a driver supplies ---------------------------------------------------------

    def _flush(self) -> None:
        """Write or queue what the protocol produced (``_lock`` held)."""
        raise NotImplementedError

    def _after_write(self) -> None:
        """Called after each data frame is queued (``_lock`` held): back-pressure."""

    def _new_event(self) -> EventLike:
        raise NotImplementedError

    def _clock(self) -> float:
        raise NotImplementedError

    # -- state ----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def log(self) -> ConnectionLog:
        return self._log

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def close_code(self) -> int:
        return self.protocol.close_code

    @property
    def close_reason(self) -> str:
        return self.protocol.close_reason

    # -- sending ----------------------------------------------------------------------------

    def send_message(self, data: Data, binary: bool | None = None, *, compress: bool = True) -> None:
        """Send one message: ``str`` as text, bytes-like as binary, or a Message.

        ``binary`` forces the type (``binary=False`` with bytes sends text, as
        ws4py did; the bytes must then be UTF-8).
        """
        if isinstance(data, str):
            payload = data.encode()
            is_text = binary is not True
        elif isinstance(data, Message):
            payload = data.data
            is_text = data.opcode is Opcode.TEXT if binary is None else not binary
        else:
            payload = data if isinstance(data, bytes) else bytes(data)
            is_text = binary is False
        with self._send_lock, self._lock:
            if not compress:
                _skip_compression(self.protocol)
            if is_text:
                self.protocol.send_text(payload)
            else:
                self.protocol.send_binary(payload)
            self._flush()
            self._after_write()

    def send_fragments(
        self, chunks: Iterable[str | bytes], binary: bool | None = None, *, compress: bool = True
    ) -> None:
        """Send one message in fragments, one per chunk of ``chunks``."""
        with self._send_lock:
            for opcode, payload, fin in iter_fragments(chunks, binary):
                with self._lock:
                    if not compress and opcode is not Opcode.CONTINUATION:
                        _skip_compression(self.protocol)
                    if opcode is Opcode.TEXT:
                        self.protocol.send_text(payload, fin)
                    elif opcode is Opcode.BINARY:
                        self.protocol.send_binary(payload, fin)
                    else:
                        self.protocol.send_continuation(payload, fin)
                    self._flush()
                    self._after_write()

    def send_prepared(self, message: Frame, wire: bytes) -> None:
        """Send a frame serialized once for many recipients (see Protocol.send_prepared)."""
        with self._send_lock, self._lock:
            self.protocol.send_prepared(message, wire)
            self._flush()
            self._after_write()

    def send_frame(self, frame: Frame) -> None:
        """Send any frame as it is (low-level access)."""
        with self._send_lock, self._lock:
            self.protocol.send_frame(frame)
            self._flush()
            self._after_write()

    def _ping_pump(self) -> Callable[[PingWaiter, float | None], bool] | None:
        """How ``PingWaiter.wait()`` reads the socket itself, if this driver lets it."""
        return None

    def ping(self, data: bytes | None = None) -> PingWaiter:
        """Send a ping; the returned waiter resolves when its pong arrives."""
        return self._send_ping(data, self._ping_pump())

    def _send_ping(
        self, data: bytes | None, pump: Callable[[PingWaiter, float | None], bool] | None
    ) -> PingWaiter:
        with self._lock:
            if data is None:
                data = os.urandom(4)
                while data in self._pings:
                    data = os.urandom(4)
            if data in self._pings:
                raise ValueError("a ping with this payload is already waiting")
            waiter = PingWaiter(data, self._new_event(), self._clock, pump)
            self.protocol.send_ping(data)
            self._pings[data] = waiter
            self._flush()
        return waiter

    def pong(self, data: bytes = b"") -> None:
        """Send an unsolicited pong (a unidirectional heartbeat, RFC 6455 §5.5.3)."""
        with self._lock:
            self.protocol.send_pong(data)
            self._flush()

    def _resolve_pings(self, payload: bytes) -> None:
        """A pong answers its ping and every earlier one (RFC 6455 §5.5.3 lets a
        peer answer only the latest)."""
        with self._lock:
            if payload not in self._pings:
                return
            for key in list(self._pings):
                self._pings.pop(key).resolve()
                if key == payload:
                    break

    def _cancel_pings(self) -> None:
        """The connection ended: pings still waiting will never get their pong."""
        pings, self._pings = self._pings, {}
        for waiter in pings.values():
            waiter.cancel()

    def _fail_keepalive(self) -> None:
        """No pong in time: fail with 1011 (the peer or the path is gone) (``_lock`` held)."""
        self._log.info("no pong in time: closing with 1011")
        self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive timeout")
        self._flush()

    async def asend(self, data: Data, binary: bool | None = None) -> None:
        raise RuntimeError("asend() is for async def callbacks under ASGI; use send()")

    async def aclose(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        raise RuntimeError("aclose() is for async def callbacks under ASGI; use close()")


def set_nodelay(sock: Any) -> None:
    # Nagle would hold a small frame back until the previous one is acked: 40 ms
    # stalls on request/response traffic.
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def end_write_side(sock: Any) -> None:
    """Half-close: TLS close_notify first (RFC 6455 §7.1.1 wants the TLS session
    closed cleanly), then TCP FIN.

    ``SSLSocket.shutdown()`` alone would drop the TLS session without a
    close_notify, so a strict peer sees a truncation. ``unwrap()`` sends the
    close_notify and would then wait for the peer's; with a zero timeout it
    returns at once (SSLWantReadError) and we do not wait.
    """
    if isinstance(sock, ssl.SSLSocket):
        timeout = sock.gettimeout()
        try:
            sock.settimeout(0)
            sock.unwrap()
        except (OSError, ValueError):  # SSLWantReadError: our close_notify is out
            pass
        finally:
            try:
                sock.settimeout(timeout)
            except OSError:
                pass
    sock.shutdown(socket.SHUT_WR)


def _skip_compression(protocol: Protocol) -> None:
    """Ask extensions that compress to leave the next message alone (protocol lock held)."""
    for extension in protocol.extensions:
        extension.skip_next_message()


def closed_error() -> ConnectionClosed:
    """What a send on a connection whose socket is gone raises."""
    return ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "", None)
