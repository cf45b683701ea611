"""The blocking driver (ws4web/drivers/blocking.py) over socketpairs, raw peers and TLS."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from ws4web import WebSocket, connect, wrap_socket
from ws4web.drivers.blocking import BlockingDriver
from ws4web.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from ws4web.frames import Frame, Opcode
from ws4web.messages import BinaryMessage, Message, TextMessage
from ws4web.protocol import State

from ..conftest import (
    TIMEOUT,
    CountingSocket,
    EchoHandler,
    RawPeer,
    ServerFactory,
    Worker,
    client_driver,
    close_payload,
    encode_frame,
    server_driver,
    wait_until,
    ws_url,
)

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]


@pytest.fixture
def conns(sock_pair: tuple[socket.socket, socket.socket]) -> Iterator[tuple[BlockingDriver, BlockingDriver]]:
    """(server, client) BlockingDrivers over a socketpair."""
    server = server_driver(sock_pair[0], close_timeout=2.0)
    client = client_driver(sock_pair[1], close_timeout=2.0)
    try:
        yield server, client
    finally:
        server.abort()
        client.abort()


# -- messages ---------------------------------------------------------------------------------


def test_text_and_binary_both_ways(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    client.send_message("héllo")
    client.send_message(b"\x00\xffbin")
    client.send_message(bytearray(b"ba"))
    client.send_message(memoryview(b"mv"))
    assert server.recv_message(TIMEOUT) == TextMessage("héllo")
    assert server.recv_message(TIMEOUT) == BinaryMessage(b"\x00\xffbin")
    assert server.recv_message(TIMEOUT) == BinaryMessage(b"ba")
    assert server.recv_message(TIMEOUT) == BinaryMessage(b"mv")
    server.send_message("réponse")
    server.send_message(b"")
    reply = client.recv_message(TIMEOUT)
    assert isinstance(reply, TextMessage)
    assert reply.text == "réponse"
    empty = client.recv_message(TIMEOUT)
    assert isinstance(empty, BinaryMessage)
    assert empty.data == b""


def test_binary_flag_forces_the_type(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    client.send_message("as bytes", binary=True)
    client.send_message(b"ok", binary=False)
    client.send_message(TextMessage("was text"), binary=True)
    client.send_message(BinaryMessage(b"was binary"), binary=False)
    assert server.recv_message(TIMEOUT) == BinaryMessage(b"as bytes")
    assert server.recv_message(TIMEOUT) == TextMessage("ok")
    assert server.recv_message(TIMEOUT) == BinaryMessage(b"was text")
    assert server.recv_message(TIMEOUT) == TextMessage("was binary")


def test_send_fragments_arrive_as_one_message(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    client.send_fragments(["ab", "cd", "é"])
    client.send_fragments(iter([b"\x01", b"\x02"]))
    client.send_fragments(["forced"], binary=True)
    client.send_fragments([])
    assert server.recv_message(TIMEOUT) == TextMessage("abcdé")
    assert server.recv_message(TIMEOUT) == BinaryMessage(b"\x01\x02")
    assert server.recv_message(TIMEOUT) == BinaryMessage(b"forced")
    assert server.recv_message(TIMEOUT) == TextMessage("")


def test_fragments_are_separate_frames_on_the_wire(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    conn = server_driver(sock, close_timeout=1.0)
    conn.send_fragments(["one", "two", "three"])
    frames = [peer.read_frame() for _ in range(3)]
    assert [(f.opcode, f.fin, f.payload) for f in frames] == [
        (Opcode.TEXT, False, b"one"),
        (Opcode.CONTINUATION, False, b"two"),
        (Opcode.CONTINUATION, True, b"three"),
    ]
    assert not any(f.masked for f in frames)  # RFC 6455 §5.1: servers never mask
    conn.abort()


def test_client_frames_are_masked(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    conn = client_driver(sock_pair[0], close_timeout=1.0)
    peer = RawPeer(sock_pair[1], masked=False)
    conn.send_message(b"secret")
    frame = peer.read_frame()
    assert frame.masked
    assert (frame.opcode, frame.payload) == (Opcode.BINARY, b"secret")
    conn.abort()


def test_recv_timeout_then_message_still_arrives(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    with pytest.raises(TimeoutError):
        server.recv_message(timeout=0.2)
    # A frame split by the timeout: half now, a timeout, the rest later.
    frame = encode_frame(Opcode.TEXT, b"late but whole")
    client.sock.sendall(frame[:5])
    with pytest.raises(TimeoutError):
        server.recv_message(timeout=0.2)
    client.sock.sendall(frame[5:])
    assert server.recv_message(TIMEOUT) == TextMessage("late but whole")
    assert server.state is State.OPEN


def test_frames_split_byte_by_byte(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    conn = server_driver(sock, close_timeout=1.0)
    payload = bytes(range(256)) * 2  # 16-bit length header
    data = (
        encode_frame(Opcode.TEXT, b"frag", fin=False)
        + encode_frame(Opcode.PING, b"p")
        + encode_frame(Opcode.CONTINUATION, b"ment", fin=True)
        + encode_frame(Opcode.BINARY, payload)
    )
    writer = Worker(peer.send_slowly, data, 0.001)
    assert conn.recv_message(TIMEOUT) == TextMessage("fragment")
    assert conn.recv_message(TIMEOUT) == BinaryMessage(payload)
    writer.join()
    pong = peer.read_frame()
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"p")
    conn.abort()


def test_many_frames_in_one_write(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    conn = server_driver(sock, close_timeout=1.0)
    peer.send(b"".join(encode_frame(Opcode.TEXT, str(i).encode()) for i in range(500)))
    assert [conn.recv_message(TIMEOUT).data for _ in range(500)] == [str(i).encode() for i in range(500)]
    conn.abort()


def test_bytes_read_past_the_handshake_are_processed(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    leftover = encode_frame(Opcode.PING, b"early") + encode_frame(Opcode.TEXT, b"first")
    conn = server_driver(sock, data=leftover, close_timeout=1.0)
    # The pong goes out at construction, before anyone reads.
    pong = peer.read_frame()
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"early")
    assert conn.recv_message(TIMEOUT) == TextMessage("first")
    conn.abort()


def test_message_too_big_fails_with_1009(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    conn = server_driver(sock, max_message_size=1000, close_timeout=1.0)
    peer.send_frame(Opcode.BINARY, b"x" * 1001)
    reader = Worker(conn.recv_message, TIMEOUT)
    close = peer.read_frame()
    assert close.close_code == 1009
    assert peer.at_eof()
    peer.sock.close()
    exc = reader.raised()
    assert isinstance(exc, ConnectionClosedError)
    assert exc.sent_code == 1009


# -- ping / pong ------------------------------------------------------------------------------


def test_ping_resolved_by_pong_with_latency(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    waiter = server.ping(b"hello")
    assert waiter.payload == b"hello"
    assert waiter.latency is None
    assert not waiter.wait(0)
    # The client answers the ping when it reads; the server sees the pong when it reads.
    client.send_message("tick")
    assert client_reads_nothing(client)
    assert server.recv_message(TIMEOUT) == TextMessage("tick")
    with pytest.raises(TimeoutError):
        server.recv_message(0.2)  # processes the pong that follows
    assert waiter.wait(0)
    assert waiter.latency is not None
    assert waiter.latency >= 0


def client_reads_nothing(client: BlockingDriver) -> bool:
    """Read once with a short timeout: enough to see and answer a ping."""
    try:
        client.recv_message(0.2)
    except TimeoutError:
        return True
    return False


def test_ping_with_random_payload(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    first, second = server.ping(), server.ping()
    assert len(first.payload) == 4
    assert first.payload != second.payload
    with pytest.raises(ValueError, match="already waiting"):
        server.ping(first.payload)
    assert client_reads_nothing(client)
    with pytest.raises(TimeoutError):
        server.recv_message(0.2)
    assert first.wait(0)
    assert second.wait(0)


def test_one_pong_answers_every_earlier_ping(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    conn = server_driver(sock, close_timeout=1.0)
    waiters = [conn.ping(p) for p in (b"1", b"2", b"3")]
    assert [peer.read_frame().payload for _ in range(3)] == [b"1", b"2", b"3"]
    # §5.5.3: a peer may answer only the latest ping it got; "2" settles "1" too, not "3".
    peer.send_frame(Opcode.PONG, b"2")
    peer.send_frame(Opcode.TEXT, b"sync")
    assert conn.recv_message(TIMEOUT) == TextMessage("sync")
    assert [w.wait(0) for w in waiters] == [True, True, False]
    peer.send_frame(Opcode.PONG, b"unknown")  # unsolicited: ignored
    peer.send_frame(Opcode.PONG, b"3")
    peer.send_frame(Opcode.TEXT, b"sync")
    assert conn.recv_message(TIMEOUT) == TextMessage("sync")
    assert waiters[2].wait(0)
    assert all(w.latency is not None for w in waiters)
    conn.abort()


class PongRecorder(WebSocket):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.pongs: list[bytes] = []

    def ponged(self, message: Message) -> None:
        self.pongs.append(message.data)


def test_pongs_reach_the_handler_and_pings_are_answered(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    handler = wrap_socket(sock, PongRecorder, close_timeout=1.0)
    conn = handler.connection
    peer.send_frame(Opcode.PING, b"are you there")
    peer.send_frame(Opcode.PONG, b"heartbeat")
    peer.send_frame(Opcode.TEXT, b"x")
    assert conn.recv_message(TIMEOUT) == TextMessage("x")
    assert handler.pongs == [b"heartbeat"]
    pong = peer.read_frame()
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"are you there")
    conn.pong(b"unsolicited")
    frame = peer.read_frame()
    assert (frame.opcode, frame.payload) == (Opcode.PONG, b"unsolicited")
    conn.abort()


# -- low-level frames ---------------------------------------------------------------------------


def test_send_frame_and_recv_frame_unassembled(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    client.send_frame(Frame(Opcode.BINARY, b"ab", fin=False))
    client.send_frame(Frame(Opcode.PING, b"ctl"))
    client.send_frame(Frame(Opcode.CONTINUATION, b"cd", fin=True))
    assert server.recv_frame(TIMEOUT) == Frame(Opcode.BINARY, b"ab", fin=False)
    assert server.recv_frame(TIMEOUT) == Frame(Opcode.PING, b"ctl")
    assert server.recv_frame(TIMEOUT) == Frame(Opcode.CONTINUATION, b"cd", fin=True)
    # The server answered the ping by itself.
    assert client.recv_frame(TIMEOUT) == Frame(Opcode.PONG, b"ctl")


def test_frame_with_rsv1_fails_the_peer_with_1002(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    client.send_frame(Frame(Opcode.TEXT, b"compressed?", rsv1=True))
    client_reader = Worker(client.recv_message, TIMEOUT)
    with pytest.raises(ConnectionClosedError) as server_exc:
        server.recv_message(TIMEOUT)
    assert server_exc.value.sent_code == 1002
    assert server.protocol.failure is not None
    exc = client_reader.raised()
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1002
    assert client.closed
    assert server.closed


def test_raw_rsv_frame_reaches_the_raw_peer(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    conn = server_driver(sock_pair[0], close_timeout=1.0)
    peer = RawPeer(sock_pair[1])
    conn.send_frame(Frame(Opcode.BINARY, b"raw", fin=False, rsv1=True, rsv3=True))
    frame = peer.read_frame()
    assert (frame.fin, frame.rsv, frame.opcode, frame.payload) == (False, 0x50, Opcode.BINARY, b"raw")
    conn.abort()


# -- closing ------------------------------------------------------------------------------------


def test_close_handshake_normal(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    reader = Worker(server.recv_message, TIMEOUT)
    client.close(1000, "bye")
    exc = reader.raised()
    assert isinstance(exc, ConnectionClosedOK)
    assert (exc.code, exc.reason) == (1000, "bye")
    assert client.closed
    assert client.close_code == 1000
    assert server.wait_closed(TIMEOUT)
    with pytest.raises(ConnectionClosedOK):
        client.send_message("too late")
    with pytest.raises(ConnectionClosedOK):
        client.recv_message(TIMEOUT)


def test_close_while_another_thread_reads(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    server_reader = Worker(server.recv_message, TIMEOUT)
    client_reader = Worker(client.recv_message, TIMEOUT)
    server.close(1001, "going")  # returns at once: the reading thread finishes the handshake
    assert isinstance(client_reader.raised(), ConnectionClosedOK)
    exc = server_reader.raised()
    assert isinstance(exc, ConnectionClosedOK)
    assert exc.sent_code == 1001
    assert server.wait_closed(TIMEOUT)
    assert client.close_code == 1001


def test_close_timeout_when_peer_never_answers(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    conn = server_driver(sock, close_timeout=0.3)
    closer = Worker(conn.close)
    closer.join(TIMEOUT)  # returns once the close timeout dropped the connection
    assert conn.closed
    assert conn.close_code == 1006  # no close frame came back
    close = peer.read_frame()
    assert close.close_code == 1000
    assert peer.at_eof()


def test_close_timeout_when_peer_answers_but_keeps_tcp_open(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    conn = server_driver(sock, close_timeout=0.3)
    peer.send_frame(Opcode.CLOSE, close_payload(4001, "done"))
    reader = Worker(conn.recv_message, TIMEOUT)
    echo = peer.read_frame()
    assert echo.close_code == 4001
    assert peer.at_eof()  # §7.1.1: the server closes TCP first
    exc = reader.raised()  # and gives up waiting for the client's FIN after close_timeout
    assert isinstance(exc, ConnectionClosedError)
    assert (exc.code, exc.reason) == (4001, "done")
    assert conn.closed


def test_client_waits_for_the_server_to_close_tcp(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    conn = client_driver(sock_pair[0], close_timeout=0.3)
    peer = RawPeer(sock_pair[1], masked=False)
    closer = Worker(conn.close)
    assert peer.read_frame().close_code == 1000
    peer.send_frame(Opcode.CLOSE, close_payload(1000))
    closer.join()  # the server never closes TCP: the client drops it after close_timeout
    assert conn.closed
    assert conn.close_code == 1000
    assert peer.at_eof()


def test_abort_drops_tcp_without_close_frame(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    conn = server_driver(sock, close_timeout=1.0)
    reader = Worker(conn.recv_message, TIMEOUT)
    conn.abort()
    assert peer.at_eof()
    exc = reader.raised()
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1006
    with pytest.raises(ConnectionClosedError):
        conn.send_message("gone")


def test_peer_gone_mid_frame_is_1006(raw_client: tuple[socket.socket, RawPeer]) -> None:
    sock, peer = raw_client
    conn = server_driver(sock, close_timeout=1.0)
    frame = encode_frame(Opcode.BINARY, b"x" * 300)
    peer.send(frame[:100])
    peer.sock.close()
    with pytest.raises(ConnectionClosedError) as exc:
        conn.recv_message(TIMEOUT)
    assert exc.value.code == 1006
    assert conn.closed


def test_peer_reset_is_1006() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    with listener, socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as peer:
        accepted, _ = listener.accept()
        conn = server_driver(accepted, close_timeout=1.0)
        peer.sendall(encode_frame(Opcode.TEXT, b"x" * 50)[:10])
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        with pytest.raises(ConnectionClosedError) as exc:
            conn.recv_message(TIMEOUT)
        assert exc.value.code == 1006
        assert conn.closed


def test_send_to_a_vanished_peer_raises_connection_closed(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    conn = server_driver(sock_pair[0], close_timeout=1.0)
    sock_pair[1].close()
    with pytest.raises(ConnectionClosed):
        for _ in range(100):  # the first write may still land in the kernel buffer
            conn.send_message(b"x" * 65536)
    conn.abort()


# -- many threads on one connection -----------------------------------------------------------------

THREADS = 8
PER_THREAD = 200


def payload_for(tid: int, seq: int) -> bytes:
    """A message whose content says who sent it and checks itself."""
    if seq % 20 in (7, 11):  # 11: also fragmented, below
        size = 70_000 + tid * 1_111  # over 64 KiB: a 64-bit length, sent header + payload apart
    elif seq % 3 == 0:
        size = 126 + seq * 7  # 16-bit lengths
    else:
        size = seq % 120
    head = f"{tid}:{seq}:".encode()
    body = bytes((tid * 31 + seq + i) % 251 for i in range(min(size, 251)))
    body = (body * (size // 251 + 1))[:size]
    return head + body


def slow_chunks(data: bytes, size: int) -> Iterator[bytes]:
    """A generator that lets other threads run between its chunks, as a streaming source would."""
    for i in range(0, len(data), size):
        time.sleep(0)
        yield data[i : i + size]


def test_many_threads_sending_at_once(conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = conns
    received: list[Message] = []

    def read_all() -> None:
        while True:
            try:
                received.append(server.recv_message(TIMEOUT))
            except ConnectionClosedOK:
                return

    reader = Worker(read_all)
    start = threading.Barrier(THREADS)

    def sender(tid: int) -> None:
        start.wait(TIMEOUT)
        for seq in range(PER_THREAD):
            data = payload_for(tid, seq)
            if seq % 5 == 1:  # fragmented: no other thread's frame may get between the fragments
                client.send_fragments(slow_chunks(data, 300 if len(data) < 5000 else 8192))
            else:
                client.send_message(data)

    senders = [Worker(sender, tid, thread_name=f"sender-{tid}") for tid in range(THREADS)]
    for worker in senders:
        worker.join(30)
    client.close()
    reader.join(30)
    assert len(received) == THREADS * PER_THREAD
    next_seq = [0] * THREADS
    for message in received:
        tid_text, seq_text, _ = message.data.split(b":", 2)
        tid, seq = int(tid_text), int(seq_text)
        assert seq == next_seq[tid], f"thread {tid}: message {seq} arrived when {next_seq[tid]} was due"
        next_seq[tid] += 1
        assert message.data == payload_for(tid, seq), f"message {tid}:{seq} corrupted"
        assert isinstance(message, BinaryMessage)
    assert next_seq == [PER_THREAD] * THREADS


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture
def tls_conns(tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> Iterator[tuple[BlockingDriver, BlockingDriver]]:
    server = server_driver(tls_pair[0], close_timeout=2.0)
    client = client_driver(tls_pair[1], close_timeout=2.0)
    try:
        yield server, client
    finally:
        server.abort()
        client.abort()


def test_tls_echo_and_close(tls_conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = tls_conns
    client.send_message("over TLS")
    client.send_fragments([b"a", b"b", b"c"])
    assert server.recv_message(TIMEOUT) == TextMessage("over TLS")
    assert server.recv_message(TIMEOUT) == BinaryMessage(b"abc")
    server.send_message("back")
    assert client.recv_message(TIMEOUT) == TextMessage("back")
    reader = Worker(server.recv_message, TIMEOUT)
    client.close()
    assert isinstance(reader.raised(), ConnectionClosedOK)
    assert client.close_code == 1000
    assert server.close_code == 1000


def test_tls_one_mebibyte_both_ways(tls_conns: tuple[BlockingDriver, BlockingDriver]) -> None:
    server, client = tls_conns
    big = bytes(range(256)) * 4096  # exactly 1 MiB: the default max_message_size
    sender = Worker(client.send_message, big)
    message = server.recv_message(TIMEOUT)
    sender.join()
    assert message == BinaryMessage(big)
    text = "é" * (2**19)  # 1 MiB of UTF-8
    sender = Worker(server.send_message, text)
    reply = client.recv_message(TIMEOUT)
    sender.join()
    assert isinstance(reply, TextMessage)
    assert reply.text == text


def test_tls_frames_one_byte_per_record(tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    conn = server_driver(tls_pair[0], close_timeout=1.0)
    peer = RawPeer(tls_pair[1])
    data = encode_frame(Opcode.TEXT, b"tiny ", fin=False) + encode_frame(Opcode.CONTINUATION, b"records")
    writer = Worker(peer.send_slowly, data, 0.001)  # each sendall() on TLS is one record
    assert conn.recv_message(TIMEOUT) == TextMessage("tiny records")
    writer.join()
    conn.abort()


def test_tls_pending_bytes_are_not_missed_with_a_timeout(tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    # Small reads leave most of a TLS record decrypted inside the SSL object, where
    # poll() cannot see it; recv(timeout) must still find those bytes.
    conn = server_driver(tls_pair[0], close_timeout=1.0, recv_size=100)
    peer = RawPeer(tls_pair[1])
    frames = b"".join(encode_frame(Opcode.BINARY, bytes([i]) * 1500) for i in range(5))
    assert len(frames) < 16384  # one record
    peer.send(frames)
    for i in range(5):
        assert conn.recv_message(timeout=1.0) == BinaryMessage(bytes([i]) * 1500)
    conn.abort()


def test_tls_close_ends_with_close_notify(tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket]) -> None:
    conn = server_driver(tls_pair[0], close_timeout=1.0)
    tls_pair[1].suppress_ragged_eofs = False  # type: ignore[attr-defined]  # a strict TLS peer: EOF without close_notify is an error
    peer = RawPeer(tls_pair[1])
    peer.send_frame(Opcode.CLOSE, close_payload(1000))
    reader = Worker(conn.recv_message, TIMEOUT)
    assert peer.read_frame().close_code == 1000
    try:
        assert peer.at_eof()  # §7.1.1: the server closes first, TLS session included
    finally:
        tls_pair[1].close()
        assert isinstance(reader.raised(), ConnectionClosedOK)


def test_connection_logs_nothing_on_a_clean_exchange(
    conns: tuple[BlockingDriver, BlockingDriver], caplog: pytest.LogCaptureFixture
) -> None:
    server, client = conns
    with caplog.at_level(logging.WARNING, logger="ws4web"):
        client.send_message("x")
        assert server.recv_message(TIMEOUT) == TextMessage("x")
        reader = Worker(server.recv_message, TIMEOUT)
        client.close()
        assert isinstance(reader.raised(), ConnectionClosedOK)
    assert not caplog.records


def test_ping_wait_reads_by_itself_in_pull_style(make_server: ServerFactory) -> None:
    """Nobody calls recv(): waiting for the pong reads the socket, and keeps the messages."""
    server = make_server(EchoHandler)
    with connect(ws_url(server), timeout=TIMEOUT) as ws:
        ws.send("before the ping")
        waiter = ws.ping(b"p1")
        assert waiter.wait(TIMEOUT)
        assert waiter.latency is not None and waiter.latency >= 0
        assert ws.recv(TIMEOUT).data == b"before the ping"  # not lost while waiting


def test_ping_wait_leaves_reading_to_the_reader(make_server: ServerFactory) -> None:
    server = make_server(EchoHandler)
    with connect(ws_url(server), timeout=TIMEOUT) as ws:
        got: list[bytes] = []
        reader = Worker(lambda: got.append(bytes(ws.recv(TIMEOUT).data)))
        assert wait_until(ws.connection._recv_lock.locked)
        assert ws.ping(b"p2").wait(TIMEOUT)  # resolved by the reading thread
        ws.send("x")
        reader.join()
        assert got == [b"x"]


def test_ping_wait_times_out_without_a_pong(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = sock_pair  # the peer never answers
    connection = client_driver(a, close_timeout=0.1)
    assert not connection.ping(b"p3").wait(0.05)


def burst(count: int) -> bytes:
    """``count`` masked text frames "0", "1", ... in one buffer, as one write brings them."""
    return b"".join(encode_frame(0x1, str(i).encode()) for i in range(count))


def test_pull_style_code_is_never_held_back(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    counting = CountingSocket(a)
    server = wrap_socket(counting, close_timeout=2.0)
    peer = RawPeer(b)
    b.sendall(burst(3))
    first = server.recv(TIMEOUT)
    server.send(first)  # more messages wait, yet the reply goes out at once
    assert peer.read_frame().payload == b"0"
    assert counting.writes == 1
    server.terminate()


class CloseOnFirst(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)
        if message.data == b"0":
            assert self.ping(b"hb").wait(TIMEOUT)  # the ping is not held back either
            self.close(4000, "enough")


def test_a_close_or_ping_amid_a_burst_is_not_held(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    server = wrap_socket(a, CloseOnFirst, close_timeout=2.0)
    runner = Worker(server.run)
    peer = RawPeer(b)
    b.sendall(burst(20))
    assert peer.read_frame().payload == b"0"
    ping = peer.read_frame()
    assert ping.opcode == 0x9 and ping.payload == b"hb"
    b.sendall(encode_frame(0xA, b"hb"))
    frames = []
    while True:
        frame = peer.read_frame()
        frames.append(frame)
        if frame.opcode == 0x8:
            break
    assert frames[-1].payload[:2] == (4000).to_bytes(2, "big")
    b.sendall(encode_frame(0x8, frames[-1].payload[:2]))
    runner.join()


def test_close_does_not_hang_behind_a_write_to_a_peer_that_stopped_reading(
    sock_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _b = sock_pair  # the peer never reads
    conn = server_driver(a, close_timeout=0.5)
    writer = Worker(lambda: [conn.send_message(b"x" * 65536) for _ in range(1000)])
    assert wait_until(conn._lock.locked)  # the writer is stuck in sendall, holding the lock
    time.sleep(0.1)
    closer = Worker(conn.close, 1001)
    closer.join(TIMEOUT)  # returns: past close_timeout the connection is dropped instead
    assert conn.closed
    assert isinstance(writer.raised(), ConnectionClosed)
