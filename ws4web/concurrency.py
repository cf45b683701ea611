"""The concurrency primitives a driver uses, injected so gevent needs no monkey-patching.

A driver never imports ``threading`` directly: it asks its :class:`Primitives`
for a lock, an event, a way to start a task and a way to wait for a socket to be
readable. :data:`THREADING` is the default; the gevent adapter passes gevent's.
"""

from __future__ import annotations

import itertools
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["THREADING", "EventLike", "LockLike", "Primitives", "Spares"]

logger = logging.getLogger("ws4web")


class LockLike(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *args: Any) -> Any: ...


class EventLike(Protocol):
    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = ...) -> bool: ...


def _spawn_thread(target: Callable[[], Any], name: str = "ws4web") -> Any:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    """Whether ``sock`` has bytes to read within ``timeout`` seconds."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True  # decrypted bytes wait inside the TLS layer; select cannot see them
    if timeout is not None and timeout <= 0:
        timeout = 0
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


class Primitives:
    """Factories for locks and events, a spawner, a readiness wait, a clock and who-am-I."""

    __slots__ = ("event", "ident", "lock", "monotonic", "sleep", "spawn", "wait_readable")

    def __init__(
        self,
        lock: Callable[[], LockLike],
        event: Callable[[], EventLike],
        spawn: Callable[..., Any],
        wait_readable: Callable[[Any, float | None], bool],
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        ident: Callable[[], int] = threading.get_ident,
    ) -> None:
        self.lock = lock
        self.event = event
        self.spawn = spawn
        self.wait_readable = wait_readable
        self.sleep = sleep
        self.monotonic = monotonic
        #: identifies the running thread (or greenlet): who is sending, who is reading
        self.ident = ident


#: The default: threading's locks and events, a daemon thread per spawn, poll() for readiness.
THREADING = Primitives(threading.Lock, threading.Event, _spawn_thread, _wait_readable)


class Spares:
    """Threads that run one task each, then wait ``idle`` seconds for the next.

    Never capped: a task that blocks must not keep another from running. The
    drivers run here what may block (a selector loop's next leader, a blocking
    handler's callbacks, ASGI hooks); after ``idle`` seconds without work a
    thread ends, so an idle pool holds none.
    """

    def __init__(self, name: str, idle: float = 10.0) -> None:
        self.name = name
        self.idle = idle
        self._tasks: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._waiting = 0
        self._busy = 0
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Tasks queued or running now."""
        return self._busy

    def run(self, task: Callable[[], object]) -> None:
        with self._lock:
            spare = self._waiting > self._tasks.qsize()
            self._busy += 1
        self._tasks.put(task)
        if not spare:
            threading.Thread(target=self._work, name=f"{self.name}-{next(self._count)}", daemon=True).start()

    def stop(self) -> None:
        """Let the waiting threads go (the busy ones go when their task ends)."""
        self.idle = 0.0
        with self._lock:
            waiting = self._waiting
        for _ in range(waiting):
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._waiting += 1
            stopped = self.idle <= 0
            try:
                task = self._tasks.get_nowait() if stopped else self._tasks.get(timeout=self.idle)
            except queue.Empty:
                return
            finally:
                with self._lock:
                    self._waiting -= 1
            if task is None:
                if stopped:
                    # This thread was not waiting when stop() counted: the None it took
                    # belongs to one that was, and is still blocked in get().
                    self._tasks.put(None)
                return
            try:
                task()
            except Exception:  # pragma: no cover - tasks handle their own errors
                logger.exception("task %r failed", task)
            finally:
                with self._lock:
                    self._busy -= 1
