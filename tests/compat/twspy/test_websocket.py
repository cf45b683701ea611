"""twspy's websocket: accept() and connect() over loopback, frames both ways, the server-side options, TLS, hooks."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ws4web.compat.twspy as twspy
from ws4web import InvalidStatus
from ws4web.frames import Opcode

from ...conftest import CA_FILE, SERVER_CERT, SERVER_KEY

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 10.0


class Listening:
    """A listening twspy websocket; ``accept_in_thread()`` accepts one client in a thread."""

    def __init__(self, **options: Any) -> None:
        self.sock = twspy.websocket(**options)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[Any] = []
        self.thread: threading.Thread | None = None

    def accept_in_thread(self, then: Callable[[Any], None] = lambda client: None) -> None:
        def run() -> None:
            try:
                client = self.sock.accept()
                self.accepted.append(client)
                then(client)
            except BaseException as exc:
                self.accepted.append(exc)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def result(self) -> Any:
        assert self.thread is not None
        self.thread.join(TIMEOUT)
        return self.accepted[0]

    def close(self) -> None:
        for item in self.accepted:
            if isinstance(item, twspy.websocket):
                item.close()
        self.sock.close()


@pytest.fixture
def listening() -> Iterator[Callable[..., Listening]]:
    made: list[Listening] = []

    def make(**options: Any) -> Listening:
        made.append(Listening(**options))
        return made[-1]

    yield make
    for item in made:
        item.close()


def test_frames_both_ways(listening: Callable[..., Listening]) -> None:
    server = listening(protocols=["chat"])
    server.accept_in_thread(lambda client: client.send(twspy.Frame(twspy.OPCODE_TEXT, "to the client")))
    client = twspy.websocket(protocols=["other", "chat"], location="/room?x=1", origin="http://site")
    client.connect(("127.0.0.1", server.port))
    try:
        accepted = server.result()
        peer, address = accepted  # unpacks as socket.accept()'s result
        assert peer is accepted and address == client.getsockname()
        frame = client.recv()
        assert isinstance(frame, twspy.Frame) and (frame.opcode, frame.payload) == (Opcode.TEXT, b"to the client")
        client.send(*twspy.Frame(twspy.OPCODE_BINARY, b"abcdef").fragment(2))
        assert [(f.opcode, f.payload, f.final) for f in accepted.recvn(3)] == [
            (Opcode.BINARY, b"ab", False),
            (Opcode.CONTINUATION, b"cd", False),
            (Opcode.CONTINUATION, b"ef", True),
        ]
        request = accepted.endpoint.request
        assert request.path == "/room?x=1" and request.headers.get("Origin") == "http://site"
        assert accepted.endpoint.subprotocol == client.endpoint.subprotocol == "chat"
        # A ping is answered by ws4web: recv() hands over the ping, the pong is already on its way.
        client.send(twspy.ControlFrame(twspy.OPCODE_PING, b"are you there"))
        ping = accepted.recv()
        assert isinstance(ping, twspy.ControlFrame) and ping.opcode == Opcode.PING
        pong = client.recv()
        assert (pong.opcode, pong.payload) == (Opcode.PONG, b"are you there")
    finally:
        client.close()


@pytest.mark.parametrize(
    ("server_options", "client_options", "status"),
    [
        ({"locations": ["/chat"]}, {"location": "/other"}, 404),
        ({"trusted_origins": ["https://good.example"]}, {"origin": "https://evil.example"}, 403),
        ({"auth": ("ann", "secret")}, {}, 401),
        ({"auth": ("ann", "secret")}, {"auth": ("ann", "wrong")}, 401),
    ],
)
def test_server_options_refuse(
    listening: Callable[..., Listening], server_options: dict[str, Any], client_options: dict[str, Any], status: int
) -> None:
    server = listening(**server_options)
    server.accept_in_thread()
    client = twspy.websocket(**client_options)
    with pytest.raises(twspy.HandshakeError) as refused:
        client.connect(("127.0.0.1", server.port))
    client.sock.close()
    assert isinstance(refused.value, InvalidStatus) and refused.value.status == status
    assert isinstance(server.result(), twspy.HandshakeError)


@pytest.mark.parametrize(
    ("server_options", "client_options"),
    [
        ({"locations": ["/chat"]}, {"location": "/chat/"}),
        ({"trusted_origins": ["https://good.example"]}, {"origin": "https://good.example"}),
        ({"auth": ("ann", "secret")}, {"auth": ("ann", "secret")}),
    ],
)
def test_server_options_accept(
    listening: Callable[..., Listening], server_options: dict[str, Any], client_options: dict[str, Any]
) -> None:
    server = listening(**server_options)
    server.accept_in_thread()
    client = twspy.websocket(**client_options)
    client.connect(("127.0.0.1", server.port))
    try:
        assert isinstance(server.result(), twspy.websocket)
    finally:
        client.close()


def test_tls(listening: Callable[..., Listening]) -> None:
    server = listening()
    server.sock.enable_ssl(server_side=True, certfile=SERVER_CERT, keyfile=SERVER_KEY)
    server.accept_in_thread(lambda client: client.send(twspy.Frame(twspy.OPCODE_TEXT, "secret")))
    untrusting = twspy.websocket()
    untrusting.enable_ssl()
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.connect(("127.0.0.1", server.port))  # the test CA is not trusted by default
    untrusting.sock.close()
    assert isinstance(server.result(), (ssl.SSLError, OSError))
    server.accepted.clear()
    server.accept_in_thread(lambda client: client.send(twspy.Frame(twspy.OPCODE_TEXT, "secret")))
    client = twspy.websocket()
    client.enable_ssl(ca_certs=CA_FILE)
    client.connect(("127.0.0.1", server.port))
    try:
        assert client.secure and isinstance(client.sock, ssl.SSLSocket)
        assert client.recv().payload == b"secret"
    finally:
        client.close()


def test_hooks(listening: Callable[..., Listening]) -> None:
    server = listening()
    server.accept_in_thread()
    client = twspy.websocket()
    client.connect(("127.0.0.1", server.port))
    try:
        accepted = server.result()
        # twspy's docstring example: send and receive plain data, framed by the hooks.
        client.add_hook(lambda data: twspy.Frame(twspy.OPCODE_TEXT, data), lambda frame: frame.payload)
        client.add_hook(str.upper, None, prepend=True)
        accepted.add_hook(None, lambda frame: frame.payload)
        client.send("shout")
        assert accepted.recv() == b"SHOUT"
        accepted.send(twspy.Frame(twspy.OPCODE_TEXT, "back"))
        assert client.recv() == b"back"
        with pytest.raises(TypeError, match="takes frames"):
            accepted.send("not a frame")
    finally:
        client.close()


def test_recv_after_close_is_socket_closed(listening: Callable[..., Listening]) -> None:
    server = listening()
    server.accept_in_thread()
    client = twspy.websocket()
    client.connect(("127.0.0.1", server.port))
    accepted = server.result()
    assert client.endpoint is not None
    # close() waits for the answer, which the server sends once it reads the close frame.
    closing = threading.Thread(target=client.endpoint.close, args=(1000, "done"))
    closing.start()
    close = accepted.recv()
    assert isinstance(close, twspy.ControlFrame) and close.unpack_close() == (1000, "done")
    with pytest.raises(twspy.SocketClosed) as closed:
        accepted.recv()
    assert (closed.value.code, closed.value.reason, closed.value.message) == (1000, "done", "[1000] done")
    closing.join(TIMEOUT)
    assert client.endpoint.close_code == 1000
    client.close()


def test_not_connected() -> None:
    sock = twspy.websocket(sfamily=socket.AF_INET)
    try:
        with pytest.raises(OSError, match="not connected"):
            sock.recv()
        with pytest.raises(AttributeError):
            sock.connectx  # noqa: B018
        with pytest.raises(TypeError, match="extension factories"):
            twspy.websocket(extensions=["deflate-frame"])  # type: ignore[list-item]
    finally:
        sock.close()
