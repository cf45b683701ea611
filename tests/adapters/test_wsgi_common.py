"""The shared WSGI adapter layer: environ -> Request, refusals, the dispatcher, leftover bytes.

The end-to-end scenarios every WSGI server must pass (echo, refusals, early
frames, abrupt disconnects, failing handlers, shutdown) are defined here as
``check_*`` functions over a :class:`Harness`; test_gevent.py and
test_wsgiref.py run them against the real servers.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from ws4web import CLIENT, WebSocket, connect
from ws4web.adapters import _wsgi
from ws4web.adapters._wsgi import (
    PathDispatcher,
    Takeover,
    WebSocketWSGIApplication,
    buffered_bytes,
    register_server,
    request_from_environ,
)
from ws4web.concurrency import THREADING
from ws4web.exceptions import ConnectionClosed, InvalidStatus
from ws4web.frames import Opcode
from ws4web.handshake import accept_key, check_request, check_response, generate_key
from ws4web.http11 import Headers, Request, Response, parse_response
from ws4web.messages import Message
from ws4web.protocol import Protocol as WSProtocol
from ws4web.streams import StreamReader

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's sample key


def upgrade_environ(**overrides: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/chat",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "example.com",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "wsgi.input": None,
    }
    environ.update(overrides)
    return environ


class StartResponse:
    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        self.status = status
        self.headers = headers
        return lambda data: None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


# -- request_from_environ ---------------------------------------------------------------


def test_request_from_environ_restores_method_path_version_and_headers() -> None:
    environ = upgrade_environ(
        SCRIPT_NAME="/app",
        PATH_INFO="/room one/ü",  # servers hand PATH_INFO over decoded, as latin-1
        QUERY_STRING="a=1&b=%20",
        HTTP_SEC_WEBSOCKET_PROTOCOL="chat, superchat",
        HTTP_X_FORWARDED_FOR="10.0.0.1",
        CONTENT_TYPE="text/plain",
        CONTENT_LENGTH="0",
    )
    environ["PATH_INFO"] = "/room one/\u00c3\u00bc"  # "/room one/ü" in UTF-8, decoded as latin-1 (PEP 3333)
    request = request_from_environ(environ)
    assert request.method == "GET"
    assert request.version == "HTTP/1.1"
    assert request.path == "/app/room%20one/%C3%BC?a=1&b=%20"
    assert request.headers.get("Sec-WebSocket-Key") == KEY
    names = {name for name, _ in request.headers}
    assert {"Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"} <= names
    assert {"Sec-WebSocket-Protocol", "X-Forwarded-For", "Content-Type", "Content-Length"} <= names
    assert request.headers.tokens("Sec-WebSocket-Protocol") == ["chat", "superchat"]
    assert not any(name.startswith("wsgi") for name in names)
    # The rebuilt request passes the same rules as one read off the wire.
    assert check_request(request) == KEY


def test_request_from_environ_defaults() -> None:
    request = request_from_environ({"REQUEST_METHOD": "POST"})
    assert (request.method, request.path, request.version) == ("POST", "/", "HTTP/1.0")
    assert len(request.headers) == 0


# -- the application without a server ---------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "status", "header"),
    [
        ({"HTTP_UPGRADE": None, "HTTP_CONNECTION": "keep-alive"}, "426", None),
        ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, "426", ("Sec-WebSocket-Version", "13")),
        ({"REQUEST_METHOD": "POST"}, "405", ("Allow", "GET")),
        ({"HTTP_SEC_WEBSOCKET_KEY": "short"}, "400", None),
        ({"SERVER_PROTOCOL": "HTTP/1.0"}, "400", None),
    ],
)
def test_refusals_are_plain_wsgi_responses(
    overrides: dict[str, Any], status: str, header: tuple[str, str] | None
) -> None:
    environ = upgrade_environ(**overrides)
    environ = {k: v for k, v in environ.items() if v is not None}
    start = StartResponse()
    body = b"".join(WebSocketWSGIApplication()(environ, start))
    assert start.status is not None and start.status.startswith(status + " ")
    if header is not None:
        assert start.header(header[0]) == header[1]
    assert start.header("Content-Length") == str(len(body))
    assert body.startswith(status.encode())
    # No server registered for this environ: PEP 3333 forbids hop-by-hop headers.
    assert start.header("Connection") is None and start.header("Upgrade") is None


def test_process_request_answers_instead_of_upgrading() -> None:
    seen: list[str] = []

    def process_request(request: Request) -> Response | None:
        seen.append(request.path)
        if request.path == "/health":
            return Response(200, "OK", Headers([("Content-Type", "text/plain")]), b"healthy\n")
        return None

    app = WebSocketWSGIApplication(process_request=process_request)
    start = StartResponse()
    body = b"".join(app(upgrade_environ(PATH_INFO="/health"), start))
    assert start.status == "200 OK" and body == b"healthy\n"
    assert start.header("Content-Length") == "8"
    start = StartResponse()
    b"".join(app(upgrade_environ(PATH_INFO="/ws"), start))  # None: the upgrade goes on (501 here)
    assert start.status is not None and start.status.startswith("501 ")
    assert seen == ["/health", "/ws"]


def test_valid_upgrade_without_a_capable_server_answers_501() -> None:
    start = StartResponse()
    body = b"".join(WebSocketWSGIApplication()(upgrade_environ(), start))
    assert start.status is not None and start.status.startswith("501 ")
    assert b"cannot hand its socket over" in body


def test_takeover_runs_the_handler_with_leftover_bytes_and_options() -> None:
    """A registered server hook: the 101 goes out raw, early bytes reach the handler."""
    server_sock, client_sock = socket.socketpair()
    seen: dict[str, Any] = {}
    detached: list[bool] = []

    class Record(WebSocket):
        def opened(self) -> None:
            seen["path"] = self.request.path if self.request else None
            seen["max"] = self.connection.protocol.max_message_size
            seen["environ"] = self.environ

        def received_message(self, message: Message) -> None:
            seen["message"] = message.data
            self.close()

    # A client frame, masked, that "the server's reader" already pulled in.
    client = WSProtocol(CLIENT)
    client.send_text(b"early")
    early = b"".join(client.data_to_send())

    def takeover(environ: Any) -> Takeover:
        return Takeover(server_sock, early, server_sock.sendall, lambda: detached.append(True), THREADING)

    register_server("test.fake.server", takeover)
    try:
        environ = upgrade_environ(**{"test.fake.server": True, "PATH_INFO": "/x", "QUERY_STRING": "q=1"})
        app = WebSocketWSGIApplication(Record, max_message_size=1234, close_timeout=2.0)
        start = StartResponse()

        def answer_close() -> bytes:
            client_sock.settimeout(TIMEOUT)
            received = b""
            while b"\r\n\r\n" not in received:
                received += client_sock.recv(4096)
            head, _, rest = received.partition(b"\r\n\r\n")
            client.receive_data(rest)
            while not any(f.opcode is Opcode.CLOSE for f in client.events_received()):
                chunk = client_sock.recv(4096)
                assert chunk
                client.receive_data(chunk)
            for data in client.data_to_send():
                if data:
                    client_sock.sendall(data)
            client_sock.close()
            return head

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            head = pool.submit(answer_close)
            result = app(environ, start)
            head_bytes = head.result(TIMEOUT)
        assert list(result) == []
        assert start.status is None  # start_response never called: the server must send nothing
        assert detached == [True]
        assert head_bytes.startswith(b"HTTP/1.1 101 ")
        assert f"Sec-WebSocket-Accept: {accept_key(KEY)}".encode() in head_bytes
        assert seen == {"path": "/x?q=1", "max": 1234, "environ": environ, "message": b"early"}
        assert server_sock.fileno() == -1  # Takeover.close() released the socket
        assert app.websockets == set()
    finally:
        _wsgi._HOOKS[:] = [h for h in _wsgi._HOOKS if h.environ_key != "test.fake.server"]
        server_sock.close()
        client_sock.close()


# -- buffered_bytes -------------------------------------------------------------------------


def test_buffered_bytes_returns_what_the_reader_took_past_the_headers() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x81\x85frame")
        rfile = a.makefile("rb", -1)
        with rfile:
            while rfile.readline() not in (b"\r\n", b""):
                pass
            assert buffered_bytes(rfile, a) == b"\x81\x85frame"
            assert a.gettimeout() is None
            # Nothing buffered and nothing sent: it must not block.
            rfile2 = a.makefile("rb", -1)
            with rfile2:
                assert buffered_bytes(rfile2, a) == b""
            b.sendall(b"later")
            a.settimeout(TIMEOUT)
            assert a.recv(100) == b"later"  # the socket stays intact for the WebSocket


def test_buffered_bytes_without_peek() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert buffered_bytes(object(), a) == b""


# -- PathDispatcher ---------------------------------------------------------------------------


def test_path_dispatcher_mounts_by_prefix() -> None:
    calls: list[tuple[str, str, str]] = []

    def make(name: str) -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            calls.append((name, environ["SCRIPT_NAME"], environ["PATH_INFO"]))
            start_response("200 OK", [])
            return [name.encode()]

        return app

    dispatcher = PathDispatcher({"/ws": make("ws"), "/ws/admin/": make("admin")}, default=make("site"))
    for path in ("/ws", "/ws/room", "/ws/admin/x", "/wsx", "/"):
        dispatcher({"PATH_INFO": path, "SCRIPT_NAME": ""}, StartResponse())
    assert calls == [
        ("ws", "/ws", ""),
        ("ws", "/ws", "/room"),
        ("admin", "/ws/admin", "/x"),
        ("site", "", "/wsx"),
        ("site", "", "/"),
    ]
    start = StartResponse()
    assert b"".join(PathDispatcher({})({"PATH_INFO": "/"}, start)) == b"404 Not Found\n"
    assert start.status == "404 Not Found"


def test_mounted_websocket_sees_the_full_path() -> None:
    environ = upgrade_environ(PATH_INFO="/ws/room", SERVER_PROTOCOL="HTTP/1.0")
    start = StartResponse()
    PathDispatcher({"/ws": WebSocketWSGIApplication()})(environ, start)
    assert start.status is not None and start.status.startswith("400")  # HTTP/1.0 cannot upgrade
    mounted = dict(environ, SCRIPT_NAME="/ws", PATH_INFO="/room")
    assert request_from_environ(mounted).path == "/ws/room"


# =============================================================================================
# Scenarios shared by the server tests (test_gevent.py, test_wsgiref.py)
# =============================================================================================


class Harness(Protocol):
    """A running WSGI server on 127.0.0.1 with a WebSocketWSGIApplication."""

    port: int
    app: WebSocketWSGIApplication
    events: queue.Queue[tuple[str, Any]]

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run ``fn`` where the server runs (its hub for gevent) and return its future."""
        ...


