"""The wsgiref adapter against a real threading wsgiref server on loopback."""

from __future__ import annotations

import concurrent.futures
import http.client
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ws4web import connect
from ws4web.adapters.wsgiref import (
    PathDispatcher,
    WebSocketWSGIApplication,
    WebSocketWSGIServer,
    make_server,
)
from ws4web.exceptions import ConnectionClosed

from ..conftest import wait_until
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

pytestmark = pytest.mark.timeout(60)


class WsgirefHarness:
    """wsgiref's threading server in a background thread; ``submit`` runs in a fresh thread."""

    def __init__(self, app: WebSocketWSGIApplication, site: Any = None) -> None:
        self.app = app
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.server: WebSocketWSGIServer = make_server("127.0.0.1", 0, site if site is not None else app)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self._pool = concurrent.futures.ThreadPoolExecutor(2)

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        return self._pool.submit(fn)

    def stop(self) -> None:
        try:
            self.app.shutdown(timeout=2.0)
        finally:
            self.server.shutdown()
            self.thread.join(TIMEOUT)
            self.server.server_close()  # joins the connection threads (block_on_close)
            self._pool.shutdown(wait=True)


@pytest.fixture
def harness() -> Iterator[WsgirefHarness]:
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    app = WebSocketWSGIApplication(make_recorder(events), protocols=["chat"], close_timeout=2.0)
    h = WsgirefHarness(app)
    h.events = events
    try:
        yield h
    finally:
        h.stop()
    assert not h.thread.is_alive()


def test_echo(harness: WsgirefHarness) -> None:
    info = check_echo(harness)
    assert info["driver"] == "SelectorDriver"  # wsgiref lets the connection go to its loop
    assert info["script_name"] == ""
    assert info["path_info"] == "/room/1"


def test_refusals(harness: WsgirefHarness) -> None:
    refusals = check_refusals(harness)
    # ws4web's request handler carries hop-by-hop headers, which wsgiref's own refuses:
    # the 426 names the protocol to upgrade to (RFC 9110 §15.5.22).
    assert ("Upgrade", "websocket") in refusals["plain"].headers


def test_log_records_name_the_client_port(harness: WsgirefHarness, caplog: pytest.LogCaptureFixture) -> None:
    """wsgiref sets no REMOTE_PORT: the request handler adds it, so records say 127.0.0.1:<port>, not :None."""
    caplog.set_level(logging.DEBUG, logger="ws4web")
    with socket.create_connection(("127.0.0.1", harness.port), timeout=TIMEOUT) as sock:
        port = sock.getsockname()[1]
        sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{harness.port}\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.0 426 ")
    with connect(f"ws://127.0.0.1:{harness.port}/", timeout=TIMEOUT) as ws:
        client_port = ws.local_address[1]
        ws.send("x")
        assert ws.recv(TIMEOUT).data == b"x"
    assert wait_until(lambda: any("] opened " in r.getMessage() for r in caplog.records))
    peers = {getattr(r, "ws4web_peer", None) for r in caplog.records if r.name.startswith("ws4web.adapters.wsgi")}
    assert f"127.0.0.1:{port}" in peers  # the refusal
    assert f"127.0.0.1:{client_port}" in peers  # the WebSocket's records
    assert not any(str(peer).endswith(":None") for peer in peers), peers


def test_first_frames_in_the_handshake_packet(harness: WsgirefHarness) -> None:
    check_early_frames(harness)


def test_abrupt_disconnect(harness: WsgirefHarness) -> None:
    check_abrupt_disconnect(harness)


def test_handler_failure(harness: WsgirefHarness) -> None:
    check_handler_failure(harness)


def test_shutdown_sends_going_away(harness: WsgirefHarness) -> None:
    check_shutdown(harness)


def test_websockets_leave_their_request_threads(harness: WsgirefHarness) -> None:
    """An upgraded connection runs on the server's loop: no thread per WebSocket
    (a thousand of them queueing for the GIL starved the load test)."""
    before = threading.active_count()
    clients = [connect(f"ws://127.0.0.1:{harness.port}/", timeout=TIMEOUT) for _ in range(20)]
    try:
        for ws in clients:
            ws.send("x")
            assert ws.recv(TIMEOUT).data == b"x"
        assert len(harness.app.websockets) == 20
        # The loop's few threads, not one per connection (the request threads have ended).
        assert wait_until(lambda: threading.active_count() < before + 5)
    finally:
        for ws in clients:
            ws.close()


def test_mounted_beside_a_plain_app() -> None:
    def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]

    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    app = WebSocketWSGIApplication(make_recorder(events))
    h = WsgirefHarness(app, PathDispatcher({"/ws": app}, default=hello))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=TIMEOUT)
        try:
            conn.request("GET", "/index")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"hello")
            response.close()
        finally:
            conn.close()
        with connect(f"ws://127.0.0.1:{h.port}/ws/feed", timeout=TIMEOUT) as ws:
            ws.send("mounted")
            assert ws.recv(TIMEOUT).data == b"mounted"
        assert events.get(timeout=TIMEOUT) == ("opened", "/ws/feed")
    finally:
        h.stop()


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_echo_example_is_quiet_and_says_going_away_on_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    example = Path(__file__).resolve().parents[2] / "examples" / "echo_wsgiref.py"
    with subprocess.Popen(
        [sys.executable, str(example), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:  # closes the pipes on exit
        try:
            deadline = time.monotonic() + TIMEOUT
            while True:
                try:
                    ws = connect(f"ws://127.0.0.1:{port}/any/where?x=1", timeout=TIMEOUT)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the example never listened"
                    time.sleep(0.05)
            with ws:
                ws.send(b"\x00\xff")
                assert ws.recv(TIMEOUT).data == b"\x00\xff"
                proc.terminate()
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(TIMEOUT)
                assert info.value.code == 1001
            assert proc.wait(TIMEOUT) == 0
            out, err = proc.communicate(timeout=TIMEOUT)
            assert out == b"" and err == b""  # no access log: quiet except for errors
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
