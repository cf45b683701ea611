"""The CherryPy tool and plugin against a real CherryPy (cheroot) server on loopback."""

from __future__ import annotations

import base64
import io
import os
import queue
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

cherrypy = pytest.importorskip("cherrypy")

from ws4web import WebSocket, connect  # noqa: E402
from ws4web.adapters import cherrypy as adapter  # noqa: E402
from ws4web.adapters._stack import cheroot_request  # noqa: E402
from ws4web.auth import basic_auth  # noqa: E402
from ws4web.drivers.selector import SelectorDriver, default_loop  # noqa: E402
from ws4web.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus  # noqa: E402
from ws4web.frames import Frame, Opcode  # noqa: E402
from ws4web.handshake import accept_key, check_response  # noqa: E402
from ws4web.http11 import Response, parse_response  # noqa: E402
from ws4web.messages import Message  # noqa: E402
from ws4web.streams import StreamReader  # noqa: E402

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0

# The decorators below need the tool registered when the class is defined; the
# plugin is subscribed by the fixture (install() then keeps this tool).
if not isinstance(getattr(cherrypy.tools, "websocket", None), adapter.WebSocketTool):
    cherrypy.tools.websocket = adapter.WebSocketTool()


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


class Probe(Echo):
    """Echo that reports what the tool gave it (the constructor's arguments, then what
    ``opened()`` sees), and its closing code."""

    created: queue.Queue[dict[str, Any]] = queue.Queue()
    closings: queue.Queue[int] = queue.Queue()

    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        self.arguments = {"sock": sock, **kwargs}
        super().__init__(sock, *args, **kwargs)

    def opened(self) -> None:
        Probe.created.put(
            {
                **self.arguments,
                "request": self.request,
                "timeout": self.sock.gettimeout(),
                "driver": self.connection,
                "handler": self,
            }
        )

    def closed(self, code: int, reason: str | None = None) -> None:
        Probe.closings.put(code)


class Boom(WebSocket):
    def received_message(self, message: Message) -> None:
        raise RuntimeError("handler bug (raised on purpose by the test)")


class Welcome(WebSocket):
    def opened(self) -> None:
        self.send("welcome")  # must reach the client after the 101, not before


class Puller(WebSocket):
    """Pull style: blocks in recv(), which only a thread of its own may do."""

    def opened(self) -> None:
        self.send("pulled " + self.recv(TIMEOUT).text)


class Recorder(Echo):
    """Echo that logs its callbacks, to order them against the bus channels."""

    events: list[tuple[str, WebSocket]] = []
    lock = threading.Lock()

    def opened(self) -> None:
        with Recorder.lock:
            Recorder.events.append(("opened", self))

    def closed(self, code: int, reason: str | None = None) -> None:
        with Recorder.lock:
            Recorder.events.append(("closed", self))


class Root:
    page_saw: queue.Queue[Any] = queue.Queue()

    @cherrypy.expose
    def index(self) -> str:
        return "plain page"

    @cherrypy.expose
    def seen(self) -> None:
        Root.page_saw.put(cherrypy.request.ws_handler)  # ws4py's name, set before the 101

    @cherrypy.expose
    def echo(self) -> None:
        pass

    @cherrypy.expose
    def probe(self, **params: str) -> None:
        pass

    @cherrypy.expose
    def chat(self) -> None:
        pass

    @cherrypy.expose
    def boom(self) -> None:
        pass

    @cherrypy.expose
    def pull(self) -> None:
        pass

    @cherrypy.expose
    def record(self) -> None:
        pass

    @cherrypy.expose
    @cherrypy.tools.websocket(handler_cls=Welcome)
    def welcome(self) -> None:
        pass

    @cherrypy.expose
    @cherrypy.tools.websocket(handler_cls=Echo, max_message_size=1024)
    def small(self) -> None:
        pass

    @cherrypy.expose
    @cherrypy.tools.websocket(handler_cls=Echo)
    def refuse(self) -> None:
        raise cherrypy.HTTPError(403, "not you")

    @cherrypy.expose
    @cherrypy.tools.websocket(
        handler_cls=Echo, origins=["https://good.example"], authenticate=basic_auth({"alice": "secret"})
    )
    def guarded(self) -> None:
        pass


