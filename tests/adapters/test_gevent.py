"""The gevent pywsgi adapter against a real gevent server on loopback, never monkey-patched.

The server runs in a dedicated thread with its own gevent hub; the tests talk to
it with the ordinary threaded client, and reach into the hub with
``run_callback_threadsafe``. The scale test and the "no threading primitives"
test run in subprocesses, so their rlimit and instrumentation stay there.
"""

from __future__ import annotations

import concurrent.futures
import gc
import http.client
import importlib.util
import json
import os
import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gevent")

import gevent
import gevent.event
import gevent.monkey

from ws4web import CLIENT, connect
from ws4web.adapters.gevent import (
    GEVENT,
    WebSocketWSGIApplication,
    WebSocketWSGIHandler,
    make_server,
)
from ws4web.exceptions import ConnectionClosed
from ws4web.frames import Opcode
from ws4web.handshake import check_response, client_request, generate_key
from ws4web.http11 import Response, parse_response
from ws4web.protocol import Protocol as WSProtocol
from ws4web.streams import StreamReader

from .test_wsgi_common import (
    TIMEOUT,
    check_abrupt_disconnect,
    check_early_frames,
    check_echo,
    check_handler_failure,
    check_refusals,
    check_shutdown,
    make_recorder,
)

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


class GeventHarness:
    """A pywsgi server in its own thread and hub; ``submit`` spawns a greenlet there."""

    def __init__(self, app: WebSocketWSGIApplication, site: Any = None) -> None:
        self.app = app
        self.site = site if site is not None else app
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.port = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: Any = None
        self._stop: Any = None
        self.thread = threading.Thread(target=self._run, name="gevent-hub", daemon=True)
        self.thread.start()
        if not self._ready.wait(TIMEOUT) or self.error is not None:
            raise RuntimeError(f"the gevent server did not start: {self.error!r}")

    def _run(self) -> None:
        hub = gevent.get_hub()
        try:
            server = make_server("127.0.0.1", 0, self.site, log=None)
            assert server.handler_class is WebSocketWSGIHandler
            server.start()
            self.port = server.server_port
            self._loop = hub.loop
            self._stop = gevent.event.Event()
            self._ready.set()
            self._stop.wait()
            server.stop(timeout=TIMEOUT)
            gc.collect()  # finalize gevent sockets while their hub still exists
        except BaseException as exc:
            self.error = exc
            self._ready.set()
        finally:
            hub.destroy(destroy_loop=True)

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def runner() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.run_callback_threadsafe(gevent.spawn, runner)
        return future

    def stop(self) -> None:
        if self._stop is not None and self.thread.is_alive():
            self.submit(lambda: self.app.shutdown(timeout=2.0)).result(TIMEOUT)
            self._loop.run_callback_threadsafe(self._stop.set)
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the gevent server thread did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def harness() -> Iterator[GeventHarness]:
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    app = WebSocketWSGIApplication(make_recorder(events), protocols=["chat"], close_timeout=2.0)
    h = GeventHarness(app)
    h.events = events
    try:
        yield h
    finally:
        h.stop()


def test_no_monkey_patching() -> None:
    assert not gevent.monkey.is_anything_patched()


def test_echo(harness: GeventHarness) -> None:
    info = check_echo(harness)
    assert info["primitives"] == "GeventPrimitives"  # chosen by the server hook, not by the app
    assert info["path_info"] == "/room/1"


def test_refusals(harness: GeventHarness) -> None:
    refusals = check_refusals(harness)
    # pywsgi allows hop-by-hop headers, so the 426 names the protocol to upgrade to (RFC 9110 §15.5.22).
    assert ("Upgrade", "websocket") in refusals["plain"].headers


def test_first_frames_in_the_handshake_packet(harness: GeventHarness) -> None:
    check_early_frames(harness)


def test_abrupt_disconnect(harness: GeventHarness) -> None:
    check_abrupt_disconnect(harness)


def test_handler_failure(harness: GeventHarness) -> None:
    check_handler_failure(harness)


def test_shutdown_sends_going_away(harness: GeventHarness) -> None:
    check_shutdown(harness)


