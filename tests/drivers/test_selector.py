"""The selector driver (ws4web/drivers/selector.py): callbacks on the loop thread, blocking ones on threads, bounds."""

from __future__ import annotations

import gc
import queue
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from ws4web import SERVER, WebSocket, WebSocketServer, connect, wrap_socket
from ws4web.drivers.selector import RUNNERS, TRANSITIONS, Loop, SelectorDriver, leave_loop
from ws4web.exceptions import ConnectionClosed
from ws4web.frames import Opcode
from ws4web.messages import Message, TextMessage

from ..conftest import TIMEOUT, RawPeer, RecordingHandler, Worker, encode_frame, wait_until, ws_url

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def loop() -> Iterator[Loop]:
    loop = Loop(name="test-loop").start()
    try:
        yield loop
    finally:
        loop.stop(timeout=5.0)


def served(sock: socket.socket, handler_cls: type[WebSocket], loop: Loop, **options: Any) -> WebSocket:
    """``handler_cls`` over the server end ``sock`` on ``loop``, started."""
    options.setdefault("close_timeout", 2.0)
    handler = wrap_socket(sock, handler_cls, side=SERVER, loop=loop, **options)
    handler.start()
    return handler


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


class ThreadRecorder(RecordingHandler):
    """Records the thread every callback ran on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[str] = []

    def opened(self) -> None:
        self.threads.append(threading.current_thread().name)
        super().opened()

    def received_message(self, message: Message) -> None:
        self.threads.append(threading.current_thread().name)
        super().received_message(message)


class PullEcho(WebSocket):
    def opened(self) -> None:
        for message in self:
            self.send(message)


# -- the states are data ------------------------------------------------------------------------


def test_the_runner_states_and_moves_are_written_down() -> None:
    assert set(RUNNERS) == {"idle", "inline", "owned"}
    for (before, _event), (after, who) in TRANSITIONS.items():
        assert before in RUNNERS and after in RUNNERS and who


# -- callbacks ---------------------------------------------------------------------------------------


def test_quick_callbacks_run_on_the_loop_thread_in_order(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sock_pair
    handler = served(a, ThreadRecorder, loop)
    peer = RawPeer(b)
    for i in range(5):
        peer.send_frame(Opcode.TEXT, str(i).encode())
    assert handler.next_event() == ("opened",)
    got = [handler.next_event() for _ in range(5)]
    assert [e[1].text for e in got] == ["0", "1", "2", "3", "4"]
    assert all(name.startswith("test-loop-thread") for name in handler.threads)
    assert len(set(handler.threads)) == 1  # one thread: the loop's
    assert loop.moves == 0
    peer.send_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    assert peer.read_frame().opcode == Opcode.CLOSE
    assert peer.at_eof()  # RFC 6455 §7.1.1: the server closes TCP first
    b.close()
    assert handler.next_event()[:2] == ("closed", 1000)


def test_frames_that_came_with_the_handshake_follow_opened(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sock_pair
    early = encode_frame(Opcode.TEXT, b"early")
    handler = served(a, RecordingHandler, loop, data=early)
    assert handler.next_event() == ("opened",)
    assert handler.next_event()[1] == TextMessage("early")
    b.close()
    assert handler.next_event()[:2] == ("closed", 1006)


def test_replies_to_one_read_go_out_in_one_write(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = sock_pair
    writes: list[int] = []
    handler = served(a, Echo, loop)
    driver = handler.connection
    assert isinstance(driver, SelectorDriver)
    original = SelectorDriver._write

    def counting(self: SelectorDriver) -> None:
        if self is driver and self._out:
            writes.append(len(self._out))
        original(self)

    monkeypatch.setattr(SelectorDriver, "_write", counting)
    b.sendall(b"".join(encode_frame(Opcode.BINARY, bytes([i])) for i in range(50)))
    peer = RawPeer(b)
    assert [peer.read_frame().payload for _ in range(50)] == [bytes([i]) for i in range(50)]
    assert len(writes) <= 5  # one per read of the burst, not one per message


# -- blocking callbacks --------------------------------------------------------------------------------


def test_pull_style_handler_echoes_and_gets_a_thread(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sock_pair
    served(a, PullEcho, loop)
    peer = RawPeer(b)
    for i in range(20):
        peer.send_frame(Opcode.TEXT, f"m{i}".encode())
        assert peer.read_frame().payload == f"m{i}".encode()
    assert loop.moves == 1  # the recv() in opened() gave the loop away once
    peer.send_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    assert peer.read_frame().opcode == Opcode.CLOSE
    assert peer.at_eof()


class Sleepy(WebSocket):
    """Blocks in its callback (a database call, say) without telling anybody."""

    def received_message(self, message: Message) -> None:
        if message.data == b"sleep":
            time.sleep(1.0)
        self.send(message)


def test_a_blocking_callback_does_not_stop_the_other_connections(loop: Loop) -> None:
    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()
    try:
        served(a1, Sleepy, loop)
        served(a2, Echo, loop)
        slow, fast = RawPeer(b1), RawPeer(b2)
        slow.send_frame(Opcode.TEXT, b"sleep")
        time.sleep(0.1)  # the sleeper is inside its callback now
        fast.send_frame(Opcode.TEXT, b"quick")
        assert fast.read_frame(timeout=0.8).payload == b"quick"  # well before the sleep ends
        assert slow.read_frame().payload == b"sleep"
        assert loop.moves >= 1
        # Its next callbacks run on a thread from the start: the loop does not move again.
        moves = loop.moves
        slow.send_frame(Opcode.TEXT, b"sleep")
        time.sleep(0.1)
        fast.send_frame(Opcode.TEXT, b"quick again")
        assert fast.read_frame(timeout=0.8).payload == b"quick again"
        assert slow.read_frame().payload == b"sleep"
        assert loop.moves == moves
    finally:
        for s in (b1, b2):
            s.close()


class Pinger(WebSocket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: queue.Queue[bool] = queue.Queue()

    def received_message(self, message: Message) -> None:
        self.results.put(self.ping(b"are you there").wait(TIMEOUT))


def test_ping_wait_inside_a_callback(loop: Loop, sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    handler = served(a, Pinger, loop)
    peer = RawPeer(b)
    peer.send_frame(Opcode.TEXT, b"go")
    ping = peer.read_frame()
    assert (ping.opcode, ping.payload) == (Opcode.PING, b"are you there")
    peer.send_frame(Opcode.PONG, ping.payload)
    assert handler.results.get(timeout=TIMEOUT) is True


class FrameReader(WebSocket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: queue.Queue[tuple[int, bytes, bool]] = queue.Queue()

    def opened(self) -> None:
        while True:
            try:
                frame = self.recv_frame()
            except ConnectionClosed:
                return
            self.frames.put((frame.opcode, frame.data, frame.fin))


def test_recv_frame_sees_fragments_and_control_frames(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket]
) -> None:
    """Pings and the close frame too, already answered, as the blocking driver's recv_frame() has them."""
    a, b = sock_pair
    handler = served(a, FrameReader, loop)
    peer = RawPeer(b)
    peer.send_frame(Opcode.TEXT, b"a", fin=False)
    peer.send_frame(Opcode.PONG, b"p")
    peer.send_frame(Opcode.PING, b"q")
    peer.send_frame(Opcode.CONTINUATION, b"b")
    peer.send_frame(Opcode.CLOSE, b"\x03\xe8")
    got = [handler.frames.get(timeout=TIMEOUT) for _ in range(5)]
    assert got == [
        (Opcode.TEXT, b"a", False),
        (Opcode.PONG, b"p", True),
        (Opcode.PING, b"q", True),
        (Opcode.CONTINUATION, b"b", True),
        (Opcode.CLOSE, b"\x03\xe8", True),
    ]
    pong = peer.read_frame()
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"q")
    assert peer.read_frame().opcode == Opcode.CLOSE