CONFIG = {
    "/echo": {"tools.websocket.on": True, "tools.websocket.handler_cls": Echo},
    "/probe": {"tools.websocket.on": True, "tools.websocket.handler_cls": Probe},
    "/chat": {
        "tools.websocket.on": True,
        "tools.websocket.handler_cls": Echo,
        "tools.websocket.protocols": ["chat", "superchat"],
    },
    "/boom": {"tools.websocket.on": True, "tools.websocket.handler_cls": Boom},
    "/pull": {"tools.websocket.on": True, "tools.websocket.handler_cls": Puller},
    "/record": {"tools.websocket.on": True, "tools.websocket.handler_cls": Recorder},
    "/seen": {"tools.websocket.on": True, "tools.websocket.handler_cls": Probe},
}


@pytest.fixture(scope="module")
def app() -> Iterator[adapter.WebSocketPlugin]:
    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": 0,
            "server.thread_pool": 4,
            "server.socket_queue_size": 256,
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
        }
    )
    cherrypy.tree.mount(Root(), "/", CONFIG)
    plugin = adapter.install(shutdown_timeout=5.0)
    try:
        yield plugin
    finally:
        adapter.uninstall()
        cherrypy.tree.apps.clear()
        cherrypy.engine.exit()
        cherrypy.config.reset()


def start_engine() -> int:
    """Start CherryPy on a fresh ephemeral port; return the port."""
    # cheroot remembers the port it got for port 0 and binds it again on a
    # restart, without SO_REUSEADDR: the server-side TIME_WAIT sockets of the
    # WebSockets closed just before would make that fail. A new server object
    # asks for a new port.
    cherrypy.server.httpserver = cherrypy.server.httpserver_from_self()[0]
    # cheroot's stop() waits for its selector loop, which looks up every
    # expiration_interval (0.5 s): that was most of each test's teardown.
    cherrypy.server.httpserver.expiration_interval = 0.05
    cherrypy.engine.start()
    return int(cherrypy.server.bound_addr[1])


@pytest.fixture
def server(app: adapter.WebSocketPlugin) -> Iterator[tuple[int, adapter.WebSocketPlugin]]:
    for q in (Probe.created, Probe.closings):
        while not q.empty():
            q.get_nowait()
    port = start_engine()
    try:
        yield port, app
    finally:
        cherrypy.engine.stop()


def loop_threads() -> list[threading.Thread]:
    """The plugin's loop threads still alive: leader, watchdog, owners and spares."""
    return [t for t in threading.enumerate() if t.name.startswith("ws4web-cherrypy-")]


def ws_url(port: int, path: str) -> str:
    return f"ws://127.0.0.1:{port}{path}"


