"""The example programs (examples/echo_stdlib.py, examples/echo_client.py, examples/chat/) run as real processes."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ws4web import ConnectionClosedOK, WebSocket, connect
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


def test_echo_stdlib_serves_and_exits_cleanly_on_ctrl_c(echo_stdlib: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = echo_stdlib
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
    survivor = connect(f"ws://127.0.0.1:{port}/", close_timeout=2.0)
    try:
        survivor.send("are you there")
        assert survivor.recv(TIMEOUT) == TextMessage("are you there")
        proc.send_signal(signal.SIGINT)  # Ctrl-C: serve() shuts the server down
        with pytest.raises(ConnectionClosedOK) as closed:
            survivor.recv(TIMEOUT)
        assert closed.value.code == 1001  # Going Away
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        survivor.terminate()
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert b"Traceback" not in stderr


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
