"""ws4py's own example programs, ported by changing their imports only (tests/compat/ws4py/examples/), run as processes.

The servers (``echo_cherrypy_server.py``, ``echo_gevent_server.py``) take ``--port``;
the clients (``echo_client.py``, ``echo_gevent_client.py``) have the port written in
them, replaced here with the port of an echo server on 127.0.0.1, as docs examples are.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ws4web import ConnectionClosed, WebSocketServer, connect
from ws4web.compat.ws4py.websocket import EchoWebSocket
from ws4web.frames import CloseCode

from ..conftest import TIMEOUT, ServerProcess, environment, free_port, server_process

pytestmark = pytest.mark.timeout(90)

EXAMPLES = Path(__file__).resolve().parent / "examples"


@contextlib.contextmanager
def serving(script: str, port: int, ready: str | None = None) -> Iterator[ServerProcess]:
    """Run an example server on ``port`` until the block ends, then Ctrl-C it."""
    argv = [sys.executable, str(EXAMPLES / script), "--host", "127.0.0.1", "--port", str(port)]
    with server_process(argv, port, ready=ready, cwd=EXAMPLES) as server:
        yield server


def check_chat(port: int) -> None:
    """Two chat users: what one says reaches both; a leaving user's close reason reaches the other.

    Each user's first message comes back to it before the next step: the server adds a
    connection to its broadcast set only after sending the 101 (as ws4py did), so a
    message broadcast in between would miss a user who just connected.
    """
    url = f"ws://127.0.0.1:{port}/ws"
    with connect(url, timeout=TIMEOUT) as ann:
        ann.send("ann entered the room")
        assert ann.recv(TIMEOUT).text == "ann entered the room"
        with connect(url, timeout=TIMEOUT) as bob:
            bob.send("bob entered the room")
            assert bob.recv(TIMEOUT).text == "bob entered the room"
            assert ann.recv(TIMEOUT).text == "bob entered the room"
            ann.send("ann: hello")
            assert ann.recv(TIMEOUT).text == "ann: hello"
            assert bob.recv(TIMEOUT).text == "ann: hello"
            bob.send(b"\x00\x01")  # binary stays binary through a broadcast
            assert ann.recv(TIMEOUT).data == b"\x00\x01" and not bob.recv(TIMEOUT).is_text
            bob.close(1000, "bob left the room")
        assert ann.recv(TIMEOUT).text == "bob left the room"  # the example's closed() broadcasts the reason


def test_echo_cherrypy_server() -> None:
    port = free_port()
    with serving("echo_cherrypy_server.py", port, ready="ENGINE Bus STARTED") as server:
        check_chat(port)
        with connect(f"ws://127.0.0.1:{port}/ws", timeout=TIMEOUT) as last:
            last.send("still here")
            assert last.recv(TIMEOUT).text == "still here"
            server.proc.send_signal(signal.SIGINT)  # Ctrl-C: the engine stops, the plugin closes with 1001
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    last.recv(TIMEOUT)
            assert closed.value.code == CloseCode.GOING_AWAY
        server.proc.wait(TIMEOUT)
    output = server.output
    # The page handler saw the handler (ws4py's cherrypy.request.ws_handler) before the 101.
    assert re.search(r"Handler created: <__main__\.ChatWebSocketHandler object", output), output
    assert "Traceback" not in output, output


def test_echo_gevent_server() -> None:
    port = free_port()
    with serving("echo_gevent_server.py", port) as server:
        check_chat(port)
        assert server.proc.poll() is None
        # The example has no shutdown of its own (nor had it in ws4py): it is terminated.
        server.proc.terminate()
        assert server.proc.wait(TIMEOUT) == -signal.SIGTERM


@pytest.fixture
def echo_server() -> Iterator[WebSocketServer]:
    with WebSocketServer(EchoWebSocket, "127.0.0.1", 0) as server:
        server.start()
        yield server


def run_client(script: str, port: int, tmp_path: Path) -> str:
    code = (EXAMPLES / script).read_text()
    code, count = re.subn(r"(?<=:)9000(?=/)", str(port), code)
    assert count == 1, "the example names port 9000 once"
    program = tmp_path / script
    program.write_text(code)
    result = subprocess.run(
        [sys.executable, str(program)],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_echo_client(echo_server: WebSocketServer, tmp_path: Path) -> None:
    """ws4py's threaded client: connect() starts the thread; daemon=False keeps the process
    alive until the callbacks close the connection."""
    output = run_client("echo_client.py", echo_server.port, tmp_path)
    echoed = [int(n) for n in re.findall(r"^=> (\d+) ", output, re.MULTILINE)]
    # First the generator, sent as one fragmented message, then the eight sized messages.
    assert echoed == [sum(range(1, 200, 25)), *range(0, 200, 25)], output
    # closed() got 1000, the code the server closed with (a CloseCode, an int that reprs by name).
    assert re.search(r"\('Closed down', (1000|<CloseCode.NORMAL_CLOSURE: 1000>), ", output), output


def test_echo_gevent_client(echo_server: WebSocketServer, tmp_path: Path) -> None:
    output = run_client("echo_gevent_client.py", echo_server.port, tmp_path)
    lines = output.splitlines()
    assert lines[:2] == ["(TextMessage(b'Hello world', len=11),)", "(TextMessage(b'Hello world again', len=17),)"]
    assert lines[2:-1] == [f"('{'*' * n}', {n})" for n in range(0, 40, 5)]  # stops at 35: "Foobar" never comes
    assert lines[-1] == "('Connection closed!',)"