def wait_for(predicate: Any, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


KEY = base64.b64encode(b"0123456789abcdef").decode()


def upgrade_bytes(path: str, port: int, method: str = "GET", version: str = "13", upgrade: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    lines += [f"Sec-WebSocket-Key: {KEY}", f"Sec-WebSocket-Version: {version}"]
    if method == "POST":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[Response, bytes]:
    """Parse one HTTP response from ``sock``; return it with the bytes read past it."""
    reader = StreamReader()
    parser = parse_response(reader)
    sock.settimeout(TIMEOUT)
    try:
        next(parser)
        while True:
            data = sock.recv(4096)
            if data:
                reader.feed_data(data)
            else:
                reader.feed_eof()
            next(parser)
    except StopIteration as done:
        return done.value, bytes(reader.buffer)


def raw_handshake(port: int, payload: bytes) -> tuple[socket.socket, Response, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(payload)
    response, rest = read_response(sock)
    return sock, response, rest


def masked_text(text: str) -> bytes:
    return b"".join(Frame(Opcode.TEXT, text.encode()).serialize(mask=True))


def read_frame(sock: socket.socket, buffered: bytes) -> Frame:
    """One unmasked server frame from ``buffered`` then ``sock``."""
    reader = StreamReader()
    reader.feed_data(buffered)
    parser = Frame.parse(reader, mask=False)
    try:
        next(parser)
        while True:
            data = sock.recv(4096)
            if not data:
                raise AssertionError("connection closed before a frame arrived")
            reader.feed_data(data)
            next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame


# -- echo and options ----------------------------------------------------------------


def test_echo_text_and_binary(server: tuple[int, Any]) -> None:
    port, _ = server
    ws = connect(ws_url(port, "/echo"), timeout=TIMEOUT)
    try:
        ws.send("héllo")
        assert ws.recv(TIMEOUT).text == "héllo"
        payload = os.urandom(200_000)
        ws.send(payload)
        received = ws.recv(TIMEOUT)
        assert received.is_binary and received.data == payload
    finally:
        ws.close()


def test_subprotocol_from_config(server: tuple[int, Any]) -> None:
    port, _ = server
    ws = connect(ws_url(port, "/chat"), protocols=["other", "superchat"], timeout=TIMEOUT)
    try:
        assert ws.subprotocol == "superchat"
        ws.send("x")
        assert ws.recv(TIMEOUT).text == "x"
    finally:
        ws.close()


def test_decorator_passes_handler_options(server: tuple[int, Any]) -> None:
    port, _ = server
    ws = connect(ws_url(port, "/small"), timeout=TIMEOUT)
    ws.send("a" * 1000)
    assert ws.recv(TIMEOUT).text == "a" * 1000
    ws.send("a" * 2000)  # over max_message_size=1024 set in the decorator
    with pytest.raises(ConnectionClosedError) as info:
        ws.recv(TIMEOUT)
    assert info.value.code == 1009


def test_opened_message_follows_the_101(server: tuple[int, Any]) -> None:
    port, _ = server
    ws = connect(ws_url(port, "/welcome"), timeout=TIMEOUT)
    try:
        assert ws.recv(TIMEOUT).text == "welcome"
    finally:
        ws.close()


def test_handler_gets_ws4py_arguments_request_and_environ(server: tuple[int, adapter.WebSocketPlugin]) -> None:
    port, plugin = server
    ws = connect(ws_url(port, "/probe?room=7"), timeout=TIMEOUT)
    try:
        ws.send("ping")
        assert ws.recv(TIMEOUT).text == "ping"
        created = Probe.created.get(timeout=TIMEOUT)
        # ws4py's constructor arguments, and nothing else.
        assert sorted(created) == [
            "driver", "environ", "extensions", "handler", "heartbeat_freq", "protocols", "request", "sock", "timeout"
        ]  # fmt: skip
        assert (created["protocols"], created["extensions"], created["heartbeat_freq"]) == ([], [], None)
        assert created["request"].path == "/probe?room=7"
        assert created["request"].headers.get("Sec-WebSocket-Version") == "13"
        assert created["environ"]["PATH_INFO"] == "/probe"
        assert created["environ"]["QUERY_STRING"] == "room=7"
        assert "wsgi.input" not in created["environ"]
        # The connection runs on the plugin's loop, its socket non-blocking: cheroot's
        # socket_timeout (which would end an idle WebSocket) no longer applies.
        assert isinstance(created["driver"], SelectorDriver) and created["driver"].loop is plugin.loop
        assert created["timeout"] == 0.0
    finally:
        ws.close()


def test_page_handler_sees_the_handler_it_upgrades_to(server: tuple[int, Any]) -> None:
    port, _ = server
    with connect(ws_url(port, "/seen"), timeout=TIMEOUT) as ws:
        ws.send("x")
        assert ws.recv(TIMEOUT).text == "x"
    created = Probe.created.get(timeout=TIMEOUT)
    assert Root.page_saw.get(timeout=TIMEOUT) is created["handler"]


# -- the handshake -------------------------------------------------------------------


def test_plain_get_is_refused_with_426(server: tuple[int, Any]) -> None:
    port, _ = server
    sock, response, _ = raw_handshake(port, upgrade_bytes("/echo", port, upgrade=False))
    sock.close()
    with pytest.raises(InvalidStatus) as info:
        check_response(response, KEY)
    assert info.value.status == 426
    assert response.headers.get("Upgrade") == "websocket"


def test_bad_version_is_refused_with_426_and_version_header(server: tuple[int, Any]) -> None:
    port, _ = server
    sock, response, _ = raw_handshake(port, upgrade_bytes("/echo", port, version="8"))
    sock.close()
    with pytest.raises(InvalidStatus) as info:
        check_response(response, KEY)
    assert info.value.status == 426
    assert ("Sec-WebSocket-Version", "13") in info.value.headers


def test_post_is_refused_with_405(server: tuple[int, Any]) -> None:
    port, _ = server
    sock, response, _ = raw_handshake(port, upgrade_bytes("/echo", port, method="POST"))
    sock.close()
    with pytest.raises(InvalidStatus) as info:
        check_response(response, KEY)
    assert info.value.status == 405
    assert response.headers.get("Allow") == "GET"


def test_a_second_version_header_is_refused(server: tuple[int, Any]) -> None:
    # The client sends its own "13": with a second Sec-WebSocket-Version, the request is
    # ambiguous, and the guarded cheroot refuses it (400) before the tool sees it — where
    # plain cheroot would keep the last one and hide the duplicate.
    port, _ = server
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(port, "/echo"), headers=[("Sec-WebSocket-Version", "8")], timeout=TIMEOUT)
    assert info.value.status == 400


def test_bad_version_is_answered_426(server: tuple[int, Any]) -> None:
    # Raw bytes: the client's headers= would add a second Sec-WebSocket-Version (a 400).
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(upgrade_bytes("/echo", port, version="8"))
        response, _ = read_response(sock)
    assert response.status == 426
    assert response.headers.get("Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("Origin", "https://evil.example")], 403),
        ([("Origin", "https://good.example")], 401),
        ([("Origin", "https://good.example"), ("Authorization", "Basic YWxpY2U6d3Jvbmc=")], 401),
    ],
)
def test_tool_enforces_origins_and_authentication(server: tuple[int, Any], headers: Any, status: int) -> None:
    port, _ = server
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(port, "/guarded"), headers=headers, timeout=TIMEOUT)
    assert info.value.status == status


