"""The standard-library client (ws4web/client.py): URLs, credentials, headers, callback-style WebSocketClient."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from ws4web import WebSocket, WebSocketClient, WebSocketServer, connect
from ws4web.auth import basic_auth
from ws4web.client import WebSocketURL, parse_url
from ws4web.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    InvalidHandshake,
    InvalidRedirect,
    InvalidStatus,
    InvalidURI,
)
from ws4web.extensions.base import ClientExtensionFactory, Extension, ExtensionParams
from ws4web.handshake import accept_key
from ws4web.http11 import Headers, Request, Response
from ws4web.messages import BinaryMessage, Message, TextMessage

from .conftest import TIMEOUT, EchoHandler, ServerFactory, Worker, ws_url
from .test_proxy import PROXY_VARIABLES, ConnectProxy

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]


# -- parse_url -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://example.com", WebSocketURL(False, "example.com", 80, "/", None)),
        ("wss://example.com", WebSocketURL(True, "example.com", 443, "/", None)),
        ("ws://example.com:8080/chat", WebSocketURL(False, "example.com", 8080, "/chat", None)),
        (
            "wss://example.com:8443/a/b?room=1&x=%20y",
            WebSocketURL(True, "example.com", 8443, "/a/b?room=1&x=%20y", None),
        ),
        ("ws://example.com?only=query", WebSocketURL(False, "example.com", 80, "/?only=query", None)),
        ("ws://[::1]:9000/v6", WebSocketURL(False, "::1", 9000, "/v6", None)),
        ("wss://[2001:db8::7]/", WebSocketURL(True, "2001:db8::7", 443, "/", None)),
        ("ws://127.0.0.1:1/", WebSocketURL(False, "127.0.0.1", 1, "/", None)),
        ("ws://alice:s3cret@example.com/", WebSocketURL(False, "example.com", 80, "/", ("alice", "s3cret"))),
        ("ws://al%40ice:p%3Ass@example.com/", WebSocketURL(False, "example.com", 80, "/", ("al@ice", "p:ss"))),
        ("ws://bob@example.com/", WebSocketURL(False, "example.com", 80, "/", ("bob", ""))),
        # Whatever RFC 3986 does not allow in a path or query is percent-encoded (UTF-8).
        ("ws://example.com/a b?q=x y", WebSocketURL(False, "example.com", 80, "/a%20b?q=x%20y", None)),
        ("ws://example.com/nul\x00vt\x0b", WebSocketURL(False, "example.com", 80, "/nul%00vt%0B", None)),
        ("ws://example.com/caf\xe9", WebSocketURL(False, "example.com", 80, "/caf%C3%A9", None)),
        ("ws://example.com/?a=[1]&b=%41", WebSocketURL(False, "example.com", 80, "/?a=%5B1%5D&b=%41", None)),
        ("ws://b\xfccher.example/", WebSocketURL(False, "xn--bcher-kva.example", 80, "/", None)),  # IDNA
        ("ws://example.com./", WebSocketURL(False, "example.com.", 80, "/", None)),  # fully qualified
        ("ws://" + "a" * 63 + ".com/", WebSocketURL(False, "a" * 63 + ".com", 80, "/", None)),
    ],
)
def test_parse_url(url: str, expected: WebSocketURL) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "host_header"),
    [
        ("ws://example.com/", "example.com"),
        ("ws://example.com:80/", "example.com"),
        ("wss://example.com:443/", "example.com"),
        ("ws://example.com:443/", "example.com:443"),
        ("wss://example.com:80/", "example.com:80"),
        ("ws://[::1]:9000/", "[::1]:9000"),
        ("wss://[::1]/", "[::1]"),
    ],
)
def test_host_header(url: str, host_header: str) -> None:
    assert parse_url(url).host_header == host_header


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "https://example.com/",
        "ftp://example.com/",
        "example.com",
        "ws://example.com/#fragment",  # RFC 6455 §3: no fragment identifiers
        "ws:///no-host",
        "ws://example.com:99999/",
        "ws://example.com:port/",
        "ws://example.com:0/",
        "ws://exa mple.com/",  # a host that would break the Host header
        "ws://exa\x0bmple.com/",
        "ws://a\x00b/",
        "ws://a\r\nX-Injected: 1/",
        "ws://exa%20mple.com/",
        "ws://[::1/",
        "ws://[::1]x/",  # only ":port" may follow the "]"
        "ws://[v1.x]/",  # IPvFuture: nothing to connect to
        "ws://a..b/",  # an empty label (the resolver's IDNA step would raise UnicodeError)
        "ws://.../",
        "ws://" + "a" * 64 + ".com/",  # a label over 63 characters
        "ws://" + "a." * 127 + "a/",  # a name over 253 characters
        "ws://b\xfccher..example/",
        "ws://alice:SECRET@example.com:port/?token=SECRET",
    ],
)
def test_parse_url_refuses(url: str) -> None:
    with pytest.raises(InvalidURI) as info:
        parse_url(url)
    assert "SECRET" not in str(info.value)  # messages show the URL redacted


def test_connect_and_client_refuse_bad_urls_before_connecting() -> None:
    with pytest.raises(InvalidURI):
        connect("http://127.0.0.1:1/")
    with pytest.raises(InvalidURI):
        WebSocketClient("ws://127.0.0.1/#frag")


# -- credentials and headers ----------------------------------------------------------------------


class Reporter(WebSocket):
    """Tells the client what its handshake request carried."""

    def opened(self) -> None:
        assert self.request is not None
        headers = self.request.headers
        for name in ("Authorization", "X-Token", "X-Other"):
            self.send(f"{name}={'|'.join(headers.get_all(name))}")
        self.send(f"X-Multi={'|'.join(headers.get_all('X-Multi'))}")


def report(ws: WebSocket) -> dict[str, str]:
    lines = [ws.recv(TIMEOUT).data.decode() for _ in range(4)]
    return dict(line.split("=", 1) for line in lines)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_user_info_sends_basic_authorization(make_server: ServerFactory) -> None:
    server = make_server(Reporter)
    with connect(f"ws://alice:s3cret@127.0.0.1:{server.port}/", close_timeout=2.0) as ws:
        assert report(ws)["Authorization"] == basic("alice", "s3cret")
    with connect(f"ws://al%40ice:p%3Ass@127.0.0.1:{server.port}/", close_timeout=2.0) as ws:
        assert report(ws)["Authorization"] == basic("al@ice", "p:ss")
    with connect(ws_url(server), close_timeout=2.0) as ws:
        assert report(ws)["Authorization"] == ""


def test_explicit_authorization_header_wins(make_server: ServerFactory) -> None:
    server = make_server(Reporter)
    url = f"ws://alice:s3cret@127.0.0.1:{server.port}/"
    with connect(url, headers={"Authorization": "Bearer tok"}, close_timeout=2.0) as ws:
        assert report(ws)["Authorization"] == "Bearer tok"


def test_authorization_seen_by_process_request(make_server: ServerFactory) -> None:
    seen: list[str | None] = []

    def process_request(request: Request) -> Response | None:
        seen.append(request.headers.get("Authorization"))
        return None

    server = make_server(EchoHandler, process_request=process_request)
    with connect(f"ws://u:p@127.0.0.1:{server.port}/", close_timeout=2.0):
        pass
    assert seen == [basic("u", "p")]


def test_custom_headers_dict_and_list(make_server: ServerFactory) -> None:
    server = make_server(Reporter)
    with connect(ws_url(server), headers={"X-Token": "abc", "X-Other": "1"}, close_timeout=2.0) as ws:
        got = report(ws)
        assert (got["X-Token"], got["X-Other"], got["X-Multi"]) == ("abc", "1", "")
    headers = [("X-Multi", "one"), ("X-Multi", "two"), ("X-Token", "t")]
    with connect(ws_url(server), headers=headers, close_timeout=2.0) as ws:
        got = report(ws)
        assert (got["X-Token"], got["X-Multi"]) == ("t", "one|two")


def test_refusal_is_invalid_status(make_server: ServerFactory) -> None:
    server = make_server(EchoHandler, authenticate=basic_auth({"alice": "s3cret"}))
    with pytest.raises(InvalidStatus) as exc:
        connect(f"ws://alice:nope@127.0.0.1:{server.port}/")
    assert exc.value.status == 401
    assert exc.value.body
    with connect(f"ws://alice:s3cret@127.0.0.1:{server.port}/", close_timeout=2.0) as ws:
        ws.send("in")
        assert ws.recv(TIMEOUT) == TextMessage("in")


def test_connection_refused_is_oserror() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(OSError):
        connect(f"ws://127.0.0.1:{port}/", timeout=2.0)


def test_connect_options_reach_the_websocket(make_server: ServerFactory) -> None:
    server = make_server(EchoHandler)
    ws = connect(ws_url(server), max_message_size=1000, close_timeout=2.0)
    try:
        ws.send(b"x" * 2000)  # echoed back: too big for this client
        with pytest.raises(ConnectionClosedError) as exc:
            ws.recv(TIMEOUT)
        assert exc.value.sent_code == 1009
    finally:
        ws.terminate()


def test_wss_connect_with_context(
    make_server: ServerFactory, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    server = make_server(EchoHandler, ssl_context=server_ssl_context)
    with connect(ws_url(server, scheme="wss", host="localhost"), ssl_context=client_ssl_context) as ws:
        ws.send("tls")
        assert ws.recv(TIMEOUT) == TextMessage("tls")


# -- WebSocketClient: callbacks -----------------------------------------------------------------------


class Chatty(WebSocketClient):
    def __init__(self, url: str, **kwargs: object) -> None:
        super().__init__(url, **kwargs)  # type: ignore[arg-type]
        self.events: list[tuple[object, ...]] = []
        self.done = threading.Event()

    def opened(self) -> None:
        self.events.append(("opened", self.subprotocol))
        self.send("one")
        self.send(b"two")
        self.send(iter(["thr", "ee"]))

    def received_message(self, message: Message) -> None:
        self.events.append(("message", message))
        if len([e for e in self.events if e[0] == "message"]) == 3:
            self.close(1000, "enough")

    def closed(self, code: int, reason: str | None = None) -> None:
        self.events.append(("closed", code, reason))
        self.done.set()


def expected_events(subprotocol: str | None) -> list[tuple[object, ...]]:
    return [
        ("opened", subprotocol),
        ("message", TextMessage("one")),
        ("message", BinaryMessage(b"two")),
        ("message", TextMessage("three")),
        ("closed", 1000, ""),
    ]


def test_client_connect_then_run_forever(make_server: ServerFactory) -> None:
    server = make_server(EchoHandler, subprotocols=["echo"])
    client = Chatty(ws_url(server), protocols=["echo"], close_timeout=2.0)
    client.connect()
    assert client.subprotocol == "echo"
    Worker(client.run_forever).join()  # returns once the connection has closed
    assert client.events == expected_events("echo")
    assert client.terminated


def test_client_start_runs_in_the_background(make_server: ServerFactory) -> None:
    server = make_server(EchoHandler)
    client = Chatty(ws_url(server), close_timeout=2.0)
    client.connect()
    client.start()  # returns at once; callbacks run in the background (no_leaks: that thread ends)
    assert client.done.wait(TIMEOUT)
    assert client.events == expected_events(None)


def test_client_with_headers_and_tls(
    make_server: ServerFactory, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    server = make_server(Reporter, ssl_context=server_ssl_context)

    class Collect(WebSocketClient):
        def __init__(self, url: str, **kwargs: object) -> None:
            super().__init__(url, **kwargs)  # type: ignore[arg-type]
            self.lines: list[str] = []

        def received_message(self, message: Message) -> None:
            self.lines.append(message.data.decode())
            if len(self.lines) == 4:
                self.close()

    url = f"wss://bob:pw@localhost:{server.port}/"
    headers = [("X-Multi", "a"), ("X-Multi", "b")]
    client = Collect(url, ssl_context=client_ssl_context, headers=headers, close_timeout=2.0)
    client.connect()
    Worker(client.run_forever).join()
    got = dict(line.split("=", 1) for line in client.lines)
    assert got["Authorization"] == basic("bob", "pw")
    assert got["X-Multi"] == "a|b"


def test_client_connect_refused_by_server(make_server: ServerFactory) -> None:
    def refuse(request: Request) -> Response | None:
        return Response(403, "Forbidden", Headers([("Content-Length", "4")]), b"nope")

    server = make_server(EchoHandler, process_request=refuse)
    client = Chatty(ws_url(server))
    with pytest.raises(InvalidStatus) as exc:
        client.connect()
    assert (exc.value.status, exc.value.body) == (403, b"nope")


# -- mutual TLS: client certificates --------------------------------------------------------

CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs")


class PeerCertHandler(WebSocket):
    """Answers the first message with the client certificate's common name."""

    def received_message(self, message: Message) -> None:
        cert = self.sock.getpeercert()
        subject = dict(item for rdn in cert["subject"] for item in rdn) if cert else {}
        self.send(str(subject.get("commonName", "none")))


