"""WebSocketBaseClient: ws4py's constructor and URLs on ws4web's handshake (TCP, TLS, Unix sockets), on loopback."""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from ws4web import InvalidStatus, InvalidURI, WebSocket, WebSocketServer
from ws4web.compat.ws4py.client import WebSocketBaseClient
from ws4web.compat.ws4py.exc import HandshakeError
from ws4web.extensions.permessage_deflate import ClientPerMessageDeflateFactory, ServerPerMessageDeflateFactory
from ws4web.messages import Message

from ....conftest import CA_FILE

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0


class Mirror(WebSocket):
    """Answers each message with what the handshake carried."""

    def received_message(self, message: Message) -> None:
        assert self.request is not None
        headers = self.request.headers
        self.send(
            json.dumps(
                {
                    "path": self.request.path,
                    "origin": headers.get("Origin"),
                    "x-test": headers.get("X-Test"),
                    "host": headers.get("Host"),
                    "subprotocol": self.subprotocol,
                    "extensions": [type(e).__name__ for e in self.extensions],
                    "message": str(message),
                }
            )
        )


@pytest.fixture
def mirror() -> Iterator[WebSocketServer]:
    with WebSocketServer(
        Mirror,
        "127.0.0.1",
        0,
        subprotocols=["chat"],
        extensions=[ServerPerMessageDeflateFactory()],
        close_timeout=2.0,
    ) as server:
        server.start()
        yield server


def exchange(client: WebSocketBaseClient, text: str = "hi") -> dict[str, object]:
    client.connect()
    try:
        client.send(text)
        answer: dict[str, object] = json.loads(client.recv(TIMEOUT).data)
        return answer
    finally:
        client.close()


def test_ws4py_constructor_and_handshake(mirror: WebSocketServer) -> None:
    client = WebSocketBaseClient(
        f"ws://127.0.0.1:{mirror.port}/chat?room=1",
        ["http-only", "chat"],
        [ClientPerMessageDeflateFactory()],
        None,
        None,
        [("X-Test", "hello there")],
    )
    assert (client.scheme, client.host, client.port, client.resource) == (
        "ws",
        "127.0.0.1",
        mirror.port,
        "/chat?room=1",
    )
    assert client.bind_addr == ("127.0.0.1", mirror.port)
    answer = exchange(client)
    assert answer == {
        "path": "/chat?room=1",
        "origin": f"ws://127.0.0.1:{mirror.port}",  # ws4py sent an Origin built from the URL
        "x-test": "hello there",
        "host": f"127.0.0.1:{mirror.port}",
        "subprotocol": "chat",
        "extensions": ["PerMessageDeflate"],
        "message": "hi",
    }
    assert client.protocols == ["chat"] and client.subprotocol == "chat"


def test_http_urls_and_excluded_origin(mirror: WebSocketServer) -> None:
    answer = exchange(WebSocketBaseClient(f"http://127.0.0.1:{mirror.port}/x", exclude_headers=["Origin"]))
    assert answer["path"] == "/x" and answer["origin"] is None
    answer = exchange(WebSocketBaseClient(f"http://127.0.0.1:{mirror.port}/", headers={"Origin": "http://site"}))
    assert answer["origin"] == "http://site"


@pytest.fixture
def tls_mirror(server_ssl_context: ssl.SSLContext) -> Iterator[WebSocketServer]:
    with WebSocketServer(Mirror, "127.0.0.1", 0, ssl_context=server_ssl_context) as server:
        server.start()
        yield server


def test_tls_verifies_by_default(tls_mirror: WebSocketServer) -> None:
    url = f"wss://localhost:{tls_mirror.port}/"
    with pytest.raises(ssl.SSLCertVerificationError):
        WebSocketBaseClient(url).connect()  # the test CA is not trusted by default
    assert exchange(WebSocketBaseClient(url, ssl_options={"ca_certs": CA_FILE}))["message"] == "hi"
    https = f"https://localhost:{tls_mirror.port}/"
    assert exchange(WebSocketBaseClient(https, ssl_context=ssl.create_default_context(cafile=CA_FILE)))["path"] == "/"
    # ws4py's way to turn verification off still works, when asked for.
    assert exchange(WebSocketBaseClient(url, ssl_options={"cert_reqs": ssl.CERT_NONE}))["message"] == "hi"


def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    with WebSocketServer(Mirror, None, sock=listener) as server:
        server.start()
        client = WebSocketBaseClient(f"ws+unix://{path}")
        assert client.bind_addr == path and client.resource == "/"
        answer = exchange(client)
    assert answer["host"] == "localhost" and answer["origin"] == "ws+unix://localhost"
    os.unlink(path)


def test_refusal_is_a_handshake_error() -> None:
    with WebSocketServer(Mirror, "127.0.0.1", 0, origins=["https://good.example"]) as strict:
        strict.start()
        client = WebSocketBaseClient(f"ws://127.0.0.1:{strict.port}/")
        with pytest.raises(HandshakeError) as refused:
            client.connect()
        assert isinstance(refused.value, InvalidStatus) and refused.value.status == 403
        assert client.sock is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"url": "ftp://host/"}, InvalidURI, "not a ws:// or wss:// URL"),
        ({"url": "ws://user:secret@host/"}, InvalidURI, "credentials"),
        ({"url": "ws+unix://"}, InvalidURI, "no socket path"),
        ({"url": "wss://host/", "ssl_options": {"ssl_version": 2}}, TypeError, "ssl_version"),
        ({"url": "ws://host/", "ssl_context": ssl.create_default_context()}, TypeError, "for wss:// URLs"),
        ({"url": "ws://host/", "exclude_headers": ["Host"]}, ValueError, "RFC 6455"),
        ({"url": "ws://host/", "extensions": ["permessage-deflate"]}, TypeError, "extension factories"),
        ({"url": "ws://host/", "colour": "blue"}, TypeError, "unknown option: 'colour'"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        WebSocketBaseClient(**kwargs)  # type: ignore[arg-type]


def test_connect_refused_is_oserror() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        WebSocketBaseClient(f"ws://127.0.0.1:{port}/").connect()
