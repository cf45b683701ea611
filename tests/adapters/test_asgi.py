"""The ASGI adapter under real servers: uvicorn and hypercorn on 127.0.0.1, ws4web's client."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import logging
import os
import queue
import re
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hypercorn.asyncio
import hypercorn.config
import pytest
import uvicorn

from ws4web import (
    BinaryMessage,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
    TextMessage,
    WebSocket,
    connect,
)
from ws4web.adapters.asgi import (
    UNSUPPORTED_OPTIONS,
    UnsupportedByASGI,
    WebSocketASGIApp,
    hypercorn_config,
    hypercorn_shutdown_trigger,
    uvicorn_server,
    websocket_route,
)
from ws4web.auth import basic_auth
from ws4web.drivers.asgi import THREADS
from ws4web.exceptions import Forbidden
from ws4web.frames import Frame, Opcode
from ws4web.http11 import Headers, Request, Response
from ws4web.messages import Message

from ..conftest import RawPeer

TIMEOUT = 10.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


# -- servers ----------------------------------------------------------------------------------


class Served:
    """An ASGI server running in a thread on 127.0.0.1, with a way to stop it."""

    def __init__(self, name: str, port: int, stop: Callable[[], None]) -> None:
        self.name = name
        self.port = port
        self._stop = stop

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        """Stop the server and wait for its thread; a second call does nothing."""
        stop, self._stop = self._stop, lambda: None
        stop()


def start_uvicorn(app: ASGIApp, server_factory: Callable[..., Any] | None = None, **config: Any) -> Served:
    sock = socket.create_server(("127.0.0.1", 0))
    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "off")
    server = (server_factory or (lambda a, **c: uvicorn.Server(uvicorn.Config(a, **c))))(app, **config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"

    def stop() -> None:
        server.should_exit = True
        thread.join(TIMEOUT * 2)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"

    return Served("uvicorn", sock.getsockname()[1], stop)


def start_hypercorn(app: ASGIApp, *, wrap_trigger: bool = False, config: Any = None) -> Served:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = config or hypercorn.config.Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the listening socket from here
    config.graceful_timeout = 2.0
    config.loglevel = "WARNING"
    config.accesslog = None
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        state["loop"], state["stop"] = asyncio.get_running_loop(), stop
        ready.set()
        trigger = hypercorn_shutdown_trigger(stop.wait) if wrap_trigger else stop.wait
        await hypercorn.asyncio.serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="test-hypercorn", daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT)

    def stop() -> None:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(TIMEOUT * 2)
        assert not thread.is_alive(), "hypercorn did not stop"

    # The socket already listens, so clients may connect before hypercorn accepts:
    # their handshake simply waits for it.
    return Served("hypercorn", port, stop)


class Router:
    """One long-lived server, many apps: each test mounts its own at a fresh path."""

    def __init__(self) -> None:
        self.routes: dict[str, ASGIApp] = {}
        self._ids = itertools.count()

    def mount(self, app: ASGIApp) -> str:
        path = f"/t{next(self._ids)}"
        self.routes[path] = app
        return path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.routes.get(scope.get("path", ""))
        if app is None:
            raise LookupError(f"nothing mounted at {scope.get('path')!r}")
        await app(scope, receive, send)


class Server:
    def __init__(self, served: Served, router: Router) -> None:
        self.served = served
        self.router = router
        self.name = served.name
        self.port = served.port

    def mount(self, app: ASGIApp) -> str:
        return self.served.url(self.router.mount(app))

    def http_url(self, ws_url: str) -> str:
        """The path of ``ws_url``, for http_get()."""
        return ws_url.split(str(self.port), 1)[1]

    def http_get(self, path: str) -> tuple[int, bytes]:
        """A plain HTTP GET on this server: (status, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    router = Router()
    served = start_uvicorn(router) if request.param == "uvicorn" else start_hypercorn(router)
    try:
        yield Server(served, router)
    finally:
        served.stop()


@pytest.fixture(autouse=True)
def handler_threads_end() -> Iterator[None]:
    """No hook is still running in one of the adapter's threads shortly after a test."""
    yield
    deadline = time.monotonic() + TIMEOUT
    while THREADS.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert THREADS.busy == 0, "a handler hook is still running in a thread"


@contextmanager
def client(url: str, **options: Any) -> Iterator[WebSocket]:
    ws = connect(url, timeout=TIMEOUT, **options)
    try:
        yield ws
    finally:
        ws.terminate()


def closed_by_server(ws: WebSocket) -> ConnectionClosed:
    """Read until the server closes; return the ConnectionClosed (code = the server's close frame)."""
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            ws.recv(timeout=TIMEOUT)
    return info.value


class CloseWatcher:
    """Reads ``ws`` in a thread until the server closes it, so the client answers the close at once."""

    def __init__(self, ws: WebSocket) -> None:
        self.result: queue.Queue[BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(ws,), name="test-close-watcher", daemon=True)
        self.thread.start()

    def _run(self, ws: WebSocket) -> None:
        try:
            for _ in range(100):
                ws.recv(timeout=TIMEOUT)
            raise AssertionError("the server did not close")
        except BaseException as exc:
            self.result.put(exc)

    def closed(self) -> ConnectionClosed:
        exc = self.result.get(timeout=TIMEOUT * 2)
        self.thread.join(TIMEOUT)
        assert isinstance(exc, ConnectionClosed), repr(exc)
        return exc


# -- handlers ------------------------------------------------------------------------------------


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


def recording(base: type[WebSocket] = Echo) -> tuple[type[WebSocket], queue.Queue[tuple[Any, ...]]]:
    """A subclass of ``base`` that reports opened/closed into a fresh queue."""
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    class Recorder(base):  # type: ignore[valid-type,misc]
        def opened(self) -> None:
            events.put(("opened", self))
            super().opened()

        def closed(self, code: int, reason: str | None = None) -> None:
            events.put(("closed", code, reason))

    return Recorder, events


def next_event(events: queue.Queue[tuple[Any, ...]], kind: str) -> tuple[Any, ...]:
    while True:
        event = events.get(timeout=TIMEOUT)
        if event[0] == kind:
            return event


# -- messages --------------------------------------------------------------------------------------


def test_echo_text_and_binary(server: Server) -> None:
    url = server.mount(WebSocketASGIApp(Echo))
    with client(url) as ws:
        for payload in ["héllo wörld ✓", "", b"\x00\xff\x80", b"", bytes(range(256)) * 400]:
            ws.send(payload)
            answer = ws.recv(timeout=TIMEOUT)
            if isinstance(payload, str):
                assert answer == TextMessage(payload)
            else:
                assert answer == BinaryMessage(payload)
        ws.close()
        assert ws.close_code == 1000


def test_many_messages_keep_their_order(server: Server) -> None:
    url = server.mount(WebSocketASGIApp(Echo))
    with client(url) as ws:
        for i in range(200):
            ws.send(f"m{i}")
        assert [ws.recv(timeout=TIMEOUT).data for _ in range(200)] == [f"m{i}".encode() for i in range(200)]


def test_handler_sees_request_and_scope(server: Server) -> None:
    seen: queue.Queue[tuple[Any, ...]] = queue.Queue()

    class Inspect(WebSocket):
        def opened(self) -> None:
            assert self.request is not None
            seen.put((self.request.path, self.request.headers.get("X-Token"), self.environ and self.environ["type"]))

    url = server.mount(WebSocketASGIApp(Inspect))
    with client(url + "?a=1", headers=[("X-Token", "t0k")]):
        path, token, scope_type = seen.get(timeout=TIMEOUT)
    assert path == url.split(str(server.port))[1] + "?a=1"
    assert token == "t0k"
    assert scope_type == "websocket"


def test_fragmented_send_is_joined_into_one_message(server: Server) -> None:
    class Chunks(WebSocket):
        def received_message(self, message: Message) -> None:
            self.send(iter(["ab", "c", "d"]))
            self.send(iter([b"\x01", b"\x02\x03"]))
            self.send(iter([]), binary=True)

    url = server.mount(WebSocketASGIApp(Chunks))
    with client(url) as ws:
        ws.send("go")
        assert ws.recv(timeout=TIMEOUT) == TextMessage("abcd")
        assert ws.recv(timeout=TIMEOUT) == BinaryMessage(b"\x01\x02\x03")
        assert ws.recv(timeout=TIMEOUT) == BinaryMessage(b"")


def test_pull_style_handler(server: Server) -> None:
    class Reverse(WebSocket):
        def opened(self) -> None:
            for message in self:
                self.send(message.data[::-1])

    url = server.mount(WebSocketASGIApp(Reverse))
    with client(url) as ws:
        ws.send(b"abc")
        assert ws.recv(timeout=TIMEOUT) == BinaryMessage(b"cba")
        ws.close()


class PullEcho(WebSocket):
    def opened(self):  # type: ignore[no-untyped-def]  # exactly as in the issue
        for message in self:
            self.send(message)


def test_pull_style_echo_with_default_options(server: Server) -> None:
    url = server.mount(WebSocketASGIApp(PullEcho))
    with client(url) as ws:
        for payload in ["one", b"two", "three"]:
            ws.send(payload)
            assert ws.recv(timeout=TIMEOUT).data == (payload.encode() if isinstance(payload, str) else payload)
        ws.close()
        assert ws.close_code == 1000


class Ws4pyEcho(WebSocket):
    """A handler written for ws4py, with its exact constructor."""

    def __init__(self, sock, protocols=None, extensions=None, environ=None, heartbeat_freq=None):  # type: ignore[no-untyped-def]
        WebSocket.__init__(self, sock, protocols, extensions, environ, heartbeat_freq)
        self.ready = True

    def received_message(self, message: Message) -> None:
        assert self.ready
        self.send(message)


def test_ws4py_constructor_echoes(server: Server) -> None:
    # The limits are the door's: none of them reaches the constructor.
    url = server.mount(WebSocketASGIApp(Ws4pyEcho, max_message_size=2**16, close_timeout=5.0, max_queue=8))
    with client(url) as ws:
        ws.send("ws4py")
        assert ws.recv(timeout=TIMEOUT) == TextMessage("ws4py")


def test_unknown_option_fails_when_the_app_is_built() -> None:
    with pytest.raises(TypeError, match="unknown option 'max_mesage_size'"):
        WebSocketASGIApp(Echo, max_mesage_size=10)
    with pytest.raises(TypeError, match="lacks"):

        class Narrow(WebSocket):
            def __init__(self, sock: Any) -> None:
                super().__init__(sock)

        WebSocketASGIApp(Narrow)


def test_send_to_another_connection_from_a_handler_thread(server: Server) -> None:
    room: list[WebSocket] = []
    lock = threading.Lock()

    class Room(WebSocket):
        def opened(self) -> None:
            with lock:
                room.append(self)
            self.send("joined")

        def received_message(self, message: Message) -> None:
            with lock:
                others = [h for h in room if h is not self]
            for other in others:
                other.send(message)

        def closed(self, code: int, reason: str | None = None) -> None:
            with lock:
                room.remove(self)

    url = server.mount(WebSocketASGIApp(Room))
    with client(url) as a, client(url) as b:
        assert a.recv(timeout=TIMEOUT).data == b"joined"
        assert b.recv(timeout=TIMEOUT).data == b"joined"
        a.send("from a")
        assert b.recv(timeout=TIMEOUT) == TextMessage("from a")


def test_max_message_size_closes_with_1009(server: Server) -> None:
    url = server.mount(WebSocketASGIApp(Echo, max_message_size=8))
    with client(url) as ws:
        ws.send(b"12345678")
        assert ws.recv(timeout=TIMEOUT) == BinaryMessage(b"12345678")
        ws.send(b"123456789")
        assert closed_by_server(ws).code == 1009


# -- handshake ----------------------------------------------------------------------------------


def test_subprotocol_follows_the_clients_order(server: Server) -> None:
    class Tell(WebSocket):
        def opened(self) -> None:
            self.send(self.subprotocol or "none")

    url = server.mount(WebSocketASGIApp(Tell, protocols=["chat", "superchat"]))
    with client(url, protocols=["other", "superchat", "chat"]) as ws:
        assert ws.subprotocol == "superchat"
        assert ws.recv(timeout=TIMEOUT).data == b"superchat"
    with client(url, protocols=["other"]) as ws:  # nothing in common: accepted without one
        assert ws.subprotocol is None
        assert ws.recv(timeout=TIMEOUT).data == b"none"


def test_select_subprotocol_hook(server: Server) -> None:
    url = server.mount(WebSocketASGIApp(Echo, select_subprotocol=lambda offered, supported: offered[-1]))
    with client(url, protocols=["a", "b"]) as ws:
        assert ws.subprotocol == "b"


def check_auth(request: Request) -> Response | None:
    if request.headers.get("Authorization") == "Bearer good":
        return None
    if request.headers.get("Authorization") == "Bearer banned":
        raise Forbidden("banned token")
    headers = Headers([("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")])
    return Response(401, "Unauthorized", headers, b"who are you?")


def test_refusal_uses_the_http_response_extension(server: Server) -> None:
    url = server.mount(WebSocketASGIApp(Echo, process_request=check_auth))
    with pytest.raises(InvalidStatus) as info:
        connect(url, timeout=TIMEOUT)
    assert info.value.status == 401
    assert info.value.body == b"who are you?"
    assert ("www-authenticate", "Bearer") in [(k.lower(), v) for k, v in info.value.headers]

    with pytest.raises(InvalidStatus) as info:
        connect(url, timeout=TIMEOUT, headers={"Authorization": "Bearer banned"})
    assert info.value.status == 403
    assert info.value.body is not None and b"banned token" in info.value.body

    with client(url, headers={"Authorization": "Bearer good"}) as ws:
        ws.send("in")
        assert ws.recv(timeout=TIMEOUT).data == b"in"


def test_async_process_request(server: Server) -> None:
    async def deny(request: Request) -> Response | None:
        await asyncio.sleep(0)
        return Response(429, "Too Many Requests", Headers(), b"slow down")

    url = server.mount(WebSocketASGIApp(Echo, process_request=deny))
    with pytest.raises(InvalidStatus) as info:
        connect(url, timeout=TIMEOUT)
    assert (info.value.status, info.value.body) == (429, b"slow down")


def without_http_response(app: ASGIApp) -> ASGIApp:
    """The app as a server without the ``websocket.http.response`` extension would run it."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        extensions = {k: v for k, v in (scope.get("extensions") or {}).items() if k != "websocket.http.response"}
        await app({**scope, "extensions": extensions}, receive, send)

    return wrapped


def test_refusal_without_the_extension_is_a_403(server: Server) -> None:
    url = server.mount(without_http_response(WebSocketASGIApp(Echo, process_request=check_auth)))
    with pytest.raises(InvalidStatus) as info:
        connect(url, timeout=TIMEOUT)
    assert info.value.status == 403
    with client(url, headers={"Authorization": "Bearer good"}) as ws:
        ws.send("in")
        assert ws.recv(timeout=TIMEOUT).data == b"in"


def raw_handshake(port: int, path: str, key: str) -> tuple[int, bytes]:
    """Send a hand-written upgrade request; return the status and the response body."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request.encode())
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, f"EOF within the response head: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(4096)
            assert chunk, f"EOF within the body: {body!r}"
            body += chunk
    return status, body


def test_check_handshake_refuses_a_bad_key_with_400(server: Server) -> None:
    strict = server.mount(WebSocketASGIApp(Echo, check_handshake=True))
    lax = server.mount(WebSocketASGIApp(Echo))
    status, rest = raw_handshake(server.port, strict.split(str(server.port))[1], "c2hvcnQ=")  # 5 bytes, not 16
    assert status == 400
    if server.name == "hypercorn":  # hypercorn lets it through; the adapter's own check answers
        assert b"Sec-WebSocket-Key is not 16 bytes" in rest
        status, _ = raw_handshake(server.port, lax.split(str(server.port))[1], "c2hvcnQ=")
        assert status == 101  # by default the adapter trusts the server's checks
    with client(strict) as ws:  # a real client passes the checks
        ws.send("ok")
        assert ws.recv(timeout=TIMEOUT).data == b"ok"


def test_origins_allow_list(server: Server) -> None:
    url = server.mount(WebSocketASGIApp(Echo, origins=["https://good.example", None]))
    with client(url, headers={"Origin": "https://good.example"}) as ws:
        ws.send("ok")
        assert ws.recv(timeout=TIMEOUT).data == b"ok"
    with client(url):  # None admits clients that send no Origin
        pass
    with pytest.raises(InvalidStatus) as info:
        connect(url, timeout=TIMEOUT, headers={"Origin": "https://evil.example"})
    assert info.value.status == 403


def test_authenticate_hook(server: Server) -> None:
    url = server.mount(WebSocketASGIApp(Echo, authenticate=basic_auth({"ann": "s3cret"})))
    with pytest.raises(InvalidStatus) as info:
        connect(url, timeout=TIMEOUT)
    assert info.value.status == 401
    assert any(k.lower() == "www-authenticate" for k, _ in info.value.headers)
    with pytest.raises(InvalidStatus) as info:
        connect(url.replace("ws://", "ws://ann:wrong@"), timeout=TIMEOUT)
    assert info.value.status == 401
    with client(url.replace("ws://", "ws://ann:s3cret@")) as ws:
        ws.send("in")
        assert ws.recv(timeout=TIMEOUT).data == b"in"


def test_handler_constructor_failure_is_a_500(server: Server) -> None:
    class Broken(WebSocket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("no")

    url = server.mount(WebSocketASGIApp(Broken))
    with pytest.raises(InvalidStatus) as info:
        connect(url, timeout=TIMEOUT)
    assert info.value.status == 500


# -- errors and closing ------------------------------------------------------------------------------


def test_handler_raising_closes_1011_and_others_go_on(server: Server) -> None:
    class Fragile(Echo):
        def received_message(self, message: Message) -> None:
            if message.data == b"boom":
                raise ValueError("boom")
            super().received_message(message)

    handler_cls, events = recording(Fragile)
    url = server.mount(WebSocketASGIApp(handler_cls))
    with client(url) as good, client(url) as bad:
        bad.send("boom")
        exc = closed_by_server(bad)
        assert isinstance(exc, ConnectionClosedError)
        assert (exc.code, exc.reason) == (1011, "internal error")
        next_event(events, "closed")  # the failed handler still got closed()
        good.send("still here")
        assert good.recv(timeout=TIMEOUT).data == b"still here"


def test_close_from_the_handler(server: Server) -> None:
    class Bye(WebSocket):
        def received_message(self, message: Message) -> None:
            self.send("bye")
            self.close(4001, "see you")

    handler_cls, events = recording(Bye)
    url = server.mount(WebSocketASGIApp(handler_cls))
    with client(url) as ws:
        ws.send("hi")
        assert ws.recv(timeout=TIMEOUT).data == b"bye"
        exc = closed_by_server(ws)
        assert (exc.code, exc.reason) == (4001, "see you")
    # What the server reports once the client answered (docs/adapters-asgi.md, close codes).
    assert next_event(events, "closed")[1] == (4001 if server.name == "uvicorn" else 1000)


def test_client_close_reaches_closed(server: Server) -> None:
    handler_cls, events = recording()
    url = server.mount(WebSocketASGIApp(handler_cls))
    with client(url) as ws:
        next_event(events, "opened")
        ws.close(4000, "done")
        _, code, reason = next_event(events, "closed")
    if server.name == "uvicorn":  # uvicorn passes the client's code on; hypercorn 0.18 reports 1006
        assert (code, reason) == (4000, "done")


def test_terminate_ends_without_a_close_handshake(server: Server) -> None:
    class Drop(WebSocket):
        def received_message(self, message: Message) -> None:
            self.terminate()

    url = server.mount(WebSocketASGIApp(Drop))
    with client(url) as ws:
        ws.send("drop")
        exc = closed_by_server(ws)
    # ASGI cannot drop TCP: uvicorn closes it (no close frame: 1006), hypercorn sends 1011.
    assert exc.code == (1006 if server.name == "uvicorn" else 1011)


# -- threads and the event loop -------------------------------------------------------------------------


def test_a_blocking_callback_does_not_stall_other_connections(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    """Its first overrun holds the loop until the watchdog notices; then its class runs in threads."""
    release = threading.Event()
    blocked = threading.Event()
    app: WebSocketASGIApp

    class Blocking(Echo):
        def received_message(self, message: Message) -> None:
            if message.data == b"warm up":  # holds the loop thread until its class is moved (bounded)
                deadline = time.monotonic() + TIMEOUT
                while not app.plan.blocking and time.monotonic() < deadline:
                    time.sleep(0.005)
            elif message.data == b"block":
                blocked.set()
                release.wait(TIMEOUT)
            super().received_message(message)

    app = WebSocketASGIApp(Blocking)
    url = server.mount(app)
    with caplog.at_level(logging.WARNING, logger="ws4web.drivers.asgi"), client(url) as a, client(url) as b:
        a.send("warm up")
        assert a.recv(timeout=TIMEOUT).data == b"warm up"
        assert app.plan.blocking
        a.send("block")
        assert blocked.wait(TIMEOUT)
        # A's callback blocks in a thread now: B's echoes arrive meanwhile.
        for i in range(3):
            b.send(f"b{i}")
            assert b.recv(timeout=TIMEOUT).data == f"b{i}".encode()
        assert not release.is_set()
        a.send("queued while blocked")
        release.set()
        assert a.recv(timeout=TIMEOUT).data == b"block"
        assert a.recv(timeout=TIMEOUT).data == b"queued while blocked"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "Blocking" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert re.match(r"Blocking held the event loop thread for over \d+ ms \(budget 10 ms\)", warnings[0])


def test_async_callbacks_run_on_the_loop(server: Server) -> None:
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    class AsyncEcho(WebSocket):
        async def opened(self) -> None:  # type: ignore[override]
            events.put(("opened-thread", threading.current_thread().name))
            await self.asend("welcome")

        async def received_message(self, message: Message) -> None:  # type: ignore[override]
            if message.data == b"recv":
                try:
                    self.recv(timeout=1)
                except RuntimeError as exc:
                    await self.connection.asend(f"RuntimeError: {exc}")
                return
            if message.data == b"fail":
                raise KeyError("fail")
            self.send("first " + str(message))  # from the loop thread: queued, in order
            await self.asend("second " + str(message))

        async def closed(self, code: int, reason: str | None = None) -> None:  # type: ignore[override]
            events.put(("closed", code, reason))

    url = server.mount(WebSocketASGIApp(AsyncEcho))
    with client(url) as ws:
        assert ws.recv(timeout=TIMEOUT).data == b"welcome"
        ws.send("x")
        assert ws.recv(timeout=TIMEOUT).data == b"first x"
        assert ws.recv(timeout=TIMEOUT).data == b"second x"
        ws.send("recv")
        assert ws.recv(timeout=TIMEOUT).data.startswith(b"RuntimeError: recv() would block the event loop")
        ws.send("fail")
        assert closed_by_server(ws).code == 1011
    _, thread_name = next_event(events, "opened-thread")
    assert not thread_name.startswith("ws4web-asgi")  # not in a hook thread: on the loop
    next_event(events, "closed")


def test_mixed_sync_and_async_callbacks(server: Server) -> None:
    class Mixed(WebSocket):
        def opened(self) -> None:  # plain: runs in a thread and may block
            time.sleep(0.05)
            self.send("sync opened")

        async def received_message(self, message: Message) -> None:  # type: ignore[override]
            await self.asend(message)

    url = server.mount(WebSocketASGIApp(Mixed))
    with client(url) as ws:
        assert ws.recv(timeout=TIMEOUT).data == b"sync opened"
        ws.send(b"\x01")
        assert ws.recv(timeout=TIMEOUT) == BinaryMessage(b"\x01")


# -- what ASGI cannot carry -------------------------------------------------------------------------


def test_uncaught_capability_error_closes_1011(server: Server) -> None:
    class Pinger(WebSocket):
        def opened(self) -> None:
            self.ping()

    url = server.mount(WebSocketASGIApp(Pinger))
    with client(url) as ws:
        assert closed_by_server(ws).code == 1011


UNSUPPORTED_VALUES: dict[str, Any] = {
    "extensions": [object()],
    "heartbeat_freq": 5.0,
    "ping_interval": 5.0,
    "ping_timeout": 5.0,
    "max_frame_size": 1024,
    "handshake_timeout": 5.0,
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_OPTIONS))
def test_unsupported_options_are_refused_when_the_app_is_built(name: str) -> None:
    with pytest.raises(UnsupportedByASGI) as info:
        WebSocketASGIApp(Echo, **{name: UNSUPPORTED_VALUES[name]})
    assert isinstance(info.value, NotImplementedError)
    assert f"{name}=" in str(info.value)


# Each handler method the capability table marks UnsupportedByASGI, and how to call it.
UNSUPPORTED_METHODS: dict[str, Callable[[WebSocket], Any]] = {
    "ping()": lambda h: h.ping(b"x"),
    "pong()": lambda h: h.pong(b"x"),
    "send_frame()": lambda h: h.send_frame(Frame(Opcode.TEXT, b"x")),
    "recv_frame()": lambda h: h.recv_frame(timeout=1),
}


def capability_table() -> dict[str, str]:
    """docs/adapters-asgi.md's capability table: feature cell -> answer cell."""
    with open(os.path.join(ROOT, "docs", "adapters-asgi.md"), encoding="utf-8") as doc:
        text = doc.read()
    section = text.split("## Capabilities", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| handler feature")]
    return {cells[1].strip(): cells[2].strip() for cells in (row.split("|") for row in rows) if len(cells) > 3}


def test_the_capability_table_matches_the_code() -> None:
    """The table (written once, in the docs) names exactly what the code refuses with UnsupportedByASGI."""
    refused = {feature: answer for feature, answer in capability_table().items() if "UnsupportedByASGI" in answer}
    named = set(re.findall(r"`([a-z_]+=?(?:\(\))?)`", " ".join(refused)))
    assert named == {f"{name}=" for name in UNSUPPORTED_OPTIONS} | set(UNSUPPORTED_METHODS)


def test_what_the_table_refuses_is_refused(server: Server) -> None:
    answers: queue.Queue[str] = queue.Queue()

    class Probe(WebSocket):
        def received_message(self, message: Message) -> None:
            try:
                UNSUPPORTED_METHODS[str(message)](self)
            except UnsupportedByASGI as exc:
                answers.put(f"{type(exc).__name__}: {exc}")
            else:
                answers.put("no error")
            self.send("next")

    url = server.mount(WebSocketASGIApp(Probe))
    with client(url) as ws:
        for name in UNSUPPORTED_METHODS:
            ws.send(name)
            assert ws.recv(timeout=TIMEOUT).data == b"next"
            answer = answers.get(timeout=TIMEOUT)
            assert answer.startswith("UnsupportedByASGI: ws4web ASGI adapter: "), (name, answer)


# -- non-WebSocket scopes -------------------------------------------------------------------------------


def test_http_gets_404_or_goes_to_the_wrapped_app(server: Server) -> None:
    async def hello(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})

    bare = server.http_url(server.mount(WebSocketASGIApp(Echo)))
    wrapping_url = server.mount(WebSocketASGIApp(Echo, app=hello))
    assert server.http_get(bare) == (404, b"Not Found: this endpoint only speaks WebSocket\n")
    assert server.http_get(server.http_url(wrapping_url)) == (200, b"hello")
    with client(wrapping_url) as ws:  # WebSockets still reach the handler
        ws.send("ws")
        assert ws.recv(timeout=TIMEOUT).data == b"ws"


# -- shutdown ---------------------------------------------------------------------------------------------


def test_app_shutdown_sends_1001_and_refuses_newcomers(server: Server) -> None:
    handler_cls, events = recording()
    app = WebSocketASGIApp(handler_cls)
    url = server.mount(app)
    with client(url) as ws:
        _, handler = next_event(events, "opened")
        loop = handler.connection.loop
        watcher = CloseWatcher(ws)
        asyncio.run_coroutine_threadsafe(app.shutdown(timeout=TIMEOUT), loop).result(TIMEOUT * 2)
        exc = watcher.closed()
        assert isinstance(exc, ConnectionClosedOK)
        assert (exc.code, exc.reason) == (1001, "server shutting down")
    with pytest.raises(InvalidStatus) as info:
        connect(url, timeout=TIMEOUT)
    assert info.value.status == 503


def test_plain_uvicorn_shutdown_sends_1012() -> None:
    handler_cls, events = recording()
    served = start_uvicorn(WebSocketASGIApp(handler_cls), lifespan="on")
    try:
        with client(served.url("/any/path")) as ws:
            next_event(events, "opened")
            watcher = CloseWatcher(ws)
            served.stop()
            exc = watcher.closed()
        assert exc.code == 1012  # uvicorn's choice (Service Restart), not the adapter's
        assert next_event(events, "closed")[1] == 1012
    finally:
        served.stop()


def test_uvicorn_server_helper_shutdown_sends_1001() -> None:
    handler_cls, events = recording()
    served = start_uvicorn(WebSocketASGIApp(handler_cls), server_factory=uvicorn_server, lifespan="on")
    try:
        with client(served.url("/")) as a, client(served.url("/b")) as b:
            next_event(events, "opened")
            next_event(events, "opened")
            watchers = [CloseWatcher(a), CloseWatcher(b)]
            served.stop()
            for watcher in watchers:
                exc = watcher.closed()
                assert isinstance(exc, ConnectionClosedOK)
                assert (exc.code, exc.reason) == (1001, "server shutting down")
        assert next_event(events, "closed")[1] == 1001
    finally:
        served.stop()


def test_hypercorn_shutdown_trigger_sends_1001() -> None:
    handler_cls, events = recording()
    served = start_hypercorn(WebSocketASGIApp(handler_cls), wrap_trigger=True)
    try:
        with client(served.url("/")) as ws:
            next_event(events, "opened")
            watcher = CloseWatcher(ws)
            served.stop()
            exc = watcher.closed()
            assert isinstance(exc, ConnectionClosedOK)
            assert exc.code == 1001
        next_event(events, "closed")
    finally:
        served.stop()


# -- Starlette ----------------------------------------------------------------------------------------------


def test_starlette_route() -> None:
    from starlette.applications import Starlette

    route = websocket_route("/ws", Echo, protocols=["p1"])
    assert isinstance(route.app, WebSocketASGIApp)
    served = start_uvicorn(Starlette(routes=[route]))
    try:
        with client(served.url("/ws"), protocols=["p1"]) as ws:
            assert ws.subprotocol == "p1"
            ws.send("through starlette")
            assert ws.recv(timeout=TIMEOUT).data == b"through starlette"
        with pytest.raises(InvalidStatus) as info:  # Starlette's own answer for an unknown path
            connect(served.url("/elsewhere"), timeout=TIMEOUT)
        assert info.value.status == 403
    finally:
        served.stop()


# Starlette 1.x warns that its TestClient should run on httpx2; this test is about the adapter.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_starlette_test_client() -> None:
    """Starlette's own TestClient (no network) drives the adapter too, sync and async handlers alike."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    class Hello(Echo):
        def opened(self) -> None:
            self.send("hello " + (self.subprotocol or ""))

    class AsyncEcho(WebSocket):
        async def received_message(self, message: Message) -> None:  # type: ignore[override]
            await self.asend(message)

    class Room(WebSocket):
        def opened(self) -> None:
            self.send(repr(sorted(self.view_args.items())))

    app = Starlette(
        routes=[
            websocket_route("/ws", Hello, protocols=["p"]),
            websocket_route("/async", AsyncEcho),
            websocket_route("/room/{name}/{n:int}", Room),
        ]
    )
    with TestClient(app) as test_client:
        with test_client.websocket_connect("/ws", subprotocols=["p"]) as ws:
            assert ws.receive_text() == "hello p"
            ws.send_bytes(b"\x00")
            assert ws.receive_bytes() == b"\x00"
        with test_client.websocket_connect("/async") as ws:
            ws.send_text("a")
            assert ws.receive_text() == "a"
        with test_client.websocket_connect("/room/lobby/3") as ws:  # Starlette's path_params are view_args
            assert ws.receive_text() == "[('n', 3), ('name', 'lobby')]"


# -- the door: one policy, one registry --------------------------------------------------------------------


def test_refusals_are_logged_as_on_every_door(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    url = server.mount(WebSocketASGIApp(Echo, authenticate=basic_auth({"ann": "s3cret"})))
    with caplog.at_level(logging.INFO, logger="ws4web.adapters.asgi"), pytest.raises(InvalidStatus):
        connect(url, timeout=TIMEOUT)
    lines = [r.getMessage() for r in caplog.records if r.name == "ws4web.adapters.asgi"]
    refused = re.compile(r"\] handshake refused \(HTTP 401\) /t\d+: missing credentials$")
    assert any(refused.search(line) for line in lines), lines


def test_broadcast_reaches_every_open_connection(server: Server) -> None:
    handler_cls, events = recording()
    app = WebSocketASGIApp(handler_cls)
    url = server.mount(app)
    with client(url) as a, client(url) as b:
        next_event(events, "opened")
        next_event(events, "opened")
        assert len(app.websockets) == 2
        assert app.broadcast("to all") == 2  # from this (non-loop) thread
        assert a.recv(timeout=TIMEOUT).data == b"to all"
        assert b.recv(timeout=TIMEOUT).data == b"to all"
        a.close()
        next_event(events, "closed")
        assert wait_for(lambda: len(app.websockets) == 1)


def wait_for(predicate: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- the message size bound is the server's ---------------------------------------------------------------


def too_big_is_refused_early(port: int) -> int:
    """Announce a 16 MiB message, send 64 KiB of it: the close code the server answers with."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        peer = RawPeer(sock)
        peer.send(
            f"GET /big HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert peer.read_head().startswith(b"HTTP/1.1 101")
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, 16 * 2**20) + b"\0\0\0\0"  # masked with a zero key
        try:
            peer.send(header + bytes(65536))
        except OSError:  # the server closed while we were still sending: it did not wait for the rest
            pass
        return peer.read_data_frame().close_code


def test_uvicorn_server_refuses_a_message_too_big_before_buffering_it() -> None:
    delivered: queue.Queue[int] = queue.Queue()

    class Sizes(WebSocket):
        def received_message(self, message: Message) -> None:
            delivered.put(len(message))

    app = WebSocketASGIApp(Sizes, max_message_size=1024)
    served = start_uvicorn(app, server_factory=uvicorn_server)
    try:
        # RFC 6455 §7.4.1: 1009. Had uvicorn not known the bound, it would wait for all 16 MiB.
        assert too_big_is_refused_early(served.port) == 1009
        assert delivered.empty()
    finally:
        served.stop()


def test_hypercorn_config_refuses_a_message_too_big_before_buffering_it() -> None:
    app = WebSocketASGIApp(Echo, max_message_size=1024)
    config = hypercorn_config(app)
    assert config.websocket_max_message_size == 1024
    served = start_hypercorn(app, config=config)
    try:
        assert too_big_is_refused_early(served.port) == 1009
    finally:
        served.stop()