def test_tool_lets_the_right_origin_and_credentials_in(server: tuple[int, Any]) -> None:
    port, _ = server
    url = ws_url(port, "/guarded").replace("ws://", "ws://alice:secret@")
    with connect(url, headers=[("Origin", "https://good.example")], timeout=TIMEOUT) as ws:
        ws.send("in")
        assert ws.recv(TIMEOUT).data == b"in"


def test_page_handler_may_refuse_the_upgrade(server: tuple[int, Any]) -> None:
    port, _ = server
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(port, "/refuse"), timeout=TIMEOUT)
    assert info.value.status == 403
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=TIMEOUT) as page:
        assert page.read() == b"plain page"


def test_first_frame_in_the_handshake_packet(server: tuple[int, Any]) -> None:
    port, _ = server
    # One sendall: cheroot's buffered reader fetches the frame with the headers.
    early = masked_text("early bird")
    sock, response, rest = raw_handshake(port, upgrade_bytes("/probe", port) + early)
    try:
        assert response.status == 101
        assert response.headers.get("Sec-WebSocket-Accept") == accept_key(KEY)
        # The echo: handed over from cheroot's read buffer, not lost.
        frame = read_frame(sock, rest)
        assert frame.opcode is Opcode.TEXT and frame.data == b"early bird"
    finally:
        sock.close()


