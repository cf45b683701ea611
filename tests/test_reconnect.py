"""ReconnectingClient (ws4web/reconnect.py) against real servers that stop, restart and refuse on 127.0.0.1."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ws4web import WebSocket, WebSocketServer
from ws4web.exceptions import ConnectionClosed, InvalidStatus, SendQueueFull
from ws4web.http11 import Headers, Request, Response
from ws4web.messages import Message
from ws4web.reconnect import Backoff, ReconnectingClient

from .conftest import TIMEOUT, wait_until

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

FAST = Backoff(initial=0.02, maximum=0.1)


class Recording(WebSocket):
    """Echoes, and records every message any instance received, in order."""

    received: list[str] = []
    lock = threading.Lock()

    def received_message(self, message: Message) -> None:
        text = bytes(message.data).decode()
        with Recording.lock:
            Recording.received.append(text)
        self.send(f"echo {text}")


class Restartable:
    """A WebSocketServer on one fixed port that can be stopped and started again."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.server: WebSocketServer | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.server = WebSocketServer(Recording, "127.0.0.1", self.port, close_timeout=2.0, **self.options).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()  # 1001 to every client; returns once the port is free
            self.server = None


@pytest.fixture
def restartable() -> Iterator[Restartable]:
    Recording.received = []
    server = Restartable()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_backoff_sequence_is_exponential_capped_and_jittered() -> None:
    plain = Backoff(initial=0.5, maximum=4.0, factor=2.0, jitter=False)
    assert [plain.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    plain.reset()
    assert plain.next_delay() == 0.5
    jittered = Backoff(initial=1.0, maximum=8.0, rng=random.Random(7))
    delays = [jittered.next_delay() for _ in range(200)]
    ceilings = [min(8.0, 2.0**n) for n in range(200)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays}) > 150  # spread out, not one value
    with pytest.raises(ValueError):
        Backoff(initial=2.0, maximum=1.0)


def test_reconnects_after_restart_resubscribes_and_delivers_offline_messages(restartable: Restartable) -> None:
    connects: list[WebSocket] = []
    drops: list[int] = []
    client = ReconnectingClient(
        restartable.url,
        on_connect=lambda ws: (connects.append(ws), ws.send("subscribe")),
        on_disconnect=lambda code, reason: drops.append(code),
        backoff=FAST,
    )
    with client:
        client.send("one")
        assert client.recv(TIMEOUT).data == b"echo subscribe"
        assert client.recv(TIMEOUT).data == b"echo one"
        restartable.stop()
        assert wait_until(lambda: not client.connected)
        for text in ("two", "three", "four"):  # offline: queued, in order
            client.send(text)
        assert client.queued == 3
        restartable.start()
        assert client.wait_connected(TIMEOUT)
        got = [client.recv(TIMEOUT).data for _ in range(4)]
        assert got == [b"echo subscribe", b"echo two", b"echo three", b"echo four"]
        client.send("five")
        assert client.recv(TIMEOUT).data == b"echo five"
    assert len(connects) == 2 and client.connections == 2
    assert drops == [1001]
    # The server saw everything exactly once, the hook's message first on each connection.
    assert Recording.received == ["subscribe", "one", "subscribe", "two", "three", "four", "five"]


def test_a_full_offline_queue_raises_and_loses_nothing_silently(restartable: Restartable) -> None:
    client = ReconnectingClient(restartable.url, backoff=FAST, max_queue=3, max_queue_bytes=100)
    with client:
        restartable.stop()
        assert wait_until(lambda: not client.connected)
        client.send("a")
        client.send("b")
        client.send("c")
        with pytest.raises(SendQueueFull):
            client.send("d")  # the caller is told: "d" is not sent
        assert client.queued == 3
        restartable.start()
        assert client.wait_connected(TIMEOUT)
        assert [client.recv(TIMEOUT).data for _ in range(3)] == [b"echo a", b"echo b", b"echo c"]
    assert Recording.received == ["a", "b", "c"]


