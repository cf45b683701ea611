"""A client connection that survives drops: reconnects with backoff, queues while offline.

:class:`ReconnectingClient` keeps one WebSocket to a URL open. When the connection
ends for any reason other than :meth:`~ReconnectingClient.close`, it reconnects
after an exponentially growing, jittered delay, calls ``on_connect(ws)`` (to log
in and re-subscribe) and then sends what the application sent while it was
offline. Incoming messages of every connection come out of one ``recv()``::

    client = ReconnectingClient("ws://127.0.0.1:8080/chat", on_connect=lambda ws: ws.send("join"))
    with client:
        client.send("hello")
        message = client.recv(timeout=5)

No message is lost silently. ``send()`` while offline queues the message (up to
``max_queue`` messages and ``max_queue_bytes`` bytes) and it goes out, in order,
on the next connection; when the queue is full ``send()`` raises
:class:`~ws4web.exceptions.SendQueueFull` and the message is not sent. A message
whose write fails because the connection just broke is queued again. What TCP
cannot tell us — a message written to a connection that dies before the peer
reads it — is the usual at-most-once limit of any socket; applications that
need more acknowledge at their level.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .client import connect
from .exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, SendQueueFull
from .frames import CloseCode
from .logs import redact_url
from .messages import Data, Message
from .websocket import WebSocket

__all__ = ["Backoff", "ReconnectingClient"]

logger = logging.getLogger("ws4web.reconnect")


class Backoff:
    """Delays between attempts: ``initial * factor**n`` capped at ``maximum``, with full jitter.

    Full jitter (a uniform draw in ``[0, delay]``) spreads a crowd of clients that
    lost the same server, so they do not all come back in the same instant.
    ``jitter=False`` gives the bare exponential sequence.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if initial < 0 or maximum < initial or factor < 1:
            raise ValueError("need 0 <= initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return self._rng.uniform(0, ceiling) if self.jitter else ceiling


def _retryable(exc: BaseException) -> bool:
    """Network trouble and server-side (5xx, 429) refusals are worth retrying; a
    4xx says the request itself is wrong and retrying would only hammer the server."""
    if isinstance(exc, InvalidStatus):
        return exc.status >= 500 or exc.status == 429
    if isinstance(exc, InvalidHandshake):
        return False
    return isinstance(exc, (OSError, ConnectionClosed))


class ReconnectingClient:
    """A WebSocket client that reconnects by itself; see the module docstring.

    ``on_connect(ws)`` runs after every successful handshake, before queued
    messages are sent (log in, re-subscribe); ``on_disconnect(code, reason)``
    after every drop. A hook that raises drops that connection (and it is
    retried). ``max_attempts`` bounds consecutive failed attempts (None: keep
    trying); after that, or on a handshake refusal that retrying cannot fix
    (4xx), ``recv()`` and ``send()`` raise. ``connect_options`` go to
    :func:`ws4web.client.connect` (``protocols``, ``headers``, ``forward_headers``,
    ``ssl_context``, ``proxy``, ``max_message_size`` ...). Records, errors and the
    thread's name show the URL without credentials or query values
    (:func:`ws4web.logs.redact_url`).
    """

    def __init__(
        self,
        url: str,
        *,
        on_connect: Callable[[WebSocket], Any] | None = None,
        on_disconnect: Callable[[int, str], Any] | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        max_queue: int = 1000,
        max_queue_bytes: int = 2**20,
        inbox_size: int = 1000,
        **connect_options: Any,
    ) -> None:
        self.url = url
        # For records, messages and the thread's name: no user:pass@, no query values.
        self._safe_url = redact_url(url)
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.connect_options = connect_options
        #: successful connections so far (1 after the first, 2 after one reconnect ...)
        self.connections = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ws: WebSocket | None = None  # set only while open and flushed
        self._pending: deque[tuple[bytes | str, bool | None]] = deque()
        self._pending_bytes = 0
        # Bounded: a reader that gets ahead of the application blocks, and TCP
        # pushes back on the server instead of this process buffering without end.
        self.inbox_size = inbox_size
        self._inbox: deque[Message] = deque()
        self._finished = False  # the reader thread has ended: nothing more will come
        self._closing = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    # -- life cycle ------------------------------------------------------------------

    def start(self, wait: float | None = None) -> ReconnectingClient:
        """Start connecting in the background; with ``wait``, block until connected
        (TimeoutError if not within ``wait`` seconds; the client keeps trying)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"ws4web-reconnect {self._safe_url}", daemon=True
                )
                self._thread.start()
        if wait is not None and not self.wait_connected(wait):
            if self._failure is not None:
                raise self._failure
            raise TimeoutError(f"not connected to {self._safe_url} within {wait} s")
        return self

    def wait_connected(self, timeout: float | None = None) -> bool:
        """True once a connection is open (and queued messages are flushed); False on timeout or failure."""
        with self._lock:
            return self._changed.wait_for(lambda: self._ws is not None or self._done, timeout) and self._ws is not None

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def websocket(self) -> WebSocket | None:
        """The current connection, or None while offline."""
        return self._ws

    @property
    def queued(self) -> int:
        """Messages waiting for the next connection."""
        return len(self._pending)

    @property
    def _done(self) -> bool:
        return self._closing or self._failure is not None

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "", timeout: float = 10.0) -> None:
        """Close for good: no more reconnects; queued messages are dropped (see ``queued``)."""
        with self._lock:
            self._closing = True
            ws = self._ws
            self._changed.notify_all()
        self._wake.set()
        if ws is not None:
            try:
                ws.close(code, reason)
            except ConnectionClosed:
                pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> ReconnectingClient:
        return self.start(wait=self.connect_options.get("timeout", 10.0))

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- messages ---------------------------------------------------------------------

    def send(self, payload: Data, binary: bool | None = None) -> None:
        """Send now if connected, else queue for the next connection.

        Raises SendQueueFull if offline with a full queue, ConnectionClosed once the
        client is closed or gave up.
        """
        if isinstance(payload, Message):
            binary = payload.is_binary if binary is None else binary
            payload = bytes(payload.data)
        elif not isinstance(payload, (str, bytes)):
            payload = bytes(payload)
        with self._lock:
            self._check_usable()
            ws = self._ws
            if ws is None:
                self._enqueue(payload, binary)
                return
            try:
                # Under the lock: a send never overtakes queued messages being flushed.
                ws.send(payload, binary)
            except ConnectionClosed:
                # Refused before a byte of it was written (or the write broke):
                # it belongs to the next connection.
                self._enqueue(payload, binary)

    def recv(self, timeout: float | None = None) -> Message:
        """The next message from any connection; TimeoutError if none within ``timeout``.

        Raises ConnectionClosed once the client is closed (or gave up) and every
        message received before that has been returned.
        """
        with self._lock:
            if not self._changed.wait_for(lambda: self._inbox or self._finished, timeout):
                raise TimeoutError("no message within the timeout")
            if not self._inbox:
                raise self._final_error()
            message = self._inbox.popleft()
            self._changed.notify_all()  # room for the reader
            return message

    def __iter__(self) -> Any:
        while True:
            try:
                yield self.recv()
            except ConnectionClosed:
                return

    # -- internals ---------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._done:
            raise self._final_error()

    def _final_error(self) -> ConnectionClosed:
        if self._failure is not None and not self._closing:
            error = ConnectionClosed(CloseCode.ABNORMAL_CLOSURE, f"gave up reconnecting: {self._failure}")
            error.__cause__ = self._failure
            return error
        return ConnectionClosed(CloseCode.NORMAL_CLOSURE, "client closed")

    def _enqueue(self, payload: bytes | str, binary: bool | None) -> None:
        size = len(payload)
        if len(self._pending) >= self.max_queue or self._pending_bytes + size > self.max_queue_bytes:
            raise SendQueueFull(
                f"offline, and {len(self._pending)} messages ({self._pending_bytes} bytes) already wait: not sent"
            )
        self._pending.append((payload, binary))
        self._pending_bytes += size

    def _run(self) -> None:
        failures = 0
        try:
            while not self._closing:
                try:
                    ws = connect(self.url, **self.connect_options)
                except Exception as exc:
                    failures += 1
                    if not _retryable(exc) or (self.max_attempts is not None and failures >= self.max_attempts):
                        logger.warning("giving up on %s after %d attempt(s): %s", self._safe_url, failures, exc)
                        with self._lock:
                            self._failure = exc
                            self._changed.notify_all()
                        return
                    delay = self.backoff.next_delay()
                    logger.debug("connecting to %s failed (%s); retrying in %.2f s", self._safe_url, exc, delay)
                    self._wake.wait(delay)
                    continue
                failures = 0
                self.backoff.reset()
                self._serve(ws)
                if not self._closing:
                    # Even a clean close by the server is worth a pause: a server going
                    # down for a restart would otherwise see an instant reconnect storm.
                    self._wake.wait(self.backoff.next_delay())
        finally:
            with self._lock:
                self._finished = True
                self._changed.notify_all()

    def _serve(self, ws: WebSocket) -> None:
        """Run one connection: hook, flush the queue, then read until it ends."""
        self.connections += 1
        try:
            if self.on_connect is not None:
                self.on_connect(ws)
            with self._lock:
                if self._closing:
                    ws.close()
                else:
                    while self._pending:
                        payload, binary = self._pending[0]
                        ws.send(payload, binary)
                        self._pending.popleft()  # only once handed to the socket
                        self._pending_bytes -= len(payload)
                    self._ws = ws
                    self._changed.notify_all()
            for message in ws:
                with self._lock:
                    self._changed.wait_for(lambda: len(self._inbox) < self.inbox_size or self._closing)
                    if self._closing:
                        break
                    self._inbox.append(message)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("on_connect hook for %s failed; dropping the connection", self._safe_url)
            ws.terminate()
        finally:
            with self._lock:
                self._ws = None
                self._changed.notify_all()
            if ws.connection.closed is False:
                ws.terminate()
            if self.on_disconnect is not None and not self._closing:
                try:
                    self.on_disconnect(ws.close_code, ws.close_reason)
                except Exception:
                    logger.exception("on_disconnect hook for %s failed", self._safe_url)
