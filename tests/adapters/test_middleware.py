"""WebSocketMiddleware: pass-through of ordinary requests, and WebSockets on every server that hands its socket over.

Servers run for real on loopback: Werkzeug's development server, gunicorn's
sync / gthread / gevent workers (subprocesses importing ``gunicorn_app`` from
this module), gevent's pywsgi and wsgiref with ws4web's handlers, cheroot, and
the standard library's stock wsgiref server for the 501 path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
import werkzeug.serving

from ws4web import CLIENT, WebSocket, connect
from ws4web.adapters.middleware import WebSocketMiddleware, werkzeug_request_handler
from ws4web.exceptions import InvalidStatus
from ws4web.frames import Opcode
from ws4web.handshake import check_response, generate_key
from ws4web.http11 import Response, parse_response
from ws4web.messages import Message
from ws4web.protocol import Protocol as WSProtocol
from ws4web.streams import StreamReader

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[2]


class Echo(WebSocket):
    """Sends every message back; "path" asks for the request target the handler saw, "params" for its view_args."""

    def received_message(self, message: Message) -> None:
        if message.opcode is Opcode.TEXT and message.data == b"path":
            self.send(self.request.path if self.request is not None else "?")
            return
        if message.opcode is Opcode.TEXT and message.data == b"params":
            self.send(json.dumps(self.view_args))
            return
        self.send(message.data, binary=message.opcode is Opcode.BINARY)


def make_site() -> flask.Flask:
    site = flask.Flask("ws4web_middleware_test")

    @site.route("/")
    def home() -> str:
        return "flask home"

    @site.route("/stream")
    def stream() -> flask.Response:
        def chunks() -> Iterator[str]:
            for i in range(5):
                yield f"chunk {i}\n"

        return flask.Response(chunks(), mimetype="text/plain")

    @site.route("/echo", methods=["POST"])
    def echo() -> flask.Response:
        data = flask.request.get_data()
        return flask.Response(data[::-1], headers={"X-Length": str(len(data))}, mimetype="application/octet-stream")

    return site


def make_app() -> WebSocketMiddleware:
    return WebSocketMiddleware(make_site().wsgi_app, {"/ws": Echo, "/ws/{room}/{n:int}": Echo}, close_timeout=2.0)


#: What the gunicorn subprocesses serve.
gunicorn_app = make_app()


# -- raw HTTP helpers ---------------------------------------------------------------------------


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        chunks: list[bytes] = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def read_response(sock: socket.socket) -> tuple[Response, bytes]:
    """One response (body by Content-Length), and the bytes received after it."""
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
            return done.value, bytes(reader.buffer)


def upgrade_bytes(port: int, key: str, *, path: str = "/ws", version: str = "13") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


# -- what every capable server must do ------------------------------------------------------------


def check_echo(port: int) -> None:
    with connect(f"ws://127.0.0.1:{port}/ws/r%C3%A9/7?x=1", timeout=TIMEOUT) as ws:
        ws.send("héllo")
        assert ws.recv(TIMEOUT).data == "héllo".encode()
        payload = os.urandom(100_000)
        ws.send(payload)
        reply = ws.recv(TIMEOUT)
        assert reply.opcode is Opcode.BINARY and reply.data == payload
        ws.send("path")
        assert ws.recv(TIMEOUT).data == b"/ws/r%C3%A9/7?x=1"
        ws.send("params")  # the route's parameters, decoded and converted as under ASGI
        assert json.loads(ws.recv(TIMEOUT).data) == {"room": "ré", "n": 7}


def check_early_frames(port: int) -> None:
    """Frames sent in the handshake's packet are read from the server's buffer, not lost."""
    client = WSProtocol(CLIENT, max_message_size=None)
    for payload in (b"first", b"second"):
        client.send_text(payload)
    frames = b"".join(client.data_to_send())
    key = generate_key()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(upgrade_bytes(port, key) + frames)
        response, rest = read_response(sock)
        assert response.status == 101
        check_response(response, key)
        client.receive_data(rest)
        echoed: list[bytes] = []
        while len(echoed) < 2:
            echoed += [e.data for e in client.events_received() if e.opcode is Opcode.TEXT]
            if len(echoed) < 2:
                data = sock.recv(65536)
                assert data, f"connection closed after {len(echoed)} echoes"
                client.receive_data(data)
        assert echoed == [b"first", b"second"]
        client.send_close(1000)
        sock.sendall(b"".join(d for d in client.data_to_send() if d))
        tail = b""
        while data := sock.recv(65536):  # the server answers the close and closes TCP
            tail += data
    # Exactly one unmasked close frame (RFC 6455 §5.5.1), then EOF: the HTTP
    # server wrote nothing of its own after the upgrade.
    assert tail[:1] == b"\x88" and len(tail) == 2 + tail[1], tail


def check_refusal(port: int) -> None:
    """A bad handshake on a mounted path: ws4web's 426 with the version it speaks (RFC 6455 §4.4)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(upgrade_bytes(port, generate_key(), version="8"))
        response, _ = read_response(sock)
    assert response.status == 426
    assert response.headers.get("Sec-WebSocket-Version") == "13"


