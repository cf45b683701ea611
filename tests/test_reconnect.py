"""ReconnectingClient (ws4web/reconnect.py) against real servers that stop, restart and refuse on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ws4web import WebSocket, WebSocketServer
from ws4web.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, ProxyError, SendQueueFull
from ws4web.http11 import Headers, Request, Response
from ws4web.messages import Message
from ws4web.reconnect import Backoff, ReconnectingClient

from .conftest import TIMEOUT, wait_until
from .test_client import ScriptedServer, status, switching
from .test_proxy import ConnectProxy

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


# -- no secret in any record or thread name --------------------------------------------------------

SECRETS = [
    "alice",  # the user name goes too: it can be the credential itself
    "PASSWORD-SECRET",
    "APIKEY-SECRET",
    "TOKEN-SECRET",
    "BEARER-SECRET",
    "XKEY-SECRET",
    "SUBPROTO-SECRET",
    "LOCATION-SECRET",
    "CROSS-SECRET",
    "PROXY-SECRET",
]


class Capture(logging.Handler):
    """Every record of the ``ws4web`` hierarchy, formatted with its traceback and thread name."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s [%(threadName)s] %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@contextlib.contextmanager
def everything_recorded() -> Iterator[tuple[Capture, set[str]]]:
    """All ws4web records at DEBUG and up, and the name of every thread seen meanwhile."""
    logger = logging.getLogger("ws4web")
    capture = Capture()
    names: set[str] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.002):
            names.update(thread.name for thread in threading.enumerate())

    sampler = threading.Thread(target=sample, name="test-thread-sampler", daemon=True)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    sampler.start()
    try:
        yield capture, names
    finally:
        stop.set()
        sampler.join(TIMEOUT)
        logger.removeHandler(capture)
        logger.setLevel(old_level)
        names.update(record.threadName for record in capture.records if record.threadName)


def assert_no_secret(texts: list[str]) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {text!r}"


@pytest.fixture
def scripted_server() -> Iterator[list[ScriptedServer]]:
    started: list[ScriptedServer] = []
    yield started
    for server in started:
        server.close()


def test_no_secret_reaches_a_log_record_or_a_thread_name(scripted_server: list[ScriptedServer]) -> None:
    def script(index: int, head: bytes) -> tuple[bytes, str]:
        if index == 0:
            return switching(head), "drop"  # on_connect fails on this one
        if index == 1:
            return status(503), "drop"  # retried: logged at DEBUG with the error
        if index == 2:
            return status(302, ("Location", "/moved?sig=LOCATION-SECRET")), "drop"  # same origin
        if index == 3:
            return switching(head), "close"  # on_disconnect fails after this one
        # Another origin, and subprotocols offered: refused, and the client gives up (WARNING).
        return status(302, ("Location", server.url("/x?token=CROSS-SECRET", host="localhost"))), "drop"

    server = ScriptedServer(script)
    scripted_server.append(server)
    url = server.url("/feed?api_key=APIKEY-SECRET&access_token=TOKEN-SECRET", userinfo="alice:PASSWORD-SECRET@")
    hooks = [0]

    def on_connect(ws: WebSocket) -> None:
        hooks[0] += 1
        if hooks[0] == 1:
            raise RuntimeError("the login hook failed")

    def on_disconnect(code: int, reason: str) -> None:
        raise RuntimeError("the disconnect hook failed")

    errors: list[str] = []
    with everything_recorded() as (capture, thread_names):
        client = ReconnectingClient(
            url,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            backoff=FAST,
            headers={"Authorization": "Bearer BEARER-SECRET", "X-Api-Key": "XKEY-SECRET"},
            protocols=["chat", "tok.SUBPROTO-SECRET"],
            timeout=TIMEOUT,
            close_timeout=2.0,
        ).start()
        with pytest.raises(ConnectionClosed, match="gave up") as gave_up:
            client.recv(3 * TIMEOUT)
        errors.append(str(gave_up.value))
        errors.append(repr(gave_up.value.__cause__))
        client.close()

        # While it cannot connect: a TimeoutError from start(wait=...), DEBUG records on each retry.
        probe = socket.create_server(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there now
        offline = ReconnectingClient(f"ws://alice:PASSWORD-SECRET@127.0.0.1:{port}/?access_token=TOKEN-SECRET")
        offline.backoff = FAST
        with pytest.raises(TimeoutError) as timed_out:
            offline.start(wait=0.3)
        errors.append(str(timed_out.value))
        offline.close()

        # Through a proxy that refuses (407), and with a malformed proxy URL: both give up at WARNING.
        proxy = ConnectProxy(credentials=("proxyuser", "other"))
        try:
            for proxy_url in (proxy.url(userinfo="proxyuser:PROXY-SECRET@"), "http://proxyuser:PROXY-SECRET@h:port"):
                refused = ReconnectingClient(url, proxy=proxy_url, backoff=FAST, timeout=TIMEOUT)
                with pytest.raises((ProxyError, InvalidURI)) as info:
                    refused.start(wait=TIMEOUT)
                errors.append(str(info.value))
                refused.close()
        finally:
            proxy.close()

    assert_no_secret(capture.lines)
    assert_no_secret(sorted(thread_names))
    assert_no_secret(errors)
    # The secrets were in play: the server saw them in the handshakes.
    assert b"BEARER-SECRET" in server.heads[0] and b"SUBPROTO-SECRET" in server.heads[0]
    assert b"APIKEY-SECRET" in server.heads[0] and b"LOCATION-SECRET" in server.heads[3]
    assert len(server.heads) == 5 and hooks[0] == 2
    # ... and every path logged, at every level.
    safe = f"ws://***@127.0.0.1:{server.port}/feed?api_key=***&access_token=***"
    messages = [record.getMessage() for record in capture.records]
    assert any(m.startswith(f"giving up on {safe} after 1 attempt(s)") and "localhost" in m for m in messages)
    assert any(m.startswith(f"connecting to {safe} failed (server answered 503") for m in messages)
    assert any(m.startswith(f"on_connect hook for {safe} failed") for m in messages)
    assert any(m.startswith(f"on_disconnect hook for {safe} failed") for m in messages)
    assert sum(m.startswith(f"giving up on {safe}") for m in messages) == 3  # the redirect, 407, bad proxy URL
    assert {logging.DEBUG, logging.WARNING, logging.ERROR} <= {record.levelno for record in capture.records}
    assert f"ws4web-reconnect {safe}" in thread_names