def test_client_certificate_is_required_and_presented(make_server: ServerFactory) -> None:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(f"{CERTS}/server.pem", f"{CERTS}/server.key")
    server_context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no connection
    server_context.load_verify_locations(f"{CERTS}/ca.pem")
    server = make_server(PeerCertHandler, ssl_context=server_context)
    url = f"wss://localhost:{server.port}/"

    anonymous = ssl.create_default_context(cafile=f"{CERTS}/ca.pem")
    with pytest.raises((ssl.SSLError, OSError, ConnectionClosedError, InvalidStatus)):
        ws = connect(url, ssl_context=anonymous, timeout=TIMEOUT)
        try:  # TLS 1.3 may report the refusal only on the first read
            ws.send("who am I?")
            ws.recv(TIMEOUT)
        finally:
            ws.close()

    identified = ssl.create_default_context(cafile=f"{CERTS}/ca.pem")
    identified.load_cert_chain(f"{CERTS}/client.pem", f"{CERTS}/client.key")
    with connect(url, ssl_context=identified, timeout=TIMEOUT) as ws:
        ws.send("who am I?")
        assert ws.recv(TIMEOUT).data == b"ws4web test client"


# -- redirects --------------------------------------------------------------------------------------


class SeenRequest(WebSocket):
    """Sends back the path and the Authorization header its handshake carried."""

    def opened(self) -> None:
        assert self.request is not None
        self.send(f"{self.request.path} auth={self.request.headers.get('Authorization')}")