def test_detach_outside_cheroot_finds_nothing() -> None:
    assert cheroot_request() is None
    assert adapter._detach_socket(cheroot_request()) is None



def test_refuses_to_upgrade_outside_cheroot(app: adapter.WebSocketPlugin) -> None:
    # The app called as a plain WSGI callable from this thread, as another
    # WSGI server would: no socket to take over, so no 101 either.
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/echo",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "5000",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        statuses.append(status)

    result = cherrypy.tree(environ, start_response)
    try:
        b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    assert statuses and statuses[-1].startswith("500")


# -- failures and shutdown ------------------------------------------------------------


def test_abrupt_disconnect_reports_1006(server: tuple[int, Any]) -> None:
    port, _ = server
    ws = connect(ws_url(port, "/probe"), timeout=TIMEOUT)
    ws.send("hi")
    assert ws.recv(TIMEOUT).text == "hi"
    ws.sock.shutdown(socket.SHUT_RDWR)  # no close frame: the TCP connection just ends
    ws.sock.close()
    assert Probe.closings.get(timeout=TIMEOUT) == 1006
    other = connect(ws_url(port, "/echo"), timeout=TIMEOUT)
    try:
        other.send("still here")
        assert other.recv(TIMEOUT).text == "still here"
    finally:
        other.close()


def test_raising_handler_closes_with_1011_only_its_client(server: tuple[int, Any]) -> None:
    port, _ = server
    bystander = connect(ws_url(port, "/echo"), timeout=TIMEOUT)
    victim = connect(ws_url(port, "/boom"), timeout=TIMEOUT)
    try:
        victim.send("trigger")
        with pytest.raises(ConnectionClosedError) as info:
            victim.recv(TIMEOUT)
        assert info.value.code == 1011
        bystander.send("fine")
        assert bystander.recv(TIMEOUT).text == "fine"
    finally:
        bystander.close()


def test_broadcast_reaches_every_client(server: tuple[int, adapter.WebSocketPlugin]) -> None:
    port, plugin = server
    clients = [connect(ws_url(port, "/echo"), timeout=TIMEOUT) for _ in range(3)]
    try:
        assert wait_for(lambda: len(plugin.websockets) == 3)
        plugin.broadcast("news")
        cherrypy.engine.publish("websocket-broadcast", b"\x00bin")
        for ws in clients:
            assert ws.recv(TIMEOUT).text == "news"
            assert ws.recv(TIMEOUT).data == b"\x00bin"
    finally:
        for ws in clients:
            ws.close()
    assert wait_for(lambda: not plugin.websockets)


def test_engine_stop_closes_clients_with_1001(app: adapter.WebSocketPlugin) -> None:
    port = start_engine()
    stopper = None
    try:
        clients = [connect(ws_url(port, "/echo"), timeout=TIMEOUT) for _ in range(3)]
        assert wait_for(lambda: len(app.websockets) == 3)
        # The loop was started with the engine.
        assert app.loop is not None
        assert loop_threads()
        stopper = threading.Thread(target=cherrypy.engine.stop)
        stopper.start()
        for ws in clients:  # reading lets each client answer the server's close frame
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(TIMEOUT)
            assert info.value.code == 1001
        stopper.join(TIMEOUT)
        assert not stopper.is_alive()
        assert not app.websockets
        # Stopped with the engine, after the closes: no thread left behind.
        assert app.loop is None
        assert wait_for(lambda: not loop_threads()), loop_threads()
    finally:
        if stopper is not None:
            stopper.join(TIMEOUT)
        cherrypy.engine.stop()