def test_refusal_closes_the_connection(harness: GeventHarness) -> None:
    with socket.create_connection(("127.0.0.1", harness.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):  # ends: the server closes after a refusal
            received += chunk
    assert received.startswith(b"HTTP/1.1 426 ")
    assert b"Connection: close" in received


def test_mounted_example() -> None:
    spec = importlib.util.spec_from_file_location("gevent_mounted", ROOT / "examples" / "gevent_mounted.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    site, websocket_app = module.build_app(close_timeout=2.0)
    h = GeventHarness(websocket_app, site)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=TIMEOUT)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            assert b"Hello from plain WSGI" in response.read()
            conn.request("GET", "/about")  # keep-alive: the plain app serves again on the same connection
            response = conn.getresponse()
            assert response.status == 200 and response.read().startswith(b"Hello")
        finally:
            conn.close()
        with connect(f"ws://127.0.0.1:{h.port}/ws", timeout=TIMEOUT) as ws:
            ws.send("through the mount")
            assert ws.recv(TIMEOUT).data == b"through the mount"
        # A plain request, then an upgrade with a frame, on one keep-alive connection:
        # pywsgi hands over a socket whose reader has served a request already.
        client = WSProtocol(CLIENT)
        client.send_text(b"same connection")
        with socket.create_connection(("127.0.0.1", h.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reader = StreamReader()
            first = _read_response(sock, reader)
            assert first.status == 200 and first.body.startswith(b"Hello")
            key = generate_key()
            request = client_request(f"127.0.0.1:{h.port}", "/ws", key)
            sock.sendall(request.serialize() + b"".join(client.data_to_send()))
            upgrade = _read_response(sock, reader)
            check_response(upgrade, key)
            client.receive_data(bytes(reader.buffer))
            texts: list[bytes] = []
            while not texts:
                texts = [f.data for f in client.events_received() if f.opcode is Opcode.TEXT]
                if not texts:
                    data = sock.recv(65536)
                    assert data
                    client.receive_data(data)
            assert texts == [b"same connection"]
    finally:
        h.stop()


def _read_response(sock: socket.socket, reader: StreamReader) -> Response:
    parser = parse_response(reader)
    try:
        next(parser)
        while True:
            data = sock.recv(65536)
            if data:
                reader.feed_data(data)
            else:
                reader.feed_eof()
            next(parser)
    except StopIteration as done:
        response: Response = done.value
        return response


# -- subprocesses: scale and "no threading" ----------------------------------------------------

SCALE_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, threading
    sys.path.insert(0, sys.argv[1])
    N = int(sys.argv[2])

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * N + 200  # both ends of every connection live in this process
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY
                                                        else want, hard))
        except (ValueError, OSError):
            pass
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
            print(json.dumps({"skip": f"cannot raise the fd limit to {want} (hard limit {hard})"}))
            sys.exit(0)

    import gevent, gevent.event, gevent.pool, gevent.socket
    from ws4web import WebSocket
    from ws4web.adapters.gevent import GEVENT, WebSocketWSGIApplication, make_server
    from ws4web.upgrade import connect_socket

    state = {"opened": 0, "closed": 0, "peak": 0, "echoed": 0, "threads": 0}
    all_open = gevent.event.Event()

    class Echo(WebSocket):
        def opened(self):
            state["opened"] += 1
        def received_message(self, message):
            self.send(message)
        def closed(self, code, reason=None):
            state["closed"] += 1

    app = WebSocketWSGIApplication(Echo, close_timeout=10)
    server = make_server("127.0.0.1", 0, app, log=None, backlog=2048)
    server.start()
    port = server.server_port

    def client(i):
        sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=30)
        ws = connect_socket(sock, f"127.0.0.1:{port}", f"/{i}", timeout=30, primitives=GEVENT, close_timeout=10)
        ws.send(f"hello {i}")
        if ws.recv(30).data == f"hello {i}".encode():
            state["echoed"] += 1
        if state["echoed"] == N:
            state["peak"] = len(app.websockets)
            state["threads"] = threading.active_count()
            all_open.set()
        all_open.wait(60)
        ws.close()

    with gevent.Timeout(90):
        group = gevent.pool.Group()
        for i in range(N):
            group.spawn(client, i)
        group.join(raise_error=True)
        while state["closed"] < N:
            gevent.sleep(0.01)
        app.shutdown(timeout=5)
        server.stop(timeout=5)
    print(json.dumps(state))
    """
)


def test_a_thousand_concurrent_connections(tmp_path: Path) -> None:
    script = tmp_path / "scale.py"
    script.write_text(SCALE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(ROOT), "1000"], check=False, capture_output=True, text=True, timeout=150
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads(result.stdout.strip().splitlines()[-1])
    if "skip" in state:
        pytest.skip(state["skip"])
    assert state["echoed"] == 1000
    assert state["peak"] == 1000  # all 1,000 WebSockets were open at the same time
    assert state["opened"] == 1000 and state["closed"] == 1000
    assert state["threads"] == 1  # greenlets only: no thread per connection


NO_THREADING_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    sys.path.insert(0, sys.argv[1])
    import gevent, gevent.socket, gevent.monkey
    import ws4web.concurrency
    from ws4web import WebSocket
    from ws4web.adapters.gevent import GEVENT, WebSocketWSGIApplication, make_server
    from ws4web.upgrade import connect_socket

    used = []

    # Tripwires: any threading primitive created from ws4web code, or any use of
    # the threading defaults, is recorded. (Instrumentation, not monkey-patching:
    # gevent itself is untouched.)
    def tripwire(name, factory):
        def make(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "ws4web" in caller:
                used.append(f"{name} from {caller}")
            return factory(*args, **kwargs)
        return make

    for name in ("Lock", "RLock", "Event", "Condition", "Semaphore"):
        setattr(threading, name, tripwire("threading." + name, getattr(threading, name)))
    for slot in ("lock", "event", "spawn", "wait_readable", "sleep"):
        original = getattr(ws4web.concurrency.THREADING, slot)
        setattr(ws4web.concurrency.THREADING, slot, tripwire("THREADING." + slot, original))

    class Echo(WebSocket):
        def received_message(self, message):
            self.send(message)

    # Server-side keepalive pings too: they run in a greenlet the adapter spawns.
    app = WebSocketWSGIApplication(Echo, close_timeout=5, ping_interval=0.05, ping_timeout=5)
    server = make_server("127.0.0.1", 0, app, log=None)
    server.start()
    port = server.server_port
    results = []

    def client(i):
        sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=10)
        ws = connect_socket(sock, f"127.0.0.1:{port}", "/", timeout=10, primitives=GEVENT,
                            close_timeout=5)
        ws.connection.start_keepalive(0.05, 5)  # a keepalive greenlet on the client side too
        for n in range(5):
            waiter = ws.ping()
            ws.send(f"{i}-{n}")
            results.append(ws.recv(10).data.decode())
            if not waiter.wait(0):  # the pong came before the echo
                raise AssertionError("no pong")
        gevent.sleep(0.1)
        ws.close()

    with gevent.Timeout(30):
        gevent.joinall([gevent.spawn(client, i) for i in range(20)], raise_error=True)
        gevent.sleep(0.2)
        app.shutdown(timeout=5)
        server.stop(timeout=5)
    print(json.dumps({"used": used, "results": len(results), "threads": threading.active_count(),
                      "patched": gevent.monkey.is_anything_patched()}))
    """
)


