"""The command line (ws4web/__main__.py), driven in a real terminal (a pty, with pexpect).

The client runs as ``python -m ws4web URL`` against servers started here on
127.0.0.1; ``serve`` runs the chat demo, which ws4web clients then talk to.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ws4web
from ws4web import ConnectionClosed, WebSocket, connect
from ws4web.__main__ import BODY_WIDTH
from ws4web.handshake import accept_key
from ws4web.http11 import Headers, Request, Response
from ws4web.messages import Message

from .conftest import TIMEOUT, ServerFactory, ws_url

pexpect = pytest.importorskip("pexpect", reason="drives the CLI in a pty (pip install pexpect)")

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="pexpect.spawn needs a pty"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: every expect waits at most this long (seconds)
EXPECT = 10.0
# A known terminal, no ~/.inputrc changing how readline draws the line, no proxy between loopback peers.
ENV = {
    **{name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")},
    "TERM": "xterm",
    "INPUTRC": os.devnull,
    "PYTHONPATH": ROOT,
    "LC_ALL": "C.UTF-8",
}
HAS_READLINE = importlib.util.find_spec("readline") is not None


# -- the CLI in a pty ------------------------------------------------------------------------------


Spawn = Callable[..., Any]


@pytest.fixture
def cli() -> Iterator[Spawn]:
    """Spawn ``python -m ws4web ARGS`` in a pty; every child is gone at teardown."""
    children: list[Any] = []

    def spawn(*args: str) -> Any:
        child = pexpect.spawn(
            sys.executable,
            ["-m", "ws4web", *args],
            cwd=ROOT,
            env=ENV,
            encoding="utf-8",
            timeout=EXPECT,
            dimensions=(24, 200),
        )
        child.logfile_read = io.StringIO()  # everything shown, for transcript()
        child.ptyproc.delayafterclose = 0.0  # at teardown the child has exited, or is killed anyway
        children.append(child)
        return child

    yield spawn
    for child in children:
        if child.isalive():
            child.terminate(force=True)
        child.close(force=True)


def transcript(child: Any) -> str:
    text: str = child.logfile_read.getvalue()
    return text


def exit_status(child: Any, timeout: float = EXPECT) -> int:
    """Wait (bounded) for the child to end by itself and return its exit status."""
    child.expect(pexpect.EOF, timeout=timeout)
    deadline = time.monotonic() + timeout
    while child.isalive():  # reaps the child without blocking
        assert time.monotonic() < deadline, "the CLI closed its terminal but did not exit"
        time.sleep(0.02)
    assert child.signalstatus is None, f"killed by signal {child.signalstatus}: {transcript(child)!r}"
    status: int = child.exitstatus
    return status


def assert_clean(child: Any) -> None:
    out = transcript(child)
    assert "Traceback" not in out, out
    assert "KeyboardInterrupt" not in out, out


def connected(child: Any, url: str) -> None:
    child.expect_exact(f"connected to {url}", timeout=EXPECT)


# -- servers -----------------------------------------------------------------------------------------


class Recorder(WebSocket):
    """Records the upgrade request, the handler itself and how the connection ended."""

    requests: queue.Queue[Request | None]
    handlers: queue.Queue[WebSocket]
    closes: queue.Queue[tuple[int, str | None]]

    def opened(self) -> None:
        self.requests.put(self.request)
        self.handlers.put(self)

    def closed(self, code: int, reason: str | None = None) -> None:
        self.closes.put((code, reason))


def recording(base: type[Recorder]) -> type[Recorder]:
    """A subclass of ``base`` with queues of its own (nothing shared between tests)."""
    return type(base.__name__, (base,), {"requests": queue.Queue(), "handlers": queue.Queue(), "closes": queue.Queue()})


class Echo(Recorder):
    def received_message(self, message: Message) -> None:
        self.send(message)


class Sender(Recorder):
    """Sends a few messages of each kind as soon as the connection is open."""

    def opened(self) -> None:
        super().opened()
        self.send(b"\x00\xffAB")
        self.send(bytes(range(40)))
        self.send("\x1b[2Jwiped?\x07")  # terminal control: must not reach the terminal as such
        self.send("")


class Closer(Recorder):
    """Echoes, but ends the connection when asked: 'close CODE REASON' or 'drop' (no close frame)."""

    def received_message(self, message: Message) -> None:
        words = bytes(message.data).decode().split(" ", 2)
        if words[0] == "drop":
            self.terminate()
        elif words[0] == "close":
            self.close(int(words[1]), words[2])
        else:
            self.send(message)


def require_token(request: Request) -> Response | None:
    """Refuse (403) an upgrade without X-Token: secret or without the chat.v1 subprotocol offered."""
    offered = [p.strip() for p in (request.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    if request.headers.get("X-Token") == "secret" and "chat.v1" in offered:
        return None
    body = b"token and chat.v1 required"
    return Response(403, "Forbidden", Headers([("Content-Length", str(len(body)))]), body)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the client --------------------------------------------------------------------------------------


def test_echo_round_trip_then_ctrl_d_closes_with_1000(cli: Spawn, make_server: ServerFactory) -> None:
    handler = recording(Echo)
    url = ws_url(make_server(handler), "/echo")
    child = cli(url)
    connected(child, url)
    child.sendline("hello, wörld")
    child.expect_exact("< hello, wörld", timeout=EXPECT)
    child.sendline("again")
    child.expect_exact("< again", timeout=EXPECT)
    child.sendeof()  # Ctrl-D
    child.expect_exact("closed: 1000", timeout=EXPECT)
    assert exit_status(child) == 0
    assert handler.closes.get(timeout=TIMEOUT) == (1000, "")
    assert "connecting to" not in transcript(child)  # a quick handshake goes without a word
    assert_clean(child)


def test_incoming_messages_text_and_binary(cli: Spawn, make_server: ServerFactory) -> None:
    handler = recording(Sender)
    url = ws_url(make_server(handler))
    child = cli(url)
    connected(child, url)
    child.expect_exact("< [binary, 4 bytes] 00 ff 41 42\r\n", timeout=EXPECT)
    first_32 = " ".join(f"{i:02x}" for i in range(32))
    child.expect_exact(f"< [binary, 40 bytes] {first_32} ...\r\n", timeout=EXPECT)
    child.expect_exact("< \\x1b[2Jwiped?\\x07\r\n", timeout=EXPECT)  # escaped, not obeyed
    child.expect_exact("< \r\n", timeout=EXPECT)  # the empty message still gets its line
    child.sendeof()
    assert exit_status(child) == 0
    assert "\x1b[2J" not in transcript(child)
    assert handler.closes.get(timeout=TIMEOUT)[0] == 1000


def test_headers_and_subprotocols_reach_the_server(cli: Spawn, make_server: ServerFactory) -> None:
    handler = recording(Echo)
    server = make_server(handler, subprotocols=["chat.v1"], process_request=require_token)
    url = ws_url(server)
    child = cli(
        url, "--header", "X-Token: secret", "-H", "X-Trace:a", "--header", "X-Trace: b", "-s", "other", "-s", "chat.v1"
    )
    child.expect_exact(f"connected to {url} (subprotocol chat.v1)", timeout=EXPECT)
    request = handler.requests.get(timeout=TIMEOUT)
    assert request is not None
    assert request.headers.get_all("X-Token") == ["secret"]
    assert request.headers.get_all("X-Trace") == ["a", "b"]  # repeated, in order
    assert request.headers.get("Sec-WebSocket-Protocol") == "other, chat.v1"
    child.sendline("through")
    child.expect_exact("< through", timeout=EXPECT)
    child.sendeof()
    assert exit_status(child) == 0


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="no-header"),
        pytest.param(["-H", "X-Token: wrong", "-s", "chat.v1"], id="wrong-token"),
        pytest.param(["-H", "X-Token: secret"], id="no-subprotocol"),
    ],
)
def test_refused_handshake_prints_the_status_and_exits_1(
    cli: Spawn, make_server: ServerFactory, args: list[str]
) -> None:
    handler = recording(Echo)
    server = make_server(handler, subprotocols=["chat.v1"], process_request=require_token)
    child = cli(ws_url(server), *args)
    child.expect_exact("refused: HTTP 403 Forbidden", timeout=EXPECT)
    child.expect_exact("token and chat.v1 required", timeout=EXPECT)  # the body, for the reason
    assert exit_status(child) == 1
    assert handler.requests.empty()
    assert_clean(child)


@pytest.mark.parametrize(
    ("line", "shown", "status"),
    [
        pytest.param("close 4001 bye", "closed by the server: 4001 bye", 1, id="4001"),
        pytest.param("close 1000 done", "closed by the server: 1000 done", 0, id="1000"),
        pytest.param("drop", "connection lost: 1006", 1, id="no-close-frame"),
    ],
)
def test_server_ends_the_connection(cli: Spawn, make_server: ServerFactory, line: str, shown: str, status: int) -> None:
    handler = recording(Closer)
    url = ws_url(make_server(handler))
    child = cli(url)
    connected(child, url)
    child.sendline(line)
    child.expect_exact(shown, timeout=EXPECT)
    assert exit_status(child) == status  # no Ctrl-D needed: the CLI ends by itself
    assert_clean(child)
    if line != "drop":
        # The server's closed() sees our answer: its code echoed (RFC 6455 §5.5.1), no reason.
        assert handler.closes.get(timeout=TIMEOUT)[0] == int(line.split()[1])


def test_ctrl_c_closes_with_1001_without_a_traceback(cli: Spawn, make_server: ServerFactory) -> None:
    handler = recording(Echo)
    url = ws_url(make_server(handler))
    child = cli(url)
    connected(child, url)
    child.sendline("before")
    child.expect_exact("< before", timeout=EXPECT)
    child.send("half-typed")  # abandoned by Ctrl-C: never sent
    child.expect_exact("half-typed", timeout=EXPECT)
    child.sendintr()
    child.expect_exact("closed: 1001", timeout=EXPECT)
    assert exit_status(child) == 0
    assert handler.closes.get(timeout=TIMEOUT) == (1001, "")
    assert "< half-typed" not in transcript(child)
    assert_clean(child)


@pytest.mark.skipif(not HAS_READLINE, reason="the typed line is only redrawn with readline")
def test_incoming_message_does_not_garble_the_typed_line(cli: Spawn, make_server: ServerFactory) -> None:
    handler = recording(Echo)
    url = ws_url(make_server(handler))
    child = cli(url)
    connected(child, url)
    server_side = handler.handlers.get(timeout=TIMEOUT)
    child.send("half")
    child.expect_exact("> half", timeout=EXPECT)
    server_side.send("pushed")
    # The prompt line is erased, the message gets its own line, the typed text comes back below it.
    child.expect_exact("\r\x1b[K< pushed\r\n> half", timeout=EXPECT)
    child.sendline(" done")
    child.expect_exact("< half done", timeout=EXPECT)  # typed before and after the message: one line
    child.sendeof()
    assert exit_status(child) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["-H", "no colon", "ws://127.0.0.1/"], "expected 'Name: value'", id="header-form"),
        pytest.param(["-H", "X-A: b\r\nX-Injected: 1", "ws://127.0.0.1/"], "control characters", id="header-crlf"),
        pytest.param(["-s", "a b", "ws://127.0.0.1/"], "a subprotocol is a token", id="subprotocol"),
        pytest.param(["--timeout", "0", "ws://127.0.0.1/"], "positive number of seconds", id="timeout"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(cli: Spawn, args: list[str], message: str) -> None:
    child = cli(*args)
    child.expect_exact(message, timeout=EXPECT)
    assert exit_status(child) == 2  # a usage error, found before connecting anywhere
    assert_clean(child)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        pytest.param("ws://[::1", "is not a valid URL", id="unclosed-bracket"),
        pytest.param("http://127.0.0.1/", "is not a ws:// or wss:// URL", id="http"),
        pytest.param("127.0.0.1:9000", "is not a ws:// or wss:// URL", id="no-scheme"),
        pytest.param("", "is not a ws:// or wss:// URL", id="empty"),
        pytest.param("ws://", "has no host", id="no-host"),
        pytest.param("ws://:9000/", "has no host", id="port-only"),
        pytest.param("ws://127.0.0.1:99999/", "has an invalid port", id="port-too-big"),
        pytest.param("ws://127.0.0.1:abc/", "has an invalid port", id="port-not-a-number"),
        pytest.param("ws://127.0.0.1:0/", "has an invalid port", id="port-0"),
        pytest.param("ws://exa mple.com/", "invalid host name", id="space-in-host"),
        pytest.param("ws://exa\x07mple.com/", "invalid host name", id="control-in-host"),
        pytest.param("ws://127.0.0.1/#frag", "has a fragment", id="fragment"),
        pytest.param("ws://a..b/", "empty label", id="empty-label"),
        pytest.param("ws://" + "a" * 64 + ".com/", "longer than 63", id="long-label"),
        pytest.param("ws://b\xfccher..example/", "idna", id="non-ascii-empty-label"),
        pytest.param("ws://[v1.x]/", "only an IPv6 address", id="ipvfuture"),
        pytest.param("ws://[::1]x/", "after the IPv6 address", id="after-bracket"),
        pytest.param("ws://[::zz]/", "is not a valid URL", id="bad-ipv6"),
        pytest.param("ws://ann:SECRET@127.0.0.1:abc/?token=SECRET", "has an invalid port", id="credentials"),
    ],
)
def test_bad_url_is_one_line_and_exit_2(url: str, why: str) -> None:
    """Every malformed URL: one line on stderr, nothing on stdout, status 2, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "ws4web", url],
        capture_output=True,
        cwd=ROOT,
        env=ENV,
        timeout=2 * EXPECT,
        check=False,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert proc.stdout == b""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("invalid URL: "), err
    assert why in lines[0]
    assert "SECRET" not in err  # the URL shows redacted
    assert "\x07" not in err  # nor does a control character reach the terminal


