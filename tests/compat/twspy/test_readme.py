"""twspy's README examples (tests/compat/twspy/readme/), changed only in their imports (and Python 2's print), run.

Each names the address ``('', 8000)``; it is replaced with 127.0.0.1 and a free port.
The frame-level server and client examples run in this process (the server in a
thread), so their variables can be looked at; the two servers that run forever run as
processes, stopped with Ctrl-C.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ws4web import ConnectionClosed, WebSocket, connect

from ...conftest import wait_until
from ..conftest import TIMEOUT, free_port, server_process

pytestmark = pytest.mark.timeout(60)

README = Path(__file__).resolve().parent / "readme"


def program(name: str, port: int) -> str:
    code, count = re.subn(r"\('', 8000\)", f"('127.0.0.1', {port})", (README / name).read_text())
    assert count == 1, f"{name} names ('', 8000) once"
    return code


def test_websocket_server_and_client_examples() -> None:
    port = free_port()
    server: dict[str, Any] = {}
    client: dict[str, Any] = {}
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            exec(compile(program("websocket_server.py", port), "websocket_server.py", "exec"), server)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert wait_until(lambda: listening(server)), errors
        exec(compile(program("websocket_client.py", port), "websocket_client.py", "exec"), client)
        thread.join(TIMEOUT)
        assert not thread.is_alive() and not errors, errors
        # The server got the client's frame, and the client can read the server's.
        frame = server["frame"]
        assert (frame.opcode, frame.payload, frame.final) == (1, b"Hello, Server!", True)
        hello = client["sock"].recv()
        assert (hello.opcode, hello.payload) == (1, b"Hello, Client!")
        assert server["client"].endpoint.request.path == "/my/path"  # the client's location=
    finally:
        for namespace, name in ((client, "sock"), (server, "client"), (server, "sock")):
            if name in namespace:
                namespace[name].close()
        thread.join(TIMEOUT)


def listening(namespace: dict[str, Any]) -> bool:
    """Whether the example's socket listens (a probe connection would be its one client)."""
    sock = namespace.get("sock")
    try:
        return sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    except OSError:
        return False


def connect_retrying(url: str) -> WebSocket:
    """Connect once the server listens (it cannot be probed: see listening())."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return connect(url, timeout=TIMEOUT)
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, f"nothing listens at {url}"
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("name", "opened", "closed"),
    [
        ("echo_connection.py", r"Connection opened at 127\.0\.0\.1:\d+", r"Connection closed"),
        ("echo_server.py", r"Client <Client at 127\.0\.0\.1:\d+> connected", r"Client <Client .*> disconnected"),
    ],
)
def test_echo_examples(name: str, opened: str, closed: str, tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / name
    script.write_text(program(name, port))
    with server_process([sys.executable, str(script)], port, probe=False) as server:
        for round_ in range(2):  # the server goes on after a client leaves
            with connect_retrying(f"ws://127.0.0.1:{port}/") as ws:
                ws.send(f"hello {round_}")
                assert ws.recv(TIMEOUT).text == f"hello {round_}"
                ws.send("héllo, wörld")
                assert ws.recv(TIMEOUT).text == "héllo, wörld"
        last = connect(f"ws://127.0.0.1:{port}/", timeout=TIMEOUT)
        last.send("still here")
        assert last.recv(TIMEOUT).text == "still here"
        if name == "echo_server.py":
            # Server.run() catches Ctrl-C and closes every client with 1001 (Going Away).
            server.proc.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed) as going:
                last.recv(TIMEOUT)
            assert going.value.code == 1001
            assert server.proc.wait(TIMEOUT) == 0
        last.close()
    output = server.output
    assert len(re.findall(opened, output)) == 3, output
    assert len(re.findall(closed, output)) >= 2, output
    assert output.count('Received message "hello 0"') == 1 and 'Received message "héllo, wörld"' in output
    if name == "echo_server.py":
        assert "Traceback" not in output, output