def test_a_thousand_pull_style_connections_at_once() -> None:
    """Pull style on the default server: no pool caps it, every connection echoes 20 messages."""
    count, messages = 1000, 20
    with WebSocketServer(PullEcho, "127.0.0.1", 0, backlog=2048) as server:
        server.start()
        clients = []
        try:
            for _ in range(count):
                clients.append(connect(ws_url(server), timeout=TIMEOUT))
            assert wait_until(lambda: len(server.registry) == count)
            for round_ in range(messages):
                for i, ws in enumerate(clients):
                    ws.send(f"{i}:{round_}")
                for i, ws in enumerate(clients):
                    assert ws.recv(TIMEOUT).text == f"{i}:{round_}"
        finally:
            for ws in clients:
                ws.close()
        assert wait_until(lambda: len(server.registry) == 0, timeout=30)


# -- bounds ------------------------------------------------------------------------------------------------


def queued(handler: WebSocket) -> int:
    driver = handler.connection
    assert isinstance(driver, SelectorDriver)
    return driver.buffered_amount


def test_a_peer_that_never_reads_makes_the_sender_wait(loop: Loop) -> None:
    a, b = socket.socketpair()
    a2, b2 = socket.socketpair()
    try:
        limit = 256 * 1024
        handler = served(a, WebSocket, loop, max_send_buffer=limit)
        served(a2, Echo, loop)
        sent = []

        def flood() -> None:
            for _ in range(64):
                handler.send(b"x" * 65536)
                sent.append(1)

        sender = Worker(flood)
        assert wait_until(lambda: len(sent) > 2)
        time.sleep(0.3)
        stuck_at = len(sent)
        assert stuck_at < 64  # the sender waits for the peer
        assert queued(handler) <= limit + 65536 + 1024
        other = RawPeer(b2)
        other.send_frame(Opcode.TEXT, b"still served")
        assert other.read_frame().payload == b"still served"
        handler.terminate()
        assert isinstance(sender.raised(), ConnectionClosed)
    finally:
        b.close()
        b2.close()