def redirecting(statuses: dict[str, tuple[int, str | None]]) -> Callable[[Request], Response | None]:
    """A process_request hook answering path -> (status, Location or None); other paths upgrade."""

    def process_request(request: Request) -> Response | None:
        if request.path not in statuses:
            return None
        status, location = statuses[request.path]
        headers = Headers([("Content-Length", "0")] + ([("Location", location)] if location else []))
        return Response(status, "Redirect", headers)

    return process_request


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_server_is_followed(make_server: ServerFactory, status: int) -> None:
    target = make_server(SeenRequest)
    front = make_server(SeenRequest, process_request=redirecting({"/": (status, ws_url(target, "/there?x=1"))}))
    with connect(ws_url(front), timeout=TIMEOUT) as ws:
        assert ws.recv(TIMEOUT).data == b"/there?x=1 auth=None"


def test_relative_redirect_and_http_scheme_locations(make_server: ServerFactory) -> None:
    redirects: dict[str, tuple[int, str | None]] = {"/a": (302, "b"), "/b": (307, "/c/../d")}
    server = make_server(SeenRequest, process_request=redirecting(redirects))
    redirects["/d"] = (301, f"http://127.0.0.1:{server.port}/e")  # an http:// Location means ws://
    with connect(ws_url(server, "/a"), timeout=TIMEOUT) as ws:
        assert ws.recv(TIMEOUT).data == b"/e auth=None"


