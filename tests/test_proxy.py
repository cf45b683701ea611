"""Client-side proxies (ws4web/proxy.py): environment rules, HTTP CONNECT and SOCKS tunnels to a real echo server.

The proxies are real: an HTTP CONNECT proxy and a SOCKS 4/4a/5 proxy written here
with the standard library (threads on 127.0.0.1:0), and pproxy as a third-party
interoperability check when it is installed.
"""

from __future__ import annotations

import base64
import re
import selectors
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ws4web
import ws4web.exceptions
from ws4web.exceptions import InvalidHandshake, InvalidURI
from ws4web.messages import TextMessage
from ws4web.proxy import ProxyError, ProxyTimeout, SocksError, open_tunnel, proxy_from_environment
from ws4web.server import WebSocketServer
from ws4web.upgrade import connect_socket
from ws4web.websocket import WebSocket

from .conftest import TIMEOUT, ServerFactory, Worker

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest) -> None:
    """``no_leaks`` for every test that opens sockets; the environment-only tests skip its garbage collection."""
    if "env" not in request.fixturenames or "proxies" in request.fixturenames:
        request.getfixturevalue("no_leaks")


# The short timeout given to open_tunnel where the test expects it to run out.
SHORT = 0.5

PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
)


# -- proxy_from_environment ----------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Clear every proxy variable of this machine, then set the ones a test gives."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def setenv(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return setenv


def test_no_variables_means_direct(env: Callable[..., None]) -> None:
    env()
    assert proxy_from_environment("ws://example.com/") is None
    assert proxy_from_environment("wss://example.com/") is None


def test_ws_uses_http_proxy_and_wss_uses_https_proxy(env: Callable[..., None]) -> None:
    env(http_proxy="http://plain:3128", https_proxy="http://secure:3129")
    assert proxy_from_environment("ws://example.com/chat") == "http://plain:3128"
    assert proxy_from_environment("wss://example.com/chat") == "http://secure:3129"


def test_http_proxy_is_not_used_for_wss(env: Callable[..., None]) -> None:
    env(http_proxy="http://plain:3128")
    assert proxy_from_environment("wss://example.com/") is None
    env(https_proxy="http://secure:3129")
    assert proxy_from_environment("ws://example.com/") == "http://plain:3128"


def test_uppercase_variables(env: Callable[..., None]) -> None:
    env(HTTP_PROXY="http://upper-plain:1", HTTPS_PROXY="http://upper-secure:2")
    assert proxy_from_environment("ws://example.com/") == "http://upper-plain:1"
    assert proxy_from_environment("wss://example.com/") == "http://upper-secure:2"


def test_lowercase_wins_over_uppercase(env: Callable[..., None]) -> None:
    env(
        http_proxy="http://lower:1",
        HTTP_PROXY="http://upper:1",
        https_proxy="http://lower:2",
        HTTPS_PROXY="http://upper:2",
    )
    assert proxy_from_environment("ws://example.com/") == "http://lower:1"
    assert proxy_from_environment("wss://example.com/") == "http://lower:2"


def test_empty_lowercase_counts_as_unset(env: Callable[..., None]) -> None:
    env(http_proxy="", HTTP_PROXY="http://upper:1")
    assert proxy_from_environment("ws://example.com/") == "http://upper:1"


def test_all_proxy_is_the_fallback(env: Callable[..., None]) -> None:
    env(ALL_PROXY="socks5h://upper-all:1080")
    assert proxy_from_environment("ws://example.com/") == "socks5h://upper-all:1080"
    env(all_proxy="socks5://all:1080")
    assert proxy_from_environment("ws://example.com/") == "socks5://all:1080"
    assert proxy_from_environment("wss://example.com/") == "socks5://all:1080"
    env(https_proxy="http://secure:3129")
    assert proxy_from_environment("wss://example.com/") == "http://secure:3129"
    assert proxy_from_environment("ws://example.com/") == "socks5://all:1080"


def test_proxy_without_scheme_means_http(env: Callable[..., None]) -> None:
    env(http_proxy="proxy.local:3128")
    assert proxy_from_environment("ws://example.com/") == "http://proxy.local:3128"


