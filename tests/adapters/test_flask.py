"""ws4web.adapters.flask: WebSocket routes on a real Flask app with a login session, on real servers.

Werkzeug's development server and wsgiref (ws4web's handler, whose upgraded
connections run on a selector loop, so callbacks run on other threads than the
view) in this process; gunicorn's gthread worker as a subprocess importing
``gunicorn_app`` from this module. A client logs in through an ordinary Flask
view, then opens WebSockets with the session cookie.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import flask
import flask_login
import pytest
import werkzeug.serving
from flask import g, request, session

from ws4web import WebSocket, connect
from ws4web.adapters.flask import WebSockets
from ws4web.adapters.wsgiref import make_server as wsgiref_server
from ws4web.exceptions import InvalidRedirect, InvalidStatus
from ws4web.messages import Message, PongControlMessage

from ..conftest import wait_until
from .test_middleware import free_port, gunicorn_command, running, serving_in_thread

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 10.0

#: What the in-process servers' handlers saw, one dict per callback.
seen: queue.Queue[dict[str, Any]] = queue.Queue()


class User(flask_login.UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def context_report(callback: str) -> dict[str, Any]:
    """What a callback can see of Flask's context."""
    return {
        "callback": callback,
        "user": session.get("user"),
        "current_user": flask_login.current_user.get_id() if flask_login.current_user.is_authenticated else None,
        "view_args": request.view_args,
        "path": request.path,
        "g": getattr(g, "gate", None),
        "g_count": getattr(g, "callbacks", 0),
        "app": flask.current_app.name,
        "thread": threading.current_thread().name,
    }


class Room(WebSocket):
    """Reports the Flask context in each callback; asks for a pong to see ponged() too."""

    def report(self, callback: str) -> dict[str, Any]:
        g.callbacks = getattr(g, "callbacks", 0) + 1  # g lives as long as the connection
        report = context_report(callback)
        report["self_view_args"] = self.view_args
        seen.put(report)
        return report

    def opened(self) -> None:
        self.send(json.dumps(self.report("opened")))
        self.ping(b"are you there")

    def received_message(self, message: Message) -> None:
        self.send(json.dumps(self.report("received_message") | {"echo": str(message)}))

    def ponged(self, message: PongControlMessage) -> None:
        self.send(json.dumps(self.report("ponged")))

    def closed(self, code: int, reason: str | None = None) -> None:
        self.report("closed")


class Counter(WebSocket):
    """A route with an int converter, on a blueprint."""

    def opened(self) -> None:
        self.send(json.dumps({"n": self.view_args["n"], "type": type(self.view_args["n"]).__name__}))


def admins_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator that redirects, as login decorators with a login page do."""

    def wrapper(**kwargs: Any) -> Any:
        if session.get("user") != "admin":
            return flask.redirect("/login-page")
        return view(**kwargs)

    wrapper.__name__ = view.__name__
    return wrapper


def make_app() -> tuple[flask.Flask, WebSockets]:
    app = flask.Flask("ws4web_flask_test")
    app.secret_key = "test only"
    login_manager = flask_login.LoginManager(app)
    teardowns: list[str] = []
    app.config["teardowns"] = teardowns

    @login_manager.user_loader
    def load_user(user_id: str) -> User:
        return User(user_id)

    @app.post("/login")
    def login() -> str:
        name = request.form["name"]
        session["user"] = name
        flask_login.login_user(User(name))
        return "logged in"

    @app.get("/")
    def home() -> str:
        return f"home of {session.get('user')}"

    @app.before_request
    def gate() -> Any:
        g.gate = f"before_request saw {request.path}"
        if request.view_args and request.view_args.get("room") == "forbidden":
            flask.abort(403)
        return None

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        teardowns.append(request.path)

    ws = WebSockets(app, close_timeout=2.0)
    ws.route("/rooms/<room>", decorators=[flask_login.login_required])(Room)

    blueprint = flask.Blueprint("admin", "ws4web_flask_test_bp", url_prefix="/admin")
    WebSockets(blueprint).route("/count/<int:n>", decorators=[admins_only])(Counter)
    app.register_blueprint(blueprint)
    return app, ws


#: What the gunicorn subprocesses serve.
gunicorn_app, _ = make_app()


# -- the client side ------------------------------------------------------------------------------


def log_in(port: int, name: str) -> str:
    """Log in through the ordinary view; returns the session cookie."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(
            "POST", "/login", body=f"name={name}", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = conn.getresponse()
        assert response.status == 200, response.read()
        cookie = response.getheader("Set-Cookie")
        assert cookie is not None
        return cookie.split(";", 1)[0]
    finally:
        conn.close()


