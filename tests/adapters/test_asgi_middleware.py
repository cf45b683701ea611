"""WebSocketMiddleware under uvicorn on 127.0.0.1: mounted paths run ws4web, the wrapped app sees the rest unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect

from ws4web import ConnectionClosed, InvalidStatus, TextMessage, WebSocket, connect
from ws4web.adapters.asgi import UnsupportedByASGI, WebSocketASGIApp, WebSocketMiddleware, uvicorn_server
from ws4web.demo import page as chat_page
from ws4web.drivers.asgi import THREADS
from ws4web.messages import Message

TIMEOUT = 10.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHAT_DIR = os.path.join(ROOT, "examples", "chat")

pytestmark = pytest.mark.timeout(60)


# -- a server in a thread --------------------------------------------------------------------------


class Served:
    """uvicorn on 127.0.0.1 in a thread of this process; stop() shuts it down and waits."""

    def __init__(self, server: Any, thread: threading.Thread, sock: socket.socket) -> None:
        self.server = server
        self.thread = thread
        self.sock = sock
        self.port: int = sock.getsockname()[1]

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT * 2)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"


def start_uvicorn(app: Any, *, factory: Callable[..., Any] | None = None, **config: Any) -> Served:
    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "off")
    sock = socket.create_server(("127.0.0.1", 0))
    server = factory(app, **config) if factory else uvicorn.Server(uvicorn.Config(app, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        thread.join(TIMEOUT)
        sock.close()
        raise AssertionError("uvicorn did not start")
    return Served(server, thread, sock)


@contextlib.contextmanager
def serving(app: Any, **config: Any) -> Iterator[Served]:
    served = start_uvicorn(app, **config)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(autouse=True)
def handler_threads_end() -> Iterator[None]:
    """No hook of a test is still running in one of the adapter's threads shortly after it."""
    yield
    deadline = time.monotonic() + TIMEOUT
    while THREADS.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert THREADS.busy == 0, "a handler hook is still running in a thread"


@contextlib.contextmanager
def client(url: str, **options: Any) -> Iterator[WebSocket]:
    ws = connect(url, timeout=TIMEOUT, close_timeout=2.0, **options)
    try:
        yield ws
    finally:
        ws.terminate()


