"""The chat demo's apps (ws4web/demo/*_app.py, ws4web/demo/__init__.py) as real processes on 127.0.0.1.

Each app admits its own page's origin only; and one member flooding a 20-member room
(issue 17) leaves the server's memory bounded while the others keep talking.
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

import pytest

from tests.conftest import TIMEOUT, wait_until
from tests.pubsub.test_hub import RawClients
from ws4web import connect
from ws4web.demo import ORIGINS_VARIABLE, page_origins
from ws4web.demo.handler import SAY_LIMIT
from ws4web.exceptions import InvalidStatus
from ws4web.frames import Opcode
from ws4web.protocol import CLIENT, Protocol, State

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEEDS = {"stdlib": [], "cherrypy": ["cherrypy"], "gevent": ["gevent"], "asgi": ["starlette", "uvicorn"]}
BANNER = re.compile(r"ws4web chat on http://127\.0\.0\.1:(\d+)/")


class App:
    """``python -m ws4web.demo.<stack>_app --port 0`` in a process of its own."""

    def __init__(self, stack: str, *options: str, env: dict[str, str] | None = None) -> None:
        for module in NEEDS[stack]:
            pytest.importorskip(module)
        environ = {k: v for k, v in os.environ.items() if k != ORIGINS_VARIABLE}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"ws4web.demo.{stack}_app", "--host", "127.0.0.1", "--port", "0", *options],
            cwd=ROOT,
            env={**environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._drain, args=(self.proc.stdout, lines), daemon=True).start()
        try:
            line = lines.get(timeout=TIMEOUT)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"{stack} printed nothing") from None
        found = BANNER.search(line)
        if found is None:
            self.stop()
            raise AssertionError(f"{stack} printed {line!r}")
        self.port = int(found.group(1))
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    @staticmethod
    def _drain(stream: IO[str], lines: queue.Queue[str]) -> None:
        for line in stream:
            lines.put(line)

    def memory_kib(self, field: str) -> int:
        """``VmRSS`` or ``VmHWM`` (peak) of the app's process, in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def stop(self) -> str:
        """Ctrl-C; what it wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, stderr = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate(timeout=TIMEOUT)
        return stderr


@pytest.fixture
def apps() -> Iterator[list[App]]:
    started: list[App] = []
    yield started
    for app in started:
        app.stop()


def upgrade_status(url: str, origin: str | None) -> int:
    """101 if a WebSocket with this Origin (None: no header) is accepted, else the HTTP status."""
    headers = [] if origin is None else [("Origin", origin)]
    try:
        with connect(url, headers=headers, timeout=TIMEOUT, close_timeout=2.0, proxy=False) as ws:
            ws.send(json.dumps({"type": "join", "name": "probe"}))
            assert json.loads(ws.recv(TIMEOUT).data)["type"] == "welcome"
    except InvalidStatus as refused:
        return refused.status
    return 101


# -- origins ---------------------------------------------------------------------------------


def test_page_origins_are_the_address_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ORIGINS_VARIABLE, raising=False)
    loopback = ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", None]
    assert page_origins("127.0.0.1", 8080) == loopback
    assert page_origins("::1", 8080) == loopback
    assert page_origins("192.0.2.7", 9000) == ["http://192.0.2.7:9000", None]
    assert page_origins("2001:db8::7", 9000) == ["http://[2001:db8::7]:9000", None]
    assert page_origins("0.0.0.0", 80)[:3] == ["http://127.0.0.1:80", "http://localhost:80", "http://[::1]:80"]
    assert f"http://{socket.gethostname()}:80" in page_origins("0.0.0.0", 80)


def test_page_origins_configured_for_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ORIGINS_VARIABLE, "https://chat.example.com, https://www.example.com")
    assert page_origins("127.0.0.1", 8080) == ["https://chat.example.com", "https://www.example.com", None]
    assert page_origins("127.0.0.1", 8080, ["https://other.example"]) == ["https://other.example", None]
    with pytest.raises(ValueError):
        page_origins("127.0.0.1", 8080, ["https://chat.example.com/"])  # a URL, not an origin


@pytest.mark.parametrize("stack", list(NEEDS))
def test_each_app_admits_its_own_page_only(apps: list[App], stack: str) -> None:
    apps.append(app := App(stack))
    own = f"http://127.0.0.1:{app.port}"
    assert upgrade_status(app.url, "https://evil.example") == 403
    assert upgrade_status(app.url, f"http://127.0.0.1:{app.port + 1}") == 403  # another port is another origin
    assert upgrade_status(app.url, own) == 101
    assert upgrade_status(app.url, f"http://localhost:{app.port}") == 101
    assert upgrade_status(app.url, None) == 101  # not a browser: the command-line client, scripts
    # Behind a proxy: the public origin, from the environment (ws4web serve passes it on).
    apps.append(proxied := App(stack, env={ORIGINS_VARIABLE: "https://chat.example.com"}))
    assert upgrade_status(proxied.url, "https://chat.example.com") == 101
    assert upgrade_status(proxied.url, f"http://127.0.0.1:{proxied.port}") == 403
    assert "Traceback" not in app.stop() + proxied.stop()


def test_origin_option_beats_the_environment(apps: list[App]) -> None:
    env = {ORIGINS_VARIABLE: "https://from-env.example"}
    apps.append(app := App("stdlib", "--origin", "https://a.example", "--origin", "https://b.example", env=env))
    assert upgrade_status(app.url, "https://b.example") == 101
    assert upgrade_status(app.url, "https://from-env.example") == 403


@pytest.mark.parametrize("stack", list(NEEDS))
def test_a_malformed_origin_stops_the_app_with_a_message(stack: str) -> None:
    for module in NEEDS[stack]:
        pytest.importorskip(module)
    proc = subprocess.run(
        [sys.executable, "-m", f"ws4web.demo.{stack}_app", "--port", "0", "--origin", "chat.example.com"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2 * TIMEOUT,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid origin entry 'chat.example.com'" in proc.stderr and "Traceback" not in proc.stderr


# -- a flooding member (issue 17) ----------------------------------------------------------------


class Flooder:
    """A member sending as fast as TCP takes it, and reading what it gets (so that only the
    room's rules can stop it). ``say``: it joins and says things; closed, it reconnects at
    once and starts again. ``garbage``: it sends what is not JSON, each earning an error reply."""

    def __init__(self, port: int, kind: str) -> None:
        self.port = port
        self.kind = kind
        self.sent = 0
        self.connections = 0
        self.close_codes: dict[int, int] = {}
        self.replies = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flooder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            sock, data = RawClients._open(self.port, "/ws")
            self.connections += 1
            with sock:
                self._flood(sock, Protocol(CLIENT, data=data, max_message_size=None))

    def _burst(self, protocol: Protocol) -> bytes:
        line = json.dumps({"type": "say", "text": "flood " * 12}).encode() if self.kind == "say" else b"garbage " * 12
        for _ in range(200):
            protocol.send_text(line)
        return b"".join(protocol.data_to_send())

    def _flood(self, sock: socket.socket, protocol: Protocol) -> None:
        protocol.send_text(json.dumps({"type": "join", "name": "flooder"}).encode())
        pending = self._burst(protocol)
        sock.setblocking(False)
        while not self._stop.is_set():
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], 0.1)
            if readable:
                try:
                    data = sock.recv(262144)
                except OSError:
                    data = b""
                if not data:
                    return
                protocol.receive_data(data)
                for frame in protocol.events_received():
                    if frame.opcode is Opcode.CLOSE:
                        self.close_codes[protocol.close_code] = self.close_codes.get(protocol.close_code, 0) + 1
                    else:
                        self.replies += 1
                if protocol.state is not State.OPEN:
                    return  # closed by the server: hang up (a partial frame of ours may be on the wire)
            if writable:
                try:
                    written = sock.send(pending)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                self.sent += written
                pending = pending[written:] or self._burst(protocol)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["say", "garbage"])
def test_a_flooding_member_leaves_the_server_bounded_and_the_room_talking(apps: list[App], kind: str) -> None:
    """One member of 20 floods; the 19 others keep talking at a human pace, for 4 s at least."""
    apps.append(app := App("stdlib"))
    honest = RawClients(app.port, 19, path="/ws", keep_if=lambda data: b"honest-" in data or b'"presence"' in data)
    flooder: Flooder | None = None
    try:
        for index in range(19):
            honest.send(index, json.dumps({"type": "join", "name": f"member{index}"}))
        # Everyone is in once the last to join has seen the update that announces it.
        assert wait_until(lambda: any(b"member18" in m for m in honest.messages[18][-1:])), "everyone joined"
        before_kib = app.memory_kib("VmRSS")
        told_before = [presence_updates(messages) for messages in honest.messages]
        flooder = Flooder(app.port, kind)
        flooder.start()
        started = time.monotonic()
        said = 0

        def everyone_heard() -> bool:
            return all(len(lines(messages)) >= said for messages in honest.messages)

        # A line every 0.1 s, each member in turn: 0.5 a second each, well under the limit.
        while said < 10 or time.monotonic() - started < 4.0:
            time.sleep(0.1)
            honest.send(said % 19, json.dumps({"type": "say", "text": f"honest-{said}"}))
            said += 1
            assert wait_until(everyone_heard, timeout=60.0), (
                f"honest line {said - 1} did not reach everyone: {[len(lines(m)) for m in honest.messages]}"
            )
        elapsed = time.monotonic() - started
        flooder.stop()
        peak_kib = app.memory_kib("VmHWM")
        updates = [len(presence_updates(m)) - len(told) for m, told in zip(honest.messages, told_before, strict=True)]
        print(
            f"\n{kind} flood: server RSS {before_kib // 1024} MiB before, peak {peak_kib // 1024} MiB "
            f"(+{(peak_kib - before_kib) / 1024:.1f} MiB) over {elapsed:.1f} s; the flooder sent "
            f"{flooder.sent / 2**20:.1f} MiB on {flooder.connections} connections, closed {flooder.close_codes}, "
            f"got {flooder.replies} replies; each honest member got {min(honest.totals)}-{max(honest.totals)} "
            f"messages, {max(updates)} presence updates"
        )
        assert peak_kib - before_kib < 64 * 1024, f"the server grew by {peak_kib - before_kib} KiB"
        for messages in honest.messages:
            assert lines(messages) == [f"honest-{k}" for k in range(said)], "every honest line, in order"
        assert honest.close_codes == [None] * 19, "no honest member was closed"
        if kind == "say":
            # Each connection of the flooder was closed for its rate; its coming (told before its
            # first line) and going cost the room two small updates at most, never the room's list.
            assert flooder.connections > 1 and set(flooder.close_codes) == {SAY_LIMIT.close_code}
            assert max(updates) <= 2 * flooder.connections
            pairs = zip(honest.messages, told_before, strict=True)
            during = [update for m, told in pairs for update in presence_updates(m)[len(told) :]]
            assert all(len(update) < 200 for update in during), max(during, key=len)
        else:
            assert flooder.connections == 1 and flooder.close_codes == {} and flooder.replies > 0
        assert app.proc.poll() is None
    finally:
        if flooder is not None:
            flooder.stop()
        honest.close()
    assert "Traceback" not in app.stop()


def presence_updates(messages: list[bytes]) -> list[bytes]:
    return [message for message in messages if b'"presence"' in message]


def lines(messages: list[bytes]) -> list[str]:
    """The texts of the chat lines among ``messages``."""
    return [event["text"] for event in map(json.loads, messages) if event["type"] == "message"]
