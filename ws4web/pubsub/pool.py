"""A small elastic thread pool: the hub's sender threads, for members whose writes block."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerPool"]

logger = logging.getLogger("ws4web.pubsub")

Task = Callable[[], Any]


class WorkerPool:
    """Threads that run submitted callables; never more than ``max_workers``.

    Tasks travel through a C-implemented ``queue.SimpleQueue``: handing a task to
    an idle worker is one futex wake, several times cheaper than a Condition.
    """

    def __init__(self, max_workers: int = 64, idle_timeout: float = 30.0, name: str = "ws4web-worker") -> None:
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self.name = name
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all_stopped = threading.Condition(self._lock)
        self._workers = 0
        self._idle = 0
        self._stopping = False

    @property
    def size(self) -> int:
        return self._workers

    @property
    def saturated(self) -> bool:
        """No idle worker and no room for another: a task submitted now would wait."""
        return self._idle == 0 and self._workers >= self.max_workers

    def submit(self, task: Task) -> None:
        with self._lock:
            if self._stopping:
                raise RuntimeError("worker pool is shut down")
            spawn = self._idle <= self._queue.qsize() and self._workers < self.max_workers
            if spawn:
                self._workers += 1
        self._queue.put(task)
        if spawn:
            threading.Thread(target=self._work, name=f"{self.name}-{self._workers}", daemon=True).start()

    def _work(self) -> None:
        get = self._queue.get
        while True:
            with self._lock:
                self._idle += 1
            try:
                task = get(timeout=self.idle_timeout)
            except queue.Empty:
                task = None
            with self._lock:
                self._idle -= 1
                if task is None:  # idle too long, or shutdown: retire
                    self._workers -= 1
                    self._all_stopped.notify_all()
                    return
            try:
                task()
            except Exception:  # a task must never kill its worker
                logger.exception("task %r raised", task)

    def shutdown(self, timeout: float | None = 5.0) -> bool:
        """Finish queued tasks, then stop the workers; True if all stopped in time."""
        with self._lock:
            self._stopping = True
            workers = self._workers
        for _ in range(workers):
            self._queue.put(None)
        with self._lock:
            return self._all_stopped.wait_for(lambda: self._workers == 0, timeout)