def test_credentials_survive_same_origin_redirects_only(make_server: ServerFactory) -> None:
    other = make_server(SeenRequest)
    redirects: dict[str, tuple[int, str | None]] = {"/same": (302, "/kept")}
    server = make_server(SeenRequest, process_request=redirecting(redirects))
    redirects["/away"] = (302, f"ws://localhost:{other.port}/dropped")  # another host: another origin
    url = f"ws://alice:secret@127.0.0.1:{server.port}"
    expected = basic_auth_header("alice", "secret")
    with connect(url + "/same", timeout=TIMEOUT) as ws:
        assert ws.recv(TIMEOUT).data == f"/kept auth={expected}".encode()
    with connect(url + "/away", headers={"Authorization": "Bearer t"}, timeout=TIMEOUT) as ws:
        assert ws.recv(TIMEOUT).data == b"/dropped auth=None"


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_redirect_loops_and_limits(make_server: ServerFactory) -> None:
    server = make_server(SeenRequest, process_request=redirecting({"/loop": (302, "/loop"), "/one": (301, "/ok")}))
    with pytest.raises(InvalidRedirect, match="too many redirects") as info:
        connect(ws_url(server, "/loop"), timeout=TIMEOUT, max_redirects=3)
    assert info.value.status == 302
    with pytest.raises(InvalidRedirect, match="too many redirects"):
        connect(ws_url(server, "/one"), timeout=TIMEOUT, max_redirects=0)
    with connect(ws_url(server, "/one"), timeout=TIMEOUT, max_redirects=1) as ws:
        assert ws.recv(TIMEOUT).data == b"/ok auth=None"


