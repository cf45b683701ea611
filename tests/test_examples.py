"""The example programs (examples/echo_stdlib.py, examples/echo_client.py, examples/chat/) run as real processes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ws4web import ConnectionClosed, InvalidStatus, WebSocket, connect
from ws4web.messages import BinaryMessage, Message, TextMessage

from .conftest import TIMEOUT, ServerFactory, ws_url

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the server exited early: {proc.communicate()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def echo_stdlib() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(EXAMPLES, "echo_stdlib.py"), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


def test_echo_stdlib_echoes(echo_stdlib: tuple[subprocess.Popen[bytes], int]) -> None:
    _, port = echo_stdlib
    with connect(f"ws://127.0.0.1:{port}/any/path", close_timeout=2.0, max_message_size=None) as ws:
        ws.send("hello example")
        ws.send(b"\x00\x01\x02")
        ws.send(["frag", "ments"])
        ws.send(b"b" * 3_000_000)  # under the example's 16 MiB limit
        assert ws.recv(TIMEOUT) == TextMessage("hello example")
        assert ws.recv(TIMEOUT) == BinaryMessage(b"\x00\x01\x02")
        assert ws.recv(TIMEOUT) == TextMessage("fragments")
        assert ws.recv(TIMEOUT) == BinaryMessage(b"b" * 3_000_000)
    assert ws.close_code == 1000


# -- every server example stops cleanly on Ctrl-C and on SIGTERM ------------------------------------


@dataclass(frozen=True)
class ServerExample:
    """How to run one server example and hold one conversation with it."""

    script: str
    needs: tuple[str, ...] = ()
    path: str = "/"
    talk: str = "echo"  # echo, chat (the demo's JSON protocol) or lobby (examples/pubsub_two_processes.py)
    mode: str = ""  # the gunicorn worker class, or pubsub_two_processes.py's server

    def command(self, port: int, redis_url: str) -> list[str]:
        script = os.path.join(EXAMPLES, f"{self.script}.py")
        if self.script == "flask_chat_gunicorn":
            config = os.path.join(EXAMPLES, "flask_chat_gunicorn_conf.py")
            return [
                *(sys.executable, "-m", "gunicorn", "-c", config, "-w", "1", "-k", self.mode),
                *("-b", f"127.0.0.1:{port}", "--chdir", EXAMPLES, "--log-level", "warning", "flask_chat_gunicorn:app"),
            ]
        if self.script == "pubsub_two_processes":
            return [sys.executable, script, self.mode, "--port", str(port), "--redis", redis_url]
        return [sys.executable, script, "--host", "127.0.0.1", "--port", str(port)]

    def converse(self, ws: WebSocket) -> None:
        """One exchange that proves the connection is served."""
        if self.talk == "echo":
            ws.send("hello example")
            assert ws.recv(TIMEOUT) == TextMessage("hello example")
        elif self.talk == "chat":
            ws.send(json.dumps({"type": "join", "name": "ann"}))
            assert json.loads(ws.recv(TIMEOUT).data)["type"] == "welcome"
        else:
            assert ws.recv(TIMEOUT).data.startswith(b"* welcome ann")


SERVER_EXAMPLES = [
    ServerExample("echo_stdlib"),
    ServerExample("echo_cherrypy", ("cherrypy",)),
    ServerExample("echo_gevent", ("gevent",)),
    ServerExample("echo_wsgiref"),
    ServerExample("gevent_mounted", ("gevent",), "/ws"),
    ServerExample("fastapi_app", ("fastapi", "uvicorn"), "/echo"),
    ServerExample("flask_chat_werkzeug", ("flask",), "/ws", "chat"),
    ServerExample("flask_chat_gunicorn", ("flask", "gunicorn"), "/ws", "chat", "gthread"),
    ServerExample("flask_chat_gunicorn", ("flask", "gunicorn", "gevent"), "/ws", "chat", "gevent"),
    ServerExample("pubsub_two_processes", ("redis",), "/lobby?ann", "lobby", "stdlib"),
    ServerExample("pubsub_two_processes", ("redis", "cherrypy"), "/lobby?ann", "lobby", "cherrypy"),
]


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A redis-server on a free port for the examples that need one ("" for the others)."""
    example: ServerExample = request.node.callspec.params["example"]
    if "redis" not in example.needs:
        yield ""
        return
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)


