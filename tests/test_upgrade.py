"""Blocking opening handshakes (ws4web/upgrade.py) over socketpairs: both sides, leftovers, refusals, slowloris."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading

import pytest

from ws4web import CLIENT, WebSocket, accept_socket, connect_socket
from ws4web.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, NegotiationError
from ws4web.frames import Opcode
from ws4web.http11 import Headers, Request, Response
from ws4web.messages import BinaryMessage, TextMessage
from ws4web.upgrade import client_handshake, server_handshake

from .conftest import TIMEOUT, RawPeer, Worker, encode_frame

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


def expected_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def request_bytes(key: str | None = None, path: str = "/", extra: str = "") -> bytes:
    key = key or base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def read_head(sock: socket.socket, timeout: float = TIMEOUT) -> tuple[bytes, bytes]:
    """Read an HTTP head; return (head, whatever came after it)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"EOF within the HTTP head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


# -- both sides ------------------------------------------------------------------------------


def test_accept_and_connect_over_a_socketpair(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    client_side = Worker(connect_socket, b, "localhost", "/chat?room=7", subprotocols=["v2", "v1"])
    server: WebSocket = accept_socket(a, subprotocols=["v1", "v2"], close_timeout=2.0)
    client = client_side.join()
    assert isinstance(server, WebSocket)
    assert server.request is not None
    assert server.request.path == "/chat?room=7"
    assert server.request.headers.get("Host") == "localhost"
    assert server.subprotocol == "v2"  # the client's preference wins
    assert client.subprotocol == "v2"
    client.send("ping?")
    assert server.recv(TIMEOUT) == TextMessage("ping?")
    server.send(b"pong!")
    assert client.recv(TIMEOUT) == BinaryMessage(b"pong!")
    reader = Worker(lambda: list(server))
    client.close()
    assert reader.join() == []
    assert server.close_code == 1000


def test_accept_socket_builds_the_handler_class(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    class Mine(WebSocket):
        pass

    a, b = sock_pair
    client_side = Worker(connect_socket, b, "localhost", "/", Mine)
    server = accept_socket(a, Mine, max_message_size=10, close_timeout=2.0)
    client = client_side.join()
    assert type(server) is Mine
    assert type(client) is Mine
    assert server.connection.protocol.max_message_size == 10
    client.terminate()
    server.terminate()


def test_frames_in_the_same_packet_as_the_request(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    frames = encode_frame(Opcode.TEXT, b"first") + encode_frame(Opcode.PING, b"hi") + encode_frame(Opcode.BINARY, b"2")
    b.sendall(request_bytes() + frames)  # one write: the server's first recv() gets it all
    ws: WebSocket = accept_socket(a, close_timeout=1.0)
    peer = RawPeer(b)
    head, rest = read_head(b)
    assert head.startswith(b"HTTP/1.1 101 ")
    peer.buffer += rest
    pong = peer.read_frame()  # answered at once, from the leftover bytes
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"hi")
    assert ws.recv(TIMEOUT) == TextMessage("first")
    assert ws.recv(TIMEOUT) == BinaryMessage(b"2")
    ws.terminate()


def test_server_handshake_result_keeps_leftover_bytes(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    key = base64.b64encode(b"0123456789abcdef").decode()
    leftover = encode_frame(Opcode.TEXT, b"x" * 300)
    b.sendall(request_bytes(key, "/p") + leftover)
    result = server_handshake(a, handshake_timeout=TIMEOUT)
    assert result.data == leftover
    assert result.request.path == "/p"
    assert result.response.status == 101
    assert result.response.headers.get("Sec-WebSocket-Accept") == expected_accept(key)
    head, _ = read_head(b)
    assert header(head, "Sec-WebSocket-Accept") == expected_accept(key)


def test_frames_in_the_same_packet_as_the_response(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    # The server side is the test: it answers with 101 and three frames in one write.
    frames = (
        encode_frame(Opcode.TEXT, b"welcome", masked=False)
        + encode_frame(Opcode.PING, b"early", masked=False)
        + encode_frame(Opcode.BINARY, b"\x00" * 70_000, masked=False)
    )

    def raw_server() -> None:
        head, rest = read_head(a)
        assert rest == b""
        key = header(head, "Sec-WebSocket-Key")
        assert key is not None
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {expected_accept(key)}\r\n\r\n"
        ).encode()
        a.sendall(response + frames)

    server = Worker(raw_server)
    ws: WebSocket = connect_socket(b, "localhost", "/", close_timeout=1.0)
    server.join()
    assert ws.recv(TIMEOUT) == TextMessage("welcome")
    assert ws.recv(TIMEOUT) == BinaryMessage(b"\x00" * 70_000)
    pong = RawPeer(a, masked=False).read_frame()
    assert (pong.opcode, pong.payload, pong.masked) == (Opcode.PONG, b"early", True)
    ws.terminate()


def test_client_handshake_returns_the_leftover(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    leftover = encode_frame(Opcode.TEXT, b"hello", masked=False)

    def raw_server() -> None:
        head, _ = read_head(a)
        key = header(head, "Sec-WebSocket-Key")
        assert key is not None
        assert header(head, "X-Extra") == "1"
        a.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n"
            + f"Sec-WebSocket-Accept: {expected_accept(key)}\r\n\r\n".encode()
            + leftover
        )

    server = Worker(raw_server)
    response, subprotocol, extensions, data = client_handshake(b, "localhost", "/", headers=[("X-Extra", "1")])
    server.join()
    assert response.status == 101
    assert subprotocol is None
    assert extensions == []
    assert data == leftover


# -- refusals ------------------------------------------------------------------------------------


def test_process_request_response_is_sent_and_raises(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    body = b"who are you?"
    seen: list[Request] = []

    def process_request(request: Request) -> Response | None:
        seen.append(request)
        headers = Headers([("WWW-Authenticate", 'Basic realm="test"'), ("Content-Length", str(len(body)))])
        return Response(401, "Unauthorized", headers, body)

    client_side = Worker(connect_socket, b, "localhost", "/secret")
    with pytest.raises(InvalidHandshake) as exc:
        accept_socket(a, process_request=process_request)
    assert exc.value.status == 401
    assert [r.path for r in seen] == ["/secret"]
    refused = client_side.raised()
    assert isinstance(refused, InvalidStatus)
    assert refused.status == 401
    assert refused.body == body
    assert ("WWW-Authenticate", 'Basic realm="test"') in refused.headers


def test_process_request_none_lets_the_upgrade_through(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    client_side = Worker(connect_socket, b, "localhost", "/open", headers=[("X-Token", "t0k")])
    tokens: list[str | None] = []
    server: WebSocket = accept_socket(
        a, process_request=lambda r: tokens.append(r.headers.get("X-Token")), close_timeout=1.0
    )
    client = client_side.join()
    assert tokens == ["t0k"]
    client.terminate()
    server.terminate()


@pytest.mark.parametrize(
    ("request_text", "status"),
    [
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426),
        ("POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 405),
        (  # no Sec-WebSocket-Key
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
        ("NOT HTTP AT ALL\r\n\r\n", 400),
    ],
)
def test_bad_requests_are_refused_with_their_status(
    sock_pair: tuple[socket.socket, socket.socket], request_text: str, status: int
) -> None:
    a, b = sock_pair
    b.sendall(request_text.encode())
    with pytest.raises(InvalidHandshake) as exc:
        accept_socket(a)
    assert exc.value.status == status
    head, _ = read_head(b)
    assert head.startswith(f"HTTP/1.1 {status} ".encode())


def test_wrong_version_is_426_naming_13(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    b.sendall(request_bytes().replace(b"Version: 13", b"Version: 8"))
    with pytest.raises(InvalidHandshake) as exc:
        accept_socket(a)
    assert exc.value.status == 426
    head, _ = read_head(b)
    assert head.startswith(b"HTTP/1.1 426 ")
    assert header(head, "Sec-WebSocket-Version") == "13"


def test_client_refuses_an_unoffered_subprotocol(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair

    def raw_server() -> None:
        head, _ = read_head(a)
        key = header(head, "Sec-WebSocket-Key")
        assert key is not None
        a.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {expected_accept(key)}\r\nSec-WebSocket-Protocol: evil\r\n\r\n".encode()
        )

    server = Worker(raw_server)
    with pytest.raises(NegotiationError):
        connect_socket(b, "localhost", "/", subprotocols=["good"])
    server.join()


def test_client_refuses_a_wrong_accept_key(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair

    def raw_server() -> None:
        read_head(a)
        a.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {expected_accept('not-the-key')}\r\n\r\n".encode()
        )

    server = Worker(raw_server)
    with pytest.raises(InvalidHandshake):
        connect_socket(b, "localhost", "/")
    server.join()


# -- slow peers ---------------------------------------------------------------------------------------


def trickle(sock: socket.socket, data: bytes, delay: float, stop: threading.Event) -> int:
    """Send ``data`` a byte every ``delay`` seconds until stopped or refused; return bytes sent."""
    sent = 0
    for i in range(len(data)):
        if stop.wait(delay):
            break
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            break
        sent += 1
    return sent


def test_slowloris_request_is_dropped_after_the_timeout(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    stop = threading.Event()
    slow = Worker(trickle, b, request_bytes(), 0.2, stop)
    try:
        with pytest.raises(InvalidMessage) as exc:
            accept_socket(a, handshake_timeout=1.0)
    finally:
        stop.set()
    sent = slow.join()
    assert exc.value.status == 408
    # About 5 of the request's bytes arrived: the deadline covers the whole request,
    # it is not renewed by each byte.
    assert sent < len(request_bytes()) // 2
    head, _ = read_head(b)
    assert head.startswith(b"HTTP/1.1 408 ")


def test_client_gives_up_on_a_silent_server(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    with pytest.raises(InvalidMessage) as exc:
        connect_socket(b, "localhost", "/", timeout=0.3)
    assert exc.value.status == 408
    head, _ = read_head(a)  # the request did go out
    assert head.startswith(b"GET / HTTP/1.1")


def test_eof_during_the_request(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    b.sendall(request_bytes()[:30])
    b.shutdown(socket.SHUT_WR)
    with pytest.raises(InvalidMessage):
        accept_socket(a, handshake_timeout=TIMEOUT)


def test_client_side_websocket_is_a_client(sock_pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = sock_pair
    client_side = Worker(connect_socket, b, "localhost")
    server: WebSocket = accept_socket(a, close_timeout=1.0)
    client = client_side.join()
    assert client.connection.protocol.side is CLIENT
    client.send(b"masked")
    assert server.recv(TIMEOUT) == BinaryMessage(b"masked")  # a server refuses unmasked frames (§5.1)
    client.terminate()
    server.terminate()
