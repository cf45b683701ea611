"""A small elastic thread pool with per-connection ordering (lanes).

Handlers of reactor-driven connections run here. Each connection submits to its
own :class:`Lane`: its tasks run one at a time, in order, so a handler sees its
messages in sequence; a slow handler delays only its own lane, while other lanes
run on other workers. The pool grows up to ``max_workers`` when every worker is
busy and idle workers retire after ``idle_timeout``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Lane", "WorkerPool"]

logger = logging.getLogger("ws4web.workers")

Task = Callable[[], Any]


class WorkerPool:
    """Threads that run submitted callables; never more than ``max_workers``.

    Tasks travel through a C-implemented ``queue.SimpleQueue``: handing a task to
    an idle worker is one futex wake, several times cheaper than a Condition.
    ``max_workers=0`` runs every task inline, in the submitting thread.
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
        if self.max_workers == 0:  # inline: run in the caller's thread (the I/O loop)
            try:
                task()
            except Exception:
                logger.exception("task %r raised", task)
            return
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


class Lane:
    """Runs one connection's tasks on a pool, one at a time, in submission order.

    A lane may also *follow* its connection (see :mod:`ws4web.reactor`): while
    ``following`` is set, the worker that drained the lane calls ``follow()``
    instead of going idle — it reads the socket itself, so a quick reply from
    the peer needs no hand-off from the I/O loop. ``follow()`` returns True when
    it queued more tasks; it clears ``following`` (with :meth:`stop_following`)
    before it gives the socket back.
    """

    __slots__ = ("_lock", "_pool", "_running", "_tasks", "draining", "follow", "following", "on_drained", "on_idle")

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._tasks: deque[Task] | None = None  # created on first use: idle lanes stay small
        self._running = False
        self._lock = threading.Lock()
        #: called (in the worker) when the backlog empties; used for read flow control
        self.on_drained: Callable[[], None] | None = None
        #: called (in the worker) when the backlog empties while ``following``
        self.follow: Callable[[], bool] | None = None
        self.following = False
        #: called (in the worker) each time the queue is found empty, and before
        #: the worker moves on after a batch: the end of a burst of tasks
        self.on_idle: Callable[[], None] | None = None
        #: the thread running the tasks now (None between drains)
        self.draining: int | None = None

    @property
    def backlog(self) -> int:
        tasks = self._tasks
        return len(tasks) if tasks else 0

    @property
    def pool(self) -> WorkerPool:
        return self._pool

    def submit(self, task: Task, runner: Callable[[Task], Any] | None = None) -> None:
        """Queue ``task``; if the lane was idle, start draining it with ``runner``
        (e.g. the reactor's :meth:`~ws4web.reactor.Reactor.run_inline`), else on the pool."""
        self.submit_all((task,), runner)

    def submit_all(self, tasks: Iterable[Task], runner: Callable[[Task], Any] | None = None) -> None:
        """Queue several tasks at once, in order, before any of them runs: a drain
        started here cannot let tasks queued later by another thread overtake them."""
        with self._lock:
            if self._tasks is None:
                self._tasks = deque()
            self._tasks.extend(tasks)
            if self._running or not self._tasks:
                return
            self._running = True
        if runner is None:
            self._pool.submit(self._drain)
        else:
            runner(self._drain)

    def hand_over(self) -> bool:
        """Ask the lane to follow its connection; True if it will (it is running,
        so a worker will reach ``follow()`` when the backlog empties)."""
        with self._lock:
            if self._running and self.follow is not None:
                self.following = True
            return self.following

    def stop_following(self) -> bool:
        """Called by ``follow()`` before it gives the socket back; True if tasks
        arrived meanwhile (the drain goes on)."""
        with self._lock:
            self.following = False
            return bool(self._tasks)

    def _drain(self) -> None:
        # Run a bounded batch, then yield the worker so one busy lane cannot starve
        # the others queued behind it.
        self.draining = threading.get_ident()
        budget = 64
        while True:
            with self._lock:
                tasks = self._tasks
                task = tasks.popleft() if tasks else None
            if task is None:
                if self.on_idle is not None:
                    self.on_idle()  # e.g. write what the batch's tasks sent
                # Following: the loop's hand_over() sets the flag under the lock, and
                # only while we run; the locked check below settles any race.
                if self.following and self.follow is not None and self.follow():
                    continue
                with self._lock:
                    if self._tasks or self.following:
                        continue
                    self._running = False
                    self._tasks = None
                    self.draining = None
                break
            try:
                task()
            except Exception:
                logger.exception("task %r raised", task)
            budget -= 1
            if not budget:
                if self.on_idle is not None:
                    self.on_idle()
                self.draining = None
                self._pool.submit(self._drain)
                return
        if self.on_drained is not None:
            self.on_drained()