def slow_upgrade(listener: socket.socket, child: Any, request_line: bytes) -> socket.socket:
    """Accept the CLI's connection and answer its upgrade with 101, but only once it has
    said it is connecting (and 1.5 s have passed): the handshake is slow whatever the machine's load."""
    peer, _ = listener.accept()
    peer.settimeout(TIMEOUT)
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = peer.recv(4096)
        assert chunk, "the CLI closed before its request was complete"
        request += chunk
    received = time.monotonic()
    assert request.startswith(request_line), request
    key = next(
        line.split(b":", 1)[1].strip().decode()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    child.expect_exact("(press Ctrl-C to give up)", timeout=EXPECT)
    time.sleep(max(0.0, 1.5 - (time.monotonic() - received)))
    peer.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
    )
    return peer


def test_slow_handshake_says_connecting_once(cli: Spawn) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        child = cli(f"ws://127.0.0.1:{port}/slow?token=SECRET")
        shown = f"ws://127.0.0.1:{port}/slow?token=***"
        with slow_upgrade(listener, child, b"GET /slow?token=SECRET HTTP/1.1\r\n") as peer:
            connected(child, shown)
            peer.sendall(b"\x88\x02\x03\xe8")  # the server closes: 1000
            frame = b""
            while len(frame) < 2 + 4 + 2:  # the CLI's answer: header, mask, code (RFC 6455 §5.5.1)
                chunk = peer.recv(8 - len(frame))
                assert chunk, frame
                frame += chunk
            assert frame[:2] == b"\x88\x82", frame
        # Leaving the block closes the TCP connection, as a server does after the closing handshake.
        child.expect_exact("closed by the server: 1000", timeout=EXPECT)
        assert exit_status(child) == 0
    out = transcript(child)
    assert out.count("connecting to") == 1, out
    notice, rest = out.split(f"connecting to {shown} (press Ctrl-C to give up)\r\n")
    assert notice == "" and rest.startswith(f"connected to {shown}"), out  # first the notice, then the news
    assert "SECRET" not in out
    assert_clean(child)


