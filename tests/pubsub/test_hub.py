"""The in-process pub/sub hub: groups, framing once, bounded queues and overflow policies, automatic leave."""

from __future__ import annotations

import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import TIMEOUT, ServerFactory, Worker, wait_until
from ws4web import WebSocket, WebSocketServer, connect
from ws4web.exceptions import ConnectionClosed
from ws4web.extensions.permessage_deflate import ClientPerMessageDeflateFactory, ServerPerMessageDeflateFactory
from ws4web.frames import Frame, Opcode
from ws4web.messages import Message
from ws4web.protocol import CLIENT, Protocol, State
from ws4web.pubsub import Backplane, Hub, HubStats, RateLimit
from ws4web.upgrade import accept_socket, client_handshake

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::ResourceWarning")]


# -- helpers ---------------------------------------------------------------------------------


def make_hub_handler(hub: Hub) -> type[WebSocket]:
    """A handler that joins the group named by its path (``/<group>?name``) and publishes what it receives."""

    class Member(WebSocket):
        def opened(self) -> None:
            assert self.request is not None
            path, _, query = self.request.path.partition("?")
            if query.startswith("slow"):
                # Cap the kernel's share of what piles up for a client that reads
                # nothing (autotuning would let it take ~4 MB): the test then needs
                # far less traffic to show what the hub itself holds.
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            hub.join(path.strip("/") or "room", self, name=query or None)

        def received_message(self, message: Message) -> None:
            path = self.request.path.partition("?")[0] if self.request is not None else "/"
            hub.publish(path.strip("/") or "room", message, sender=self)

    return Member


