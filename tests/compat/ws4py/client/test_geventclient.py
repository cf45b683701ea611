"""The gevent client: gevent sockets and primitives without monkey-patching; receive() and its bounded queue."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import gevent.queue
import pytest

from ws4web import TextMessage, WebSocket, WebSocketServer
from ws4web.compat.ws4py.client.geventclient import WebSocketClient
from ws4web.compat.ws4py.websocket import EchoWebSocket
from ws4web.messages import Message

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0


@pytest.fixture
def echo_server() -> Iterator[WebSocketServer]:
    with WebSocketServer(EchoWebSocket, "127.0.0.1", 0) as server:
        server.start()
        yield server


def test_receive(echo_server: WebSocketServer) -> None:
    ws = WebSocketClient(f"ws://127.0.0.1:{echo_server.port}/ws", protocols=["http-only", "chat"])
    ws.connect()
    with pytest.raises(gevent.queue.Empty):
        ws.receive(block=False)
    got: list[str] = []

    def incoming() -> None:
        while True:
            message = ws.receive()
            if message is None:
                return
            got.append(str(message))
            if len(got) == 8:
                ws.close()

    def outgoing() -> None:
        for i in range(0, 40, 5):
            ws.send("*" * i)

    with gevent.Timeout(TIMEOUT):
        gevent.joinall([gevent.spawn(incoming), gevent.spawn(outgoing)], raise_error=True)
    assert got == ["*" * i for i in range(0, 40, 5)]
    assert ws.receive() is None and ws.terminated


class Flood(WebSocket):
    def opened(self) -> None:
        for i in range(300):
            self.send(f"message {i} " + "x" * 1000)
        self.close()


def test_an_unread_client_holds_a_bounded_queue() -> None:
    with WebSocketServer(Flood, "127.0.0.1", 0) as server:
        server.start()
        ws = WebSocketClient(f"ws://127.0.0.1:{server.port}/", max_queue=4)
        ws.connect()
        with gevent.Timeout(TIMEOUT):
            while ws.messages.qsize() < 4:  # the greenlet reads until the queue is full...
                gevent.sleep(0.01)
        gevent.sleep(0.2)
        assert ws.messages.qsize() == 4  # ...then stops reading
        received = []
        with gevent.Timeout(TIMEOUT):
            while (message := ws.receive()) is not None:
                received.append(message)
                assert ws.messages.qsize() <= 4
    # Nothing was lost: TCP held the rest back.
    assert [m.data.split(b" ")[1] for m in received] == [str(i).encode() for i in range(300)]
    assert received[0] == TextMessage("message 0 " + "x" * 1000)


def test_callbacks_still_run(echo_server: WebSocketServer) -> None:
    seen: list[str] = []

    class Client(WebSocketClient):
        def opened(self) -> None:
            seen.append("opened")
            self.send("from opened")

        def received_message(self, message: Message) -> None:
            seen.append(str(message))
            super().received_message(message)

    ws = Client(f"ws://127.0.0.1:{echo_server.port}/")
    ws.connect()
    with gevent.Timeout(TIMEOUT):
        assert str(ws.receive()) == "from opened"
    ws.close()
    with gevent.Timeout(TIMEOUT):
        assert ws.receive() is None
    assert seen == ["opened", "from opened"]