@pytest.mark.skipif(sys.platform == "win32", reason="signals")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    "example", SERVER_EXAMPLES, ids=[f"{e.script}-{e.mode}" if e.mode else e.script for e in SERVER_EXAMPLES]
)
def test_server_example_stops_with_1001_and_no_traceback(
    example: ServerExample, stop: signal.Signals, redis_url: str
) -> None:
    """Ctrl-C (SIGINT) or SIGTERM: an open client gets 1001 (Going Away), the program exits 0, quietly."""
    for module in example.needs:
        pytest.importorskip(module)
    port = free_port()
    # A session of its own: whatever the example starts (gunicorn's worker) goes at the end too.
    proc = subprocess.Popen(
        example.command(port, redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for_port(port, proc)
        with connect(f"ws://127.0.0.1:{port}{example.path}", timeout=TIMEOUT, close_timeout=2.0) as ws:
            example.converse(ws)
            proc.send_signal(stop)
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(10):  # a chat may send presence updates before its close
                    ws.recv(TIMEOUT)
            assert closed.value.code == 1001, closed.value
        _, stderr = proc.communicate(timeout=2 * TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left of the session
        if proc.returncode is None:  # the test failed before the program ended: reap it, close the pipes
            proc.communicate(timeout=TIMEOUT)
    text = stderr.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text


def test_fastapi_example_lets_a_known_token_in_and_refuses_others_before_the_101() -> None:
    pytest.importorskip("fastapi")
    port = free_port()
    command = [sys.executable, os.path.join(EXAMPLES, "fastapi_app.py"), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        with connect(f"ws://127.0.0.1:{port}/chat/lobby?token=t-bob", timeout=TIMEOUT) as ws:
            assert ws.recv(TIMEOUT) == TextMessage("bob joined lobby")
            ws.send("hi")
            assert ws.recv(TIMEOUT) == TextMessage("bob: hi")
        for query in ("", "?token=nope"):
            with pytest.raises(InvalidStatus) as refused:
                connect(f"ws://127.0.0.1:{port}/chat/lobby{query}", timeout=TIMEOUT)
            assert refused.value.status == 403
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        connection.request("GET", "/")
        assert json.loads(connection.getresponse().read())["echo"] == "/echo"
        connection.close()
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)


class Driver(WebSocket):
    """Talks to the echo client: sends, collects the echoes, then closes."""

    outgoing: list[str | bytes | list[str]] = ["text é", b"\x00binary", ["frag", "mented"], b"x" * 100_000]
    results: list[list[Message]] = []

    def opened(self) -> None:
        self.got: list[Message] = []
        Driver.results.append(self.got)
        for payload in self.outgoing:
            self.send(payload)

    def received_message(self, message: Message) -> None:
        self.got.append(message)
        if len(self.got) == len(self.outgoing):
            self.close(1000, "thanks")


def test_echo_client_echoes_and_exits_0(make_server: ServerFactory) -> None:
    Driver.results = []
    server = make_server(Driver)
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "echo_client.py"), ws_url(server, "/echo")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert len(Driver.results) == 1
    assert Driver.results[0] == [
        TextMessage("text é"),
        BinaryMessage(b"\x00binary"),
        TextMessage("fragmented"),
        BinaryMessage(b"x" * 100_000),
    ]


class Pinger(WebSocket):
    """Sends one message, records its echo and how the client ended the connection."""

    echoes: queue.Queue[Message] = queue.Queue()
    closes: queue.Queue[int] = queue.Queue()

    def opened(self) -> None:
        self.send("ping")

    def received_message(self, message: Message) -> None:
        self.echoes.put(message)

    def closed(self, code: int, reason: str | None = None) -> None:
        self.closes.put(code)


@pytest.mark.skipif(sys.platform == "win32", reason="signals")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_echo_client_leaves_with_1001_and_no_traceback(make_server: ServerFactory, stop: signal.Signals) -> None:
    Pinger.echoes, Pinger.closes = queue.Queue(), queue.Queue()
    server = make_server(Pinger)
    proc = subprocess.Popen(
        [sys.executable, os.path.join(EXAMPLES, "echo_client.py"), ws_url(server)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert Pinger.echoes.get(timeout=TIMEOUT) == TextMessage("ping")  # connected and echoing
        proc.send_signal(stop)
        assert Pinger.closes.get(timeout=TIMEOUT) == 1001  # Going Away
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert b"Traceback" not in stderr


def test_echo_client_exits_1_when_it_cannot_connect() -> None:
    port = free_port()  # nothing listens there
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "echo_client.py"), f"ws://127.0.0.1:{port}/"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert b"cannot connect" in proc.stderr


# The chat scripts of examples/chat run the packaged demo (ws4web/demo) from a checkout.
CHAT_NEEDS = {"stdlib": [], "cherrypy": ["cherrypy"], "gevent": ["gevent"], "asgi": ["starlette", "uvicorn"]}


@pytest.mark.parametrize("stack", list(CHAT_NEEDS))
def test_chat_script_serves_the_page_and_stops_on_ctrl_c(stack: str) -> None:
    for module in CHAT_NEEDS[stack]:
        pytest.importorskip(module)
    script = os.path.join(EXAMPLES, "chat", f"{stack}_app.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script finds the checkout itself
    proc = subprocess.Popen(
        [sys.executable, script, "--host", "127.0.0.1", "--port", "0"],
        cwd=os.path.dirname(script),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", proc.stdout.readline())
        assert found, proc.communicate(timeout=TIMEOUT)
        page = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=TIMEOUT)
        try:
            page.request("GET", "/")
            response = page.getresponse()
            assert response.status == 200
            assert b"<title>ws4web chat</title>" in response.read()
        finally:
            page.close()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