def test_uppercase_http_proxy_is_ignored_under_cgi(env: Callable[..., None]) -> None:
    # httpoxy: a CGI client sets HTTP_PROXY with a "Proxy:" request header.
    env(HTTP_PROXY="http://attacker:1", REQUEST_METHOD="GET")
    assert proxy_from_environment("ws://example.com/") is None
    env(http_proxy="http://chosen:1")
    assert proxy_from_environment("ws://example.com/") == "http://chosen:1"


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypassed"),
    [
        ("*", "ws://example.com/", True),
        ("*", "wss://10.1.2.3:8443/", True),
        ("example.com", "ws://example.com/", True),
        ("example.com", "ws://ws.example.com/", True),
        ("example.com", "ws://a.b.example.com/", True),
        ("example.com", "ws://badexample.com/", False),
        ("example.com", "ws://example.org/", False),
        (".example.com", "ws://example.com/", True),
        (".example.com", "ws://ws.example.com/", True),
        (".example.com", "ws://badexample.com/", False),
        ("*.example.com", "ws://ws.example.com/", True),
        ("EXAMPLE.com", "ws://Ws.Example.COM/", True),
        ("example.com.", "ws://ws.example.com/", True),
        ("example.com", "ws://ws.example.com./", True),
        ("other.org, example.com", "ws://ws.example.com/", True),
        ("other.org example.com", "ws://ws.example.com/", True),
        ("other.org,,  ,example.com", "ws://example.com/", True),
        ("other.org", "ws://example.com/", False),
        ("example.com:8080", "ws://example.com:8080/", True),
        ("example.com:8080", "ws://example.com/", False),
        ("example.com:443", "wss://example.com/", True),
        ("example.com:80", "wss://example.com/", False),
        ("127.0.0.1", "ws://127.0.0.1:9000/", True),
        ("127.0.0.1", "ws://127.0.0.2:9000/", False),
        ("127.0.0.1", "ws://localhost/", False),  # names are not resolved
        ("localhost", "ws://127.0.0.1/", False),
        ("::1", "ws://[::1]:9000/", True),
        ("[::1]", "ws://[::1]:9000/", True),
        ("0:0::1", "ws://[::1]/", True),
        ("[::1]:9000", "ws://[::1]:9000/", True),
        ("[::1]:9000", "ws://[::1]:9001/", False),
        ("10.0.0.0/8", "ws://10.20.30.40/", True),
        ("10.0.0.0/8", "ws://11.0.0.1/", False),
        ("10.0.0.0/8", "ws://ten.example/", False),
        ("192.168.1.7/24", "ws://192.168.1.200/", True),  # host bits ignored
        ("fd00::/8", "wss://[fd12::1]/", True),
        ("fd00::/8", "wss://[fe80::1]/", False),
        ("not-a-network/8", "ws://example.com/", False),
        # An IP address is never a domain name: entries that look like suffixes of it do not match.
        ("0.1", "ws://10.0.0.1/", False),
        (".0.0.1", "ws://127.0.0.1/", False),
        ("*.0.1", "ws://10.0.0.1/", False),
        ("1", "ws://10.0.0.1/", False),
        ("3.4", "ws://[::ffff:1.2.3.4]/", False),
        ("0.1", "ws://svc.0.1/", True),  # ... while names keep their suffix rule
        ("10.0.0.1", "ws://10.0.0.1/", True),
        ("10.0.0.0/24", "ws://10.0.0.1/", True),
    ],
)
def test_no_proxy(env: Callable[..., None], no_proxy: str, url: str, bypassed: bool) -> None:
    env(http_proxy="http://proxy:3128", https_proxy="http://proxy:3128", no_proxy=no_proxy)
    assert proxy_from_environment(url) == (None if bypassed else "http://proxy:3128")


def test_uppercase_no_proxy_and_lowercase_precedence(env: Callable[..., None]) -> None:
    env(http_proxy="http://proxy:3128", NO_PROXY="example.com")
    assert proxy_from_environment("ws://example.com/") is None
    env(no_proxy="other.org")  # the lowercase list replaces the uppercase one
    assert proxy_from_environment("ws://example.com/") == "http://proxy:3128"
    assert proxy_from_environment("ws://other.org/") is None


def test_no_proxy_applies_to_all_proxy(env: Callable[..., None]) -> None:
    env(all_proxy="socks5://all:1080", no_proxy="internal")
    assert proxy_from_environment("wss://svc.internal/") is None
    assert proxy_from_environment("wss://svc.external/") == "socks5://all:1080"


@pytest.mark.parametrize("url", ["http2://example.com/", "ftp://example.com/", "ws:///nohost", "ws://h:99999/"])
def test_environment_refuses_bad_urls(env: Callable[..., None], url: str) -> None:
    env(http_proxy="http://proxy:3128")
    with pytest.raises(InvalidURI):
        proxy_from_environment(url)


# -- real proxies written for these tests ---------------------------------------------------------


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return data