def make_recorder(events: queue.Queue[tuple[str, Any]]) -> type[WebSocket]:
    """An echo handler that reports opened/closed to ``events``; "boom" raises, "whoami" describes."""

    class Recorder(WebSocket):
        def opened(self) -> None:
            events.put(("opened", self.request.path if self.request else None))

        def received_message(self, message: Message) -> None:
            if message.data == b"boom":
                raise RuntimeError("handler failure on purpose")
            if message.data == b"whoami":
                environ = self.environ or {}
                self.send(
                    json.dumps(
                        {
                            "path": self.request.path if self.request else None,
                            "subprotocol": self.subprotocol,
                            "script_name": environ.get("SCRIPT_NAME"),
                            "path_info": environ.get("PATH_INFO"),
                            "driver": type(self.connection).__name__,
                            "primitives": type(getattr(self.connection, "primitives", None)).__name__,
                        }
                    )
                )
                return
            self.send(message)

        def closed(self, code: int, reason: str | None = None) -> None:
            events.put(("closed", code))

    return Recorder


def next_event(harness: Harness, kind: str) -> Any:
    while True:
        name, value = harness.events.get(timeout=TIMEOUT)
        if name == kind:
            return value


def url(harness: Harness, path: str = "/") -> str:
    return f"ws://127.0.0.1:{harness.port}{path}"


