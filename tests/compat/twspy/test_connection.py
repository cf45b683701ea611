"""twspy's Connection: messages over an accepted websocket, its handlers, hooks and closing."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import ws4web.compat.twspy as twspy
from ws4web import BinaryMessage, ConnectionClosed, TextMessage, connect
from ws4web.frames import Frame, Opcode

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 10.0


class Recorder(twspy.Connection):
    """Echoes; records every handler call; 'raise' makes onmessage() raise."""

    def __init__(self, sock: Any, events: queue.Queue[tuple[Any, ...]]) -> None:
        self.events = events
        super().__init__(sock)

    def onopen(self) -> None:
        self.events.put(("open",))

    def onmessage(self, message: Any) -> None:
        self.events.put(("message", type(message).__name__, message.payload))
        if message.payload == "raise":
            raise ValueError("raised on purpose")
        if message.payload == "ping me":
            self.send_ping("p")
            return
        self.send(message)

    def onping(self, payload: Any) -> None:
        self.events.put(("ping", payload))

    def onpong(self, payload: bytes) -> None:
        self.events.put(("pong", payload))

    def onclose(self, code: int | None, reason: str) -> None:
        self.events.put(("close", code, reason))

    def onerror(self, e: BaseException) -> None:
        self.events.put(("error", repr(e)))


@pytest.fixture
def served() -> Iterator[tuple[int, queue.Queue[tuple[Any, ...]]]]:
    """A twspy accept loop with Recorder connections, one thread per connection."""
    server = twspy.websocket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def loop() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=Recorder(client, events).receive_forever, daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield server.getsockname()[1], events
    server.sock.shutdown(2)
    server.close()
    thread.join(TIMEOUT)


def next_events(events: queue.Queue[tuple[Any, ...]], count: int) -> list[tuple[Any, ...]]:
    return [events.get(timeout=TIMEOUT) for _ in range(count)]


def test_handlers(served: tuple[int, queue.Queue[tuple[Any, ...]]]) -> None:
    port, events = served
    with connect(f"ws://127.0.0.1:{port}/", timeout=TIMEOUT) as ws:
        assert next_events(events, 1) == [("open",)]
        ws.send("héllo")
        assert ws.recv(TIMEOUT) == TextMessage("héllo")
        ws.send(b"\x00\x01")
        assert ws.recv(TIMEOUT) == BinaryMessage(b"\x00\x01")
        assert next_events(events, 2) == [
            ("message", "TextMessage", "héllo"),
            ("message", "BinaryMessage", b"\x00\x01"),
        ]
        ws.send("raise")  # onerror(), and the connection goes on
        assert next_events(events, 2)[1] == ("error", "ValueError('raised on purpose')")
        ws.send("ping me")
        ws.send("after the ping")
        assert ws.recv(TIMEOUT).text == "after the ping"  # the client answered the ping meanwhile
        got = next_events(events, 4)
        assert ("ping", "p") in got and ("pong", b"p") in got
        ws.close(1000, "done")
    assert next_events(events, 1) == [("close", 1000, "done")]


def test_send_in_fragments_and_hooks(served: tuple[int, queue.Queue[tuple[Any, ...]]]) -> None:
    """A client-side Connection: JSON hooks, fragment_size, close()."""
    port, events = served
    sock = twspy.websocket()
    sock.connect(("127.0.0.1", port))
    conn = twspy.Connection(sock)
    conn.add_hook(lambda data: twspy.TextMessage(json.dumps(data)), lambda message: json.loads(message.payload))
    conn.send({"foo": "bar" * 10}, fragment_size=8)
    assert conn.recv() == {"foo": "bar" * 10}
    assert next_events(events, 2)[1] == ("message", "TextMessage", json.dumps({"foo": "bar" * 10}))
    conn.close(1000, "bye")
    assert next_events(events, 1) == [("close", 1000, "bye")]
    with pytest.raises(twspy.SocketClosed):
        conn.recv()


def test_fragments_go_out_as_fragments() -> None:
    listener = twspy.websocket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted: list[Any] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()))
    thread.start()
    raw = twspy.websocket()
    raw.connect(listener.getsockname())
    thread.join(TIMEOUT)
    try:
        twspy.Connection(accepted[0]).send(twspy.BinaryMessage(b"abcdefgh"), fragment_size=3)
        frames = raw.recvn(3)
        assert [(f.opcode, f.payload, f.final) for f in frames] == [
            (Opcode.BINARY, b"abc", False),
            (Opcode.CONTINUATION, b"def", False),
            (Opcode.CONTINUATION, b"gh", True),
        ]
        assert all(isinstance(f, Frame) for f in frames)
    finally:
        raw.close()
        accepted[0].close()
        listener.close()


def test_readme_onclose_form_gets_the_close() -> None:
    """twspy's README wrote onclose(self, message): it gets a SocketClosed."""
    got: list[Any] = []

    class Old(twspy.Connection):
        def onclose(self, message: Any) -> None:
            got.append(message)

    listener = twspy.websocket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted: list[Any] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()))
    thread.start()
    client = connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", timeout=TIMEOUT)
    thread.join(TIMEOUT)
    conn = Old(accepted[0])
    runner = threading.Thread(target=conn.receive_forever)
    runner.start()
    client.close(1001, "going")
    runner.join(TIMEOUT)
    listener.close()
    assert len(got) == 1 and isinstance(got[0], twspy.SocketClosed)
    assert (got[0].code, got[0].reason) == (1001, "going")
    with pytest.raises(ConnectionClosed):
        client.send("x")


def test_needs_a_handshaken_websocket() -> None:
    sock = twspy.websocket()
    with pytest.raises(ValueError, match="handshake"):
        twspy.Connection(sock)
    sock.close()