def test_when_drained_calls_back_once_the_buffer_has_emptied(loop: Loop) -> None:
    a, b = socket.socketpair()
    a2, b2 = socket.socketpair()
    try:
        handler = served(a, WebSocket, loop, max_send_buffer=8 * 2**20)
        driver = handler.connection
        assert isinstance(driver, SelectorDriver)
        calls: list[str] = []
        driver.when_drained(lambda: calls.append("at once"))
        assert calls == ["at once"], "nothing waits: called at once"

        handler.send(b"x" * 2**21)  # far more than the socket pair's kernel buffers
        assert queued(handler) > 0
        driver.when_drained(lambda: calls.append("drained"))
        assert calls == ["at once"]
        peer = RawPeer(b)
        assert len(peer.read_frame().payload) == 2**21  # the peer reads: the buffer empties
        assert wait_until(lambda: calls == ["at once", "drained"])
        handler.send(b"more")
        assert peer.read_frame().payload == b"more"
        assert calls == ["at once", "drained"], "once"

        # A connection that ends with bytes still waiting calls back too.
        other = served(a2, WebSocket, loop, max_send_buffer=8 * 2**20)
        other.send(b"y" * 2**21)
        other_driver = other.connection
        assert isinstance(other_driver, SelectorDriver)
        other_driver.when_drained(lambda: calls.append("ended"))
        other.terminate()
        assert wait_until(lambda: calls[-1:] == ["ended"])
    finally:
        b.close()
        b2.close()