def test_many_clients_with_four_worker_threads(server: tuple[int, adapter.WebSocketPlugin]) -> None:
    port, plugin = server
    assert cherrypy.server.httpserver.requests.min == 4

    def open_one(i: int) -> WebSocket:
        return connect(ws_url(port, "/echo"), timeout=TIMEOUT)

    with ThreadPoolExecutor(max_workers=20) as pool:
        clients = list(pool.map(open_one, range(200)))
    try:
        # All 200 stay open, yet plain HTTP still gets a worker thread.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=TIMEOUT) as page:
            assert page.read() == b"plain page"
        assert wait_for(lambda: len(plugin.websockets) == 200)
        # One selector loop holds them all: no thread per connection.
        assert plugin.loop is not None and len(plugin.loop.connections) == 200
        assert threading.active_count() < 200
        for i, ws in enumerate(clients):
            ws.send(f"message {i}")
        for i, ws in enumerate(clients):
            assert ws.recv(TIMEOUT).text == f"message {i}"
    finally:
        with ThreadPoolExecutor(max_workers=20) as pool:
            list(pool.map(lambda ws: ws.close(), clients))


# -- how handlers run ---------------------------------------------------------------------


def test_pull_style_handler_gets_a_thread_of_its_own(server: tuple[int, Any]) -> None:
    port, _ = server
    bystander = connect(ws_url(port, "/echo"), timeout=TIMEOUT)
    ws = connect(ws_url(port, "/pull"), timeout=TIMEOUT)
    try:
        # Puller.opened() waits in recv(): the loop goes on for the other connection.
        bystander.send("not held up")
        assert bystander.recv(TIMEOUT).text == "not held up"
        ws.send("x")
        assert ws.recv(TIMEOUT).text == "pulled x"
    finally:
        ws.close()
        bystander.close()


def test_bus_channels_bracket_the_callbacks(server: tuple[int, Any]) -> None:
    port, _ = server
    with Recorder.lock:
        Recorder.events.clear()

    def handled(websocket: WebSocket, peer: Any = None) -> None:
        if isinstance(websocket, Recorder):
            with Recorder.lock:
                Recorder.events.append(("handle-websocket", websocket))

    def gone(websocket: WebSocket) -> None:
        if isinstance(websocket, Recorder):
            with Recorder.lock:
                Recorder.events.append(("websocket-closed", websocket))

    cherrypy.engine.subscribe("handle-websocket", handled)
    cherrypy.engine.subscribe("websocket-closed", gone)
    try:
        ws = connect(ws_url(port, "/record"), timeout=TIMEOUT)
        ws.send("x")
        assert ws.recv(TIMEOUT).text == "x"
        ws.close()
        assert wait_for(lambda: len(Recorder.events) == 4)
    finally:
        cherrypy.engine.unsubscribe("handle-websocket", handled)
        cherrypy.engine.unsubscribe("websocket-closed", gone)
    names = [name for name, _ in Recorder.events]
    assert names == ["handle-websocket", "opened", "closed", "websocket-closed"]
    assert len({id(websocket) for _, websocket in Recorder.events}) == 1


def test_without_the_plugin_connections_run_on_the_default_loop(server: tuple[int, adapter.WebSocketPlugin]) -> None:
    port, plugin = server
    plugin.unsubscribe()  # nobody answers websocket-loop now
    try:
        ws = connect(ws_url(port, "/probe"), timeout=TIMEOUT)
        try:
            ws.send("alone")
            assert ws.recv(TIMEOUT).text == "alone"
            created = Probe.created.get(timeout=TIMEOUT)
            assert isinstance(created["driver"], SelectorDriver)
            assert created["driver"].loop is default_loop() and created["driver"].loop is not plugin.loop
            assert not plugin.websockets  # untracked, as nobody listens
        finally:
            ws.close()
        assert Probe.closings.get(timeout=TIMEOUT) == 1000
    finally:
        plugin.subscribe()
