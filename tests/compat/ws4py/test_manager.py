"""WebSocketManager: ws4py's methods over running WebSockets, and ws4py-style clients run on its loop."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ws4web import BinaryMessage, ConnectionClosed, TextMessage, WebSocket, WebSocketServer, connect
from ws4web.accept import Registry
from ws4web.compat.ws4py.client import WebSocketBaseClient
from ws4web.compat.ws4py.manager import WebSocketManager
from ws4web.compat.ws4py.websocket import EchoWebSocket
from ws4web.messages import Message

from ...conftest import wait_until

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0


class Tracked(WebSocket):
    """Joins the module's manager once open (as a ws4py server would have added it)."""

    manager: WebSocketManager

    def opened(self) -> None:
        Tracked.manager.add(self)
        self.send("tracked")


@pytest.fixture
def tracked_server() -> Iterator[tuple[WebSocketServer, WebSocketManager]]:
    manager = WebSocketManager()
    Tracked.manager = manager
    with WebSocketServer(Tracked, "127.0.0.1", 0) as server:
        server.start()
        yield server, manager


def open_tracked(server: WebSocketServer, count: int) -> list[WebSocket]:
    clients = [connect(f"ws://127.0.0.1:{server.port}/", timeout=TIMEOUT) for _ in range(count)]
    for client in clients:
        assert client.recv(TIMEOUT).text == "tracked"
    return clients


def test_tracks_broadcasts_and_forgets(tracked_server: tuple[WebSocketServer, WebSocketManager]) -> None:
    server, manager = tracked_server
    a, b, c = open_tracked(server, 3)
    assert len(manager) == 3 and len(manager.websockets) == 3
    handlers = list(manager)
    assert all(ws in manager for ws in handlers) and a not in manager
    assert set(manager.websockets) == {ws.id for ws in handlers}
    manager.broadcast("to all")
    manager.broadcast(b"\xff\x00", binary=True)
    for client in (a, b, c):
        assert client.recv(TIMEOUT) == TextMessage("to all")
        assert client.recv(TIMEOUT) == BinaryMessage(b"\xff\x00")
    # As in ws4py: binary=False (the default) sends bytes as text; a Message keeps its type.
    manager.broadcast(b"bytes as text")
    manager.broadcast(BinaryMessage(b"stays binary"))
    for client in (a, b, c):
        assert client.recv(TIMEOUT) == TextMessage("bytes as text")
        assert client.recv(TIMEOUT) == BinaryMessage(b"stays binary")
    # remove(): no longer reached, still open.
    removed = next(ws for ws in handlers if ws.peer_address == a.local_address)
    manager.remove(removed)
    assert removed not in manager and not removed.terminated
    manager.broadcast("without a")
    assert b.recv(TIMEOUT).text == "without a"
    a.send("ping")  # a still works; Tracked just ignores it
    # A closed WebSocket drops out of len() and iteration.
    c.close()
    assert wait_until(lambda: len(manager) == 1)
    for client in (a, b):
        client.close()


def test_close_all_sends_1001(tracked_server: tuple[WebSocketServer, WebSocketManager]) -> None:
    server, manager = tracked_server
    clients = open_tracked(server, 2)
    manager.close_all()
    for client in clients:
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(TIMEOUT)
        assert (closed.value.code, closed.value.reason) == (1001, "Server is shutting down")
    assert wait_until(lambda: len(manager) == 0)


def test_a_flood_of_short_connections_leaves_no_garbage(
    tracked_server: tuple[WebSocketServer, WebSocketManager],
) -> None:
    server, manager = tracked_server
    for _ in range(150):
        (client,) = open_tracked(server, 1)
        client.close()
    assert wait_until(lambda: len(manager) == 0)
    # Closed WebSockets are forgotten as the set grows: it never holds much more than the live ones.
    assert len(manager.registry) <= 2 * 1 + 32 + 1


