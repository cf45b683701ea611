"""The injected concurrency primitives (ws4web/concurrency.py): THREADING and wait_readable."""

from __future__ import annotations

import select
import socket
import ssl
import threading

import pytest

from ws4web.concurrency import THREADING, Primitives

from .conftest import TIMEOUT, Worker

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
