"""Logging (ws4web/logs.py): one hierarchy, a connection id and the peer on every record, quiet normal traffic."""

from __future__ import annotations

import logging
import pkgutil
import socket
import time

import pytest

import ws4web
from ws4web import WebSocket, connect
from ws4web.http11 import Headers, Request, Response
from ws4web.logs import ConnectionLog, connection_log, format_peer, new_id, redact_target, redact_url
from ws4web.messages import Message

from .conftest import TIMEOUT, ServerFactory, wait_until, ws_url

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]


def test_ids_are_unique_and_short() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("ws") and len(i) < 12 for i in ids)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (("127.0.0.1", 8080), "127.0.0.1:8080"),
        (("::1", 443, 0, 0), "[::1]:443"),
        (None, ""),
        ("/tmp/sock", "/tmp/sock"),
    ],
)
def test_format_peer(address: object, text: str) -> None:
    assert format_peer(address) == text


def test_connection_log_prefixes_and_tags(caplog: pytest.LogCaptureFixture) -> None:
    log = ConnectionLog(logging.getLogger("ws4web.test"), "ws7", "127.0.0.1:9")
    with caplog.at_level(logging.DEBUG, logger="ws4web"):
        log.warning("hello %s", "there", extra={"other": 1})
        log.child(logging.getLogger("ws4web.other")).info("child")
    first, second = caplog.records
    assert first.getMessage() == "[ws7 127.0.0.1:9] hello there"
    assert (first.ws4web_id, first.ws4web_peer, first.other) == ("ws7", "127.0.0.1:9", 1)  # type: ignore[attr-defined]
    assert second.name == "ws4web.other" and second.ws4web_id == "ws7"  # type: ignore[attr-defined]


def test_connection_log_reads_the_peer_of_a_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        accepted, addr = listener.accept()
        with client, accepted:
            log = connection_log(logging.getLogger("ws4web"), accepted)
            assert log.peer == f"127.0.0.1:{addr[1]}"
            assert connection_log(logging.getLogger("ws4web"), object()).peer == ""


def test_every_module_logs_under_ws4web() -> None:
    # Import every module, then check no logger outside the hierarchy was created by us.
    for info in pkgutil.walk_packages(ws4web.__path__, "ws4web."):
        if info.name.startswith("ws4web.adapters.") or info.name.startswith("ws4web.pubsub."):
            continue  # frameworks are optional; their modules use the same getLogger pattern
        __import__(info.name)
    ours = [name for name in logging.root.manager.loggerDict if "ws4web" in name]
    assert ours and all(name == "ws4web" or name.startswith("ws4web.") for name in ours)
    # No handler of ours: unconfigured, Python's last resort shows WARNING and above.
    assert not logging.getLogger("ws4web").handlers


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