def relay(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    """Copy bytes both ways until either side ends, the test stops, or TIMEOUT passes."""
    deadline = time.monotonic() + 3 * TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        while not stop.is_set() and time.monotonic() < deadline:
            for key, _ in selector.select(0.05):
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = source.recv(65536)
                    # TLS may hold decrypted bytes that select() cannot see.
                    while data and isinstance(source, ssl.SSLSocket) and source.pending():
                        data += source.recv(source.pending())
                    if not data:
                        return
                    key.data.sendall(data)
                except OSError:
                    return


class LoopbackProxy:
    """Accepts on 127.0.0.1:0 and runs ``handle(conn)`` per connection in a thread; ``close()`` stops all."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        self.errors: list[BaseException] = []
        self.accepter = threading.Thread(target=self._accept, name="test-proxy-accept", daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), name="test-proxy-conn", daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        self.sockets.append(conn)
        conn.settimeout(TIMEOUT)
        try:
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                self.sockets.append(conn)
            self.handle(conn)
        except (OSError, EOFError):
            pass  # the client went away: part of several tests
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def connect_upstream(self, host: str, port: int) -> socket.socket:
        upstream = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sockets.append(upstream)
        return upstream

    def relay(self, conn: socket.socket, upstream: socket.socket) -> None:
        """Relay, then close both ends at once so that the far side sees the end too."""
        try:
            relay(conn, upstream, self.stop)
        finally:
            upstream.close()
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.accepter.join(TIMEOUT)
        self.listener.close()
        for thread in self.threads:
            thread.join(TIMEOUT)
        for sock in self.sockets:
            sock.close()
        assert not self.accepter.is_alive() and not any(t.is_alive() for t in self.threads), "proxy threads still run"
        assert not self.errors, f"the test proxy failed: {self.errors!r}"


class ConnectProxy(LoopbackProxy):
    """An HTTP CONNECT proxy: records every request head, checks Basic credentials, relays.

    ``answer``, if given, is sent instead of connecting (then the connection
    closes, or stays silent until the test ends with ``hold``); ``drip`` sends an
    endless answer a byte at a time.
    """

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        answer: bytes | None = None,
        hold: bool = False,
        drip: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.credentials = credentials
        self.answer = answer
        self.hold = hold
        self.drip = drip
        self.heads: list[tuple[str, dict[str, str]]] = []
        super().__init__(ssl_context)

    def url(self, scheme: str = "http", userinfo: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}"

    def read_head(self, conn: socket.socket) -> tuple[str, dict[str, str]]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk or len(data) > 65536:
                raise EOFError("no complete request head")
            data += chunk
        head, _, extra = data.partition(b"\r\n\r\n")
        assert not extra, f"the client spoke before the tunnel was up: {extra!r}"
        line, *fields = head.decode("latin-1").split("\r\n")
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.heads.append((line, headers))
        return line, headers

    def handle(self, conn: socket.socket) -> None:
        line, headers = self.read_head(conn)
        if self.drip:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n")
            while not self.stop.wait(0.02):
                conn.sendall(b"X")  # one header line that never ends
            return
        if self.answer is not None or self.hold:
            if self.answer:
                conn.sendall(self.answer)
            if self.hold:
                self.stop.wait(3 * TIMEOUT)
            return
        if self.credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if headers.get("proxy-authorization") != expected:
                body = b"credentials needed"
                conn.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="tests"\r\n'
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                return
        method, target, version = line.split(" ")
        assert (method, version) == ("CONNECT", "HTTP/1.1")
        host, _, port = target.rpartition(":")
        upstream = self.connect_upstream(host.strip("[]"), int(port))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.relay(conn, upstream)


class SocksProxy(LoopbackProxy):
    """SOCKS 5 (RFC 1928, with RFC 1929 username/password) and SOCKS 4/4a, recording each request.

    ``requests`` gets (version, address type, host, port, user); ``refuse`` is a
    SOCKS5 reply code to answer instead of connecting; ``silent`` never answers.
    """

    def __init__(
        self, *, credentials: tuple[str, str] | None = None, refuse: int | None = None, silent: bool = False
    ) -> None:
        self.credentials = credentials
        self.refuse = refuse
        self.silent = silent
        self.requests: list[tuple[int, str, str, int, str | None]] = []
        super().__init__()

    def url(self, scheme: str = "socks5", userinfo: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        if self.silent:
            self.stop.wait(3 * TIMEOUT)
            return
        version = recv_exact(conn, 1)[0]
        if version == 5:
            self.handle_v5(conn)
        elif version == 4:
            self.handle_v4(conn)

    def handle_v5(self, conn: socket.socket) -> None:
        methods = recv_exact(conn, recv_exact(conn, 1)[0])
        user = None
        if self.credentials is None:
            if 0x00 not in methods:
                conn.sendall(b"\x05\xff")
                return
            conn.sendall(b"\x05\x00")
        else:
            if 0x02 not in methods:
                conn.sendall(b"\x05\xff")  # RFC 1928 §3: no acceptable methods
                return
            conn.sendall(b"\x05\x02")
            assert recv_exact(conn, 1) == b"\x01"  # RFC 1929 §2 sub-negotiation version
            user = recv_exact(conn, recv_exact(conn, 1)[0]).decode()
            password = recv_exact(conn, recv_exact(conn, 1)[0]).decode()
            if (user, password) != self.credentials:
                conn.sendall(b"\x01\x01")
                return
            conn.sendall(b"\x01\x00")
        _version, command, _reserved, address_type = recv_exact(conn, 4)
        if address_type == 1:
            host = socket.inet_ntop(socket.AF_INET, recv_exact(conn, 4))
            kind = "ipv4"
        elif address_type == 4:
            host = socket.inet_ntop(socket.AF_INET6, recv_exact(conn, 16))
            kind = "ipv6"
        else:
            host = recv_exact(conn, recv_exact(conn, 1)[0]).decode()
            kind = "domain"
        (port,) = struct.unpack("!H", recv_exact(conn, 2))
        self.requests.append((5, kind, host, port, user))
        failure = b"\x00\x01" + bytes(6)  # RSV, ATYP IPv4, 0.0.0.0:0
        if command != 1:
            conn.sendall(b"\x05\x07" + failure)
            return
        if self.refuse is not None:
            conn.sendall(b"\x05" + bytes([self.refuse]) + failure)
            return
        try:
            upstream = self.connect_upstream(host, port)
        except OSError:
            conn.sendall(b"\x05\x05" + failure)  # connection refused
            return
        bound_host, bound_port = upstream.getsockname()[:2]
        conn.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(bound_host) + struct.pack("!H", bound_port))
        self.relay(conn, upstream)

    def read_string(self, conn: socket.socket) -> str:
        data = b""
        while not data.endswith(b"\x00"):
            data += recv_exact(conn, 1)
            assert len(data) < 256
        return data[:-1].decode()

    def handle_v4(self, conn: socket.socket) -> None:
        _command, port = struct.unpack("!BH", recv_exact(conn, 3))
        address = recv_exact(conn, 4)
        user = self.read_string(conn)
        if address[:3] == b"\x00\x00\x00" and address[3]:  # SOCKS 4A: the name follows
            host, kind = self.read_string(conn), "domain"
        else:
            host, kind = socket.inet_ntoa(address), "ipv4"
        self.requests.append((4, kind, host, port, user or None))
        try:
            upstream = self.connect_upstream(host, port)
        except OSError:
            conn.sendall(b"\x00\x5b" + bytes(6))
            return
        conn.sendall(b"\x00\x5a" + bytes(6))
        self.relay(conn, upstream)


@pytest.fixture
def proxies() -> Iterator[Callable[..., Any]]:
    """Start test proxies: ``proxies(ConnectProxy, **options)``; all are closed at teardown."""
    started: list[LoopbackProxy] = []

    def start(cls: type[LoopbackProxy], **options: Any) -> Any:
        proxy = cls(**options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.close()


# -- helpers --------------------------------------------------------------------------------------


def echo_through(sock: socket.socket, host_header: str, text: str = "through the proxy") -> None:
    """Do the WebSocket handshake on ``sock`` and prove that an echo comes back."""
    try:
        sock.settimeout(None)
        ws: WebSocket = connect_socket(sock, host_header, "/", timeout=TIMEOUT, close_timeout=2.0)
        try:
            ws.send(text)
            assert ws.recv(TIMEOUT) == TextMessage(text)
            ws.close()
        finally:
            ws.terminate()
    finally:
        sock.close()


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def tunnel_raises(proxy_url: str, port: int, timeout: float = TIMEOUT, **options: Any) -> BaseException:
    """The exception open_tunnel raises, from a thread joined within TIMEOUT (so a hang fails the test)."""
    worker = Worker(open_tunnel, proxy_url, "127.0.0.1", port, timeout=timeout, **options)
    return worker.raised(TIMEOUT)


# -- HTTP CONNECT ---------------------------------------------------------------------------------


def test_connect_tunnel_carries_a_websocket(proxies: Callable[..., Any], echo_server: WebSocketServer) -> None:
    proxy = proxies(ConnectProxy)
    sock = open_tunnel(proxy.url(), "127.0.0.1", echo_server.port, timeout=TIMEOUT)
    assert nodelay(sock)
    assert sock.gettimeout() == TIMEOUT  # like socket.create_connection
    echo_through(sock, f"127.0.0.1:{echo_server.port}")
    authority = f"127.0.0.1:{echo_server.port}"
    assert proxy.heads == [(f"CONNECT {authority} HTTP/1.1", {"host": authority})]


def test_connect_by_name(proxies: Callable[..., Any], echo_server: WebSocketServer) -> None:
    proxy = proxies(ConnectProxy)
    sock = open_tunnel(proxy.url(), "localhost", echo_server.port, timeout=TIMEOUT)
    echo_through(sock, f"localhost:{echo_server.port}")
    assert proxy.heads[0][0] == f"CONNECT localhost:{echo_server.port} HTTP/1.1"


def test_connect_ipv6_target_in_brackets(proxies: Callable[..., Any], make_server: ServerFactory) -> None:
    try:
        server = make_server(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    proxy = proxies(ConnectProxy)
    sock = open_tunnel(proxy.url(), "::1", server.port, timeout=TIMEOUT)
    echo_through(sock, f"[::1]:{server.port}")
    authority = f"[::1]:{server.port}"
    assert proxy.heads == [(f"CONNECT {authority} HTTP/1.1", {"host": authority})]


def test_wss_through_the_tunnel(
    proxies: Callable[..., Any],
    make_server: ServerFactory,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    server = make_server(ssl_context=server_ssl_context)
    proxy = proxies(ConnectProxy)
    raw = open_tunnel(proxy.url(), "localhost", server.port, timeout=TIMEOUT)
    try:
        tls = client_ssl_context.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise
    assert tls.getpeercert() is not None  # TLS ran end to end with the server, not the proxy
    echo_through(tls, f"localhost:{server.port}", "encrypted end to end")
    assert proxy.heads[0][0] == f"CONNECT localhost:{server.port} HTTP/1.1"


@pytest.mark.parametrize("userinfo", ["", "alice:wrong@", "bob:s3cret@", "alice@"])
def test_407_without_or_with_wrong_credentials(
    proxies: Callable[..., Any], echo_server: WebSocketServer, userinfo: str
) -> None:
    proxy = proxies(ConnectProxy, credentials=("alice", "s3cret"))
    with pytest.raises(ProxyError) as caught:
        open_tunnel(proxy.url(userinfo=userinfo), "127.0.0.1", echo_server.port, timeout=TIMEOUT)
    error = caught.value
    assert isinstance(error, InvalidHandshake)
    assert ProxyError is ws4web.ProxyError is ws4web.exceptions.ProxyError  # one class, caught anywhere
    assert error.status == 407
    assert "proxy authentication" in str(error)
    assert ("required" if not userinfo else "rejected") in str(error)
    assert error.body == b"credentials needed"
    assert ("Proxy-Authenticate", 'Basic realm="tests"') in error.headers
    assert "wrong" not in str(error) and "s3cret" not in str(error)  # no password in messages
    sent = proxy.heads[0][1].get("proxy-authorization")
    if userinfo:
        user, _, password = userinfo[:-1].partition(":")
        assert sent == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    else:
        assert sent is None


def test_correct_credentials_open_the_tunnel(proxies: Callable[..., Any], echo_server: WebSocketServer) -> None:
    proxy = proxies(ConnectProxy, credentials=("alice", "s3cret"))
    sock = open_tunnel(proxy.url(userinfo="alice:s3cret@"), "127.0.0.1", echo_server.port, timeout=TIMEOUT)
    echo_through(sock, f"127.0.0.1:{echo_server.port}")
    assert proxy.heads[0][1]["proxy-authorization"] == "Basic YWxpY2U6czNjcmV0"


def test_credentials_are_percent_decoded(proxies: Callable[..., Any], echo_server: WebSocketServer) -> None:
    proxy = proxies(ConnectProxy, credentials=("al@ice", "p:ss wörd"))
    url = proxy.url(userinfo="al%40ice:p%3Ass%20w%C3%B6rd@")
    sock = open_tunnel(url, "127.0.0.1", echo_server.port, timeout=TIMEOUT)
    echo_through(sock, f"127.0.0.1:{echo_server.port}")


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 11\r\n\r\nnot allowed", 403, b"not allowed"),
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\ndown", 502, b"down"),
        (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", 503, b""),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", 403, b"no"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", 101, b""),
    ],
)
def test_refusals(proxies: Callable[..., Any], answer: bytes, status: int, body: bytes) -> None:
    proxy = proxies(ConnectProxy, answer=answer, hold=True)  # the refusal must not wait for EOF
    error = tunnel_raises(proxy.url(), 9)
    assert isinstance(error, ProxyError)
    assert error.status == status
    assert error.body == body
    assert f"refused CONNECT 127.0.0.1:9: {status}" in str(error)


def test_interim_answer_is_skipped(proxies: Callable[..., Any], echo_server: WebSocketServer) -> None:
    class Interim(ConnectProxy):
        def handle(self, conn: socket.socket) -> None:
            line, _ = self.read_head(conn)
            upstream = self.connect_upstream("127.0.0.1", int(line.split()[1].rpartition(":")[2]))
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
            self.relay(conn, upstream)

    proxy = proxies(Interim)
    # The 200's Content-Length is ignored (RFC 9110 §9.3.6): the tunnel starts right after it.
    sock = open_tunnel(proxy.url(), "127.0.0.1", echo_server.port, timeout=TIMEOUT)
    echo_through(sock, f"127.0.0.1:{echo_server.port}")


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 Conn", b"HTTP/1.1 200 Connection established\r\nVia: test\r\n"],
    ids=["nothing", "mid-status-line", "mid-headers"],
)
def test_proxy_closing_mid_answer(proxies: Callable[..., Any], answer: bytes) -> None:
    proxy = proxies(ConnectProxy, answer=answer)
    error = tunnel_raises(proxy.url(), 9)
    assert isinstance(error, ProxyError), error
    assert not isinstance(error, TimeoutError)
    assert "closed the connection" in str(error)


@pytest.mark.parametrize(
    "answer",
    [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 2OO OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"],
)
def test_garbage_answer(proxies: Callable[..., Any], answer: bytes) -> None:
    proxy = proxies(ConnectProxy, answer=answer, hold=True)
    error = tunnel_raises(proxy.url(), 9)
    assert isinstance(error, ProxyError)
    assert error.status == 502
    assert "no valid answer" in str(error)


def test_bytes_after_the_answer_are_refused_not_dropped(proxies: Callable[..., Any]) -> None:
    proxy = proxies(ConnectProxy, answer=b"HTTP/1.1 200 Connection established\r\n\r\nEARLY", hold=True)
    error = tunnel_raises(proxy.url(), 9)
    assert isinstance(error, ProxyError)
    assert "sent 5 bytes after its 200 answer" in str(error)


def test_silent_proxy_times_out(proxies: Callable[..., Any]) -> None:
    proxy = proxies(ConnectProxy, hold=True)
    error = tunnel_raises(proxy.url(), 9, timeout=SHORT)
    assert isinstance(error, ProxyTimeout)
    assert isinstance(error, TimeoutError) and isinstance(error, ProxyError)
    assert error.status == 504
    assert proxy.heads and proxy.heads[0][0] == "CONNECT 127.0.0.1:9 HTTP/1.1"


def test_dripping_proxy_times_out_within_the_deadline(proxies: Callable[..., Any]) -> None:
    # A byte every 20 ms never lets one recv() time out: only a deadline over
    # the whole answer ends this before the Worker's join gives up.
    proxy = proxies(ConnectProxy, drip=True)
    error = tunnel_raises(proxy.url(), 9, timeout=SHORT)
    assert isinstance(error, ProxyTimeout)


def test_unreachable_proxy_is_an_oserror() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with pytest.raises(OSError) as caught:
        open_tunnel(f"http://127.0.0.1:{port}", "127.0.0.1", 9, timeout=TIMEOUT)
    assert not isinstance(caught.value, ProxyError)


# -- https:// proxies: TLS to the proxy itself ------------------------------------------------------


def test_https_proxy_carries_a_websocket(
    proxies: Callable[..., Any],
    echo_server: WebSocketServer,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    proxy = proxies(ConnectProxy, ssl_context=server_ssl_context, credentials=("alice", "s3cret"))
    sock = open_tunnel(
        proxy.url("https", "alice:s3cret@"),
        "127.0.0.1",
        echo_server.port,
        timeout=TIMEOUT,
        ssl_context_for_proxy=client_ssl_context,
    )
    assert isinstance(sock, ssl.SSLSocket)
    assert nodelay(sock)
    echo_through(sock, f"127.0.0.1:{echo_server.port}")
    assert proxy.heads[0][0] == f"CONNECT 127.0.0.1:{echo_server.port} HTTP/1.1"


def test_https_proxy_certificate_is_verified(proxies: Callable[..., Any], server_ssl_context: ssl.SSLContext) -> None:
    proxy = proxies(ConnectProxy, ssl_context=server_ssl_context)
    # The default context does not trust the test CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        open_tunnel(proxy.url("https"), "127.0.0.1", 9, timeout=TIMEOUT)
    assert proxy.heads == []


# -- bad arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "proxy_url",
    ["ftp://127.0.0.1:21", "socks6://127.0.0.1:1080", "127.0.0.1:3128", "http://", "http://127.0.0.1:99999"],
)
def test_bad_proxy_url(proxy_url: str) -> None:
    with pytest.raises(InvalidURI):
        open_tunnel(proxy_url, "127.0.0.1", 9, timeout=TIMEOUT)


def test_unknown_scheme_message_names_the_supported_ones() -> None:
    with pytest.raises(InvalidURI, match=r"unsupported proxy scheme 'ftp'.*socks5h://"):
        open_tunnel("ftp://user:hidden@127.0.0.1:21", "127.0.0.1", 9, timeout=TIMEOUT)
    with pytest.raises(InvalidURI) as caught:
        open_tunnel("ftp://user:hidden@127.0.0.1:21", "127.0.0.1", 9, timeout=TIMEOUT)
    assert "hidden" not in str(caught.value)


@pytest.mark.parametrize(
    ("call", "url"),
    [
        ("tunnel", "http://user:SECRET@127.0.0.1:port"),
        ("tunnel", "user:SECRET@127.0.0.1:3128"),  # no scheme
        ("tunnel", "gopher://user:SECRET@127.0.0.1:70/?token=SECRET"),
        ("environment", "ws://user:SECRET@example.com:99999/?token=SECRET"),
        ("environment", "http2://user:SECRET@example.com/"),
    ],
)
def test_url_errors_carry_no_credentials(call: str, url: str) -> None:
    with pytest.raises(InvalidURI) as caught:
        if call == "tunnel":
            open_tunnel(url, "127.0.0.1", 9, timeout=TIMEOUT)
        else:
            proxy_from_environment(url)
    error: BaseException | None = caught.value
    while error is not None:  # the chained causes reach tracebacks in logs too
        assert "SECRET" not in str(error) and "user" not in str(error)
        error = error.__cause__ or error.__context__


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("example.com\r\nX-Injected: 1", 80),
        ("exa mple.com", 80),
        ("a/b", 80),
        ("user@host", 80),
        ("", 80),
        ("::zz", 80),
        ("example.com", 0),
        ("example.com", 65536),
    ],
)
def test_bad_target(proxies: Callable[..., Any], host: str, port: int) -> None:
    proxy = proxies(ConnectProxy)
    with pytest.raises(ValueError):
        open_tunnel(proxy.url(), host, port, timeout=TIMEOUT)
    assert proxy.heads == []  # refused before anything was sent


# -- SOCKS through python-socks ------------------------------------------------------------------


def test_socks5_resolves_locally(proxies: Callable[..., Any], echo_server: WebSocketServer) -> None:
    pytest.importorskip("python_socks", reason="SOCKS needs python-socks (pip install ws4web[socks])")
    proxy = proxies(SocksProxy)
    sock = open_tunnel(proxy.url("socks5"), "localhost", echo_server.port, timeout=TIMEOUT)
    assert nodelay(sock)
    assert sock.gettimeout() == TIMEOUT
    echo_through(sock, f"localhost:{echo_server.port}")
    ((version, kind, host, port, user),) = proxy.requests
    assert (version, port, user) == (5, echo_server.port, None)
    assert kind in ("ipv4", "ipv6") and host in ("127.0.0.1", "::1")  # the name did not reach the proxy


def test_socks5h_lets_the_proxy_resolve(proxies: Callable[..., Any], echo_server: WebSocketServer) -> None:
    pytest.importorskip("python_socks", reason="SOCKS needs python-socks (pip install ws4web[socks])")
    proxy = proxies(SocksProxy)
    sock = open_tunnel(proxy.url("socks5h"), "localhost", echo_server.port, timeout=TIMEOUT)
    echo_through(sock, f"localhost:{echo_server.port}")
    assert proxy.requests == [(5, "domain", "localhost", echo_server.port, None)]


def test_socks5_with_credentials(proxies: Callable[..., Any], echo_server: WebSocketServer) -> None:
    pytest.importorskip("python_socks", reason="SOCKS needs python-socks (pip install ws4web[socks])")
    proxy = proxies(SocksProxy, credentials=("al@ice", "s3cret"))
    sock = open_tunnel(proxy.url("socks5h", "al%40ice:s3cret@"), "127.0.0.1", echo_server.port, timeout=TIMEOUT)
    echo_through(sock, f"127.0.0.1:{echo_server.port}")
    assert proxy.requests == [(5, "ipv4", "127.0.0.1", echo_server.port, "al@ice")]


@pytest.mark.parametrize("userinfo", ["", "alice:wrong@"])
def test_socks5_authentication_failure_is_407(
    proxies: Callable[..., Any], echo_server: WebSocketServer, userinfo: str
) -> None:
    pytest.importorskip("python_socks", reason="SOCKS needs python-socks (pip install ws4web[socks])")
    proxy = proxies(SocksProxy, credentials=("alice", "s3cret"))
    error = tunnel_raises(proxy.url("socks5", userinfo), echo_server.port)
    assert isinstance(error, SocksError)
    assert error.status == 407
    assert proxy.requests == []  # never got as far as a CONNECT request


def test_socks5_refusal(proxies: Callable[..., Any]) -> None:
    pytest.importorskip("python_socks", reason="SOCKS needs python-socks (pip install ws4web[socks])")
    proxy = proxies(SocksProxy, refuse=0x02)  # RFC 1928 §6: connection not allowed by ruleset
    error = tunnel_raises(proxy.url("socks5"), 9)
    assert isinstance(error, SocksError) and isinstance(error, ProxyError)
    assert error.status == 502
    assert error.reply_code == 0x02
    assert proxy.requests == [(5, "ipv4", "127.0.0.1", 9, None)]


def test_socks_silent_proxy_times_out(proxies: Callable[..., Any]) -> None:
    pytest.importorskip("python_socks", reason="SOCKS needs python-socks (pip install ws4web[socks])")
    proxy = proxies(SocksProxy, silent=True)
    error = tunnel_raises(proxy.url("socks5"), 9, timeout=SHORT)
    assert isinstance(error, ProxyTimeout)


@pytest.mark.parametrize(
    ("scheme", "kind", "host"), [("socks4", "ipv4", "127.0.0.1"), ("socks4a", "domain", "localhost")]
)
def test_socks4(proxies: Callable[..., Any], make_server: ServerFactory, scheme: str, kind: str, host: str) -> None:
    pytest.importorskip("python_socks", reason="SOCKS needs python-socks (pip install ws4web[socks])")
    server = make_server()
    proxy = proxies(SocksProxy)
    sock = open_tunnel(proxy.url(scheme), "localhost", server.port, timeout=TIMEOUT)
    echo_through(sock, f"localhost:{server.port}")
    assert proxy.requests == [(4, kind, host, server.port, None)]


def test_socks_without_python_socks(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "python_socks", None)
    monkeypatch.setitem(sys.modules, "python_socks.sync", None)
    with pytest.raises(ImportError, match=r"pip install ws4web\[socks\]"):
        open_tunnel("socks5://127.0.0.1:1080", "127.0.0.1", 9, timeout=TIMEOUT)


# -- a third-party proxy: pproxy ------------------------------------------------------------------------

# pproxy's command line installs uvloop when it can and then calls
# asyncio.get_event_loop(), which recent uvloop and Python refuse: keep uvloop out
# and give it a loop.
PPROXY_MAIN = (
    "import asyncio, sys; sys.modules['uvloop'] = None; "
    "asyncio.set_event_loop(asyncio.new_event_loop()); "
    "from pproxy.server import main; main()"
)


@pytest.fixture(scope="module")
def pproxy() -> Iterator[dict[str, int]]:
    """pproxy serving http+socks4+socks5 without auth and http+socks5 with alice:s3cret; ports by name."""
    pytest.importorskip("pproxy", reason="the interoperability tests need pproxy (in the test extra)")
    pytest.importorskip("python_socks", reason="SOCKS needs python-socks (pip install ws4web[socks])")
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-u", "-c", PPROXY_MAIN, "--auth", "0"),
                *("-l", "http+socks4+socks5://127.0.0.1:0", "-l", "http+socks5://127.0.0.1:0#alice:s3cret"),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            ports: dict[str, int] = {}
            deadline = time.monotonic() + TIMEOUT
            while len(ports) < 2:
                assert process.poll() is None and time.monotonic() < deadline, "pproxy did not start"
                time.sleep(0.05)
                output.seek(0)
                for line in output:
                    # "Serving on ipv4 127.0.0.1:PORT by http,socks4,socks5" ("ipv?" in some versions)
                    found = re.match(r"Serving on \S+ 127\.0\.0\.1:(\d+) by (\S+)", line)
                    if found:
                        ports["open" if "socks4" in found[2] else "auth"] = int(found[1])
            yield ports
        finally:
            process.terminate()
            try:
                process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(TIMEOUT)


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h", "socks4"])  # pproxy has no SOCKS 4A
def test_pproxy_interop(pproxy: dict[str, int], echo_server: WebSocketServer, scheme: str) -> None:
    sock = open_tunnel(f"{scheme}://127.0.0.1:{pproxy['open']}", "localhost", echo_server.port, timeout=TIMEOUT)
    echo_through(sock, f"localhost:{echo_server.port}", f"via pproxy {scheme}")


@pytest.mark.parametrize("scheme", ["http", "socks5"])
def test_pproxy_credentials(pproxy: dict[str, int], echo_server: WebSocketServer, scheme: str) -> None:
    url = f"{scheme}://alice:s3cret@127.0.0.1:{pproxy['auth']}"
    sock = open_tunnel(url, "127.0.0.1", echo_server.port, timeout=TIMEOUT)
    echo_through(sock, f"127.0.0.1:{echo_server.port}")


def test_pproxy_http_407(pproxy: dict[str, int]) -> None:
    error = tunnel_raises(f"http://127.0.0.1:{pproxy['auth']}", 9)
    assert isinstance(error, ProxyError)
    assert error.status == 407
    assert "proxy authentication required" in str(error)


def test_environment_to_tunnel(
    env: Callable[..., None], proxies: Callable[..., Any], echo_server: WebSocketServer
) -> None:
    """The two halves together: the variable chooses the proxy that carries the connection."""
    proxy = proxies(ConnectProxy)
    url = f"ws://127.0.0.1:{echo_server.port}/"
    env(HTTP_PROXY=f"127.0.0.1:{proxy.port}", no_proxy="example.com")
    proxy_url = proxy_from_environment(url)
    assert proxy_url is not None and proxy_url == proxy.url()
    sock = open_tunnel(proxy_url, "127.0.0.1", echo_server.port, timeout=TIMEOUT)
    echo_through(sock, f"127.0.0.1:{echo_server.port}")
    assert len(proxy.heads) == 1
    env(no_proxy="127.0.0.0/8")
    assert proxy_from_environment(url) is None