def check_echo(harness: Harness) -> dict[str, Any]:
    """Text and binary round trips, a big message, the subprotocol; returns the handler's self-description."""
    with connect(url(harness, "/room/1?user=ann"), protocols=["chat"], timeout=TIMEOUT) as ws:
        assert ws.subprotocol == "chat"
        ws.send("héllo")
        assert ws.recv(TIMEOUT).data == "héllo".encode()
        payload = os.urandom(300_000)
        ws.send(payload)
        reply = ws.recv(TIMEOUT)
        assert reply.opcode is Opcode.BINARY and reply.data == payload
        ws.send("whoami")
        info: dict[str, Any] = json.loads(ws.recv(TIMEOUT).data)
    assert info["path"] == "/room/1?user=ann"
    assert info["subprotocol"] == "chat"
    assert next_event(harness, "closed") == 1000
    return info


def raw_request(harness: Harness, request: bytes, *, trailing: bytes = b"") -> tuple[Response, bytes, socket.socket]:
    """Send ``request`` (+ ``trailing``) in one write; return the parsed response, bytes after it, the socket."""
    sock = socket.create_connection(("127.0.0.1", harness.port), timeout=TIMEOUT)
    try:
        sock.sendall(request + trailing)
        reader = StreamReader()
        parser = parse_response(reader)
        next(parser)
        while True:
            data = sock.recv(65536)
            if data:
                reader.feed_data(data)
            else:
                reader.feed_eof()
            try:
                next(parser)
            except StopIteration as done:
                return done.value, bytes(reader.buffer), sock
    except BaseException:
        sock.close()
        raise


