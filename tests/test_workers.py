"""WorkerPool and Lane (ws4web/workers.py): bounded threads, per-lane order, batches, runners, following."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ws4web.workers import Lane, WorkerPool

from .conftest import TIMEOUT, wait_until

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    created = WorkerPool(max_workers=4, idle_timeout=5.0)
    yield created
    assert created.shutdown(TIMEOUT)


def test_pool_runs_tasks_on_at_most_max_workers(pool: WorkerPool) -> None:
    release = threading.Event()
    running: set[str] = set()
    done = threading.Semaphore(0)

    def task() -> None:
        running.add(threading.current_thread().name)
        release.wait(TIMEOUT)
        done.release()

    for _ in range(10):
        pool.submit(task)
    assert wait_until(lambda: len(running) == 4)
    assert pool.size == 4 and pool.saturated
    release.set()
    for _ in range(10):
        assert done.acquire(timeout=TIMEOUT)
    assert len(running) == 4  # the other six ran on the same four threads
    assert wait_until(lambda: not pool.saturated)


def test_a_raising_task_does_not_kill_its_worker(pool: WorkerPool) -> None:
    ran = threading.Event()

    def boom() -> None:
        raise RuntimeError("task bug")

    pool.submit(boom)
    pool.submit(ran.set)
    assert ran.wait(TIMEOUT)


def test_inline_pool_runs_in_the_caller() -> None:
    pool = WorkerPool(max_workers=0)
    where: list[threading.Thread] = []
    pool.submit(lambda: where.append(threading.current_thread()))
    assert where == [threading.current_thread()]
    assert pool.shutdown(1.0)


def test_idle_workers_retire() -> None:
    pool = WorkerPool(max_workers=2, idle_timeout=0.05)
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(TIMEOUT)
    assert wait_until(lambda: pool.size == 0)
    assert pool.shutdown(TIMEOUT)


def test_submit_after_shutdown_is_refused() -> None:
    pool = WorkerPool(max_workers=1)
    assert pool.shutdown(TIMEOUT)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_lane_keeps_order_and_runs_one_task_at_a_time(pool: WorkerPool) -> None:
    lane = Lane(pool)
    seen: list[int] = []
    active = [0]
    overlap = [False]
    finished = threading.Event()

    def make(i: int) -> object:
        def task() -> None:
            active[0] += 1
            overlap[0] |= active[0] > 1
            seen.append(i)
            time.sleep(0)  # let other threads in: overlap would show
            active[0] -= 1
            if i == 399:
                finished.set()

        return task

    def producer(start: int) -> None:
        for i in range(start, start + 100):
            lane.submit(make(i))  # type: ignore[arg-type]

    # One producer thread at a time keeps a global order to compare against.
    for start in range(0, 400, 100):
        thread = threading.Thread(target=producer, args=(start,))
        thread.start()
        thread.join(TIMEOUT)
    assert finished.wait(TIMEOUT)
    assert seen == list(range(400))
    assert not overlap[0]


def test_a_busy_lane_does_not_starve_another_on_one_worker() -> None:
    pool = WorkerPool(max_workers=1)
    busy, other = Lane(pool), Lane(pool)
    order: list[str] = []
    done = threading.Event()
    gate = threading.Event()
    busy.submit(lambda: gate.wait(TIMEOUT))  # holds the only worker until both lanes are queued
    busy.submit_all([lambda: order.append("busy")] * 200)
    other.submit(lambda: (order.append("other"), done.set()))
    gate.set()
    assert done.wait(TIMEOUT)
    assert wait_until(lambda: len(order) == 201)
    # The busy lane yields after a bounded batch: "other" ran before the 200 were done.
    assert order.index("other") < 200
    assert pool.shutdown(TIMEOUT)


def test_submit_all_queues_the_batch_before_any_task_runs(pool: WorkerPool) -> None:
    lane = Lane(pool)
    seen: list[str] = []
    done = threading.Event()

    def first() -> None:
        # Another thread submits while the batch's first task runs: it must come last.
        thread = threading.Thread(target=lane.submit, args=(lambda: (seen.append("late"), done.set()),))
        thread.start()
        thread.join(TIMEOUT)
        seen.append("a")

    lane.submit_all([first, lambda: seen.append("b"), lambda: seen.append("c")])
    assert done.wait(TIMEOUT)
    assert seen == ["a", "b", "c", "late"]
    lane.submit_all([])  # nothing to run: the lane stays idle
    assert lane.backlog == 0


def test_runner_drains_an_idle_lane_in_place(pool: WorkerPool) -> None:
    lane = Lane(pool)
    where: list[threading.Thread] = []
    runs: list[int] = []

    def runner(drain: object) -> None:
        runs.append(1)
        drain()  # type: ignore[operator]

    lane.submit(lambda: where.append(threading.current_thread()), runner)
    assert where == [threading.current_thread()] and runs == [1]
    assert lane.backlog == 0


def test_follow_keeps_the_worker_until_it_gives_the_lane_back(pool: WorkerPool) -> None:
    lane = Lane(pool)
    events: list[str] = []
    feed = iter(["m1", "m2"])
    finished = threading.Event()

    def follow() -> bool:
        item = next(feed, None)
        if item is None:
            more = lane.stop_following()
            events.append(f"stop more={more}")
            finished.set()
            return more
        lane.submit(lambda: events.append(item))  # the lane is running: queued, drained next
        return True

    lane.follow = follow
    gate = threading.Event()
    lane.submit(lambda: gate.wait(TIMEOUT))
    assert lane.hand_over()  # running: it will follow
    gate.set()
    assert finished.wait(TIMEOUT)
    assert wait_until(lambda: lane.backlog == 0 and not lane.following)
    assert events == ["m1", "m2", "stop more=False"]
    assert not Lane(pool).hand_over()  # an idle lane does not follow: nothing would read