def test_a_ping_flood_from_a_peer_that_never_reads_is_bounded(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sock_pair
    limit = 64 * 1024
    handler = served(a, WebSocket, loop, max_send_buffer=limit)
    b.setblocking(False)
    ping = encode_frame(Opcode.PING, b"")
    burst = ping * 4096
    sent = 0
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and sent < 16 * 2**20:
        try:
            sent += b.send(burst)
        except BlockingIOError:
            time.sleep(0.01)  # the server stopped reading: TCP pushes back
    driver = handler.connection
    assert isinstance(driver, SelectorDriver)
    assert driver._queued_memory() <= 2 * limit
    assert sent < 16 * 2**20  # the flood was stopped by TCP, not absorbed


class SlowPull(WebSocket):
    """Pull style that reads slowly: messages pile up in front of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.go = threading.Event()
        self.got = 0

    def opened(self) -> None:
        self.go.wait(TIMEOUT)
        for _message in self:
            self.got += 1


def test_messages_waiting_for_a_busy_handler_pause_reading(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sock_pair
    handler = served(a, SlowPull, loop, max_queue=16)
    assert isinstance(handler, SlowPull)
    b.setblocking(False)
    tiny = encode_frame(Opcode.TEXT, b"")
    sent = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        try:
            sent += b.send(tiny * 1024)
        except BlockingIOError:
            time.sleep(0.01)
    driver = handler.connection
    assert isinstance(driver, SelectorDriver)
    inbox = driver._inbox
    assert inbox is not None and len(inbox) <= 16 + 1 + 64  # max_queue, open, one parsed batch
    handler.go.set()
    b.setblocking(True)
    total = sent // len(tiny)
    assert wait_until(lambda: handler.got == total, timeout=60)  # nothing accepted is lost


def test_tiny_messages_queued_for_a_slow_handler_cost_bounded_memory(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sock_pair
    gc.collect()
    tracemalloc.start()
    try:
        handler = served(a, SlowPull, loop, max_queue=32)
        b.setblocking(False)
        tiny = encode_frame(Opcode.TEXT, b"")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                b.send(tiny * 4096)
            except BlockingIOError:
                time.sleep(0.01)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20  # the shared read buffer, one read's frames, the queue
    handler.terminate()
    assert isinstance(handler, SlowPull)
    handler.go.set()


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG], ids=["ping", "pong"])
def test_control_frames_waiting_for_a_busy_handler_pause_reading(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket], opcode: Opcode
) -> None:
    """Pings and unsolicited pongs reach the inbox too (recv_frame() returns them): they count
    against max_queue like messages, so a flood of them in front of a busy handler is bounded."""
    a, b = sock_pair
    handler = served(a, SlowPull, loop, max_queue=16)
    assert isinstance(handler, SlowPull)
    b.setblocking(False)
    control = encode_frame(opcode, b"")
    reader = RawPeer(b)  # the peer reads its pongs: only the inbox can hold the flood back
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        try:
            b.send(control * 1024)
        except BlockingIOError:
            time.sleep(0.01)
        try:
            reader.buffer += b.recv(1 << 20)
        except BlockingIOError:
            pass
        reader.buffer.clear()
    driver = handler.connection
    assert isinstance(driver, SelectorDriver)
    inbox = driver._inbox
    assert inbox is not None and len(inbox) <= 16 + 1 + 64  # max_queue, open, one parsed batch
    handler.go.set()
    b.setblocking(True)
    b.sendall(encode_frame(Opcode.TEXT, b"last"))
    assert wait_until(lambda: handler.got == 1, timeout=60)  # the flood drained, the message came


# -- closing --------------------------------------------------------------------------------------------------


def test_close_timeout_drops_a_peer_that_never_answers(
    loop: Loop, sock_pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sock_pair
    handler = served(a, RecordingHandler, loop, close_timeout=0.3)
    assert handler.next_event() == ("opened",)
    handler.close(1000, "bye")
    peer = RawPeer(b)
    assert peer.read_frame().opcode == Opcode.CLOSE
    event = handler.next_event()
    assert event[0] == "closed" and event[1] == 1006
    assert handler.connection.closed


def test_keepalive_unanswered_fails_with_1011(loop: Loop, sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    handler = served(a, RecordingHandler, loop, ping_interval=0.1, ping_timeout=0.1)
    peer = RawPeer(b)
    assert peer.read_frame().opcode == Opcode.PING
    close = peer.read_frame()
    assert close.opcode == Opcode.CLOSE and close.close_code == 1011
    while handler.next_event()[0] != "closed":
        pass


def test_keepalive_answered_keeps_the_connection(loop: Loop, sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    handler = served(a, RecordingHandler, loop, ping_interval=0.05, ping_timeout=0.5)
    peer = RawPeer(b)
    for _ in range(4):
        ping = peer.read_frame()
        assert ping.opcode == Opcode.PING
        peer.send_frame(Opcode.PONG, ping.payload)
    assert not handler.connection.closed


def test_stopping_the_loop_ends_every_connection(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    loop = Loop(name="test-loop").start()
    a, _b = sock_pair
    handler = served(a, RecordingHandler, loop)
    assert handler.next_event() == ("opened",)
    loop.stop()
    assert handler.next_event()[:2] == ("closed", 1006)


def test_tls_echo(loop: Loop, tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    server, client = tls_pair
    served(server, Echo, loop)
    peer = RawPeer(client)
    payload = bytes(range(256)) * 1024
    peer.send_frame(Opcode.BINARY, payload)
    assert peer.read_frame().payload == payload
    for i in range(50):
        peer.send_frame(Opcode.TEXT, str(i).encode())
    assert [peer.read_frame().payload for _ in range(50)] == [str(i).encode() for i in range(50)]


class WarnsBeforeBlocking(WebSocket):
    def received_message(self, message: Message) -> None:
        leave_loop()  # a database call follows, say
        time.sleep(0.5)
        self.send(message)


def test_leave_loop_hands_the_loop_over_before_a_known_block(loop: Loop) -> None:
    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()
    try:
        served(a1, WarnsBeforeBlocking, loop)
        served(a2, Echo, loop)
        slow, fast = RawPeer(b1), RawPeer(b2)
        slow.send_frame(Opcode.TEXT, b"slow")
        time.sleep(0.05)
        fast.send_frame(Opcode.TEXT, b"fast")
        assert fast.read_frame(timeout=0.3).payload == b"fast"
        assert slow.read_frame().payload == b"slow"
        assert loop.moves == 1
        leave_loop()  # not a loop thread: nothing happens
    finally:
        b1.close()
        b2.close()
