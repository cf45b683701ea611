"""FastAPI routes: FastAPI's TestClient, and real servers (uvicorn, hypercorn) on 127.0.0.1 with ws4web's client.

Path parameters reach ``view_args``; a dependency that refuses answers the handshake
before any 101 and builds no handler; the results of ``depends`` are the handler's
attributes; ws4web's own policy still runs after FastAPI's dependencies.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, WebSocketException, status
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from ws4web import ConnectionClosed, InvalidStatus, WebSocket, connect
from ws4web.adapters.asgi import WebSocketASGIApp, uvicorn_server
from ws4web.adapters.fastapi import WebSocketEndpoint, add_websocket_route
from ws4web.handshake import generate_key
from ws4web.messages import Message

from .test_asgi import start_hypercorn, start_uvicorn

TIMEOUT = 10.0

pytestmark = [
    pytest.mark.timeout(60),
    # Starlette 1.x warns that its TestClient should run on httpx2; these tests are about the adapter.
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]

USERS = {"t-ann": "ann", "t-bob": "bob"}


def current_user(x_token: str = Header("")) -> str:
    """Refuses with WebSocketException (close before accept) or HTTPException (an HTTP answer)."""
    if x_token == "http-refusal":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not you")
    if x_token == "http-401":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in", headers={"WWW-Authenticate": "Bearer"})
    user = USERS.get(x_token)
    if user is None:
        raise WebSocketException(status.WS_1008_POLICY_VIOLATION, "unknown token")
    return user


class Room(WebSocket):
    """Says who it is serving, and where; echoes; notes every handler built."""

    built: list[Room] = []
    user: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Room.built.append(self)

    def opened(self) -> None:
        self.send(json.dumps({"user": self.user, "view_args": self.view_args}))

    def received_message(self, message: Message) -> None:
        self.send(message)


@pytest.fixture(autouse=True)
def fresh_rooms() -> None:
    Room.built = []


def make_app(**options: Any) -> tuple[FastAPI, WebSocketASGIApp]:
    app = FastAPI()
    door = add_websocket_route(app, "/chat/{room}/{n:int}", Room, depends={"user": Depends(current_user)}, **options)
    return app, door


def refused(test_client: TestClient, path: str, token: str) -> BaseException:
    with pytest.raises((WebSocketDisconnect, WebSocketDenialResponse)) as info:
        test_client.websocket_connect(path, headers={"X-Token": token}).__enter__()
    return info.value


# -- TestClient ---------------------------------------------------------------------------------------


def test_path_parameters_and_the_dependencys_result_reach_the_handler() -> None:
    app, door = make_app()
    with (
        TestClient(app) as test_client,
        test_client.websocket_connect("/chat/lobby/7", headers={"X-Token": "t-ann"}) as ws,
    ):
        assert json.loads(ws.receive_text()) == {"user": "ann", "view_args": {"room": "lobby", "n": 7}}
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
        (handler,) = door.websockets  # the route's door runs the connection
        assert handler.user == "ann" and isinstance(handler, Room)


def test_a_refusing_dependency_answers_before_any_handler_exists() -> None:
    app, door = make_app()
    with TestClient(app) as test_client:
        closed = refused(test_client, "/chat/lobby/1", "nope")
        assert isinstance(closed, WebSocketDisconnect) and closed.code == 1008 and closed.reason == "unknown token"
        denied = refused(test_client, "/chat/lobby/1", "http-refusal")
        assert isinstance(denied, WebSocketDenialResponse)
        assert denied.status_code == 403 and denied.json() == {"detail": "not you"}
        assert isinstance(refused(test_client, "/chat/lobby/x", "t-ann"), WebSocketDisconnect)  # {n:int}
    assert Room.built == [] and door.websockets == set()


def test_a_dependency_missing_a_required_parameter_refuses_with_1008() -> None:
    def needs_token(token: str) -> str:  # a required query parameter
        return token

    app = FastAPI()
    add_websocket_route(app, "/ws", Room, depends={"user": Depends(needs_token)})
    with TestClient(app) as test_client:
        closed = refused(test_client, "/ws", "")
        assert isinstance(closed, WebSocketDisconnect) and closed.code == 1008
        with test_client.websocket_connect("/ws?token=ann") as ws:
            assert json.loads(ws.receive_text())["user"] == "ann"
    assert len(Room.built) == 1


def test_dependency_overrides_apply() -> None:
    app, _ = make_app()
    app.dependency_overrides[current_user] = lambda: "tester"
    with TestClient(app) as test_client, test_client.websocket_connect("/chat/kitchen/2") as ws:
        assert json.loads(ws.receive_text())["user"] == "tester"


def test_routers_prefixes_and_their_dependencies_apply() -> None:
    calls: list[str] = []

    def audit(x_token: str = Header("")) -> None:
        calls.append(x_token)
        if x_token == "t-bob":
            raise WebSocketException(status.WS_1008_POLICY_VIOLATION, "bob is not audited in")

    router = APIRouter(dependencies=[Depends(audit)])
    add_websocket_route(router, "/room/{room}", Room, depends={"user": Depends(current_user)})
    app = FastAPI()
    app.include_router(router, prefix="/api")
    with TestClient(app) as test_client:
        with test_client.websocket_connect("/api/room/x", headers={"X-Token": "t-ann"}) as ws:
            assert json.loads(ws.receive_text()) == {"user": "ann", "view_args": {"room": "x"}}
        assert isinstance(refused(test_client, "/api/room/x", "t-bob"), WebSocketDisconnect)
    assert calls == ["t-ann", "t-bob"]


def test_dependencies_run_and_yield_ones_last_as_long_as_the_connection() -> None:
    events: queue.Queue[str] = queue.Queue()

    def session() -> Iterator[str]:
        events.put("session opened")
        yield "db"
        events.put("session closed")

    def audit() -> str:
        events.put("audited")
        return "dropped"

    class Logged(WebSocket):
        db: str

        def opened(self) -> None:
            events.put(f"opened with {self.db}, audit result kept: {hasattr(self, 'audit')}")

        def closed(self, code: int, reason: str | None = None) -> None:
            events.put(f"closed {code}")

    app = FastAPI()
    add_websocket_route(app, "/ws", Logged, depends={"db": Depends(session)}, dependencies=[Depends(audit)])
    with TestClient(app) as test_client, test_client.websocket_connect("/ws") as ws:
        ws.close(1000)
    seen = [events.get(timeout=TIMEOUT) for _ in range(5)]
    assert seen == [
        "audited",
        "session opened",
        "opened with db, audit result kept: False",
        "closed 1000",
        "session closed",
    ]


def test_ws4web_policy_runs_after_the_dependencies() -> None:
    app, _ = make_app(origins=["https://chat.example"], protocols=["chat.v1"])
    with TestClient(app) as test_client:
        headers = {"X-Token": "t-ann", "Origin": "https://evil.example"}
        with pytest.raises(WebSocketDenialResponse) as info:  # ws4web's refusal, with its own status
            test_client.websocket_connect("/chat/x/1", headers=headers).__enter__()
        assert info.value.status_code == 403 and b"origin 'https://evil.example' is not allowed" in info.value.content
        headers["Origin"] = "https://chat.example"
        with test_client.websocket_connect("/chat/x/1", headers=headers, subprotocols=["chat.v1"]) as ws:
            assert ws.accepted_subprotocol == "chat.v1"
            assert json.loads(ws.receive_text())["user"] == "ann"


# -- construction -------------------------------------------------------------------------------------------


def test_what_cannot_work_fails_when_the_route_is_added() -> None:
    app = FastAPI()
    with pytest.raises(TypeError, match="must be a fastapi Depends"):
        add_websocket_route(app, "/ws", Room, depends={"user": current_user})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="dependencies must be fastapi Depends"):
        add_websocket_route(app, "/ws", Room, dependencies=[current_user])  # type: ignore[list-item]
    class Own(Room):
        guest = "nobody"  # a plain default: the dependency's result replaces it

        @property
        def shown(self) -> str:
            return self.user

        def helper(self) -> None:
            pass

    taken = ("send", "request", "view_args", "received_message", "shown", "helper")
    for name in (*taken, "_private", "websocket", "not-a-name"):
        with pytest.raises(ValueError, match="the handler's attribute"):
            add_websocket_route(app, "/ws", Own, depends={name: Depends(current_user)})
    add_websocket_route(app, "/guest", Own, depends={"guest": Depends(current_user), "user": Depends(current_user)})
    with pytest.raises(TypeError, match="unknown option"):
        add_websocket_route(app, "/ws", WebSocket, max_mesage_size=5)
    added = [r for r in app.router.routes if isinstance(getattr(r, "endpoint", None), WebSocketEndpoint)]
    assert [r.path for r in added] == ["/guest"]  # what failed added nothing
    with TestClient(app) as test_client, test_client.websocket_connect("/guest", headers={"X-Token": "t-bob"}) as ws:
        ws.receive_text()
        ws.send_text("x")
        ws.receive_text()
        (handler,) = Room.built
        assert isinstance(handler, Own) and handler.guest == "bob" and Own.guest == "nobody"


# -- a real server ----------------------------------------------------------------------------------------------


@pytest.fixture(params=["uvicorn", "hypercorn"])
def served(request: pytest.FixtureRequest) -> Iterator[str]:
    app, _ = make_app(max_message_size=2**16)
    server = start_uvicorn(app) if request.param == "uvicorn" else start_hypercorn(app)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()


def raw_status_line(address: str, path: str, token: str) -> bytes:
    """The first line the server answers a handshake with, and nothing before it."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {generate_key()}\r\nSec-WebSocket-Version: 13\r\nX-Token: {token}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