def refused_status(url: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        connect(url, timeout=TIMEOUT).terminate()
    status: int = info.value.status
    return status


def close_code_seen(ws: WebSocket) -> int:
    """Read until the server closes ``ws``; the code of its close frame."""
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            ws.recv(timeout=TIMEOUT)
    return info.value.code


# -- the wrapped app (a real Starlette app) and the mounted handlers ----------------------------


class Chat(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send("ws4web chat: " + str(message))


class Params(WebSocket):
    def opened(self) -> None:
        self.send(json.dumps({"view_args": self.view_args, "path": self.request.path if self.request else None}))


class Feed(WebSocket):
    def opened(self) -> None:
        self.send(f"ws4web feed, subprotocol={self.subprotocol}")


def make_site(events: list[str] | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        if events is not None:
            events.append("startup")
        yield {"greeting": "hello from the lifespan"}
        if events is not None:
            events.append("shutdown")

    async def home(request: Request) -> Response:
        response = PlainTextResponse("home page\n", headers={"X-Site": "starlette"})
        response.set_cookie("session", "abc123", httponly=True)
        return response

    async def as_json(request: Request) -> Response:
        return JSONResponse({"ok": True, "items": [1, 2, 3], "text": "héllo"})

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                await asyncio.sleep(0)
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain", headers={"X-Stream": "yes"})

    async def echo_body(request: Request) -> Response:
        body = await request.body()
        return Response(
            body[::-1],
            media_type=request.headers.get("content-type", "application/octet-stream"),
            headers={"X-Query": request.url.query, "X-Length": str(len(body))},
        )

    async def feed_page(request: Request) -> Response:
        return PlainTextResponse("the feed's HTML page (HTTP on a mounted WebSocket path)\n")

    async def state(request: Request) -> Response:
        return PlainTextResponse(request.state.greeting)

    async def starlette_echo(websocket: StarletteWebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text("starlette: " + text)
        except WebSocketDisconnect:
            pass

    return Starlette(
        routes=[
            Route("/", home),
            Route("/json", as_json),
            Route("/stream", stream),
            Route("/echo", echo_body, methods=["POST"]),
            Route("/feed", feed_page),
            Route("/state", state),
            WebSocketRoute("/ws", starlette_echo),  # shadowed by the mount, on the wrapped server only
            WebSocketRoute("/starlette-ws", starlette_echo),
        ],
        lifespan=lifespan,
    )


class Pair:
    """The same Starlette app served twice: bare, and wrapped in WebSocketMiddleware."""

    def __init__(self, bare: Served, wrapped: Served, middleware: WebSocketMiddleware) -> None:
        self.bare = bare
        self.wrapped = wrapped
        self.middleware = middleware


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    site = make_site()
    middleware = WebSocketMiddleware(site, {"/ws": Chat, "/feed": Feed}, protocols=["v1.chat"])
    with serving(site, lifespan="on") as bare, serving(middleware, lifespan="on") as wrapped:
        yield Pair(bare, wrapped, middleware)


# -- HTTP: byte for byte what the app answers alone ------------------------------------------------


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` (ending with Connection: close) and read the answer up to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        chunks: list[bytes] = []
        size = 0
        while size < 2**20:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
    return b"".join(chunks)


DATE = re.compile(rb"(?im)^date: [^\r\n]*\r\n")


def without_date(raw: bytes, responses: int) -> bytes:
    """``raw`` without its Date header lines: the only bytes that may differ from one run to the next."""
    stripped, count = DATE.subn(b"", raw)
    assert count == responses, raw
    return stripped


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


def upgrade(path: str) -> bytes:
    """A WebSocket handshake (RFC 6455 §4.1); a refused one ends the connection, so it reads up to EOF too."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


BODY = "ünïcode body \x00 with bytes".encode()
CHUNKED = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"

# (name, request bytes, responses expected, status line of the first one)
EXCHANGES = [
    ("home", get("/"), 1, b"HTTP/1.1 200 OK"),
    ("json", get("/json"), 1, b"HTTP/1.1 200 OK"),
    ("not found", get("/missing?x=1"), 1, b"HTTP/1.1 404 Not Found"),
    ("redirect slash", get("/json/"), 1, b"HTTP/1.1 307 Temporary Redirect"),
    ("streaming", get("/stream"), 1, b"HTTP/1.1 200 OK"),
    ("head", b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 1, b"HTTP/1.1 200 OK"),
    (
        "post with body",
        b"POST /echo?a=1&b=two HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-test\r\n"
        + f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n".encode()
        + BODY,
        1,
        b"HTTP/1.1 200 OK",
    ),
    (
        "post chunked",
        b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + CHUNKED,
        1,
        b"HTTP/1.1 200 OK",
    ),
    ("http on a mounted path with an HTTP route", get("/feed"), 1, b"HTTP/1.1 200 OK"),
    ("http on a mounted path without one", get("/ws"), 1, b"HTTP/1.1 404 Not Found"),
    ("lifespan state", get("/state"), 1, b"HTTP/1.1 200 OK"),
    (
        "keep-alive pipeline",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /missing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + get("/json"),
        3,
        b"HTTP/1.1 200 OK",
    ),
    ("websocket upgrade to an unknown path", upgrade("/nowhere"), 1, b"HTTP/1.1 403 Forbidden"),
    ("websocket upgrade to a mounted path + slash", upgrade("/ws/"), 1, b"HTTP/1.1 403 Forbidden"),
]


@pytest.mark.parametrize(
    ("request_bytes", "responses", "status"), [e[1:] for e in EXCHANGES], ids=[e[0] for e in EXCHANGES]
)
def test_http_answers_are_byte_identical(pair: Pair, request_bytes: bytes, responses: int, status: bytes) -> None:
    bare = raw_exchange(pair.bare.port, request_bytes)
    wrapped = raw_exchange(pair.wrapped.port, request_bytes)
    assert bare.startswith(status + b"\r\n"), bare[:200]
    assert without_date(wrapped, responses) == without_date(bare, responses)


def test_the_compared_answers_carry_what_the_app_said(pair: Pair) -> None:
    """The byte comparison is not between two empty answers: spot-check the wrapped server's."""
    home = raw_exchange(pair.wrapped.port, get("/"))
    assert b"\r\nx-site: starlette\r\n" in home.lower()
    assert b"set-cookie: session=abc123;" in home.lower()
    assert home.endswith(b"\r\n\r\nhome page\n")
    stream = raw_exchange(pair.wrapped.port, get("/stream"))
    assert b"transfer-encoding: chunked" in stream.lower()
    for i in range(5):
        assert f"chunk {i}\n".encode() in stream
    post = raw_exchange(pair.wrapped.port, EXCHANGES[6][1])
    assert post.endswith(BODY[::-1])
    assert b"x-query: a=1&b=two" in post.lower()
    chunked = raw_exchange(pair.wrapped.port, EXCHANGES[7][1])
    assert chunked.endswith(b"dlrow ,olleh")
    assert raw_exchange(pair.wrapped.port, get("/state")).endswith(b"hello from the lifespan")


# -- WebSockets ------------------------------------------------------------------------------------------


def test_mounted_paths_run_ws4web_handlers(pair: Pair) -> None:
    with client(pair.wrapped.ws("/ws")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=TIMEOUT) == TextMessage("ws4web chat: hi")
    with client(pair.wrapped.ws("/feed"), protocols=["other", "v1.chat"]) as ws:
        assert ws.subprotocol == "v1.chat"  # the middleware's options reached the handler's app
        assert ws.recv(timeout=TIMEOUT) == TextMessage("ws4web feed, subprotocol=v1.chat")


def test_the_mount_is_what_changes_the_answer(pair: Pair) -> None:
    """Without the middleware the same app answers /ws with its own Starlette endpoint."""
    with client(pair.bare.ws("/ws")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=TIMEOUT) == TextMessage("starlette: hi")


def test_query_string_does_not_change_the_match(pair: Pair) -> None:
    with client(pair.wrapped.ws("/ws?room=1&x=%2F")) as ws:
        ws.send("q")
        assert ws.recv(timeout=TIMEOUT) == TextMessage("ws4web chat: q")


def test_starlette_websocket_route_on_another_path_still_works(pair: Pair) -> None:
    with client(pair.wrapped.ws("/starlette-ws")) as ws:
        for text in ["one", "twö", ""]:
            ws.send(text)
            assert ws.recv(timeout=TIMEOUT) == TextMessage("starlette: " + text)
        ws.close()
        assert ws.close_code == 1000


@pytest.mark.parametrize("path", ["/nowhere", "/ws/", "/WS", "/feed/x"])
def test_unmounted_websocket_paths_are_refused_as_without_middleware(pair: Pair, path: str) -> None:
    assert refused_status(pair.wrapped.ws(path)) == refused_status(pair.bare.ws(path)) == 403


def test_open_connections_are_listed_per_mount() -> None:
    middleware = WebSocketMiddleware(make_site(), {"/ws": Chat, "/feed": Feed})
    with serving(middleware) as served:
        with client(served.ws("/ws")) as chat, client(served.ws("/feed")) as feed:
            chat.send("x")
            chat.recv(timeout=TIMEOUT)
            feed.recv(timeout=TIMEOUT)
            assert sorted(type(h).__name__ for h in middleware.websockets) == ["Chat", "Feed"]
            assert [type(h) for h in middleware.routes["/ws"].websockets] == [Chat]
            chat.close()
            feed.close()
        deadline = time.monotonic() + TIMEOUT
        while middleware.websockets and time.monotonic() < deadline:
            time.sleep(0.01)
        assert middleware.websockets == set()


def test_shutdown_closes_mounted_connections_with_1001_and_leaves_the_app_alone() -> None:
    middleware = WebSocketMiddleware(make_site(), {"/ws": Chat})
    with serving(middleware) as served, client(served.ws("/ws")) as ws, client(served.ws("/starlette-ws")) as other:
        ws.send("x")
        ws.recv(timeout=TIMEOUT)
        (handler,) = middleware.websockets
        loop = handler.connection.loop
        closing = threading.Thread(
            target=lambda: asyncio.run_coroutine_threadsafe(middleware.shutdown(timeout=5.0), loop).result(TIMEOUT),
            name="test-shutdown",
        )
        closing.start()
        assert close_code_seen(ws) == 1001
        closing.join(TIMEOUT)
        assert not closing.is_alive()
        assert refused_status(served.ws("/ws")) == 503  # no new ws4web connections on this loop
        other.send("still there")  # the app's own WebSocket is not the middleware's to close
        assert other.recv(timeout=TIMEOUT) == TextMessage("starlette: still there")


def test_uvicorn_server_helper_closes_mounted_connections_with_1001() -> None:
    middleware = WebSocketMiddleware(make_site(), {"/ws": Chat})
    served = start_uvicorn(middleware, factory=uvicorn_server, shutdown_timeout=3.0)
    try:
        with client(served.ws("/ws")) as ws:
            ws.send("x")
            ws.recv(timeout=TIMEOUT)
            result: list[int] = []
            reader = threading.Thread(target=lambda: result.append(close_code_seen(ws)), name="test-reader")
            reader.start()
            served.stop()
            reader.join(TIMEOUT)
            assert result == [1001]
    finally:
        served.stop()


# -- lifespan and the scopes themselves ------------------------------------------------------------


def test_lifespan_events_reach_the_wrapped_app() -> None:
    events: list[str] = []
    middleware = WebSocketMiddleware(make_site(events), {"/ws": Chat})
    served = start_uvicorn(middleware, lifespan="on")
    try:
        assert events == ["startup"]  # uvicorn reports started only after startup.complete
        assert raw_exchange(served.port, get("/state")).endswith(b"\r\n\r\nhello from the lifespan")
    finally:
        served.stop()
    assert events == ["startup", "shutdown"]


class Recorder:
    """An ASGI app that notes the (scope, receive, send) objects it is called with, then calls ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, Any, Any, Any, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # A snapshot of the scope as it arrives: the inner app may add keys later (Starlette does).
        self.calls.append((scope["type"], scope, receive, send, repr(sorted(scope.items(), key=str))))
        await self.app(scope, receive, send)


def test_other_scopes_pass_as_the_same_objects() -> None:
    inner = Recorder(make_site())
    outer = Recorder(WebSocketMiddleware(inner, {"/ws": Chat}))
    with serving(outer, lifespan="on") as served:
        raw_exchange(served.port, get("/json"))
        with client(served.ws("/starlette-ws")) as ws:
            ws.send("a")
            ws.recv(timeout=TIMEOUT)
        with client(served.ws("/ws")) as ws:  # mounted: the inner app never sees it
            ws.send("b")
            assert ws.recv(timeout=TIMEOUT) == TextMessage("ws4web chat: b")
    assert [c[0] for c in outer.calls] == ["lifespan", "http", "websocket", "websocket"]
    assert [c[0] for c in inner.calls] == ["lifespan", "http", "websocket"]
    for seen_outside, seen_inside in zip(outer.calls[:3], inner.calls, strict=True):
        for a, b in zip(seen_outside[1:4], seen_inside[1:4], strict=True):
            assert a is b
        assert seen_outside[4] == seen_inside[4]  # and nothing was added to or taken from the scope


def test_added_as_a_starlette_middleware() -> None:
    site = make_site()
    app = Starlette(
        routes=site.routes,
        middleware=[Middleware(WebSocketMiddleware, routes={"/ws": Chat}, max_message_size=16)],
    )
    with serving(app) as served:
        assert raw_exchange(served.port, get("/")).endswith(b"\r\n\r\nhome page\n")
        with client(served.ws("/ws")) as ws:
            ws.send("hi")
            assert ws.recv(timeout=TIMEOUT) == TextMessage("ws4web chat: hi")
            ws.send("x" * 17)  # over the option given through Starlette: RFC 6455 §7.4.1 1009
            assert close_code_seen(ws) == 1009


def test_mount_paths_are_relative_to_the_root_path() -> None:
    middleware = WebSocketMiddleware(make_site(), {"/ws": Chat})
    with serving(middleware, root_path="/api") as served:  # uvicorn puts /api in front of scope["path"]
        with client(served.ws("/ws")) as ws:
            ws.send("rooted")
            assert ws.recv(timeout=TIMEOUT) == TextMessage("ws4web chat: rooted")
        with client(served.ws("/starlette-ws")) as ws:
            ws.send("app")
            assert ws.recv(timeout=TIMEOUT) == TextMessage("starlette: app")


def test_route_parameters_reach_the_handler_as_under_the_wsgi_middleware() -> None:
    routes = {"/ws": Chat, "/ws/{room}/{n:int}": Params, "/ws/admin/{n:int}": Feed}
    middleware = WebSocketMiddleware(make_site(), routes)
    with serving(middleware, root_path="/api") as served:
        with client(served.ws("/ws/r%C3%A9/7?x=1")) as ws:
            seen = json.loads(ws.recv(timeout=TIMEOUT).data)
            assert seen == {"view_args": {"room": "ré", "n": 7}, "path": "/api/ws/r%C3%A9/7?x=1"}  # the full target
        assert refused_status(served.ws("/ws/lobby")) == 403  # no route matches the whole path: the app's
        assert refused_status(served.ws("/ws/lobby/x")) == 403  # {n:int}
        with client(served.ws("/ws/admin/1")) as ws:  # the first pattern that matches, in order
            assert json.loads(ws.recv(timeout=TIMEOUT).data)["view_args"] == {"room": "admin", "n": 1}


# -- construction ---------------------------------------------------------------------------------------


def test_options_build_one_app_per_class_and_prebuilt_apps_are_kept() -> None:
    site = make_site()
    prebuilt = WebSocketASGIApp(Feed, protocols=["own"])
    middleware = WebSocketMiddleware(site, {"/ws": Chat, "/feed": prebuilt}, protocols=["p"], max_message_size=5)
    assert middleware.app is site
    assert middleware.routes["/feed"] is prebuilt
    assert middleware.routes["/feed"].policy.subprotocols == ["own"]
    chat = middleware.routes["/ws"]
    assert chat.handler_cls is Chat
    assert chat.policy.subprotocols == ["p"]
    assert chat.policy.limits.max_message_size == 5


def test_constructor_refuses_what_cannot_work() -> None:
    site = make_site()
    with pytest.raises(TypeError, match="positionally"):
        WebSocketMiddleware(site, {"/ws": Chat}, app=site)
    with pytest.raises(ValueError, match="must be a str starting with '/'"):
        WebSocketMiddleware(site, {"ws": Chat})
    with pytest.raises(TypeError, match="not a WebSocket subclass"):
        WebSocketMiddleware(site, {"/ws": site})  # type: ignore[dict-item]
    with pytest.raises(UnsupportedByASGI):
        WebSocketMiddleware(site, {"/ws": Chat}, ping_interval=5.0)
    with pytest.raises(TypeError, match="unknown option"):
        WebSocketMiddleware(site, {"/ws": Chat}, max_mesage_size=5)  # before any connection


# -- the chat example on Starlette and uvicorn ----------------------------------------------------------


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "the example printed nothing"
    return proc.stdout.readline()


def test_chat_example_presence_messages_and_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, os.path.join(CHAT_DIR, "asgi_app.py"), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = read_line(proc, TIMEOUT)
        found = re.search(rb"http://127\.0\.0\.1:(\d+)/", line)
        assert found, line
        port = int(found.group(1))
        # The URL is printed before uvicorn listens on the (already bound) socket: connect retries are not needed.
        assert raw_exchange(port, get("/")).endswith(b"\r\n\r\n" + chat_page())

        def event(ws: WebSocket, kind: str) -> Any:
            """The next event of ``kind`` (presence updates come when the room's window ends)."""
            for _ in range(10):
                received = json.loads(ws.recv(timeout=TIMEOUT).data)
                if received["type"] == kind:
                    return received
            raise AssertionError(f"no {kind!r} event in 10 messages")

        url = f"ws://127.0.0.1:{port}/ws"
        with client(url) as ann, client(url) as bob:
            ann.send(json.dumps({"type": "join", "name": "ann"}))
            assert event(ann, "welcome")["name"] == "ann"
            bob.send(json.dumps({"type": "join", "name": "bob"}))
            hello = event(bob, "welcome")
            bob.send(json.dumps({"type": "say", "text": "hello ann"}))
            said = {"type": "message", "id": hello["id"], "from": "bob", "text": "hello ann"}
            assert event(ann, "message") == event(bob, "message") == said
            bob.close()
            assert event(ann, "presence")["left"] == [{"id": hello["id"], "name": "bob"}]
            proc.send_signal(signal.SIGINT)  # Ctrl-C with ann still in the room
            assert close_code_seen(ann) == 1001
        _out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
        assert b"Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
