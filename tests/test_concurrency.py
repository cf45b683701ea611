"""The injected concurrency primitives (ws4web/concurrency.py): THREADING and wait_readable."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time

import pytest

from ws4web.concurrency import THREADING, Primitives, Spares

from .conftest import TIMEOUT, Worker, wait_until

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]


def test_lock_excludes() -> None:
    lock = THREADING.lock()
    assert lock.acquire()
    assert not lock.acquire(blocking=False)
    other = Worker(lambda: lock.acquire(timeout=0.05))
    assert other.join() is False
    lock.release()
    with lock:
        assert not Worker(lambda: lock.acquire(blocking=False)).join()
    assert lock.acquire(blocking=False)
    lock.release()


def test_locks_are_independent() -> None:
    first, second = THREADING.lock(), THREADING.lock()
    with first:
        assert second.acquire(blocking=False)
        second.release()


def test_event() -> None:
    event = THREADING.event()
    assert not event.is_set()
    assert event.wait(0.01) is False
    waiter = Worker(event.wait, TIMEOUT)
    event.set()
    assert waiter.join() is True
    assert event.is_set()
    assert event.wait(0) is True


def test_spawn_runs_the_target_in_another_thread() -> None:
    ran_in: list[threading.Thread] = []
    done = threading.Event()

    def target() -> None:
        ran_in.append(threading.current_thread())
        done.set()

    handle = THREADING.spawn(target)
    assert done.wait(TIMEOUT)
    assert ran_in[0] is not threading.current_thread()
    assert isinstance(handle, threading.Thread)
    assert handle.daemon  # a forgotten connection never keeps the process alive
    handle.join(TIMEOUT)
    assert not handle.is_alive()


def test_sleep_and_monotonic() -> None:
    before = THREADING.monotonic()
    THREADING.sleep(0.01)
    assert THREADING.monotonic() > before


def test_custom_primitives_keep_their_defaults() -> None:
    made: list[str] = []

    def lock() -> threading.Lock:
        made.append("lock")
        return threading.Lock()

    primitives = Primitives(lock, threading.Event, THREADING.spawn, THREADING.wait_readable)
    primitives.lock()
    assert made == ["lock"]
    assert primitives.sleep is THREADING.sleep
    assert primitives.monotonic is THREADING.monotonic


# -- wait_readable ----------------------------------------------------------------------------------


def test_wait_readable_plain_socket(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    assert THREADING.wait_readable(a, 0.05) is False
    assert THREADING.wait_readable(a, 0) is False
    assert THREADING.wait_readable(a, -1.0) is False  # a deadline already past: no wait
    b.sendall(b"x")
    assert THREADING.wait_readable(a, TIMEOUT) is True
    assert THREADING.wait_readable(a, None) is True
    assert a.recv(1) == b"x"
    assert THREADING.wait_readable(a, 0) is False


def test_wait_readable_wakes_when_data_arrives(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    waiter = Worker(THREADING.wait_readable, a, TIMEOUT)
    b.sendall(b"late")
    assert waiter.join() is True


def test_wait_readable_at_eof(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    b.close()
    assert THREADING.wait_readable(a, TIMEOUT) is True  # recv() would return b"" at once
    assert a.recv(1) == b""


def test_wait_readable_ssl_socket_with_pending_data(tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    server, client = tls_pair
    assert THREADING.wait_readable(server, 0.05) is False
    client.sendall(b"y" * 10_000)  # one TLS record
    assert THREADING.wait_readable(server, TIMEOUT) is True
    assert server.recv(1) == b"y"
    # The rest of the record is decrypted and buffered in the SSL object, not in the kernel.
    assert server.pending() == 9_999
    poller = select.poll()
    poller.register(server, select.POLLIN)
    assert poller.poll(0) == []  # so poll() alone cannot see it...
    assert THREADING.wait_readable(server, 0) is True  # ...but wait_readable does
    received = b""
    while len(received) < 9_999:
        received += server.recv(65536)
    assert received == b"y" * 9_999
    assert THREADING.wait_readable(server, 0.05) is False


def test_wait_readable_ssl_socket_without_pending(tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    server, client = tls_pair
    waiter = Worker(THREADING.wait_readable, client, TIMEOUT)
    server.sendall(b"z")
    assert waiter.join() is True
    data = b""
    while not data:  # TLS 1.3 session tickets may come first: recv skips them
        data = client.recv(10)
    assert data == b"z"


# -- Spares -------------------------------------------------------------------------------


def test_spares_run_each_task_on_a_thread_of_its_own() -> None:
    spares = Spares("test-spares", idle=0.2)
    started = threading.Barrier(3, timeout=TIMEOUT)
    names: list[str] = []

    def task() -> None:
        names.append(threading.current_thread().name)
        started.wait()  # three tasks block at once: none waits for another to end

    for _ in range(2):
        spares.run(task)
    started.wait()
    assert sorted(names) == ["test-spares-1", "test-spares-2"]
    assert wait_until(lambda: spares.busy == 0)
    spares.stop()


def test_spares_reuse_a_waiting_thread() -> None:
    spares = Spares("test-reuse", idle=5.0)
    names: list[str] = []
    done = threading.Event()
    spares.run(lambda: names.append(threading.current_thread().name))
    assert wait_until(lambda: spares.busy == 0 and names == ["test-reuse-1"])
    time.sleep(0.05)  # the thread is back waiting
    spares.run(lambda: (names.append(threading.current_thread().name), done.set()))
    assert done.wait(TIMEOUT)
    assert names == ["test-reuse-1", "test-reuse-1"]
    spares.stop()


def test_spares_stop_lets_every_thread_go() -> None:
    """stop() ends the waiting threads at once and the busy ones when their task ends,
    even when a thread that was busy at stop() takes a waiting thread's wake-up."""
    for _ in range(20):
        _stop_with_threads_waiting_and_busy()


def _stop_with_threads_waiting_and_busy() -> None:
    spares = Spares("test-stop", idle=30.0)
    before = set(threading.enumerate())
    release = threading.Event()
    for _ in range(3):
        spares.run(lambda: None)
    spares.run(release.wait)
    assert wait_until(lambda: spares.busy == 1)
    spares.stop()
    release.set()
    deadline = time.monotonic() + TIMEOUT
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
        assert not thread.is_alive(), f"{thread.name} still waits after stop()"


def test_spares_stop_from_a_task_ends_the_waiting_threads_too() -> None:
    """The thread that called stop() in its task finishes first and finds the wake-up
    meant for the waiting thread: that one must still go."""
    for _ in range(5):
        _stop_from_a_task()


def _stop_from_a_task() -> None:
    spares = Spares("test-steal", idle=30.0)
    before = set(threading.enumerate())
    both = threading.Barrier(2, timeout=TIMEOUT)
    spares.run(both.wait)
    spares.run(both.wait)  # two threads, both waiting in get() once the barrier opens
    assert wait_until(lambda: spares.busy == 0)
    time.sleep(0.02)
    spares.run(spares.stop)  # one runs it, then takes the other's wake-up first
    assert _all_ended(before), "a spare thread still waits after stop()"


def _all_ended(before: set[threading.Thread]) -> bool:
    deadline = time.monotonic() + TIMEOUT
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_spares_idle_threads_end_by_themselves() -> None:
    spares = Spares("test-idle", idle=0.05)
    before = set(threading.enumerate())
    spares.run(lambda: None)
    assert wait_until(lambda: not [t for t in set(threading.enumerate()) - before if t.is_alive()])