def test_on_a_server_refusals_come_before_any_101_and_the_user_gets_in(served: str) -> None:
    assert raw_status_line(served, "/chat/lobby/1", "nope").startswith(b"HTTP/1.1 403 ")
    assert raw_status_line(served, "/chat/lobby/1", "http-refusal").startswith(b"HTTP/1.1 403 ")
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://{served}/chat/lobby/1", headers=[("X-Token", "http-refusal")], timeout=TIMEOUT)
    assert info.value.status == 403 and json.loads(info.value.body) == {"detail": "not you"}
    with pytest.raises(InvalidStatus) as info:  # any status, with its headers
        connect(f"ws://{served}/chat/lobby/1", headers=[("X-Token", "http-401")], timeout=TIMEOUT)
    assert info.value.status == 401
    assert ("www-authenticate", "Bearer") in [(name.lower(), value) for name, value in info.value.headers]
    assert Room.built == []
    with connect(f"ws://{served}/chat/lobby/3", headers=[("X-Token", "t-bob")], timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT).data) == {"user": "bob", "view_args": {"room": "lobby", "n": 3}}
        ws.send("x" * 2**16)
        assert ws.recv(timeout=TIMEOUT).data == b"x" * 2**16
        ws.send("x" * (2**16 + 1))  # over max_message_size: RFC 6455 §7.4.1 1009
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
        assert closed.value.code == 1009


def test_uvicorn_server_finds_the_routes_message_size_bound() -> None:
    app, _ = make_app(max_message_size=12345)
    assert uvicorn_server(app).config.ws_max_size == 12345


def test_threads_see_the_route_too() -> None:
    """A handler's pull style (opened() in a thread) works on a FastAPI route as on any ASGI door."""

    class Pull(WebSocket):
        user: str

        def opened(self) -> None:
            for message in self:
                self.send(f"{self.user}: {message}")

    app = FastAPI()
    add_websocket_route(app, "/pull", Pull, depends={"user": Depends(current_user)})
    server = start_uvicorn(app)
    try:
        results: list[str] = []

        def talk() -> None:
            with connect(f"ws://127.0.0.1:{server.port}/pull", headers=[("X-Token", "t-ann")], timeout=TIMEOUT) as ws:
                ws.send("hi")
                results.append(str(ws.recv(timeout=TIMEOUT)))

        thread = threading.Thread(target=talk, name="test-talk")
        thread.start()
        thread.join(TIMEOUT * 2)
        assert results == ["ann: hi"]
    finally:
        server.stop()