def test_normal_traffic_is_silent_at_info(make_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(Echo)
    with caplog.at_level(logging.DEBUG, logger="ws4web"):
        with connect(ws_url(server)) as ws:
            for i in range(20):
                ws.send(f"message {i}")
                assert ws.recv(TIMEOUT).data == f"message {i}".encode()
            ws.send(b"\x00" * 70000)
            assert len(ws.recv(TIMEOUT).data) == 70000
        assert wait_until(lambda: not server.websockets)
    loud = [r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("ws4web")]
    assert not loud, [r.getMessage() for r in loud]


def test_refused_handshake_is_logged_at_info_with_peer_and_id(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(Echo, origins=["https://good.example"])
    with caplog.at_level(logging.INFO, logger="ws4web"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"Origin: https://evil.example\r\n\r\n"
            )
            local_port = sock.getsockname()[1]
            assert sock.recv(100).startswith(b"HTTP/1.1 403")
        assert wait_until(lambda: any("refused" in r.getMessage() for r in caplog.records))
    record = next(r for r in caplog.records if "refused" in r.getMessage())
    assert record.levelno == logging.INFO  # a refusal is the server working, not failing
    assert record.ws4web_peer == f"127.0.0.1:{local_port}"  # type: ignore[attr-defined]
    assert f"127.0.0.1:{local_port}" in record.getMessage() and "403" in record.getMessage()
    assert record.ws4web_id.startswith("ws")  # type: ignore[attr-defined]


def answer_health_checks(request: Request) -> Response | None:
    if request.path == "/health":
        return Response(200, "OK", Headers([("Content-Length", "3")]), b"OK\n")
    return None


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"], ids=["probe", "process-request"])
def test_probes_and_process_request_answers_are_logged_at_debug(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture, sent: bytes
) -> None:
    """A TCP probe that sends nothing, and a request process_request answers itself
    (a health check), are routine: DEBUG, still with the peer and an id."""
    server = make_server(Echo, process_request=answer_health_checks)
    with caplog.at_level(logging.DEBUG, logger="ws4web"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            local_port = sock.getsockname()[1]
            if sent:
                sock.sendall(sent)
                assert sock.recv(100).startswith(b"HTTP/1.1 200")
            else:
                sock.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: any("refused" in r.getMessage() for r in caplog.records))
    records = [r for r in caplog.records if "refused" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.DEBUG]
    if sent:
        assert "(HTTP 200)" in records[0].getMessage(), records[0].getMessage()  # the status process_request chose
    assert records[0].ws4web_peer == f"127.0.0.1:{local_port}"  # type: ignore[attr-defined]
    assert records[0].ws4web_id.startswith("ws")  # type: ignore[attr-defined]


class Recorder(WebSocket):
    ids: list[str] = []

    def opened(self) -> None:
        Recorder.ids.append(self.id)


def test_abnormal_close_is_logged_at_info_with_the_connections_id(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    Recorder.ids = []
    server = make_server(Recorder)
    with caplog.at_level(logging.DEBUG, logger="ws4web"):
        ws = connect(ws_url(server))
        assert wait_until(lambda: len(Recorder.ids) == 1)
        local_port = ws.local_address[1]
        ws.terminate()  # TCP goes away without a close frame: 1006 on the server
        assert wait_until(lambda: any("abnormally" in r.getMessage() for r in caplog.records))
        time.sleep(0.05)
    warnings = [r for r in caplog.records if "abnormally" in r.getMessage()]
    server_side = [r for r in warnings if r.ws4web_id == Recorder.ids[0]]  # type: ignore[attr-defined]
    assert len(server_side) == 1
    record = server_side[0]
    assert record.levelno == logging.INFO and "1006" in record.getMessage()
    assert record.ws4web_peer == f"127.0.0.1:{local_port}"  # type: ignore[attr-defined]
    # Every record about this connection, whatever module wrote it, carries the same id.
    tagged = [r for r in caplog.records if getattr(r, "ws4web_peer", None) == f"127.0.0.1:{local_port}"]
    assert tagged and {r.ws4web_id for r in tagged} <= {Recorder.ids[0], ws.id}  # type: ignore[attr-defined]


def test_handler_crash_is_logged_with_the_id(make_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    class Crash(WebSocket):
        def received_message(self, message: Message) -> None:
            raise RuntimeError("bug")

    server = make_server(Crash)
    with caplog.at_level(logging.INFO, logger="ws4web"):
        with connect(ws_url(server)) as ws:
            ws.send("x")
            with pytest.raises(ws4web.ConnectionClosedError):
                ws.recv(TIMEOUT)
        assert wait_until(lambda: any("abnormally" in r.getMessage() for r in caplog.records))
    crash = next(r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError))
    assert wait_until(
        lambda: any(
            "abnormally" in r.getMessage() and "1011" in r.getMessage() and r.ws4web_id == crash.ws4web_id  # type: ignore[attr-defined]
            for r in caplog.records
        )
    )


# -- redaction: no secrets in records, messages or thread names -------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("ws://example.com/chat", "ws://example.com/chat"),
        ("ws://alice:s3cret@example.com/chat", "ws://***@example.com/chat"),
        ("wss://TOKEN@example.com:8443/", "wss://***@example.com:8443/"),  # a user name can be the secret
        ("ws://a:p@ss@example.com/", "ws://***@example.com/"),  # an unescaped "@" in the password
        ("ws://h/ws?access_token=abc&room=7", "ws://h/ws?access_token=***&room=***"),
        ("ws://h/?a=1&&b=", "ws://h/?a=***&&b="),  # empty values and items say nothing
        ("ws://h/?abc123def", "ws://h/?***"),  # a bare item may be the token itself
        ("ws://h/p#frag?x=1", "ws://h/p#***"),  # a fragment may carry a token (OAuth)
        ("ws://[::1]:9000/v6?k=v", "ws://[::1]:9000/v6?k=***"),
        ("http://user:pw@proxy:3128", "http://***@proxy:3128"),
        ("user:pw@proxy:3128", "***@proxy:3128"),  # no scheme: still an authority
        ("proxy.local:3128", "proxy.local:3128"),
        ("/only/a/path?t=1", "/only/a/path?t=***"),
        ("", ""),
        ("ws://h/a b\r\nX-Forged: 1?k=v", "ws://h/a%20b%0D%0AX-Forged:%201?k=***"),  # no forged log lines
        ("ws://h/\x85\u2028", "ws://h/%C2%85%E2%80%A8"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    ("target", "redacted"),
    [
        ("/", "/"),
        ("/chat?access_token=eyJhbGciOi.x.y", "/chat?access_token=***"),
        ("/a?x=1&y=2&flag", "/a?x=***&y=***&***"),
        ("/a?", "/a?"),
        ("/a?t=1#f", "/a?t=***#***"),
        ("/a\x00b?c=\nd", "/a%00b?c=***"),
    ],
)
def test_redact_target(target: str, redacted: str) -> None:
    assert redact_target(target) == redacted


def test_redaction_never_raises_on_garbage() -> None:
    for text in ("ws://[::1", "://", "@", "?", "#", "ws://@/?=&=#", "\ud800", "ws://h/" + "?" * 1000):
        assert isinstance(redact_url(text), str)
        assert isinstance(redact_target(text), str)
