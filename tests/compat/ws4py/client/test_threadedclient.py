"""The threaded client: connect() starts a thread that runs the callbacks; run_forever() waits for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ws4web import WebSocketServer
from ws4web.compat.ws4py.client.threadedclient import WebSocketClient
from ws4web.compat.ws4py.websocket import EchoWebSocket
from ws4web.messages import Message

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def echo_server() -> Iterator[WebSocketServer]:
    with WebSocketServer(EchoWebSocket, "127.0.0.1", 0) as server:
        server.start()
        yield server


class Counting(WebSocketClient):
    def opened(self) -> None:
        self.events = [("opened", threading.current_thread().name)]
        self.send(iter(["frag", "ments"]))  # a generator: one message in fragments, as in ws4py
        self.send("two")

    def received_message(self, message: Message) -> None:
        self.events.append((str(message), threading.current_thread().name))
        if len(self.events) == 3:
            self.close(reason="Bye bye")

    def closed(self, code: int, reason: str | None = None) -> None:
        self.events.append((f"closed {code}", threading.current_thread().name))


def test_connect_starts_the_thread(echo_server: WebSocketServer) -> None:
    client = Counting(f"ws://127.0.0.1:{echo_server.port}/", protocols=["http-only", "chat"])
    assert client.daemon  # as in ws4py
    client.daemon = False
    assert not client.daemon
    client.connect()  # returns at once: the thread runs the callbacks
    client.run_forever()
    assert client.events == [
        ("opened", "WebSocketClient"),
        ("fragments", "WebSocketClient"),
        ("two", "WebSocketClient"),
        ("closed 1000", "WebSocketClient"),
    ]
    assert client.terminated


def test_run_forever_needs_a_connection() -> None:
    with pytest.raises(RuntimeError, match="no connection"):
        WebSocketClient("ws://127.0.0.1:9/").run_forever()