def check_passthrough(port: int) -> None:
    """Ordinary requests and upgrades elsewhere reach Flask on the same server."""
    raw = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") or raw.startswith(b"HTTP/1.0 200")
    assert raw.endswith(b"flask home")
    # Not mounted: Flask answers, 404.
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{port}/elsewhere", timeout=TIMEOUT)
    assert info.value.status == 404
    # Mounted but not an upgrade: Flask again.
    raw = raw_exchange(port, b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 404", raw)


def check_server(port: int) -> None:
    check_echo(port)
    check_early_frames(port)
    check_refusal(port)
    check_passthrough(port)
    check_echo(port)  # the server is still healthy after all that


# -- in-process servers ----------------------------------------------------------------------------


@contextlib.contextmanager
def serving_in_thread(serve: Callable[[], Any], stop: Callable[[], Any]) -> Iterator[None]:
    thread = threading.Thread(target=serve, name="test-server", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop()
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the server thread did not stop"


@contextlib.contextmanager
def werkzeug_server(app: Any, **options: Any) -> Iterator[int]:
    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True, **options)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    with serving_in_thread(server.serve_forever, stop):
        yield server.server_port


def test_plain_requests_are_byte_identical_under_werkzeug() -> None:
    requests = [
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  # mounted, not an upgrade
        b"HEAD / HTTP/1.0\r\n\r\n",
    ]

    def responses(app: Any) -> list[bytes]:
        with werkzeug_server(app) as port:
            raws = [raw_exchange(port, request) for request in requests]
        return [re.sub(rb"\r\nDate: [^\r]*", b"", raw) for raw in raws]

    site = make_site()
    bare = responses(site.wsgi_app)
    wrapped = responses(WebSocketMiddleware(site.wsgi_app, {"/ws": Echo}))
    assert wrapped == bare
    assert b"chunk 4" in bare[1] and b"404" in bare[2].split(b"\r\n")[0] and b"dlrow olleh" in bare[3]


def test_werkzeug_request_handler_bounds_each_request_head(caplog: pytest.LogCaptureFixture) -> None:
    """Werkzeug's own handler waits for a head for ever; this one answers 408 past the
    deadline, and serves as before meanwhile."""
    handler = werkzeug_request_handler(handshake_timeout=1.0)
    with werkzeug_server(make_app(), request_handler=handler) as port:
        check_echo(port)
        assert raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"\r\n\r\nflask home")
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHo")  # a head never finished
            response, _ = read_response(sock)
            assert response.status == 408
            assert sock.recv(100) == b""  # and the connection ends
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a slow client is no server error"


def test_passthrough_keeps_environ_start_response_and_iterable() -> None:
    seen: list[tuple[Any, Any]] = []
    result = [b"body"]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append((environ, start_response))
        return result

    middleware = WebSocketMiddleware(app, {"/ws": Echo})
    for environ in (
        {"PATH_INFO": "/ws", "REQUEST_METHOD": "GET"},
        {"PATH_INFO": "/other", "HTTP_UPGRADE": "websocket"},
        {"PATH_INFO": "/wsx", "HTTP_UPGRADE": "websocket"},
        {"PATH_INFO": "/ws/room", "HTTP_UPGRADE": "websocket"},  # a route matches the whole path
    ):

        def start_response(*args: Any) -> None:
            return None

        assert middleware(environ, start_response) is result
        assert seen[-1][0] is environ and seen[-1][1] is start_response
        assert environ.keys() <= {"PATH_INFO", "REQUEST_METHOD", "HTTP_UPGRADE"}


