"""The handler API (ws4web/websocket.py): callbacks with run(), pull style, closing, errors."""

from __future__ import annotations

import logging
import socket
from typing import Any, TypeVar

import pytest

from ws4web import CLIENT, SERVER, WebSocket
from ws4web.drivers import PingWaiter
from ws4web.exceptions import ConnectionClosed, ConnectionClosedError
from ws4web.frames import Frame, Opcode
from ws4web.messages import BinaryMessage, Message, TextMessage
from ws4web.upgrade import wrap_socket

from .conftest import TIMEOUT, RawPeer, RecordingHandler, Worker, close_payload, encode_frame

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]


H = TypeVar("H", bound=RecordingHandler)


class FailingHandler(RecordingHandler):
    def received_message(self, message: Message) -> None:
        super().received_message(message)
        if message.data == b"boom":
            raise RuntimeError("handler bug")


class FailingOpened(RecordingHandler):
    def opened(self) -> None:
        super().opened()
        raise LookupError("opened() bug")


class ClosingHandler(RecordingHandler):
    def received_message(self, message: Message) -> None:
        super().received_message(message)
        if message.data == b"bye":
            self.close(4000, "bye bye")


def start_handler(cls: type[H], sock: socket.socket, **options: Any) -> tuple[H, Worker]:
    """Build a handler over ``sock`` and run its callback loop in a thread."""
    options.setdefault("close_timeout", 2.0)
    handler = wrap_socket(sock, cls, **options)
    return handler, Worker(handler.run, thread_name="handler")


# -- sending and receiving ----------------------------------------------------------------------