def test_redirect_without_location_or_to_a_bad_url(make_server: ServerFactory) -> None:
    server = make_server(
        SeenRequest, process_request=redirecting({"/none": (302, None), "/ftp": (302, "ftp://127.0.0.1/x")})
    )
    with pytest.raises(InvalidRedirect, match="without a Location"):
        connect(ws_url(server, "/none"), timeout=TIMEOUT)
    with pytest.raises(InvalidRedirect, match="ftp://"):
        connect(ws_url(server, "/ftp"), timeout=TIMEOUT)


def test_other_statuses_are_not_followed(make_server: ServerFactory) -> None:
    server = make_server(SeenRequest, process_request=redirecting({"/": (300, "/x"), "/304": (304, "/x")}))
    for path in ("/", "/304"):
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(server, path), timeout=TIMEOUT)
        assert not isinstance(info.value, InvalidRedirect)


def test_no_redirect_from_wss_to_ws(
    make_server: ServerFactory, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    seen: list[str] = []

    def record(request: Request) -> Response | None:
        seen.append(request.path)
        return None

    plain = make_server(SeenRequest, process_request=record)
    secure = make_server(
        SeenRequest,
        ssl_context=server_ssl_context,
        process_request=redirecting({"/": (301, ws_url(plain, "/leak")), "/s": (301, "/ok")}),
    )
    with pytest.raises(InvalidRedirect, match="wss://"):
        connect(ws_url(secure, scheme="wss", host="localhost"), ssl_context=client_ssl_context, timeout=TIMEOUT)
    assert seen == []  # not a byte went to the insecure URL
    # wss -> wss (relative) is fine
    url = ws_url(secure, "/s", scheme="wss", host="localhost")
    with connect(url, ssl_context=client_ssl_context, timeout=TIMEOUT) as ws:
        assert ws.recv(TIMEOUT).data == b"/ok auth=None"


def test_callback_client_follows_redirects(make_server: ServerFactory) -> None:
    target = make_server(SeenRequest)
    front = make_server(SeenRequest, process_request=redirecting({"/": (308, ws_url(target, "/cb"))}))
    got: list[bytes] = []

    class Collect(WebSocketClient):
        def received_message(self, message: Message) -> None:
            got.append(bytes(message.data))
            self.close()

    client = Collect(ws_url(front), timeout=TIMEOUT)
    client.connect()
    Worker(client.run_forever).join()
    assert got == [b"/cb auth=None"]


# -- proxies (the tunnel itself is tested in test_proxy.py) -----------------------------------------


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectProxy]:
    """A CONNECT proxy on 127.0.0.1, with this machine's proxy variables cleared."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    started = ConnectProxy()
    yield started
    started.close()


def test_connect_through_a_proxy_argument(
    proxy: ConnectProxy, echo_server: WebSocketServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with connect(ws_url(echo_server, "/p"), proxy=proxy.url(), timeout=TIMEOUT) as ws:
        ws.send("via proxy")
        assert ws.recv(TIMEOUT).data == b"via proxy"
    assert [head[0] for head in proxy.heads] == [f"CONNECT 127.0.0.1:{echo_server.port} HTTP/1.1"]


def test_connect_takes_the_proxy_from_the_environment(
    proxy: ConnectProxy, echo_server: WebSocketServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", proxy.url())
    with connect(ws_url(echo_server), timeout=TIMEOUT) as ws:  # proxy=True: the environment
        ws.send("env")
        assert ws.recv(TIMEOUT).data == b"env"
    assert len(proxy.heads) == 1
    with connect(ws_url(echo_server), proxy=None, timeout=TIMEOUT) as ws:  # direct
        ws.send("direct")
        assert ws.recv(TIMEOUT).data == b"direct"
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with connect(ws_url(echo_server), timeout=TIMEOUT) as ws:  # bypassed by no_proxy
        ws.send("bypassed")
        assert ws.recv(TIMEOUT).data == b"bypassed"
    assert len(proxy.heads) == 1


def test_callback_client_and_redirect_through_a_proxy(proxy: ConnectProxy, make_server: ServerFactory) -> None:
    target = make_server(SeenRequest)
    front = make_server(SeenRequest, process_request=redirecting({"/": (302, ws_url(target, "/via"))}))
    got: list[bytes] = []

    class Collect(WebSocketClient):
        def received_message(self, message: Message) -> None:
            got.append(bytes(message.data))
            self.close()

    client = Collect(ws_url(front), proxy=proxy.url(), timeout=TIMEOUT)
    client.connect()
    Worker(client.run_forever).join()
    assert got == [b"/via auth=None"]
    # Both legs of the redirect went through the proxy.
    assert [head[0] for head in proxy.heads] == [
        f"CONNECT 127.0.0.1:{front.port} HTTP/1.1",
        f"CONNECT 127.0.0.1:{target.port} HTTP/1.1",
    ]


def test_wss_through_an_https_proxy_is_refused_clearly() -> None:
    with pytest.raises(InvalidURI, match="https:// proxy"):
        connect("wss://127.0.0.1:9/", proxy="https://127.0.0.1:9", timeout=TIMEOUT)


# -- a client that cannot be made to inject ---------------------------------------------------------------


class ScriptedServer:
    """A raw HTTP server on 127.0.0.1 that records each request head byte for byte and answers
    connection number ``n`` with ``script(n, head)``: ``(answer, then)``, where ``then`` is
    ``"close"`` (send a 1000 close frame and wait for the client's), or ``"drop"`` (close TCP).
    """

    def __init__(self, script: Callable[[int, bytes], tuple[bytes, str]]) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._accept, name="test-scripted-server", daemon=True)
        self.thread.start()

    def url(self, path: str = "/", userinfo: str = "", host: str = "127.0.0.1") -> str:
        return f"ws://{userinfo}{host}:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                try:
                    self._serve(conn)
                except OSError:
                    pass  # the client went away
                except BaseException as exc:
                    self.errors.append(exc)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(TIMEOUT)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head = data.partition(b"\r\n\r\n")[0]
        self.heads.append(head)
        answer, then = self.script(len(self.heads) - 1, head)
        conn.sendall(answer)
        if then == "close":
            conn.sendall(b"\x88\x02\x03\xe8")  # close 1000, unmasked: server to client
            while conn.recv(4096):  # the client's close frame, then its end of TCP
                pass

    def request_line(self, index: int = 0) -> bytes:
        return self.heads[index].split(b"\r\n", 1)[0]

    def headers(self, index: int = 0) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for line in self.heads[index].decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            found.setdefault(name.strip().lower(), []).append(value.strip())
        return found

    def close(self) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT)
        self.listener.close()
        assert not self.thread.is_alive(), "the scripted server did not stop"
        assert not self.errors, f"the scripted server failed: {self.errors!r}"


def switching(head: bytes) -> bytes:
    """A 101 answer to the upgrade request ``head``."""
    key = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


def status(code: int, *headers: tuple[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {code} Scripted", "Content-Length: 0", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def accept_all(index: int, head: bytes) -> tuple[bytes, str]:
    return switching(head), "close"


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[int, bytes], tuple[bytes, str]]], ScriptedServer]]:
    """``scripted(script)`` starts a ScriptedServer; all are closed at teardown."""
    started: list[ScriptedServer] = []

    def start(script: Callable[[int, bytes], tuple[bytes, str]]) -> ScriptedServer:
        server = ScriptedServer(script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


Scripted = Callable[[Callable[[int, bytes], tuple[bytes, str]]], ScriptedServer]


def open_and_close(url: str, **options: object) -> None:
    ws = connect(url, timeout=TIMEOUT, close_timeout=2.0, **options)  # type: ignore[arg-type]
    try:
        with pytest.raises(ConnectionClosed):
            ws.recv(TIMEOUT)  # the scripted close
    finally:
        ws.close()


class Offer(ClientExtensionFactory):
    def __init__(self, name: str, params: ExtensionParams) -> None:
        self.name = name
        self.params = params

    def get_request_params(self) -> ExtensionParams:
        return self.params

    def process_response_params(self, params: ExtensionParams, accepted: Sequence[Extension]) -> Extension:
        raise AssertionError("never accepted in these tests")


@pytest.mark.parametrize(
    "options",
    [
        {"protocols": ["chat\r\nCookie: session=SECRET"]},
        {"protocols": ["chat, admin"]},
        {"protocols": ["chat token"]},
        {"protocols": "chat"},  # a string, not a list
        {"extensions": [Offer("x", [("a", "1\r\nX-Injected: 1")])]},
        {"extensions": [Offer("x\r\nX-Injected: 1", [])]},
        {"headers": {"X-Token": "SECRET\r\nX-Injected: 1"}},
        {"headers": [("X Bad", "1")]},
        {"forward_headers": ["X Bad"]},
        {"forward_headers": "X-Token"},  # a string, not a list
    ],
)
def test_injection_is_refused_before_any_byte_is_sent(scripted: Scripted, options: dict[str, object]) -> None:
    server = scripted(accept_all)
    with pytest.raises(ValueError) as info:
        connect(server.url(), timeout=TIMEOUT, **options)  # type: ignore[arg-type]
    assert "SECRET" not in str(info.value)
    # Not even a TCP connection: none was accepted, none waits in the backlog.
    server.stop.set()
    server.thread.join(TIMEOUT)
    server.listener.settimeout(0.2)
    with pytest.raises(TimeoutError):
        server.listener.accept()[0].close()
    assert server.connections == 0 and server.heads == []


def test_callback_client_refuses_injection_before_connecting(scripted: Scripted) -> None:
    server = scripted(accept_all)
    client = WebSocketClient(server.url(), protocols=["a\r\nX-Injected: 1"])
    with pytest.raises(ValueError, match="subprotocol"):
        client.connect()
    assert server.heads == []
    server.close()
    assert server.connections == 0


@pytest.mark.parametrize(
    ("path", "on_the_wire"),
    [
        ("/a b", b"/a%20b"),
        ("/nul\x00", b"/nul%00"),
        ("/vt\x0b", b"/vt%0B"),
        ("/caf\xe9?q=\u20ac", b"/caf%C3%A9?q=%E2%82%AC"),
        ("/x\r\nX-Injected: 1", b"/x%0D%0AX-Injected:%201"),
        ("/a HTTP/1.0\r\n\r\nGET /smuggled", b"/a%20HTTP/1.0%0D%0A%0D%0AGET%20/smuggled"),
    ],
)
def test_request_paths_are_percent_encoded_on_the_wire(scripted: Scripted, path: str, on_the_wire: bytes) -> None:
    server = scripted(accept_all)
    open_and_close(server.url(path))
    assert server.request_line() == b"GET " + on_the_wire + b" HTTP/1.1"
    assert len(server.heads) == 1 and b"X-Injected" not in server.heads[0].split(b"\r\n", 1)[1]


@pytest.mark.parametrize(
    ("location", "on_the_wire"),
    [
        ("/next path", b"/next%20path"),
        ("/tab\tx", b"/tab%09x"),  # urllib would silently drop a tab
        ("/caf\xe9", b"/caf%E9"),  # the byte the server sent (0xE9), not a re-encoding of it
        ("/caf\xc3\xa9", b"/caf%C3%A9"),  # UTF-8 bytes as the server sent them
        ('/q?a="1"&b=<2>', b"/q?a=%221%22&b=%3C2%3E"),
    ],
)
def test_redirect_targets_are_percent_encoded_on_the_wire(
    scripted: Scripted, location: str, on_the_wire: bytes
) -> None:
    def script(index: int, head: bytes) -> tuple[bytes, str]:
        if index == 0:
            return status(302, ("Location", location)), "drop"
        return switching(head), "close"

    server = scripted(script)
    open_and_close(server.url("/start"))
    assert server.request_line(1) == b"GET " + on_the_wire + b" HTTP/1.1"


@pytest.mark.parametrize("location", ["/nul\x00", "/vt\x0bx", "/del\x7f"])
def test_redirect_with_control_characters_is_refused(scripted: Scripted, location: str) -> None:
    # RFC 9110 §5.5: no CTL in a field value; the response parser refuses it before any redirect logic.
    server = scripted(lambda index, head: (status(302, ("Location", location)), "drop"))
    with pytest.raises(InvalidHandshake, match="invalid characters in header Location"):
        connect(server.url(), timeout=TIMEOUT)
    assert len(server.heads) == 1


def test_redirect_to_a_host_that_would_break_the_request_is_refused(scripted: Scripted) -> None:
    server = scripted(lambda index, head: (status(302, ("Location", "ws://exa mple.com/")), "drop"))
    with pytest.raises(InvalidRedirect, match="redirect to"):
        connect(server.url(), timeout=TIMEOUT)
    assert len(server.heads) == 1


CREDENTIAL_HEADERS = [
    ("Authorization", "Bearer SECRET-1"),
    ("Cookie", "session=SECRET-2"),
    ("Proxy-Authorization", "Basic SECRET-3"),
    ("X-Api-Key", "SECRET-4"),
    ("User-Agent", "tests"),
    ("Origin", "https://app.example"),
]


def redirect_once(to: str) -> Callable[[int, bytes], tuple[bytes, str]]:
    def script(index: int, head: bytes) -> tuple[bytes, str]:
        if b" /start " in head.split(b"\r\n", 1)[0]:
            return status(307, ("Location", to)), "drop"
        return switching(head), "close"

    return script


def test_cross_origin_redirect_drops_every_header_not_listed(scripted: Scripted) -> None:
    target = scripted(accept_all)
    front = scripted(redirect_once(target.url("/landed", host="localhost")))  # another host: another origin
    open_and_close(front.url("/start", userinfo="alice:SECRET-5@"), headers=CREDENTIAL_HEADERS)
    first = front.headers(0)
    assert first["authorization"] == ["Bearer SECRET-1"] and first["x-api-key"] == ["SECRET-4"]
    assert target.request_line() == b"GET /landed HTTP/1.1"
    assert b"SECRET" not in target.heads[0]  # nothing of the caller's went to the other origin
    assert {"user-agent", "origin", "cookie", "x-api-key", "authorization"}.isdisjoint(target.headers())


def test_cross_origin_redirect_forwards_the_headers_listed(scripted: Scripted) -> None:
    target = scripted(accept_all)
    front = scripted(redirect_once(target.url("/landed")))  # same host, another port: another origin
    open_and_close(
        front.url("/start", userinfo="alice:SECRET-5@"),
        headers=CREDENTIAL_HEADERS,
        forward_headers=["user-agent", "ORIGIN", "X-Api-Key"],
    )
    sent = target.headers()
    assert (sent["user-agent"], sent["origin"], sent["x-api-key"]) == (["tests"], ["https://app.example"], ["SECRET-4"])
    # The URL's user:pass@ is never forwarded, and nothing unlisted goes along.
    assert {"authorization", "cookie", "proxy-authorization"}.isdisjoint(sent)


def test_same_origin_redirect_keeps_every_header(scripted: Scripted) -> None:
    server = scripted(redirect_once("/landed"))
    open_and_close(server.url("/start"), headers=CREDENTIAL_HEADERS, protocols=["tok.SECRET-6"])
    assert server.heads[1].split(b"\r\n", 1)[1] == server.heads[0].split(b"\r\n", 1)[1].replace(
        server.headers(0)["sec-websocket-key"][0].encode(), server.headers(1)["sec-websocket-key"][0].encode()
    )


def test_cross_origin_redirect_with_subprotocols_is_refused_unless_forwarded(scripted: Scripted) -> None:
    target = scripted(accept_all)
    front = scripted(redirect_once(target.url("/landed")))
    with pytest.raises(InvalidRedirect, match="Sec-WebSocket-Protocol") as info:
        connect(front.url("/start"), protocols=["chat", "token.SECRET-6"], timeout=TIMEOUT)
    assert info.value.status == 307 and "SECRET" not in str(info.value)
    assert target.heads == []  # the subprotocols did not reach the other origin
    open_and_close(front.url("/start"), protocols=["chat"], forward_headers=["Sec-WebSocket-Protocol"])
    assert target.headers()["sec-websocket-protocol"] == ["chat"]


def test_returning_to_the_first_origin_restores_its_credentials(scripted: Scripted) -> None:
    home = scripted(accept_all)
    away = scripted(redirect_once(home.url("/back")))
    home.script = lambda index, head: (
        (status(302, ("Location", away.url("/start"))), "drop") if b" /first " in head[:64] else accept_all(index, head)
    )
    open_and_close(home.url("/first", userinfo="alice:pw@"), headers=[("X-Api-Key", "k")])
    assert "x-api-key" not in away.headers() and "authorization" not in away.headers()
    back = home.headers(1)
    assert back["x-api-key"] == ["k"] and back["authorization"] == [basic("alice", "pw")]