def test_ctrl_c_after_the_connecting_notice(cli: Spawn) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts TCP, never answers the upgrade
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        child = cli(f"ws://127.0.0.1:{port}/", "--timeout", str(EXPECT))
        peer, _ = listener.accept()
        with peer:
            child.expect_exact(f"connecting to ws://127.0.0.1:{port}/ (press Ctrl-C to give up)", timeout=EXPECT)
            child.sendintr()
            child.expect_exact("interrupted", timeout=EXPECT)
            assert exit_status(child) == 130
    assert_clean(child)


ERROR_PAGE = (
    "<!DOCTYPE html>\n<html><head><meta charset=utf-8><style>body { font: 14px sans-serif }</style>"
    "<title>Access denied &mdash; ask the admin</title>"
    "<script>var secret = '<p>not text</p>';</script></head>\n<body>"
    + "<p>You are not allowed to open this socket. " * 200
    + "</p></body></html>\n"
).encode()


def refuse_with_a_page(request: Request) -> Response:
    headers = Headers([("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(ERROR_PAGE)))])
    return Response(403, "Forbidden", headers, ERROR_PAGE)


def test_refusal_shows_the_first_line_of_an_html_page(cli: Spawn, make_server: ServerFactory) -> None:
    handler = recording(Echo)
    server = make_server(handler, process_request=refuse_with_a_page)
    child = cli(ws_url(server))
    assert exit_status(child) == 1
    lines = transcript(child).splitlines()
    # The status, then the page's title, tags stripped and entities decoded; the rest elided.
    assert lines == ["refused: HTTP 403 Forbidden", "Access denied \u2014 ask the admin ..."], lines
    assert handler.requests.empty()
    assert_clean(child)


def refuse_with_a_long_line(request: Request) -> Response:
    body = b"denied: " + b"x" * 5000
    return Response(403, "Forbidden", Headers([("Content-Length", str(len(body)))]), body)


def test_refusal_trims_a_long_line(cli: Spawn, make_server: ServerFactory) -> None:
    server = make_server(recording(Echo), process_request=refuse_with_a_long_line)
    child = cli(ws_url(server))
    assert exit_status(child) == 1
    lines = transcript(child).splitlines()
    assert lines[0] == "refused: HTTP 403 Forbidden"
    assert lines[1].startswith("denied: xxx") and lines[1].endswith(" ...") and len(lines[1]) <= BODY_WIDTH, lines
    assert len(lines) == 2
    assert_clean(child)


def test_nothing_listening_is_a_clean_error(cli: Spawn) -> None:
    child = cli(f"ws://127.0.0.1:{free_port()}/")
    child.expect_exact("cannot connect: ", timeout=EXPECT)
    child.expect_exact("refused", timeout=EXPECT)
    assert exit_status(child) == 1
    assert_clean(child)


def test_ctrl_c_during_the_handshake_is_a_clean_exit(cli: Spawn) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts TCP, never answers the upgrade
        listener.settimeout(TIMEOUT)
        child = cli(f"ws://127.0.0.1:{listener.getsockname()[1]}/", "--timeout", str(EXPECT))
        peer, _ = listener.accept()
        with peer:
            peer.settimeout(TIMEOUT)
            assert peer.recv(4096).startswith(b"GET / HTTP/1.1\r\n")  # the client now waits for an answer
            child.sendintr()
            child.expect_exact("interrupted", timeout=EXPECT)
            assert exit_status(child) == 130
    assert_clean(child)


def test_tls_certificate_is_verified_by_default(
    cli: Spawn, make_server: ServerFactory, server_ssl_context: Any
) -> None:
    handler = recording(Echo)
    server = make_server(handler, ssl_context=server_ssl_context)
    child = cli(ws_url(server, scheme="wss", host="localhost"))  # signed by the test CA, which nobody trusts
    child.expect_exact("cannot connect: TLS certificate verification failed", timeout=EXPECT)
    child.expect_exact("--insecure", timeout=EXPECT)
    assert exit_status(child) == 1
    assert handler.requests.empty()
    assert_clean(child)


def test_tls_insecure_skips_verification(cli: Spawn, make_server: ServerFactory, server_ssl_context: Any) -> None:
    handler = recording(Echo)
    server = make_server(handler, ssl_context=server_ssl_context)
    url = ws_url(server, scheme="wss", host="localhost")
    child = cli("--insecure", url)
    connected(child, url)
    child.sendline("over tls")
    child.expect_exact("< over tls", timeout=EXPECT)
    child.sendeof()
    child.expect_exact("closed: 1000", timeout=EXPECT)
    assert exit_status(child) == 0
    assert handler.closes.get(timeout=TIMEOUT) == (1000, "")


def test_piped_input_with_wait(make_server: ServerFactory) -> None:
    """Not a terminal: lines from a pipe, replies on stdout, status lines on stderr.

    --wait keeps the connection open after the end of input until the server
    closes (or the time is up), so the replies to the last lines are not lost.
    """
    handler = recording(Closer)
    url = ws_url(make_server(handler))
    proc = subprocess.run(
        [sys.executable, "-m", "ws4web", url, "--wait", str(EXPECT)],
        input=b"one\ntwo\r\n\xff\nclose 1000 done\n",
        capture_output=True,
        cwd=ROOT,
        env=ENV,
        timeout=2 * EXPECT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.decode().splitlines() == ["< one", "< two", "< \ufffd"]  # invalid UTF-8 replaced
    assert proc.stderr.decode().splitlines()[-1] == "closed by the server: 1000 done"
    assert handler.closes.get(timeout=TIMEOUT)[0] == 1000


# -- serve -------------------------------------------------------------------------------------------

ADAPTER_NEEDS = {"stdlib": [], "cherrypy": ["cherrypy"], "gevent": ["gevent"], "asgi": ["starlette", "uvicorn"]}


def next_event(ws: WebSocket, kind: str) -> dict[str, Any]:
    """The next chat event of ``kind`` (presence updates come and go in between)."""
    for _ in range(10):
        event: dict[str, Any] = json.loads(ws.recv(TIMEOUT).data)
        if event["type"] == kind:
            return event
    raise AssertionError(f"no {kind!r} event in 10 messages")


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("adapter", list(ADAPTER_NEEDS))
def test_serve_runs_the_chat_and_stops_cleanly(cli: Spawn, adapter: str, stop: str) -> None:
    for module in ADAPTER_NEEDS[adapter]:
        pytest.importorskip(module)
    port = free_port()
    child = cli("serve", "--port", str(port), "--adapter", adapter)
    child.expect(r"ws4web chat on http://127\.0\.0\.1:(\d+)/", timeout=EXPECT)
    assert int(child.match.group(1)) == port
    url = f"ws://127.0.0.1:{port}/ws"
    ann = connect(url, timeout=TIMEOUT, close_timeout=2.0)
    bob = connect(url, timeout=TIMEOUT, close_timeout=2.0)
    try:
        ann.send(json.dumps({"type": "join", "name": "ann"}))
        hello = next_event(ann, "welcome")
        assert hello["name"] == "ann"
        bob.send(json.dumps({"type": "join", "name": "bob"}))
        assert next_event(bob, "welcome")["name"] == "bob"
        ann.send(json.dumps({"type": "say", "text": "hi bob"}))
        assert next_event(bob, "message") == {"type": "message", "id": hello["id"], "from": "ann", "text": "hi bob"}
        if stop == "SIGINT":
            child.sendintr()  # Ctrl-C in its terminal
        else:
            child.kill(signal.SIGTERM)
        for ws in (ann, bob):
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(10):  # presence updates may come before the close
                    ws.recv(TIMEOUT)
            assert closed.value.code == 1001  # Going Away: a clean shutdown, not a dropped connection
        assert exit_status(child) == 0
    finally:
        ann.terminate()
        bob.terminate()
    assert_clean(child)


def test_version(cli: Spawn) -> None:
    child = cli("--version")
    child.expect_exact(f"ws4web {ws4web.__version__}", timeout=EXPECT)
    assert exit_status(child) == 0


def test_serve_names_the_extra_a_missing_framework_comes_with() -> None:
    # None in sys.modules: importing starlette raises ModuleNotFoundError, as where it is not installed.
    code = "import sys; sys.modules['starlette'] = None; from ws4web.__main__ import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "serve", "--adapter", "asgi"],
        capture_output=True,
        cwd=ROOT,
        env=ENV,
        timeout=2 * EXPECT,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.decode() == "the asgi chat demo needs 'starlette': pip install 'ws4web[asgi]'\n"


def test_serve_refuses_an_unknown_adapter(cli: Spawn) -> None:
    child = cli("serve", "--adapter", "twisted")
    child.expect_exact("invalid choice: 'twisted'", timeout=EXPECT)
    assert exit_status(child) == 2