def upgrade_bytes(harness: Harness, key: str, *, method: str = "GET", version: str = "13", path: str = "/") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{harness.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {version}",
    ]
    if method != "GET":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def refused(harness: Harness, request: bytes, key: str) -> InvalidStatus:
    response, _, sock = raw_request(harness, request)
    sock.close()
    with pytest.raises(InvalidStatus) as info:
        check_response(response, key)
    return info.value


def check_refusals(harness: Harness) -> dict[str, InvalidStatus]:
    """Plain GET -> 426, bad version -> 426 naming 13, POST -> 405; the server still serves after."""
    key = generate_key()
    plain = refused(harness, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{harness.port}\r\n\r\n".encode(), key)
    assert plain.status == 426
    version = refused(harness, upgrade_bytes(harness, key, version="8"), key)
    assert version.status == 426
    assert ("Sec-WebSocket-Version", "13") in version.headers
    post = refused(harness, upgrade_bytes(harness, key, method="POST"), key)
    assert post.status == 405
    assert ("Allow", "GET") in post.headers
    assert b"405" in post.body
    with connect(url(harness), timeout=TIMEOUT) as ws:
        ws.send("still here")
        assert ws.recv(TIMEOUT).data == b"still here"
    return {"plain": plain, "version": version, "post": post}


def _client_frames(*payloads: bytes) -> tuple[WSProtocol, bytes]:
    client = WSProtocol(CLIENT, max_message_size=None)
    for payload in payloads:
        client.send_text(payload)
    return client, b"".join(client.data_to_send())


def check_early_frames(harness: Harness) -> None:
    """Frames sent in the same packet as the handshake reach the handler, in order, none lost."""
    big = b"B" * 50_000  # larger than the server's read buffer: part buffered, part still in the socket
    client, frames = _client_frames(b"first", big, b"third")
    key = generate_key()
    response, rest, sock = raw_request(harness, upgrade_bytes(harness, key), trailing=frames)
    with sock:
        check_response(response, key)
        assert response.status == 101
        client.receive_data(rest)
        echoed: list[bytes] = []
        while len(echoed) < 3:
            echoed += [f.data for f in client.events_received() if f.opcode is Opcode.TEXT]
            if len(echoed) < 3:
                data = sock.recv(65536)
                assert data, f"connection closed after {len(echoed)} echoes"
                client.receive_data(data)
        assert echoed == [b"first", big, b"third"]
        client.send_close(1000)
        sock.sendall(b"".join(d for d in client.data_to_send() if d))
        while sock.recv(65536):  # the server closes TCP after its close frame
            pass
    assert next_event(harness, "closed") == 1000


def check_abrupt_disconnect(harness: Harness) -> None:
    """A client vanishing without a close frame: its handler sees 1006, others carry on."""
    with connect(url(harness), timeout=TIMEOUT) as other:
        next_event(harness, "opened")
        gone = connect(url(harness), timeout=TIMEOUT)
        next_event(harness, "opened")
        sock = gone.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, no FIN
        sock.close()
        assert next_event(harness, "closed") == 1006
        other.send("alive")
        assert other.recv(TIMEOUT).data == b"alive"
        with connect(url(harness), timeout=TIMEOUT) as late:
            late.send("new")
            assert late.recv(TIMEOUT).data == b"new"


def check_handler_failure(harness: Harness) -> None:
    """A handler that raises closes its own connection with 1011; another is unaffected."""
    with connect(url(harness), timeout=TIMEOUT) as good, connect(url(harness), timeout=TIMEOUT) as bad:
        bad.send("boom")
        with pytest.raises(ConnectionClosed) as info:
            bad.recv(TIMEOUT)
        assert info.value.code == 1011
        good.send("fine")
        assert good.recv(TIMEOUT).data == b"fine"


def check_shutdown(harness: Harness, count: int = 3) -> None:
    """app.shutdown() sends 1001 Going Away to every open WebSocket and returns once they closed."""
    clients = [connect(url(harness, f"/c{i}"), timeout=TIMEOUT) for i in range(count)]
    try:
        for _ in clients:
            next_event(harness, "opened")
        done = harness.submit(lambda: harness.app.shutdown(timeout=TIMEOUT))
        for ws in clients:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(TIMEOUT)
            assert info.value.code == 1001
        done.result(TIMEOUT)
        assert sorted(next_event(harness, "closed") for _ in clients) == [1001] * count
        assert harness.app.websockets == set()
    finally:
        for ws in clients:
            ws.terminate()
