"""A small elastic thread pool with per-connection ordering (lanes).

Handlers of reactor-driven connections run here. Each connection submits to its
own :class:`Lane`: its tasks run one at a time, in order, so a handler sees its
messages in sequence; a slow handler delays only its own lane, while other lanes
run on other workers. The pool grows up to ``max_workers`` when every worker is
busy and idle workers retire after ``idle_timeout``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Lane", "WorkerPool"]

logger = logging.getLogger("ws4web.workers")

Task = Callable[[], Any]


class WorkerPool:
    """Threads that run submitted callables; never more than ``max_workers``."""

    def __init__(self, max_workers: int = 64, idle_timeout: float = 30.0, name: str = "ws4web-worker") -> None:
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self.name = name
        self._tasks: deque[Task] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._workers = 0
        self._idle = 0
        self._stopping = False

    @property
    def size(self) -> int:
        return self._workers

    def submit(self, task: Task) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("worker pool is shut down")
            self._tasks.append(task)
            if self._idle > len(self._tasks) - 1:
                self._cond.notify()
                return
            spawn = self._workers < self.max_workers
            if spawn:
                self._workers += 1
        if spawn:
            threading.Thread(target=self._work, name=f"{self.name}-{self._workers}", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._tasks:
                    if self._stopping:
                        self._workers -= 1
                        self._cond.notify_all()
                        return
                    self._idle += 1
                    woke = self._cond.wait(self.idle_timeout)
                    self._idle -= 1
                    if not woke and not self._tasks:  # idle too long: retire
                        self._workers -= 1
                        self._cond.notify_all()
                        return
                task = self._tasks.popleft()
            try:
                task()
            except Exception:  # a task must never kill its worker
                logger.exception("task %r raised", task)

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        """Finish queued tasks, then stop the workers; True if all stopped in time."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._workers == 0, timeout)


class Lane:
    """Runs one connection's tasks on a pool, one at a time, in submission order."""

    __slots__ = ("_lock", "_pool", "_running", "_tasks", "on_drained")

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._tasks: deque[Task] | None = None  # created on first use: idle lanes stay small
        self._running = False
        self._lock = threading.Lock()
        #: called (in the worker) when the backlog empties; used for read flow control
        self.on_drained: Callable[[], None] | None = None

    @property
    def backlog(self) -> int:
        tasks = self._tasks
        return len(tasks) if tasks else 0

    def submit(self, task: Task) -> None:
        with self._lock:
            if self._tasks is None:
                self._tasks = deque()
            self._tasks.append(task)
            if self._running:
                return
            self._running = True
        self._pool.submit(self._drain)

    def _drain(self) -> None:
        # Run a bounded batch, then yield the worker so one busy lane cannot starve
        # the others queued behind it.
        for _ in range(64):
            with self._lock:
                tasks = self._tasks
                if not tasks:
                    self._running = False
                    self._tasks = None
                    break
                task = tasks.popleft()
            try:
                task()
            except Exception:
                logger.exception("task %r raised", task)
        else:
            self._pool.submit(self._drain)
            return
        if self.on_drained is not None:
            self.on_drained()
