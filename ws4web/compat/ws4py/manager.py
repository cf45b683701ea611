"""``ws4py.manager``: :class:`WebSocketManager`, a set of WebSockets to broadcast to and close together.

ws4py's manager was a thread polling the sockets of the WebSockets added to it.
In ws4web every connection already runs on its door's driver, so this one
tracks them (``add``, ``remove``, ``broadcast``, ``close_all``, ``len``,
iteration), and runs on a selector loop of its own only the ws4py-style clients
added to it before they run (``handshake_ok()`` calling ``manager.add(self)``,
as in ws4py's manager tutorial): one loop thread for all of them, as ws4py had.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from ...accept import Registry
from ...drivers.selector import Loop
from ...frames import CloseCode
from ...messages import Message
from ...websocket import WebSocket
from .client import WebSocketBaseClient

__all__ = ["WebSocketManager"]

logger = logging.getLogger("ws4web.compat.ws4py.manager")

# Closed WebSockets added by hand are forgotten lazily: when the set has grown past
# twice its last live count (plus this slack), one pass drops the terminated ones,
# so a long-lived manager's memory follows its live connections, at O(1) amortized.
_PRUNE_SLACK = 32


class WebSocketManager:
    """Track WebSockets; broadcast to them and close them together.

    ``registry`` shares an existing :class:`~ws4web.accept.Registry` (a door's:
    the CherryPy plugin's ``manager`` is one) instead of a new one. ws4py's
    ``poller`` argument is refused: ws4web's loop uses the best selector the
    system has (epoll, kqueue...).
    """

    def __init__(self, poller: None = None, *, registry: Registry | None = None) -> None:
        if poller is not None:
            raise TypeError("WebSocketManager takes no poller: ws4web's loop uses selectors.DefaultSelector")
        self.name = "WebSocketManager"
        self.registry = registry if registry is not None else Registry()
        #: True between start() and stop(), as ws4py's
        self.running = False
        self._loop: Loop | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._stopped.set()
        self._live = 0

    # -- the set ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __iter__(self) -> Iterator[WebSocket]:
        """The WebSockets still open, a snapshot."""
        return iter([ws for ws in self.registry if not ws.terminated])

    def __contains__(self, websocket: object) -> bool:
        return any(ws is websocket for ws in self.registry)

    @property
    def websockets(self) -> dict[str, WebSocket]:
        """The open WebSockets by connection id (ws4py keyed them by file descriptor)."""
        return {ws.id: ws for ws in self}

    def add(self, websocket: WebSocket) -> None:
        """Track ``websocket``. A ws4py-style client whose handshake is done but which
        does not run yet (``add`` called from its ``handshake_ok()``) runs on this
        manager's loop from now on; ``opened()`` is its first callback there. Any other
        WebSocket keeps running where it runs."""
        if websocket in self:
            return
        pending = isinstance(websocket, WebSocketBaseClient) and websocket.waiting_to_run
        if not pending and not _is_bound(websocket):
            raise TypeError(f"{websocket!r} is not connected: nothing would run it")
        registry = self.registry
        if not registry.add(websocket):  # a door's registry, shutting down: say goodbye at once
            if pending:
                assert isinstance(websocket, WebSocketBaseClient)
                websocket.run_on(self._running_loop())
            websocket.close(CloseCode.GOING_AWAY, "shutting down")
            return
        self._prune()
        if pending:
            assert isinstance(websocket, WebSocketBaseClient)
            websocket.run_on(self._running_loop(), on_ended=lambda: registry.discard(websocket))

    def remove(self, websocket: WebSocket) -> None:
        """Stop tracking ``websocket``; it is neither closed nor stopped (as in ws4py)."""
        self.registry.discard(websocket)

    def broadcast(self, message: Any, binary: bool = False) -> None:
        """Send ``message`` to every open WebSocket; a failing peer is skipped silently.

        As in ws4py, ``binary=False`` sends ``bytes`` as text, and a ``Message``
        goes as its own type whatever ``binary`` says.
        """
        self.registry.broadcast(message, None if isinstance(message, Message) else binary)

    def close_all(self, code: int = CloseCode.GOING_AWAY, message: str = "Server is shutting down") -> None:
        """Start the closing handshake of every open WebSocket; does not wait for them."""
        for websocket in self:
            try:
                websocket.close(code, message)
            except Exception as exc:  # one dead peer must not stop the rest
                logger.debug("closing %s failed: %s", websocket.id, exc)

    # -- the thread-like life cycle ------------------------------------------------------------

    def start(self) -> None:
        """Start the loop that runs the clients added to this manager."""
        self._stopped.clear()
        self.running = True
        self._running_loop()

    def run(self) -> None:
        """Start, then block until :meth:`stop` (ws4py ran its poll loop here)."""
        self.start()
        self._stopped.wait()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the manager is stopped (at most ``timeout`` seconds)."""
        self._stopped.wait(timeout)

    def stop(self) -> None:
        """Stop the loop: the clients it runs are dropped (their ``closed()`` sees 1006).
        Call :meth:`close_all` first to close them cleanly. Other tracked WebSockets are
        left to the door running them."""
        self.running = False
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.stop(timeout=2.0)
        self._stopped.set()

    def _running_loop(self) -> Loop:
        with self._lock:
            if self._loop is None or self._loop.stopping:
                self._loop = Loop(name="ws4web-manager").start()
            return self._loop

    def _prune(self) -> None:
        registry = self.registry
        if len(registry) <= 2 * self._live + _PRUNE_SLACK:
            return
        for websocket in registry:
            if websocket.terminated:
                registry.discard(websocket)
        self._live = len(registry)


def _is_bound(websocket: WebSocket) -> bool:
    try:
        websocket.connection  # noqa: B018  # raises RuntimeError when no door bound it
    except RuntimeError:
        return False
    return True