def test_upgrade_without_a_socket_hook_is_501_and_mounts_follow_script_name() -> None:
    called: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        called.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"app"]

    middleware = WebSocketMiddleware(app, {"/ws": Echo})
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "/site",
        "PATH_INFO": "/ws",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "NoSocket/1.0",
        "HTTP_HOST": "example.com",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": generate_key(),
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    body = b"".join(middleware(dict(environ), lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses == ["501 Not Implemented"] and b"NoSocket/1.0" in body and called == []
    # /site/ws with the middleware mounted at / is not a route: the app answers.
    body = b"".join(middleware(dict(environ, SCRIPT_NAME="", PATH_INFO="/site/ws"), lambda *args: None))
    assert body == b"app" and called == ["/site/ws"]


def test_route_paths_must_be_absolute_and_well_formed() -> None:
    with pytest.raises(ValueError, match="starting with '/'"):
        WebSocketMiddleware(make_site().wsgi_app, {"ws": Echo})
    with pytest.raises(ValueError, match="unknown parameter kind"):
        WebSocketMiddleware(make_site().wsgi_app, {"/ws/{n:number}": Echo})
    with pytest.raises(TypeError, match="not a WebSocket subclass"):
        WebSocketMiddleware(make_site().wsgi_app, {"/ws": make_site()})  # type: ignore[dict-item]


def test_werkzeug_dev_server(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="werkzeug"), werkzeug_server(make_app()) as port:
        check_server(port)
    # After an upgrade the handler neither answered nor parsed the WebSocket's
    # bytes as another request (it logs an error for each such "request").
    errors = [r.getMessage() for r in caplog.records if r.name == "werkzeug" and r.levelno >= logging.WARNING]
    assert errors == []
    # Werkzeug colours its access log: match around the escape codes.
    assert any(re.search(r"GET /ws HTTP/1\.1\S*\" 426", r.getMessage()) for r in caplog.records)


def test_wsgiref_with_ws4web_handler() -> None:
    from ws4web.adapters.wsgiref import make_server

    app = make_app()
    server = make_server("127.0.0.1", 0, app)

    def stop() -> None:
        app.shutdown(timeout=2.0)
        server.shutdown()
        server.server_close()

    with serving_in_thread(server.serve_forever, stop):
        check_server(server.server_port)


def test_cheroot() -> None:
    import cheroot.wsgi

    errors: list[str] = []

    def error_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        errors.append(msg)

    server = cheroot.wsgi.Server(("127.0.0.1", 0), make_app(), numthreads=4)
    server.error_log = error_log  # type: ignore[method-assign]
    server.prepare()
    with serving_in_thread(server.serve, server.stop):
        check_server(server.bind_addr[1])
    # cheroot neither tried to answer an upgraded request nor failed on its socket.
    assert errors == []


def test_gevent_pywsgi() -> None:
    import gevent
    import gevent.event

    from ws4web.adapters.gevent import make_server

    app = make_app()
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        hub = gevent.get_hub()
        try:
            server = make_server("127.0.0.1", 0, app, log=None)
            server.start()
            state["port"] = server.server_port
            state["loop"] = hub.loop
            state["stop"] = stop_event = gevent.event.Event()
            ready.set()
            stop_event.wait()
            server.stop(timeout=TIMEOUT)
        except BaseException as exc:
            state["error"] = exc
            ready.set()
        finally:
            hub.destroy(destroy_loop=True)

    def stop() -> None:
        if "loop" in state:
            state["loop"].run_callback_threadsafe(state["stop"].set)

    with serving_in_thread(run, stop):
        assert ready.wait(TIMEOUT) and "error" not in state, state.get("error")
        check_server(state["port"])


# -- gunicorn ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running(command: list[str], port: int, cwd: Path = ROOT) -> Iterator[list[bytes]]:
    """Run ``command`` (a server on ``port``) until the block ends; yields a list that gets its stderr."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr: list[bytes] = []
    try:
        for _ in range(200):  # up to 20 s for the server to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate(timeout=TIMEOUT)[1].decode()
                threading.Event().wait(0.1)
        else:
            raise AssertionError(f"{command[:3]} did not listen on {port}")
        yield stderr
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate(timeout=TIMEOUT)
        stderr.append(err)


def gunicorn_command(worker: str, port: int, target: str, chdir: Path = ROOT) -> list[str]:
    command = [sys.executable, "-m", "gunicorn", "-w", "1", "-k", worker, "-b", f"127.0.0.1:{port}"]
    command += ["--chdir", str(chdir), "--graceful-timeout", "2", "--log-level", "warning"]
    if worker == "gthread":
        command += ["--threads", "4"]
    return [*command, target]


@pytest.mark.parametrize("worker", ["sync", "gthread", "gevent"])
def test_gunicorn(worker: str) -> None:
    port = free_port()
    with running(gunicorn_command(worker, port, "tests.adapters.test_middleware:gunicorn_app"), port) as stderr:
        check_server(port)
    # The upgraded requests must not have made gunicorn log errors.
    assert b"Traceback" not in stderr[0] and b"[ERROR]" not in stderr[0], stderr[0].decode()


# -- the example --------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["werkzeug", "gunicorn"])
def test_flask_chat_example(server: str) -> None:
    port = free_port()
    examples = ROOT / "examples"
    if server == "werkzeug":
        command = [sys.executable, str(examples / "flask_chat_werkzeug.py"), "--port", str(port)]
    else:
        command = gunicorn_command("gthread", port, "flask_chat_gunicorn:app", chdir=examples)
    with running(command, port):
        page = raw_exchange(port, b"GET / HTTP/1.0\r\n\r\n")
        assert page.split(b"\r\n", 1)[0].endswith(b"200 OK") and b"new WebSocket(" in page
        url = f"ws://127.0.0.1:{port}/ws"
        with connect(url, timeout=TIMEOUT) as ann, connect(url, timeout=TIMEOUT) as bob:
            ann.send(json.dumps({"type": "join", "name": "ann"}))
            assert json.loads(ann.recv(TIMEOUT).data)["name"] == "ann"  # the welcome
            bob.send(json.dumps({"type": "join", "name": "bob"}))
            hello = json.loads(bob.recv(TIMEOUT).data)
            bob.send(json.dumps({"type": "say", "text": "hi"}))
            for ws in (ann, bob):
                # The presence updates telling who arrived come first.
                events = [json.loads(ws.recv(TIMEOUT).data)]
                while events[-1]["type"] == "presence" and len(events) < 4:
                    events.append(json.loads(ws.recv(TIMEOUT).data))
                assert events[-1] == {"type": "message", "id": hello["id"], "from": "bob", "text": "hi"}
            health = raw_exchange(port, b"GET /health HTTP/1.0\r\n\r\n")
            assert json.loads(health.split(b"\r\n\r\n", 1)[1]) == {"websockets": 2}


# -- a server that cannot hand its socket over ----------------------------------------------------


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_stock_wsgiref_answers_501_and_logs_the_server(caplog: pytest.LogCaptureFixture) -> None:
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, make_app(), handler_class=_QuietHandler)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    with serving_in_thread(server.serve_forever, stop):
        port = server.server_port
        with (
            caplog.at_level("WARNING", logger="ws4web.adapters.middleware"),
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock,
        ):
            sock.sendall(upgrade_bytes(port, generate_key()))
            response, _ = read_response(sock)
        assert response.status == 501
        assert b"WSGIServer/" in response.body
        assert response.headers.get("Upgrade") is None
        records = [r for r in caplog.records if r.name == "ws4web.adapters.middleware"]
        assert len(records) == 1 and "WSGIServer/" in records[0].getMessage()
        # An invalid upgrade still gets the handshake's own answer, and plain requests work.
        check_refusal(port)
        raw = raw_exchange(port, b"GET / HTTP/1.0\r\n\r\n")
        assert raw.startswith(b"HTTP/1.0 200") and raw.endswith(b"flask home")