def test_queue_is_bounded_in_bytes_too(restartable: Restartable) -> None:
    client = ReconnectingClient(restartable.url, backoff=FAST, max_queue=100, max_queue_bytes=10)
    with client:
        restartable.stop()
        assert wait_until(lambda: not client.connected)
        client.send(b"12345678")
        with pytest.raises(SendQueueFull):
            client.send(b"123")
        client.send(b"12")


def test_abrupt_drop_reconnects(restartable: Restartable) -> None:
    drops: list[int] = []
    client = ReconnectingClient(restartable.url, backoff=FAST, on_disconnect=lambda c, r: drops.append(c))
    with client:
        first = client.websocket
        assert first is not None
        server = restartable.server
        assert server is not None
        assert wait_until(lambda: len(server.websockets) == 1)  # the 101 goes out before it is listed
        for ws in list(server.websockets):
            ws.terminate()  # TCP gone, no close frame
        assert wait_until(lambda: client.connections == 2 and client.connected)
        client.send("after")
        assert client.recv(TIMEOUT).data == b"echo after"
    assert drops == [1006]


def test_server_down_at_first_then_up(restartable: Restartable) -> None:
    restartable.stop()
    client = ReconnectingClient(restartable.url, backoff=FAST).start()
    try:
        client.send("early")  # queued before the first connection
        assert not client.wait_connected(0.2)
        restartable.start()
        assert client.wait_connected(TIMEOUT)
        assert client.recv(TIMEOUT).data == b"echo early"
    finally:
        client.close()


def test_gives_up_after_max_attempts() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    client = ReconnectingClient(f"ws://127.0.0.1:{port}/", backoff=FAST, max_attempts=3)
    with pytest.raises(ConnectionRefusedError):
        client.start(wait=TIMEOUT)
    with pytest.raises(ConnectionClosed, match="gave up"):
        client.recv(TIMEOUT)
    with pytest.raises(ConnectionClosed):
        client.send("x")
    client.close()


def test_a_4xx_refusal_is_not_retried() -> None:
    attempts: list[str] = []

    def refuse(request: Request) -> Response:
        attempts.append(request.path)
        return Response(403, "Forbidden", Headers([("Content-Length", "0")]))

    server = WebSocketServer(Recording, "127.0.0.1", 0, process_request=refuse).start()
    try:
        client = ReconnectingClient(f"ws://127.0.0.1:{server.port}/", backoff=FAST)
        with pytest.raises(InvalidStatus) as info:
            client.start(wait=TIMEOUT)
        assert info.value.status == 403
        client.close()
        assert attempts == ["/"]
    finally:
        server.shutdown()


def test_a_503_refusal_is_retried(restartable: Restartable) -> None:
    refusals = [0]

    def busy_twice(request: Request) -> Response | None:
        if refusals[0] < 2:
            refusals[0] += 1
            return Response(503, "Busy", Headers([("Content-Length", "0")]))
        return None

    restartable.stop()
    restartable.options = {"process_request": busy_twice}
    restartable.start()
    with ReconnectingClient(restartable.url, backoff=FAST) as client:
        client.send("through")
        assert client.recv(TIMEOUT).data == b"echo through"
    assert refusals == [2]


def test_close_ends_recv_after_what_was_received(restartable: Restartable) -> None:
    client = ReconnectingClient(restartable.url, backoff=FAST)
    with client:
        client.send("last")
        assert wait_until(lambda: "last" in Recording.received)
        assert wait_until(lambda: bool(client._inbox))
    # closed: the message that arrived before close() is still returned, then the end
    assert client.recv(TIMEOUT).data == b"echo last"
    with pytest.raises(ConnectionClosed):
        client.recv(TIMEOUT)
    assert list(client) == []
    with pytest.raises(TimeoutError):
        ReconnectingClient(restartable.url).recv(0.01)


def test_a_failing_hook_drops_the_connection_and_retries(restartable: Restartable) -> None:
    calls = [0]

    def flaky(ws: WebSocket) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("first login failed")

    with ReconnectingClient(restartable.url, backoff=FAST, on_connect=flaky) as client:
        client.send("ok")
        assert client.recv(TIMEOUT).data == b"echo ok"
    assert calls[0] == 2
