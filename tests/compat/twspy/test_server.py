"""twspy's Server on WebSocketServer: per-client hooks, clients, onerror, shutdown with 1001, options."""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import ws4web.compat.twspy as twspy
from ws4web import ConnectionClosed, InvalidStatus, connect
from ws4web.extensions.permessage_deflate import ClientPerMessageDeflateFactory, ServerPerMessageDeflateFactory

from ...conftest import CA_FILE, SERVER_CERT, SERVER_KEY, wait_until

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 10.0


class Hub(twspy.Server):
    """Echoes, broadcasts 'all', raises on 'raise'; records the hooks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        super().__init__(*args, **kwargs)

    def onopen(self, client: Any) -> None:
        self.events.put(("open", str(client)))

    def onmessage(self, client: Any, message: Any) -> None:
        self.events.put(("message", message.payload))
        if message.payload == "raise":
            raise RuntimeError("hook bug")
        if message.payload == "all":
            for other in self.clients:
                other.send(twspy.TextMessage(f"{len(self.clients)} clients"))
            return
        if message.payload == "ping":
            client.send_ping("hi")
            return
        client.send(message)

    def onpong(self, client: Any, payload: bytes) -> None:
        self.events.put(("pong", payload))

    def onclose(self, client: Any, code: int | None, reason: str) -> None:
        self.events.put(("close", code, reason))

    def onerror(self, client: Any, e: BaseException) -> None:
        self.events.put(("error", repr(e)))


@pytest.fixture
def hub() -> Iterator[Hub]:
    server = Hub(("127.0.0.1", 0), loglevel=logging.WARNING, max_join_time=2.0)
    thread = threading.Thread(target=server.run)
    thread.start()
    yield server
    server.quit_gracefully()
    thread.join(TIMEOUT)


def test_hooks_and_clients(hub: Hub) -> None:
    url = f"ws://127.0.0.1:{hub.port}/"
    with connect(url, timeout=TIMEOUT) as a, connect(url, timeout=TIMEOUT) as b:
        assert hub.events.get(timeout=TIMEOUT)[1].startswith("<Client at 127.0.0.1:")
        hub.events.get(timeout=TIMEOUT)
        a.send("echo")
        assert a.recv(TIMEOUT).text == "echo"
        b.send("all")
        assert a.recv(TIMEOUT).text == b.recv(TIMEOUT).text == "2 clients"
        a.send("raise")  # onerror(), and the client stays connected
        a.send("ping")
        a.send("still here")
        assert a.recv(TIMEOUT).text == "still here"
        events = [hub.events.get(timeout=TIMEOUT) for _ in range(7)]
        assert ("error", "RuntimeError('hook bug')") in events and ("pong", b"hi") in events
        b.close(1000, "bye")
        assert hub.events.get(timeout=TIMEOUT) == ("close", 1000, "bye")
        assert wait_until(lambda: len(hub.clients) == 1)


def test_quit_gracefully_closes_with_1001(hub: Hub) -> None:
    with connect(f"ws://127.0.0.1:{hub.port}/", timeout=TIMEOUT) as ws:
        ws.send("x")
        assert ws.recv(TIMEOUT).text == "x"
        quitting = threading.Thread(target=hub.quit_gracefully)  # it waits for our answer to its close
        quitting.start()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(TIMEOUT)
        assert closed.value.code == 1001
        quitting.join(TIMEOUT)
        assert not quitting.is_alive()


def test_options() -> None:
    server = twspy.Server(
        ("127.0.0.1", 0),
        loglevel=logging.WARNING,
        ssl_args={"certfile": SERVER_CERT, "keyfile": SERVER_KEY},
        protocols=["chat"],
        extensions=[ServerPerMessageDeflateFactory()],
        locations=["/ws"],
        trusted_origins=["https://good.example"],
        auth=("ann", "secret"),
        max_message_size=1024,
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    context = ssl.create_default_context(cafile=CA_FILE)
    url = f"wss://ann:secret@localhost:{server.port}"
    good = {"ssl_context": context, "headers": {"Origin": "https://good.example"}}
    try:
        with connect(
            f"{url}/ws", protocols=["chat"], extensions=[ClientPerMessageDeflateFactory()], timeout=TIMEOUT, **good
        ) as ws:
            assert ws.subprotocol == "chat" and ws.extensions
            ws.send("x" * 2000)  # past max_message_size
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
            assert closed.value.code == 1009
        for path, options, status in [
            ("/elsewhere", good, 404),
            ("/ws", {"ssl_context": context, "headers": {"Origin": "https://evil.example"}}, 403),
        ]:
            with pytest.raises(InvalidStatus) as refused:
                connect(f"{url}{path}", timeout=TIMEOUT, **options)  # type: ignore[arg-type]
            assert refused.value.status == status
        with pytest.raises(InvalidStatus) as refused:
            connect(f"wss://localhost:{server.port}/ws", timeout=TIMEOUT, **good)  # type: ignore[arg-type]
        assert refused.value.status == 401
    finally:
        server.quit_gracefully()
        thread.join(TIMEOUT)


def test_client_options_are_refused() -> None:
    with pytest.raises(TypeError, match="client's option"):
        twspy.Server(("127.0.0.1", 0), location="/x")
    with pytest.raises(TypeError, match="extension factories"):
        twspy.Server(("127.0.0.1", 0), extensions=["deflate-frame"])


def test_readme_onclose_form(hub: Hub) -> None:
    """twspy's README wrote onclose(self, client)."""
    closed: queue.Queue[str] = queue.Queue()

    class Readme(twspy.Server):
        def onclose(self, client: Any) -> None:
            closed.put(str(client))

    server = Readme(("127.0.0.1", 0), loglevel=logging.WARNING)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        with connect(f"ws://127.0.0.1:{server.port}/", timeout=TIMEOUT):
            pass
        assert closed.get(timeout=TIMEOUT).startswith("<Client")
    finally:
        server.quit_gracefully()
        thread.join(TIMEOUT)