def get(port: int, path: str, cookie: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_session_and_path_parameter(port: int) -> list[dict[str, Any]]:
    """The done-when: log in through a normal view, then the handler reads session["user"]
    and the path parameter in every callback. Returns the handler's reports."""
    cookie = log_in(port, "ann")
    reports: list[dict[str, Any]] = []
    with connect(f"ws://127.0.0.1:{port}/rooms/lobby", headers={"Cookie": cookie}, timeout=TIMEOUT) as ws:
        reports.append(json.loads(ws.recv(TIMEOUT).data))  # opened
        ws.send("hello")
        # The client answers the server's ping while it waits: pong and echo, either order.
        reports += [json.loads(ws.recv(TIMEOUT).data) for _ in range(2)]
    by_callback = {report["callback"]: report for report in reports}
    assert set(by_callback) == {"opened", "received_message", "ponged"}
    for report in reports:
        assert report["user"] == "ann"
        assert report["current_user"] == "ann"
        assert report["view_args"] == report["self_view_args"] == {"room": "lobby"}
        assert report["path"] == "/rooms/lobby"
        assert report["g"] == "before_request saw /rooms/lobby"
        assert report["app"] == "ws4web_flask_test"
    assert by_callback["received_message"]["echo"] == "hello"
    assert sorted(report["g_count"] for report in reports) == [1, 2, 3]  # one g for the connection
    return reports


def check_refusals(port: int) -> None:
    """Flask answers before any 101: login_required, before_request, a redirecting decorator."""
    url = f"ws://127.0.0.1:{port}"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{url}/rooms/lobby", timeout=TIMEOUT)
    assert refused.value.status == 401  # login_required, no login view
    cookie = log_in(port, "bob")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{url}/rooms/forbidden", headers={"Cookie": cookie}, timeout=TIMEOUT)
    assert refused.value.status == 403  # before_request aborted
    with pytest.raises(InvalidRedirect) as redirected:
        connect(f"{url}/admin/count/3", headers={"Cookie": cookie}, timeout=TIMEOUT, max_redirects=0)
    assert redirected.value.status == 302
    assert ("Location", "/login-page") in [(k.title(), v) for k, v in redirected.value.headers]
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{url}/admin/count/not-a-number", headers={"Cookie": cookie}, timeout=TIMEOUT)
    assert refused.value.status == 404  # the <int:n> converter refused the path
    admin = log_in(port, "admin")
    with connect(f"{url}/admin/count/3", headers={"Cookie": admin}, timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(TIMEOUT).data) == {"n": 3, "type": "int"}
    # Plain requests: the site works; a plain GET of a WebSocket route is no route for it.
    assert get(port, "/", admin) == (200, b"home of admin")
    assert get(port, "/rooms/lobby", admin)[0] == 400


def drain_seen() -> list[dict[str, Any]]:
    reports = []
    with contextlib.suppress(queue.Empty):
        while True:
            reports.append(seen.get(timeout=TIMEOUT if not reports else 0.5))
            if reports[-1]["callback"] == "closed":
                break
    return reports


# -- servers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def werkzeug_serving(app: flask.Flask) -> Iterator[int]:
    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    with serving_in_thread(server.serve_forever, stop):
        yield server.server_port


@contextlib.contextmanager
def wsgiref_serving(app: flask.Flask, ws: WebSockets) -> Iterator[int]:
    server = wsgiref_server("127.0.0.1", 0, app)

    def stop() -> None:
        ws.shutdown(timeout=2.0)
        server.shutdown()
        server.server_close()

    with serving_in_thread(server.serve_forever, stop):
        yield server.server_port


@pytest.mark.parametrize("server", ["werkzeug", "wsgiref"])
def test_in_process(server: str) -> None:
    app, ws = make_app()
    while not seen.empty():
        seen.get_nowait()
    serving = werkzeug_serving(app) if server == "werkzeug" else wsgiref_serving(app, ws)
    with serving as port:
        check_session_and_path_parameter(port)
        reports = drain_seen()
        assert reports[0]["callback"] == "opened" and reports[-1]["callback"] == "closed"
        closed = reports[-1]
        assert closed["user"] == "ann" and closed["view_args"] == {"room": "lobby"}  # closed() too
        if server == "wsgiref":
            # The connection ran on the loop: its callbacks were on threads the view never saw.
            assert all(r["thread"].startswith("ws4web-wsgiref") for r in reports), reports
        # teardown_request ran after each callback (and once for the handshake request).
        teardowns = app.config["teardowns"]
        assert wait_until(lambda: teardowns.count("/rooms/lobby") == len(reports) + 1), teardowns
        check_refusals(port)
        assert ws.websockets == set()


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_gunicorn(worker: str) -> None:
    port = free_port()
    command = gunicorn_command(worker, port, "tests.adapters.test_flask:gunicorn_app")
    with running(command, port) as stderr:
        check_session_and_path_parameter(port)
        check_refusals(port)
    assert b"Traceback" not in stderr[0] and b"[ERROR]" not in stderr[0], stderr[0].decode()


def test_route_checks_its_arguments() -> None:
    ws = WebSockets(flask.Flask("checks"))
    with pytest.raises(TypeError, match=r"subclass of ws4web\.WebSocket"):
        ws.route("/x")(object)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="unknown option 'colour'"):
        ws.route("/y", colour="blue")(Room)


def test_init_app_adds_earlier_and_later_routes() -> None:
    ws = WebSockets(max_message_size=1024)
    ws.route("/early")(Room)
    app = flask.Flask("factory")
    ws.init_app(app)
    ws.route("/late", endpoint="late_room")(Room)
    rules = {rule.rule: rule for rule in app.url_map.iter_rules()}
    assert rules["/early"].websocket and rules["/late"].websocket
    assert rules["/early"].endpoint == "Room" and rules["/late"].endpoint == "late_room"


def test_broadcast_reaches_every_route() -> None:
    app, ws = make_app()
    with werkzeug_serving(app) as port:
        cookie = log_in(port, "ann")
        with connect(f"ws://127.0.0.1:{port}/rooms/a", headers={"Cookie": cookie}, timeout=TIMEOUT) as a:
            json.loads(a.recv(TIMEOUT).data)
            assert json.loads(a.recv(TIMEOUT).data)["callback"] == "ponged"
            assert ws.broadcast("to everyone") == 1
            assert a.recv(TIMEOUT).text == "to everyone"