def test_send_every_kind_of_payload(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    client.send("text é")
    client.send(b"\x00bytes")
    client.send(bytearray(b"array"))
    client.send(TextMessage("a text message"))
    client.send(BinaryMessage(b"a binary message"))
    client.send(chunk for chunk in ["gen", "er", "ator"])
    client.send(iter([b"\x01", b"\x02", b"\x03"]))
    client.send(["list", "of", "str"], binary=True)
    expected = [
        TextMessage("text é"),
        BinaryMessage(b"\x00bytes"),
        BinaryMessage(b"array"),
        TextMessage("a text message"),
        BinaryMessage(b"a binary message"),
        TextMessage("generator"),
        BinaryMessage(b"\x01\x02\x03"),
        BinaryMessage(b"listofstr"),
    ]
    assert [server.recv(TIMEOUT) for _ in expected] == expected


def test_binary_flag_forces_the_type(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    client.send("now binary", binary=True)
    client.send(b"now text", binary=False)
    client.send(TextMessage("message to binary"), binary=True)
    client.send(BinaryMessage(b"message to text"), binary=False)
    client.send((c for c in [b"gen", b"text"]), binary=False)
    first = server.recv(TIMEOUT)
    assert isinstance(first, BinaryMessage)
    assert first.data == b"now binary"
    second = server.recv(TIMEOUT)
    assert isinstance(second, TextMessage)
    assert str(second) == "now text"
    assert server.recv(TIMEOUT) == BinaryMessage(b"message to binary")
    assert server.recv(TIMEOUT) == TextMessage("message to text")
    assert server.recv(TIMEOUT) == TextMessage("gentext")


def test_generator_is_fragmented_on_the_wire(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    ws = wrap_socket(sock, close_timeout=1.0)
    ws.send(b"%d" % i for i in range(4))
    frames = [peer.read_frame() for _ in range(4)]
    assert [(f.opcode, f.fin) for f in frames] == [(2, False), (0, False), (0, False), (0, True)]
    assert b"".join(f.payload for f in frames) == b"0123"
    ws.terminate()


def test_recv_timeout(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    with pytest.raises(TimeoutError):
        server.recv(timeout=0.2)
    client.send("after the timeout")
    assert server.recv(TIMEOUT) == TextMessage("after the timeout")


def test_iteration_ends_on_normal_close(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair

    def send_then_close() -> None:
        for i in range(3):
            client.send(f"m{i}")
        client.close()

    closer = Worker(send_then_close)
    assert [m.data for m in server] == [b"m0", b"m1", b"m2"]
    closer.join()
    assert server.close_code == 1000
    assert server.terminated
    assert client.terminated


def test_iteration_raises_on_abnormal_close(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    client.send("one")
    client.send("two")
    client.terminate()
    received = []
    with pytest.raises(ConnectionClosedError) as exc:
        for message in server:
            received.append(message.data)
    assert received == [b"one", b"two"]
    assert exc.value.code == 1006


def test_iteration_raises_on_error_close_code(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    closer = Worker(client.close, 1008, "policy")
    with pytest.raises(ConnectionClosedError) as exc:
        list(server)
    closer.join()
    assert (exc.value.code, exc.value.reason) == (1008, "policy")


def test_context_manager_closes_with_1000(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    reader = Worker(lambda: list(server))
    with client as ws:
        assert ws is client
        ws.send("inside")
    assert client.terminated
    assert [m.data for m in reader.join()] == [b"inside"]
    assert server.close_code == 1000
    assert client.close_code == 1000


def test_context_manager_closes_on_exception(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    reader = Worker(lambda: list(server))
    with pytest.raises(KeyError), client:
        raise KeyError("app error")
    assert reader.join() == []
    assert server.close_code == 1000


def test_terminate(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    reader = Worker(client.recv, TIMEOUT)
    server.terminate()
    exc = reader.raised()
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1006
    assert server.terminated
    with pytest.raises(ConnectionClosed):
        server.send("after terminate")


# -- ping / pong --------------------------------------------------------------------------------


def test_ping_returns_a_waiter_resolved_by_the_pong(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    handler, runner = start_handler(RecordingHandler, sock_pair[0])
    client = wrap_socket(sock_pair[1], side=CLIENT, close_timeout=2.0)
    waiter = client.ping(b"latency?")
    assert isinstance(waiter, PingWaiter)
    client.send("sync")  # the server reads the ping first and answers it before this
    assert handler.next_event() == ("opened",)
    assert handler.next_event() == ("message", TextMessage("sync"))
    with pytest.raises(TimeoutError):
        client.recv(0.3)  # reading is what processes the pong
    assert waiter.wait(0)
    assert waiter.latency is not None
    assert waiter.latency >= 0
    client.close()
    runner.join()


def test_ponged_callback(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    handler, runner = start_handler(RecordingHandler, sock)
    peer.send_frame(Opcode.PONG, b"heartbeat")
    peer.send_frame(Opcode.TEXT, b"after")
    assert handler.next_event() == ("opened",)
    assert handler.next_event() == ("pong", b"heartbeat")
    assert handler.next_event() == ("message", TextMessage("after"))
    peer.sock.close()
    runner.join()
    assert handler.closed_with == (1006, "")


def test_keepalive_answered_keeps_the_connection(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    handler, runner = start_handler(RecordingHandler, sock_pair[0], ping_interval=0.1, ping_timeout=0.5)
    client = wrap_socket(sock_pair[1], side=CLIENT, close_timeout=2.0)
    seen: list[Frame] = []
    for _ in range(20):  # about 0.6 s of reading frames: several pings, all answered
        try:
            seen.append(client.recv_frame(0.03))
        except TimeoutError:
            pass
    assert sum(f.opcode is Opcode.PING for f in seen) >= 2
    assert not handler.done.is_set()
    client.send("still open")
    client.close()
    runner.join()
    events = list(handler.events.queue)
    assert [e for e in events if e[0] == "message"] == [("message", TextMessage("still open"))]
    assert sum(e[0] == "pong" for e in events) >= 2  # ponged() saw the answers
    assert handler.closed_with == (1000, "")


def test_keepalive_unanswered_closes_with_1011(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    handler, runner = start_handler(RecordingHandler, sock, heartbeat_freq=0.1, ping_timeout=0.2)
    assert peer.read_frame().opcode == Opcode.PING
    close = peer.read_data_frame()  # the raw peer never answers
    assert close.close_code == 1011
    assert peer.at_eof()
    runner.join()
    # This side failed the connection (§7.1.7): closed() reports the code it failed with.
    assert handler.closed_with is not None
    assert handler.closed_with[0] == 1011


# -- callbacks and run() ------------------------------------------------------------------------


def test_run_calls_the_callbacks_in_order(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    handler, runner = start_handler(RecordingHandler, sock_pair[0])
    client = wrap_socket(sock_pair[1], side=CLIENT, close_timeout=2.0)
    client.send("a")
    client.send(b"b")
    client.close(1001, "leaving")
    runner.join()
    events = []
    while not handler.events.empty():
        events.append(handler.events.get_nowait())
    assert events == [
        ("opened",),
        ("message", TextMessage("a")),
        ("message", BinaryMessage(b"b")),
        ("closed", 1001, "leaving"),
    ]
    assert client.close_code == 1001


def test_close_from_a_callback_inside_run(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    handler, runner = start_handler(ClosingHandler, sock_pair[0])
    client = wrap_socket(sock_pair[1], side=CLIENT, close_timeout=2.0)
    client.send("hello")
    client.send("bye")
    with pytest.raises(ConnectionClosedError) as exc:
        client.recv(TIMEOUT)
    assert (exc.value.code, exc.value.reason) == (4000, "bye bye")
    runner.join()
    assert [e[0] for e in list(handler.events.queue)] == ["opened", "message", "message", "closed"]
    assert handler.closed_with is not None
    assert handler.closed_with[0] == 4000  # the client echoed the code (§5.5.1)


def test_handler_raising_closes_with_1011(
    sock_pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    handler, runner = start_handler(FailingHandler, sock_pair[0])
    client = wrap_socket(sock_pair[1], side=CLIENT, close_timeout=2.0)
    with caplog.at_level(logging.ERROR, logger="ws4web"):
        client.send("fine")
        client.send("boom")
        with pytest.raises(ConnectionClosedError) as exc:
            client.recv(TIMEOUT)
        runner.join()  # run() swallowed the exception
    assert exc.value.code == 1011
    assert handler.closed_with is not None
    assert handler.closed_with[0] == 1011
    errors = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert errors, "the handler's exception was not logged"


def test_closed_is_called_once_even_if_it_raises(
    sock_pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    class BadClosed(WebSocket):
        def closed(self, code: int, reason: str | None = None) -> None:
            calls.append(code)
            raise ValueError("closed() bug")

    handler = wrap_socket(sock_pair[0], BadClosed, close_timeout=2.0)
    runner = Worker(handler.run)
    client = wrap_socket(sock_pair[1], side=CLIENT, close_timeout=2.0)
    with caplog.at_level(logging.ERROR, logger="ws4web"):
        client.close()
        runner.join()
    assert calls == [1000]
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in caplog.records)


def test_abrupt_disconnect_mid_frame_is_1006(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    handler, runner = start_handler(RecordingHandler, sock)
    frame = encode_frame(Opcode.TEXT, b"never finished" * 10)
    peer.send(frame[:20])
    assert handler.next_event() == ("opened",)
    peer.sock.close()
    runner.join()
    assert handler.closed_with == (1006, "")
    assert handler.events.get_nowait()[0] == "closed"  # no message callback for half a frame


def test_close_frame_received_by_run(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    handler, runner = start_handler(RecordingHandler, sock)
    peer.send_frame(Opcode.CLOSE, close_payload(1000, "done"))
    echo = peer.read_frame()
    assert (echo.opcode, echo.close_code) == (Opcode.CLOSE, 1000)
    assert peer.at_eof()
    peer.sock.close()
    runner.join()
    assert handler.closed_with == (1000, "done")


# -- low level --------------------------------------------------------------------------------------


def test_send_frame_with_rsv1_fails_the_peer_with_1002(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    reader = Worker(client.recv, TIMEOUT)
    client.send_frame(Frame(Opcode.TEXT, b"x", rsv1=True))
    with pytest.raises(ConnectionClosedError) as exc:
        server.recv(TIMEOUT)
    assert exc.value.sent_code == 1002
    closed = reader.raised()
    assert isinstance(closed, ConnectionClosedError)
    assert closed.code == 1002


def test_send_frame_reserved_opcode_and_recv_frame(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    ws = wrap_socket(sock, close_timeout=1.0)
    ws.send_frame(Frame(Opcode.PING, b"", fin=True, rsv2=True))
    frame = peer.read_frame()
    assert (frame.opcode, frame.rsv, frame.payload) == (Opcode.PING, 0x20, b"")
    peer.send_frame(Opcode.TEXT, b"part", fin=False)
    peer.send_frame(Opcode.PING, b"?")
    peer.send_frame(Opcode.CONTINUATION, b"s", fin=True)
    assert ws.recv_frame(TIMEOUT) == Frame(Opcode.TEXT, b"part", fin=False)
    assert ws.recv_frame(TIMEOUT) == Frame(Opcode.PING, b"?")
    assert ws.recv_frame(TIMEOUT) == Frame(Opcode.CONTINUATION, b"s")
    assert peer.read_frame().opcode == Opcode.PONG
    ws.terminate()


def test_attributes(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    environ = {"PATH_INFO": "/chat"}
    ws = wrap_socket(sock_pair[0], subprotocol="chat", environ=environ, side=SERVER, heartbeat_freq=5.0)
    assert ws.subprotocol == "chat"
    assert ws.protocols == ["chat"]
    assert ws.environ is environ
    assert ws.heartbeat_freq == 5.0
    assert not ws.terminated
    other = wrap_socket(sock_pair[1], side=CLIENT)
    assert other.subprotocol is None
    ws.terminate()
    assert ws.terminated
    with pytest.raises(ConnectionClosedError):
        ws.recv(TIMEOUT)
    with pytest.raises(ConnectionClosedError):
        other.recv(TIMEOUT)
    assert other.terminated


def test_addresses_come_from_the_socket_or_the_asgi_scope(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a = sock_pair[0]
    on_a_socket = WebSocket(a)
    assert on_a_socket.local_address == a.getsockname()
    assert on_a_socket.peer_address == a.getpeername()
    scope = {"type": "websocket", "client": ["192.0.2.7", 50312], "server": ["127.0.0.1", 8000]}
    under_asgi = WebSocket(None, environ=scope)
    assert under_asgi.peer_address == ("192.0.2.7", 50312)
    assert under_asgi.local_address == ("127.0.0.1", 8000)
    assert WebSocket(None, environ={"type": "websocket", "client": None}).peer_address is None  # optional in ASGI
    assert WebSocket(None, environ={"REMOTE_ADDR": "192.0.2.7"}).peer_address is None  # a WSGI environ: no socket



def test_handler_raising_in_opened_closes_with_1011(
    sock_pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    client = wrap_socket(sock_pair[1], side=CLIENT, close_timeout=2.0)
    with caplog.at_level(logging.ERROR, logger="ws4web"):
        handler, runner = start_handler(FailingOpened, sock_pair[0])
        with pytest.raises(ConnectionClosedError) as exc:
            client.recv(TIMEOUT)
        runner.join()
    assert exc.value.code == 1011
    assert [e[0] for e in list(handler.events.queue)] == ["opened", "closed"]  # no message callback
    assert any(r.exc_info and isinstance(r.exc_info[1], LookupError) for r in caplog.records)


def test_send_and_ping_after_close_raise(ws_pair: tuple[WebSocket, WebSocket]) -> None:
    server, client = ws_pair
    reader = Worker(lambda: list(server))
    client.close()
    reader.join()
    with pytest.raises(ConnectionClosed):
        client.send("late")
    with pytest.raises(ConnectionClosed):
        client.ping()
    with pytest.raises(ConnectionClosed):
        server.send(b"late")
    client.close()  # closing again is harmless
    assert client.close_code == 1000