def test_no_threading_primitives_under_gevent(tmp_path: Path) -> None:
    script = tmp_path / "nothreads.py"
    script.write_text(NO_THREADING_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(ROOT)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state["results"] == 100
    assert state["used"] == []
    assert state["threads"] == 1
    assert state["patched"] is False


def test_gevent_primitives_are_cooperative() -> None:
    """Two greenlets: one waits for readability while the other keeps running."""
    import gevent.socket

    def scenario() -> list[str]:
        log: list[str] = []
        a, b = gevent.socket.socketpair()
        with a, b:

            def waiter() -> None:
                log.append(f"ready={GEVENT.wait_readable(a, 5)}")

            def writer() -> None:
                log.append("writer ran")
                b.sendall(b"x")

            gevent.joinall([gevent.spawn(waiter), gevent.spawn(writer)], timeout=5)
            log.append(f"timeout={GEVENT.wait_readable(b, 0.01)}")
        lock = GEVENT.lock()
        assert lock.acquire() and not lock.acquire(blocking=False)
        lock.release()
        event = GEVENT.event()
        GEVENT.spawn(event.set)
        log.append(f"event={event.wait(5)}")
        return log

    result: list[str] = []
    thread = threading.Thread(target=lambda: result.extend(scenario()))
    thread.start()
    thread.join(TIMEOUT)
    assert result == ["writer ran", "ready=True", "timeout=False", "event=True"]


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_echo_example_stops_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "echo_gevent.py"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:  # closes the pipes on exit
        try:
            deadline = time.monotonic() + TIMEOUT
            while True:
                try:
                    ws = connect(f"ws://127.0.0.1:{port}/anything", timeout=TIMEOUT)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the example never listened"
                    time.sleep(0.05)
            with ws:
                ws.send("ping")
                assert ws.recv(TIMEOUT).data == b"ping"
                proc.terminate()
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(TIMEOUT)
                assert info.value.code == 1001
            assert proc.wait(TIMEOUT) == 0
            out, err = proc.communicate(timeout=TIMEOUT)
            assert out == b"" and err == b""  # quiet except for errors
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