def test_refusals() -> None:
    with pytest.raises(TypeError, match="no poller"):
        WebSocketManager(poller=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not connected"):
        WebSocketManager().add(WebSocket())


# -- ws4py's manager tutorial: clients run by the manager --------------------------------------


class EchoClient(WebSocketBaseClient):
    """As in ws4py's manager tutorial: the client joins the manager once its handshake is done."""

    manager: WebSocketManager
    received: queue.Queue[tuple[str, str, str]] = queue.Queue()

    def handshake_ok(self) -> None:
        EchoClient.manager.add(self)

    def opened(self) -> None:
        self.send(f"hello from {self.id}")

    def received_message(self, message: Message) -> None:
        EchoClient.received.put((self.id, str(message), threading.current_thread().name))

    def closed(self, code: int, reason: str | None = None) -> None:
        EchoClient.received.put((self.id, f"closed {code}", threading.current_thread().name))


@pytest.fixture
def echo_server() -> Iterator[WebSocketServer]:
    with WebSocketServer(EchoWebSocket, "127.0.0.1", 0) as server:
        server.start()
        yield server


def drain(count: int) -> list[tuple[str, str, str]]:
    return [EchoClient.received.get(timeout=TIMEOUT) for _ in range(count)]


def test_runs_clients_on_one_loop(echo_server: WebSocketServer) -> None:
    manager = WebSocketManager()
    EchoClient.manager = manager
    manager.start()
    try:
        clients = [EchoClient(f"ws://127.0.0.1:{echo_server.port}/ws") for _ in range(20)]
        threads_before = threading.active_count()
        for client in clients:
            client.connect()
        got = drain(20)
        assert sorted(text for _, text, _ in got) == sorted(f"hello from {c.id}" for c in clients)
        assert all(thread.startswith("ws4web-manager") for _, _, thread in got)
        assert threading.active_count() - threads_before < 5  # one loop, not a thread per client
        assert len(manager) == 20
        manager.broadcast("to every client")
        assert {(cid, text) for cid, text, _ in drain(20)} == {(c.id, "to every client") for c in clients}
        manager.close_all(1000, "bye")
        assert {text for _, text, _ in drain(20)} == {"closed 1000"}
        assert wait_until(lambda: len(manager) == 0 and len(manager.registry) == 0)
    finally:
        manager.stop()
    manager.join(TIMEOUT)
    assert not manager.running


def test_stop_drops_the_clients_it_runs(echo_server: WebSocketServer) -> None:
    manager = WebSocketManager()
    EchoClient.manager = manager
    client = EchoClient(f"ws://127.0.0.1:{echo_server.port}/ws")
    client.connect()  # add() starts the loop if start() was not called
    assert drain(1)[0][1].startswith("hello")
    waiter = threading.Thread(target=manager.run)
    waiter.start()
    manager.stop()
    waiter.join(TIMEOUT)
    assert not waiter.is_alive()
    assert drain(1)[0][1] == "closed 1006"
    assert client.terminated


def test_run_and_send_without_a_manager(echo_server: WebSocketServer) -> None:
    """The base client's default handshake_ok(): the caller runs it."""
    received: list[Any] = []

    class Plain(WebSocketBaseClient):
        def opened(self) -> None:
            self.send("once")

        def received_message(self, message: Message) -> None:
            received.append(str(message))
            self.close()

    client = Plain(f"ws://127.0.0.1:{echo_server.port}/")
    client.connect()
    assert not client.waiting_to_run
    client.run()  # in this thread, until the connection ends
    assert received == ["once"] and client.close_code == 1000


def test_a_registry_shutting_down_closes_what_is_added(echo_server: WebSocketServer) -> None:
    """A manager over a door's registry that is shutting down: an added client is closed at once."""
    registry = Registry()
    registry.shutdown(timeout=0.1)
    manager = WebSocketManager(registry=registry)
    EchoClient.manager = manager
    try:
        client = EchoClient(f"ws://127.0.0.1:{echo_server.port}/ws")
        client.connect()
        texts = []
        while not texts or not texts[-1].startswith("closed"):
            texts.append(EchoClient.received.get(timeout=TIMEOUT)[1])
        assert texts[-1] == "closed 1001" and len(manager) == 0
    finally:
        manager.stop()
