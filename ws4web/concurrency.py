"""The concurrency primitives a driver uses, injected so gevent needs no monkey-patching.

A driver never imports ``threading`` directly: it asks its :class:`Primitives`
for a lock, an event, a way to start a task and a way to wait for a socket to be
readable. :data:`THREADING` is the default; the gevent adapter passes gevent's.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["THREADING", "EventLike", "LockLike", "Primitives"]


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