class RawClients:
    """Many WebSocket clients read by one selector thread; each records the messages it gets.

    ``slow`` clients never read: their receive buffer is made tiny (and the server
    side's send buffer too, see make_hub_handler), so writes to them stall early.
    """

    def __init__(
        self,
        port: int,
        count: int,
        path: str = "/room",
        slow: int = 0,
        keep: int | None = None,
        keep_if: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.keep = keep  # store only the first bytes of each message (None: all)
        self.keep_if = keep_if  # store only the messages it accepts (all are counted in totals)
        self.messages: list[list[bytes]] = []
        self.totals: list[int] = [0] * count
        self.close_codes: list[int | None] = []
        self.socks: list[socket.socket] = []
        self.protocols: list[Protocol] = []
        self.slow: list[tuple[socket.socket, bytes]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        try:
            for _ in range(count):
                sock, data = self._open(port, path)
                self.socks.append(sock)
                self.protocols.append(Protocol(CLIENT, data=data, max_message_size=None))
                self.messages.append([])
                self.close_codes.append(None)
            for _ in range(slow):
                self.slow.append(self._open(port, path + "?slow", rcvbuf=4096))
        except BaseException:
            self.close()
            raise
        for index in range(count):  # frames that came with the handshake
            self._feed(index, None)
        self._thread = threading.Thread(target=self._run, name="raw-clients", daemon=True)
        self._thread.start()

    @staticmethod
    def _open(port: int, path: str, rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", port))
            _response, _sub, _ext, data = client_handshake(sock, f"127.0.0.1:{port}", path, timeout=TIMEOUT)
        except BaseException:
            sock.close()
            raise
        return sock, data

    def _feed(self, index: int, data: bytes | None) -> None:
        """Parse what arrived (None: only what the protocol holds already) and answer what needs answering."""
        protocol = self.protocols[index]
        with self._lock:
            if data:
                protocol.receive_data(data)
            elif data is not None:
                protocol.receive_eof()
            # Until it returns nothing: the protocol hands over at most max_pending frames at a time.
            while frames := protocol.events_received():
                for frame in frames:
                    if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                        self.totals[index] += 1
                        if self.keep_if is None or self.keep_if(frame.data):
                            self.messages[index].append(frame.data if self.keep is None else frame.data[: self.keep])
                    elif frame.opcode is Opcode.CLOSE:
                        self.close_codes[index] = protocol.close_code
            replies = [data for data in protocol.data_to_send() if data]
        if replies:  # a close frame in answer: small, and sent blocking
            sock = self.socks[index]
            try:
                sock.setblocking(True)
                sock.settimeout(1.0)
                sock.sendall(b"".join(replies))
            except OSError:
                pass
            finally:
                sock.setblocking(False)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for index, sock in enumerate(self.socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(0.05):
                    index = key.data
                    try:
                        data = self.socks[index].recv(262144)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        selector.unregister(key.fileobj)
                    self._feed(index, data)
        finally:
            selector.close()

    def send(self, index: int, text: str) -> None:
        """Send one text message from client ``index`` (masked, as a client must)."""
        with self._lock:
            protocol = self.protocols[index]
            protocol.send_text(text.encode())
            data = b"".join(protocol.data_to_send())
        sock = self.socks[index]
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
        try:
            sock.sendall(data)
        finally:
            sock.setblocking(False)

    def counts(self) -> list[int]:
        with self._lock:
            return [len(m) for m in self.messages]

    def all_have(self, n: int) -> bool:
        return all(c >= n for c in self.counts())

    def close(self) -> None:
        self._stop.set()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(TIMEOUT)
        for sock in self.socks + [s for s, _ in self.slow]:
            sock.close()


class BlockingServer:
    """A thread per connection on the blocking driver (its writes block the writer): the
    kind of member the hub never writes from a publisher, only from its sender pool."""

    def __init__(self, handler_cls: type[WebSocket], **options: Any) -> None:
        self.handler_cls = handler_cls
        self.options = options
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._handlers: set[WebSocket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accepting = threading.Thread(target=self._accept, name="blocking-server", daemon=True)
        self._accepting.start()

    @property
    def websockets(self) -> set[WebSocket]:
        with self._lock:
            return set(self._handlers)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:  # closed: stop accepting
                return
            thread = threading.Thread(target=self._serve, args=(sock,), name="blocking-conn", daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            try:
                handler = accept_socket(sock, self.handler_cls, **self.options)
            except Exception:
                return
            with self._lock:
                self._handlers.add(handler)
            try:
                handler.run()
            finally:
                with self._lock:
                    self._handlers.discard(handler)
        finally:
            sock.close()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        self.listener.close()
        self._accepting.join(TIMEOUT)
        for handler in self.websockets:
            handler.close(1001)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(TIMEOUT)


def read_until_close(sock: socket.socket, initial: bytes, timeout: float = TIMEOUT) -> tuple[list[bytes], int | None]:
    """Read a (formerly slow) client to the end: (messages, close code or None if TCP ended without one)."""
    protocol = Protocol(CLIENT, data=initial, max_message_size=None)
    messages: list[bytes] = []
    code: int | None = None
    deadline = time.monotonic() + timeout
    sock.settimeout(1.0)
    while True:
        while frames := protocol.events_received():
            for frame in frames:
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    messages.append(frame.data)
                elif frame.opcode is Opcode.CLOSE:
                    code = protocol.close_code
        for data in protocol.data_to_send():
            if data:  # our answer to the close frame: the server need not wait for its timeout
                try:
                    sock.sendall(data)
                except OSError:
                    pass
        if code is not None or protocol.state is State.CLOSED:
            return messages, code
        assert time.monotonic() < deadline, "the evicted connection did not end"
        try:
            data = sock.recv(262144)
        except TimeoutError:
            continue
        except OSError:
            data = b""
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()


@pytest.fixture
def hubs() -> Iterator[list[Hub]]:
    made: list[Hub] = []
    yield made
    for hub in made:
        hub.close()


def numbered(i: int, size: int) -> bytes:
    return struct.pack("!I", i) + b"x" * (size - 4)


def publish_paced(hub: Hub, clients: RawClients, count: int, size: int, batch: int) -> None:
    """Publish ``count`` numbered messages in batches, each once every fast client has the previous one.

    That is a rate the fast members sustain, so only a member that reads nothing
    falls behind; and if it held the others back, the wait here would time out.
    """
    for start in range(0, count, batch):
        end = min(count, start + batch)
        for i in range(start, end):
            hub.publish("room", numbered(i, size))
        assert wait_until(lambda end=end: clients.all_have(end)), f"stalled at {end}: {sorted(set(clients.counts()))}"


# -- membership --------------------------------------------------------------------------------


def test_join_leave_members_and_automatic_leave_on_close(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    hub = Hub()
    hubs.append(hub)
    closed_seen: list[list[str]] = []

    class Member(make_hub_handler(hub)):  # type: ignore[misc]
        def closed(self, code: int, reason: str | None = None) -> None:
            # The hub has removed us before our own closed() runs.
            closed_seen.append(hub.local_presence("room"))

    server = make_server(Member)
    ann = connect(f"ws://127.0.0.1:{server.port}/room?ann")
    bob = connect(f"ws://127.0.0.1:{server.port}/room?bob")
    try:
        assert wait_until(lambda: len(hub.members("room")) == 2)
        assert hub.presence("room") == ["ann", "bob"]
        assert hub.groups() == ["room"]
        assert all(isinstance(m, WebSocket) for m in hub.members("room"))

        # leave() and join() by the application, from outside the handler.
        bob_handler = next(m for m in hub.members("room") if m.request.path.endswith("bob"))
        hub.leave("room", bob_handler)
        assert hub.presence("room") == ["ann"]
        hub.join("room", bob_handler, name="bobby")
        hub.join("other", bob_handler)
        assert hub.presence("room") == ["ann", "bobby"]
        assert hub.groups() == ["other", "room"]

        bob.close()
        assert wait_until(lambda: len(hub.members("room")) == 1)
        assert hub.groups() == ["room"], "a closed member leaves every group"
        assert wait_until(lambda: len(closed_seen) == 1)
        assert closed_seen[0] == ["ann"]

        # A closed connection never joins.
        hub.join("room", bob_handler)
        assert hub.presence("room") == ["ann"]
    finally:
        ann.close()
        bob.close()
    assert wait_until(lambda: not hub.groups())


def test_join_rejects_what_cannot_receive(hubs: list[Hub]) -> None:
    hub = Hub()
    hubs.append(hub)
    with pytest.raises(TypeError):
        hub.join("room", object())
    with pytest.raises(ValueError):
        Hub(overflow="explode")  # type: ignore[arg-type]
    hub.close()
    with pytest.raises(RuntimeError):
        hub.join("room", object())


def test_a_bare_connection_can_join_and_is_dropped_when_its_peer_is_gone(
    no_leaks: None, hubs: list[Hub], ws_pair: tuple[WebSocket, WebSocket]
) -> None:
    hub = Hub()
    hubs.append(hub)
    server, client = ws_pair
    hub.join("room", server.connection)  # not a handler: no closed() to observe
    assert hub.members("room") == [server.connection]
    hub.publish("room", "hi")
    assert client.recv(TIMEOUT).data == b"hi"
    client.terminate()
    # Writes to the dead peer fail sooner or later (the first may still be buffered).
    assert wait_until(lambda: hub.publish("room", "anyone?") == 0, interval=0.05)
    assert hub.stats().failed == 1


def test_one_hub_serves_members_on_different_stacks(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    pytest.importorskip("uvicorn")
    from tests.adapters.test_asgi import start_uvicorn
    from ws4web.adapters.asgi import WebSocketASGIApp

    hub = Hub()
    hubs.append(hub)
    handler = make_hub_handler(hub)
    selector = make_server(handler)
    blocking = BlockingServer(handler, close_timeout=2.0)
    asgi = start_uvicorn(WebSocketASGIApp(handler))
    try:
        clients = [
            connect(f"ws://127.0.0.1:{selector.port}/room?selector"),
            connect(f"ws://127.0.0.1:{blocking.port}/room?blocking"),
            connect(f"ws://127.0.0.1:{asgi.port}/room?asgi"),
        ]
        try:
            assert wait_until(lambda: hub.presence("room") == ["asgi", "blocking", "selector"])
            for k, ws in enumerate(clients):
                ws.send(f"from {k}")
                for other in clients:
                    assert other.recv(TIMEOUT).data == f"from {k}".encode()
            clients[2].close()  # the ASGI member leaves by itself too
            assert wait_until(lambda: hub.presence("room") == ["blocking", "selector"])
        finally:
            for ws in clients:
                ws.close()
    finally:
        asgi.stop()
        blocking.close()


# -- delivery ---------------------------------------------------------------------------------


def test_publish_reaches_every_member_with_its_type(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    hub = Hub()
    hubs.append(hub)
    server = make_server(make_hub_handler(hub))
    clients = [connect(f"ws://127.0.0.1:{server.port}/room") for _ in range(5)]
    outsider = connect(f"ws://127.0.0.1:{server.port}/elsewhere")
    try:
        assert wait_until(lambda: len(hub.members("room")) == 5 and len(hub.members("elsewhere")) == 1)
        assert hub.publish("room", "héllo") == 5
        assert hub.publish("room", b"\x00\xff") == 5
        assert hub.publish("room", b"as text", binary=False) == 5
        assert hub.publish("nobody-here", "lost") == 0
        with pytest.raises(UnicodeDecodeError):
            hub.publish("room", b"\xff", binary=False)
        clients[0].send("from a client")  # the handler publishes the Message itself: type kept
        for client in clients:
            got = [client.recv(TIMEOUT) for _ in range(4)]
            assert [(m.opcode, m.data) for m in got] == [
                (Opcode.TEXT, "héllo".encode()),
                (Opcode.BINARY, b"\x00\xff"),
                (Opcode.TEXT, b"as text"),
                (Opcode.TEXT, b"from a client"),
            ]
        with pytest.raises(TimeoutError):
            outsider.recv(0.2)
        stats = hub.stats()
        assert stats.published == 5
        assert wait_until(lambda: hub.stats().written == 20)
    finally:
        for client in [*clients, outsider]:
            client.close()


def test_each_publish_is_serialized_once(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = Hub()
    hubs.append(hub)
    server = make_server(make_hub_handler(hub), extensions=[ServerPerMessageDeflateFactory()])
    plain = RawClients(server.port, 20)
    deflating = connect(f"ws://127.0.0.1:{server.port}/room", extensions=[ClientPerMessageDeflateFactory()])
    try:
        assert wait_until(lambda: len(hub.members("room")) == 21)
        unmasked_serializations = []
        wires: list[bytes] = []
        real_serialize = Frame.serialize
        from ws4web.protocol import Protocol as ServerProtocol

        real_send_prepared = ServerProtocol.send_prepared

        def counting_serialize(self: Frame, *, mask: bool) -> list[bytes]:
            if not mask:  # the server side; the deflate client masks its own frames
                unmasked_serializations.append(self.opcode)
            return real_serialize(self, mask=mask)

        def recording_send_prepared(self: Protocol, message: Frame, wire: bytes) -> None:
            wires.append(wire)
            real_send_prepared(self, message, wire)

        monkeypatch.setattr(Frame, "serialize", counting_serialize)
        monkeypatch.setattr(ServerProtocol, "send_prepared", recording_send_prepared)
        for i in range(3):
            hub.publish("room", f"message {i} " + "abc" * 100)
        assert wait_until(lambda: plain.all_have(3))
        for i in range(3):
            assert deflating.recv(TIMEOUT).data == f"message {i} ".encode() + b"abc" * 100
        monkeypatch.undo()

        # 3 publishes: framed once each for the 20 plain members, plus once per
        # message for the deflate member, whose compression state is its own.
        assert len(unmasked_serializations) == 3 + 3
        assert len(wires) == 3 * 21
        # Every member got the very same bytes object for each message.
        assert sorted(Counter(id(wire) for wire in wires).values()) == [21, 21, 21]
        for messages in plain.messages:
            assert messages == [f"message {i} ".encode() + b"abc" * 100 for i in range(3)]
    finally:
        deflating.close()
        plain.close()


# -- slow consumers ------------------------------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_consumer_is_evicted_and_never_stalls_the_room(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    evicted: list[tuple[Any, int, str]] = []
    hub = Hub(max_queue=10000, max_queue_bytes=128 * 1024, on_evict=lambda h, c, r: evicted.append((h, c, r)))
    hubs.append(hub)
    server: WebSocketServer = make_server(make_hub_handler(hub), close_timeout=20.0)
    clients = RawClients(server.port, 100, slow=1, keep=4)
    count, size = 400, 1024
    try:
        assert wait_until(lambda: len(hub.members("room")) == 101)
        rss_before = _rss_kib()
        # Every fast member gets everything, in order, although one member reads nothing.
        publish_paced(hub, clients, count, size, batch=50)
        for messages in clients.messages:
            assert [struct.unpack("!I", m[:4])[0] for m in messages] == list(range(count))
        rss_growth = _rss_kib() - rss_before

        # The slow one was evicted, with the documented code, and the hub never held
        # more for it than the policy allows (plus the one message that tipped it over).
        assert len(evicted) == 1 and evicted[0][1] == 1013
        stats = hub.stats()
        assert stats.evicted == 1 and stats.dropped == 0
        assert stats.peak_pending_bytes <= 128 * 1024 + size + 16
        assert len(hub.members("room")) == 100
        assert rss_growth < 32 * 1024, f"RSS grew by {rss_growth} KiB"
        assert_accounted(hub)

        # It finds the close frame behind what it had been sent, once it reads.
        sock, initial = clients.slow[0]
        messages, code = read_until_close(sock, initial)
        assert code == 1013
        indexes = [struct.unpack("!I", m[:4])[0] for m in messages]
        assert indexes == list(range(len(indexes))) and len(indexes) < count
    finally:
        clients.close()


def test_slow_consumer_on_a_blocking_connection_is_dropped(no_leaks: None, hubs: list[Hub]) -> None:
    # Blocking-driver connections block on write: the stuck write pins one sender,
    # the others keep going; eviction cannot send a close frame past the stuck
    # write, so after evict_grace the TCP connection is dropped.
    hub = Hub(max_queue=10000, max_queue_bytes=64 * 1024, evict_grace=0.5)
    hubs.append(hub)
    server = BlockingServer(make_hub_handler(hub), close_timeout=2.0)
    clients = RawClients(server.port, 20, slow=1, keep=4)
    count, size = 400, 1024
    try:
        assert wait_until(lambda: len(hub.members("room")) == 21)
        publish_paced(hub, clients, count, size, batch=20)
        assert hub.stats().evicted == 1
        assert wait_until(lambda: len(server.websockets) == 20), "the evicted connection's handler ended"
        assert_accounted(hub)
        sock, initial = clients.slow[0]
        messages, code = read_until_close(sock, initial)
        assert code in (None, 1013)  # usually no close frame: the peer's window was shut
        assert len(messages) < count
    finally:
        clients.close()
        server.close()


def test_drop_oldest_keeps_the_newest_messages(no_leaks: None, make_server: ServerFactory, hubs: list[Hub]) -> None:
    hub = Hub(max_queue=100, max_queue_bytes=128 * 1024, overflow="drop_oldest")
    hubs.append(hub)
    server = make_server(make_hub_handler(hub), close_timeout=5.0)
    clients = RawClients(server.port, 5, slow=1, keep=4)
    count, size = 1000, 1024
    try:
        assert wait_until(lambda: len(hub.members("room")) == 6)
        publish_paced(hub, clients, count, size, batch=50)
        stats = hub.stats()
        assert stats.evicted == 0 and stats.dropped > 0
        assert stats.peak_pending_messages <= 100
        assert stats.peak_pending_bytes <= 128 * 1024 + size + 16
        assert len(hub.members("room")) == 6, "nobody is closed under drop_oldest"
        assert_accounted(hub)

        sock, initial = clients.slow[0]
        sock.settimeout(1.0)
        protocol = Protocol(CLIENT, data=initial, max_message_size=None)
        received: list[int] = []
        deadline = time.monotonic() + TIMEOUT
        while count - 1 not in received:
            assert time.monotonic() < deadline, f"the newest message never came ({received[-3:]})"
            while frames := protocol.events_received():
                received.extend(struct.unpack("!I", frame.data[:4])[0] for frame in frames)
            if count - 1 in received:
                break
            try:
                protocol.receive_data(sock.recv(262144))
            except TimeoutError:
                continue
        assert received == sorted(received), "what remains stays in order"
        assert len(received) < count, "some of the oldest were dropped"
        assert len(received) + hub.stats().dropped == count
    finally:
        clients.close()


def test_block_policy_waits_for_a_reader_that_keeps_up_slowly(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    hub = Hub(max_queue=4, max_queue_bytes=16 * 1024, overflow="block", block_timeout=TIMEOUT)
    hubs.append(hub)
    server = make_server(make_hub_handler(hub))
    client = connect(f"ws://127.0.0.1:{server.port}/room")
    count = 200
    received: list[bytes] = []

    def read_slowly() -> None:
        for _ in range(count):
            received.append(client.recv(TIMEOUT).data)
            time.sleep(0.001)

    try:
        assert wait_until(lambda: len(hub.members("room")) == 1)
        reader = threading.Thread(target=read_slowly)
        reader.start()
        for i in range(count):
            hub.publish("room", numbered(i, 2048))
        reader.join(TIMEOUT * 2)
        assert not reader.is_alive()
        assert [struct.unpack("!I", m[:4])[0] for m in received] == list(range(count))
        stats = hub.stats()
        assert stats.evicted == 0 and stats.dropped == 0
        assert stats.peak_pending_messages <= 4
    finally:
        client.close()


def test_block_policy_evicts_after_the_timeout(no_leaks: None, make_server: ServerFactory, hubs: list[Hub]) -> None:
    hub = Hub(max_queue=100, max_queue_bytes=8 * 1024, overflow="block", block_timeout=0.2)
    hubs.append(hub)
    server = make_server(make_hub_handler(hub))
    clients = RawClients(server.port, 2, slow=1)
    try:
        assert wait_until(lambda: len(hub.members("room")) == 3)
        for i in range(300):
            hub.publish("room", numbered(i, 1024))
        assert wait_until(lambda: clients.all_have(300), timeout=30.0)
        assert hub.stats().evicted == 1
        sock, initial = clients.slow[0]
        _messages, code = read_until_close(sock, initial)
        assert code == 1013
    finally:
        clients.close()


def test_publishing_from_handlers_in_many_threads(no_leaks: None, make_server: ServerFactory, hubs: list[Hub]) -> None:
    hub = Hub()
    hubs.append(hub)
    server = make_server(make_hub_handler(hub))
    speakers = [connect(f"ws://127.0.0.1:{server.port}/room") for _ in range(4)]
    listeners = RawClients(server.port, 10)
    try:
        assert wait_until(lambda: len(hub.members("room")) == 14)
        for n in range(50):
            for s, speaker in enumerate(speakers):
                speaker.send(f"{s}:{n}")
        assert wait_until(lambda: listeners.all_have(200), timeout=30.0)
        for messages in listeners.messages:
            assert len(messages) == 200
            for s in range(4):  # each speaker's messages arrive in the order it sent them
                assert [m for m in messages if m.startswith(f"{s}:".encode())] == [
                    f"{s}:{n}".encode() for n in range(50)
                ]
    finally:
        for speaker in speakers:
            speaker.close()
        listeners.close()


def assert_accounted(hub: Hub) -> None:
    """Every (message, member) pair the hub took is written, dropped, discarded with its member, or still
    pending (waited for: a sender may be in the middle of a write)."""

    def balance() -> tuple[int, HubStats]:
        stats = hub.stats()
        pending = sum(hub.pending(member)[0] for group in hub.groups() for member in hub.members(group))
        return stats.deliveries - (stats.written + stats.dropped + stats.discarded + pending), stats

    assert wait_until(lambda: balance()[0] == 0), balance()


# -- ordering ------------------------------------------------------------------------------------


def test_every_member_sees_a_groups_messages_in_one_order(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    hub = Hub()
    hubs.append(hub)
    server = make_server(make_hub_handler(hub))
    clients = RawClients(server.port, 10)
    threads, per_thread = 4, 200
    try:
        assert wait_until(lambda: len(hub.members("room")) == 10)
        start = threading.Barrier(threads)

        def publish_many(t: int) -> None:
            start.wait()
            for n in range(per_thread):
                hub.publish("room", f"{t}:{n}")

        workers = [threading.Thread(target=publish_many, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(TIMEOUT)
        assert wait_until(lambda: clients.all_have(threads * per_thread))
        first = clients.messages[0]
        for messages in clients.messages:
            assert messages == first, "every member got the group's messages in the same order"
        for t in range(threads):  # and each publisher's messages in the order it published them
            assert [m for m in first if m.startswith(f"{t}:".encode())] == [
                f"{t}:{n}".encode() for n in range(per_thread)
            ]
        assert_accounted(hub)
    finally:
        clients.close()


def test_a_publisher_waiting_in_the_backplane_holds_up_no_delivery(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    """The backplane may wait (a full Redis outbox): messages from other processes still get
    through, and what goes onward keeps the local order."""

    class Gate(Backplane):
        def __init__(self) -> None:
            super().__init__()
            self.onward: list[bytes] = []
            self.entered = threading.Event()
            self.release = threading.Event()

        def publish(self, group: str, opcode: Opcode, payload: bytes) -> None:
            self.onward.append(payload)
            if payload == b"first":
                self.entered.set()
                self.release.wait(3 * TIMEOUT)

    gate = Gate()
    hub = Hub(gate)
    hubs.append(hub)
    server = make_server(make_hub_handler(hub))
    clients = RawClients(server.port, 1)
    try:
        assert wait_until(lambda: len(hub.members("room")) == 1)
        first = threading.Thread(target=hub.publish, args=("room", b"first"))
        first.start()
        assert gate.entered.wait(TIMEOUT)
        delivery = Worker(hub.deliver, "room", Opcode.TEXT, b"remote", remote=True)
        assert delivery.join(TIMEOUT) == 1, "not held up by the waiting publisher"
        second = threading.Thread(target=hub.publish, args=("room", b"second"))
        second.start()
        assert wait_until(lambda: clients.all_have(3)), "delivered locally, though not yet onward"
        assert gate.onward == [b"first"], "the second waits for its turn"
        gate.release.set()
        first.join(TIMEOUT)
        second.join(TIMEOUT)
        assert gate.onward == [b"first", b"second"]
        assert clients.messages[0] == [b"first", b"remote", b"second"]
    finally:
        gate.release.set()
        clients.close()


def make_replying_handler(hub: Hub) -> type[WebSocket]:
    """``line:<n>``: publish a presence line to the room, then reply with ``self.send()`` (issue 12's
    chat pattern); ``burst:<k>[:<size>]``: publish k messages of ``size`` bytes (4 KiB), then reply
    with ``hub.send()`` (``?direct``: with ``self.send()``)."""

    class Replier(make_hub_handler(hub)):  # type: ignore[misc]
        def received_message(self, message: Message) -> None:
            command, _, arg = message.data.decode().partition(":")
            if command == "line":
                hub.publish("room", f"presence {arg}")
                self.send(f"error {arg}")
            elif command == "burst":
                count, _, size = arg.partition(":")
                for i in range(int(count)):
                    hub.publish("room", numbered(i, int(size or 4096)))
                assert self.request is not None
                if self.request.path.endswith("?direct"):
                    self.send(b"reply")
                else:
                    hub.send(self, b"reply")

    return Replier


def test_a_reply_after_a_publish_arrives_after_it(no_leaks: None, make_server: ServerFactory, hubs: list[Hub]) -> None:
    # Issue 12: an error reply overtook the presence update of an earlier line. The hub
    # writes in the publisher's thread, so for a member that keeps up, send() after
    # publish() arrives after it.
    hub = Hub()
    hubs.append(hub)
    server = make_server(make_replying_handler(hub))
    ws = connect(f"ws://127.0.0.1:{server.port}/room?ann")
    try:
        assert wait_until(lambda: len(hub.members("room")) == 1)
        for n in range(100):
            ws.send(f"line:{n}")
        got = [ws.recv(TIMEOUT).data.decode() for _ in range(200)]
        assert got == [text for n in range(100) for text in (f"presence {n}", f"error {n}")]
    finally:
        ws.close()


def test_a_handler_publishing_a_burst_to_its_own_room_gets_it_all(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    # While the loop thread runs a connection's callback, that connection's writes wait
    # for the callback's end; the hub hands the loop over once it has to queue for it,
    # so a burst larger than max_queue reaches the publisher too, with no eviction.
    hub = Hub()
    hubs.append(hub)
    server = make_server(make_replying_handler(hub))
    ws = connect(f"ws://127.0.0.1:{server.port}/room?ann")
    try:
        assert wait_until(lambda: len(hub.members("room")) == 1)
        ws.send("burst:3000:64")  # 3000 messages in one callback: more than send_buffer and max_queue hold
        got = [ws.recv(TIMEOUT).data for _ in range(3001)]
        assert [struct.unpack("!I", m[:4])[0] for m in got[:-1]] == list(range(3000))
        assert got[-1] == b"reply"
        assert hub.stats().evicted == 0
        assert_accounted(hub)
    finally:
        ws.close()


@pytest.mark.parametrize("reply", ["hub.send", "self.send"])
def test_hub_send_keeps_a_reply_behind_a_backlog(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub], reply: str
) -> None:
    # A member that reads nothing for a while has a backlog in the hub. hub.send()
    # queues the reply behind it; self.send() writes to the connection at once and
    # overtakes the backlog (docs/pubsub.md, "Ordering").
    hub = Hub(max_queue_bytes=8 * 2**20)
    hubs.append(hub)
    server = make_server(make_replying_handler(hub))
    path = "/room?slow" if reply == "hub.send" else "/room?slow?direct"
    sock, initial = RawClients._open(server.port, path, rcvbuf=4096)
    try:
        assert wait_until(lambda: len(hub.members("room")) == 1)
        client = Protocol(CLIENT, data=initial, max_message_size=None)
        client.send_text(b"burst:300")  # 1.2 MB: far more than the kernel and send_buffer hold
        sock.sendall(b"".join(client.data_to_send()))
        assert wait_until(lambda: hub.pending(hub.members("room")[0])[0] > 100), "a backlog in the hub"
        got: list[bytes] = []
        sock.settimeout(TIMEOUT)
        while b"reply" not in got or len(got) < 301:
            client.receive_data(sock.recv(262144))
            while frames := client.events_received():
                got.extend(frame.data if frame.data == b"reply" else frame.data[:4] for frame in frames)
        numbers = [struct.unpack("!I", m)[0] for m in got if m != b"reply"]
        assert numbers == list(range(300)), "the room's messages in order"
        if reply == "hub.send":
            assert got.index(b"reply") == 300, "behind everything published before it"
        else:
            assert got.index(b"reply") < 200, "self.send() overtook the hub's backlog"
        assert hub.stats().evicted == 0
        assert_accounted(hub)
    finally:
        sock.close()


# -- rate limits and bounds -------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["drop", "close"])
def test_rate_limit_refuses_a_fast_publisher(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub], action: str
) -> None:
    # A refill of one token per 1000 s: within the test the bucket holds the burst only.
    hub = Hub(rate_limit=RateLimit(rate=0.001, burst=3, action=action))  # type: ignore[arg-type]
    hubs.append(hub)
    server = make_server(make_hub_handler(hub))
    listener = RawClients(server.port, 1)
    speaker = connect(f"ws://127.0.0.1:{server.port}/room?speaker")
    try:
        assert wait_until(lambda: len(hub.members("room")) == 2)
        for n in range(10):
            speaker.send(f"m{n}")
        assert wait_until(lambda: hub.stats().rate_limited == 7)
        assert [speaker.recv(TIMEOUT).data for _ in range(3)] == [b"m0", b"m1", b"m2"]
        if action == "close":
            with pytest.raises(ConnectionClosed) as closed:
                speaker.recv(TIMEOUT)
            assert closed.value.code == 1008
            assert wait_until(lambda: len(hub.members("room")) == 1)
        else:
            with pytest.raises(TimeoutError):
                speaker.recv(0.3)
            assert len(hub.members("room")) == 2, "drop: the sender stays"
        assert listener.messages[0] == [b"m0", b"m1", b"m2"]
        stats = hub.stats()
        assert stats.published == 3 and stats.evicted == 0
        hub.publish("room", "from the server")  # no sender: never limited
        assert wait_until(lambda: listener.all_have(4))
    finally:
        speaker.close()
        listener.close()


def test_rate_limit_options_are_checked() -> None:
    for bad in ({"rate": 0}, {"rate": 1, "burst": 0}, {"rate": 1, "action": "explode"}):
        with pytest.raises(ValueError):
            RateLimit(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Hub(rate_limit=(10, 20))  # type: ignore[arg-type]


def test_tiny_messages_are_bounded_by_their_overhead(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    # A queue bounded "by count" at a million would hold a million tiny messages, each
    # costing far more than its byte: the entry overhead counts against max_queue_bytes.
    hub = Hub(max_queue=10**6, max_queue_bytes=64 * 1024, overflow="drop_oldest")
    hubs.append(hub)
    server = make_server(make_hub_handler(hub))
    clients = RawClients(server.port, 1, slow=1)
    try:
        assert wait_until(lambda: len(hub.members("room")) == 2)
        rss_before = _rss_kib()
        for _ in range(50000):
            hub.publish("room", b"x")
        stats = hub.stats()
        # Each entry is charged its 3 wire bytes and an overhead of over a hundred.
        assert 0 < stats.peak_pending_messages < 64 * 1024 // 100
        assert stats.peak_pending_bytes <= 64 * 1024 + 256
        assert stats.dropped > 0
        assert _rss_kib() - rss_before < 16 * 1024
        assert wait_until(lambda: clients.all_have(50000))
        assert_accounted(hub)
    finally:
        clients.close()


def test_block_policy_pushes_back_on_the_publisher_not_the_loop(
    no_leaks: None, make_server: ServerFactory, hubs: list[Hub]
) -> None:
    # A member that reads nothing and a flooder publishing into its group: under "block"
    # the flooder's handler waits for room, off the loop (leave_loop), so the server
    # stops reading the flooder (TCP pushes back) and keeps serving everyone else.
    hub = Hub(max_queue_bytes=64 * 1024, overflow="block", block_timeout=TIMEOUT)
    hubs.append(hub)
    server = make_server(make_hub_handler(hub))
    slow = RawClients(server.port, 0, slow=1)
    flooder, _ = RawClients._open(server.port, "/room?flooder")
    flooder.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    other = connect(f"ws://127.0.0.1:{server.port}/other")
    try:
        assert wait_until(lambda: len(hub.members("room")) == 2 and len(hub.members("other")) == 1)
        client = Protocol(CLIENT, max_message_size=None)
        for i in range(64):
            client.send_binary(numbered(i, 16384))
        chunk = b"".join(client.data_to_send())  # 1 MiB of masked frames, sent again and again
        flooder.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                sent += flooder.send(memoryview(chunk)[sent % len(chunk) :])  # the stream stays whole
            except BlockingIOError:
                # Meanwhile the loop serves the others: a round trip through the hub.
                other.send(f"ping {sent}")
                assert other.recv(TIMEOUT).data == f"ping {sent}".encode()
        # What got through is the kernel's buffers and the flooder's bounded inbox, not
        # the hundreds of megabytes loopback carries in 3 s.
        assert sent < 32 * 2**20, f"the server kept reading the flooder: {sent} bytes"
        stats = hub.stats()
        assert stats.evicted == 0, "nobody is evicted while the publisher waits"
        assert stats.peak_pending_bytes <= 64 * 1024 + 16384 + 256
    finally:
        flooder.close()
        other.close()
        slow.close()


# -- a flooding chat member (issue 17): the server in a process of its own ----------------------------


CHAT_ROOM = "chat"


def chat_server_main(argv: list[str]) -> None:
    """``python -m tests.pubsub.test_hub chat [--rate R --burst B --action A]``: the chat demo's
    protocol on a Hub; prints its port, then answers ``status`` / ``quit`` lines on stdin."""
    import argparse
    import json
    from dataclasses import asdict

    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--burst", type=int, default=1)
    parser.add_argument("--action", default="drop")
    args = parser.parse_args(argv)
    limit = RateLimit(args.rate, args.burst, args.action) if args.rate else None
    hub = Hub(rate_limit=limit)

    class ChatMember(WebSocket):
        name: str | None = None

        def received_message(self, message: Message) -> None:
            try:
                event = json.loads(message.data)
                kind = event["type"]
            except (ValueError, KeyError, TypeError):
                hub.send(self, json.dumps({"type": "error", "text": "expected a JSON object with a 'type'"}))
                return
            if kind == "join" and self.name is None:
                self.name = str(event.get("name", "anonymous"))[:32]
                hub.join(CHAT_ROOM, self, name=self.name)
                hub.publish(CHAT_ROOM, json.dumps({"type": "presence", "online": hub.presence(CHAT_ROOM)}))
            elif kind == "say" and self.name is not None:
                text = str(event.get("text", ""))[:2000]
                hub.publish(CHAT_ROOM, json.dumps({"type": "message", "from": self.name, "text": text}), sender=self)
            else:
                hub.send(self, json.dumps({"type": "error", "text": f"unexpected {kind!r}"}))

        def closed(self, code: int, reason: str | None = None) -> None:
            if self.name is not None:
                hub.publish(CHAT_ROOM, json.dumps({"type": "presence", "online": hub.presence(CHAT_ROOM)}))

    def status_kib(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    server = WebSocketServer(ChatMember, "127.0.0.1", 0, close_timeout=2.0).start()
    print(json.dumps({"port": server.port}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "status":
                stats = asdict(hub.stats())
                print(json.dumps({"rss": status_kib("VmRSS"), "hwm": status_kib("VmHWM"), "hub": stats}), flush=True)
            elif line.strip() == "quit":
                break
    finally:
        server.shutdown(timeout=2.0)
        hub.close()


class ChatServer:
    """chat_server_main() in a subprocess: its RSS is the server's alone."""

    def __init__(self, *options: str) -> None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.pubsub.test_hub", "chat", *options],
            cwd=root,
            env=dict(os.environ, PYTHONPATH=root),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port: int = self._answer()["port"]

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # bounded by the test's timeout
        assert line, "the chat server ended"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def status(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("status\n")
        self.process.stdin.flush()
        return self._answer()

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(TIMEOUT)
        self.process.stdout.close()


class Flooder:
    """A member that says things as fast as TCP lets it (and reads what it gets, so it is
    never evicted as a slow reader: the rate limit or the room's pace must stop it)."""

    def __init__(self, port: int) -> None:
        self.sock, data = RawClients._open(port, "/chat")
        self.protocol = Protocol(CLIENT, data=data, max_message_size=None)
        self.protocol.send_text(json.dumps({"type": "join", "name": "flooder"}).encode())
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        say = json.dumps({"type": "say", "text": "flood " * 12}).encode()
        for _ in range(200):
            self.protocol.send_text(say)
        self.chunk = b"".join(self.protocol.data_to_send())
        self.sent = 0
        self.close_code: int | None = None
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write, name="flooder-write", daemon=True)
        self._reader = threading.Thread(target=self._read, name="flooder-read", daemon=True)
        self.sock.settimeout(0.5)

    def start(self) -> None:
        self._writer.start()
        self._reader.start()

    def _write(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.sendall(self.chunk)
                self.sent += len(self.chunk)
            except TimeoutError:
                continue
            except OSError:
                return

    def _read(self) -> None:
        reader = Protocol(CLIENT, max_message_size=None)  # the server's frames to the flooder
        while not self._stop.is_set():
            try:
                data = self.sock.recv(262144)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            reader.receive_data(data)
            while frames := reader.events_received():
                for frame in frames:
                    if frame.opcode is Opcode.CLOSE:
                        self.close_code = reader.close_code

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._writer, self._reader):
            if thread.ident is not None:
                thread.join(TIMEOUT)
        self.sock.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("limit", ["none", "drop", "close"])
def test_a_flooding_member_does_not_grow_the_server(no_leaks: None, limit: str) -> None:
    """Issue 17: one member of a 20-member chat room says things as fast as it can."""
    options = [] if limit == "none" else ["--rate", "20", "--burst", "40", "--action", limit]
    server = ChatServer(*options)
    honest: RawClients | None = None
    flooder: Flooder | None = None
    try:
        honest = RawClients(server.port, 19, path="/chat", keep_if=lambda data: b"honest-" in data)
        for index in range(19):
            honest.send(index, json.dumps({"type": "join", "name": f"member{index}"}))
        flooder = Flooder(server.port)
        # Presence goes to the room in one order: the last member to join saw its own and the flooder's.
        assert wait_until(lambda: honest is not None and honest.totals[18] >= 2), "everyone joined"
        before = server.status()
        flooder.start()
        started = time.monotonic()
        said = 0
        # The honest members talk during the flood, at a human pace (under the limit); the
        # flood stops only once each of them has received every honest line.
        while said < 10 or time.monotonic() - started < 4.0:
            time.sleep(0.1)
            honest.send(0, json.dumps({"type": "say", "text": f"honest-{said}"}))
            said += 1
            assert wait_until(lambda n=said: all(len(m) >= n for m in honest.messages), timeout=60.0), (
                f"honest line {said - 1} did not reach everyone: {[len(m) for m in honest.messages]}"
            )
        after = server.status()
        flooder.stop()
        growth_kib = after["hwm"] - before["rss"]
        stats = after["hub"]
        print(
            f"\nlimit={limit}: server RSS {before['rss'] // 1024} MiB before, peak {after['hwm'] // 1024} MiB "
            f"(+{growth_kib / 1024:.1f} MiB) over {time.monotonic() - started:.1f} s; flooder sent "
            f"{flooder.sent / 2**20:.1f} MiB; honest members got {min(honest.totals)}-{max(honest.totals)} messages; "
            f"hub {stats}"
        )
        assert growth_kib < 64 * 1024, f"the server grew by {growth_kib} KiB"
        for messages in honest.messages:
            texts = [json.loads(m)["text"] for m in messages]
            assert texts == [f"honest-{k}" for k in range(said)], "every honest line, in order"
        assert honest.close_codes == [None] * 19, "no honest member was closed"
        assert stats["evicted"] == 0
        if limit != "none":
            assert stats["rate_limited"] > 0
        if limit == "close":
            assert flooder.close_code == 1008
    finally:
        if flooder is not None:
            flooder.stop()
        if honest is not None:
            honest.close()
        server.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["chat"]:
        chat_server_main(sys.argv[2:])
