"""docs/deployment.md: its nginx and haproxy configurations work, and its systemd unit parses.

The configuration blocks are read from the page itself (the ```nginx, ```text (haproxy:
Pygments has no lexer for it) and ```ini fences), so what a reader copies is what runs here.
Each proxy starts from the page's text with only addresses, certificate paths and, for the
idle-timeout tests, the timeout changed (every substitution must find its text: a page that
drifts fails here). The proxy listens on ::1 with the test certificates (TLS terminated at the
proxy) in front of two ws4web servers on 127.0.0.1, and a client goes through it over
``wss://``. Each test is skipped, with the reason, when its program (nginx, haproxy,
systemd-analyze) is not installed; .ci/run installs nginx and haproxy on Debian.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ws4web import ConnectionClosed, InvalidStatus, WebSocket, WebSocketServer, connect

from .conftest import CA_FILE, SERVER_CERT, SERVER_KEY

PAGE = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"
START_TIMEOUT = 10.0  # seconds for a proxy to listen
IO_TIMEOUT = 10.0
PUBLIC_ORIGIN = "https://chat.example"

pytestmark = pytest.mark.timeout(120)


def fenced(language: str) -> str:
    """The page's one block fenced as ``language``."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", PAGE.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) == 1, f"docs/deployment.md should have one ```{language} block, has {len(blocks)}"
    return str(blocks[0])


def substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"docs/deployment.md no longer has {old!r}"
        text = text.replace(old, new)
    return text


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the proxy exited with {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"the proxy did not listen within {START_TIMEOUT} s"
            time.sleep(0.05)


class Reporter(WebSocket):
    """Says what it saw of the handshake, then echoes."""

    def opened(self) -> None:
        headers = self.request.headers
        self.send(
            json.dumps(
                {
                    "peer": self.peer_address[0],
                    "x-forwarded-for": headers.get_all("X-Forwarded-For"),
                    "x-forwarded-proto": headers.get("X-Forwarded-Proto"),
                }
            )
        )

    def received_message(self, message: object) -> None:
        self.send(message)


class Backends:
    """The two ws4web servers the page's upstream lists (127.0.0.1:8001 and :8002)."""

    def __init__(self, **options: object) -> None:
        self.servers = [
            WebSocketServer(Reporter, "127.0.0.1", 0, origins=[PUBLIC_ORIGIN, None], **options) for _ in range(2)
        ]
        for server in self.servers:
            server.start()

    @property
    def replacements(self) -> dict[str, str]:
        return {f"127.0.0.1:{8001 + i}": f"127.0.0.1:{server.port}" for i, server in enumerate(self.servers)}

    def shutdown(self) -> None:
        for server in self.servers:
            server.shutdown()


class Proxy:
    """nginx or haproxy, from the page's configuration, on ::1 (TLS) and ::1 (plain HTTP)."""

    def __init__(self, kind: str, workdir: Path, backends: Backends, idle_timeout: str | None = None) -> None:
        executable = shutil.which(kind) or (f"/usr/sbin/{kind}" if os.access(f"/usr/sbin/{kind}", os.X_OK) else None)
        if executable is None:
            pytest.skip(f"{kind} is not installed (Debian: apt-get install {kind})")
        self.tls_port = free_port("::1")
        self.http_port = free_port("::1")
        self.log = workdir / "proxy.log"
        if kind == "nginx":
            command = self._nginx(executable, workdir, backends, idle_timeout)
        else:
            command = self._haproxy(executable, workdir, backends, idle_timeout)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        wait_for_port("::1", self.tls_port, self.proc, self.log)
        wait_for_port("::1", self.http_port, self.proc, self.log)

    def _nginx(self, executable: str, workdir: Path, backends: Backends, idle_timeout: str | None) -> list[str]:
        replacements = {
            "listen 443 ssl;": f"listen [::1]:{self.tls_port} ssl;",
            "listen 80;": f"listen [::1]:{self.http_port};",
            "/etc/ssl/chat.example/fullchain.pem": SERVER_CERT,
            "/etc/ssl/chat.example/privkey.pem": SERVER_KEY,
            **backends.replacements,
        }
        if idle_timeout is not None:
            replacements["proxy_read_timeout 75s;"] = f"proxy_read_timeout {idle_timeout};"
        site = substitute(fenced("nginx"), replacements)
        temp = " ".join(f"{name}_temp_path {workdir / name};" for name in ("client_body", "proxy"))
        config = workdir / "nginx.conf"
        config.write_text(
            f"daemon off;\nmaster_process off;\npid {workdir / 'nginx.pid'};\nerror_log {self.log} warn;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\naccess_log off;\n{temp}\n{site}\n}}\n"
        )
        return [executable, "-p", str(workdir), "-c", str(config), "-e", str(workdir / "startup.log")]

    def _haproxy(self, executable: str, workdir: Path, backends: Backends, idle_timeout: str | None) -> list[str]:
        pem = workdir / "chat.example.pem"  # haproxy takes the chain and the key in one file
        pem.write_text(Path(SERVER_CERT).read_text() + Path(SERVER_KEY).read_text())
        replacements = {
            "bind :443 ssl crt /etc/haproxy/certs/chat.example.pem": f"bind [::1]:{self.tls_port} ssl crt {pem}",
            "bind :80\n": f"bind [::1]:{self.http_port}\n",
            **backends.replacements,
        }
        if idle_timeout is not None:
            replacements["timeout tunnel 75s"] = f"timeout tunnel {idle_timeout}"
        config = workdir / "haproxy.cfg"
        config.write_text(substitute(fenced("text"), replacements))
        check = subprocess.run([executable, "-c", "-f", str(config)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        return [executable, "-db", "-f", str(config)]

    @property
    def url(self) -> str:
        return f"wss://[::1]:{self.tls_port}/ws"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def client_tls() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=CA_FILE)


@pytest.fixture(params=["nginx", "haproxy"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def deployed(kind: str, tmp_path: Path) -> Iterator[tuple[Proxy, Backends]]:
    backends = Backends()
    proxy = None
    try:
        proxy = Proxy(kind, tmp_path, backends)
        yield proxy, backends
    finally:
        if proxy is not None:
            proxy.stop()
        backends.shutdown()


def open_through(proxy: Proxy, tls: ssl.SSLContext, **headers: str) -> WebSocket:
    origin = {"Origin": PUBLIC_ORIGIN}
    return connect(proxy.url, ssl_context=tls, proxy=None, timeout=IO_TIMEOUT, headers={**origin, **headers})


def test_a_websocket_goes_through_the_proxy_over_tls(
    deployed: tuple[Proxy, Backends], client_tls: ssl.SSLContext
) -> None:
    proxy, _ = deployed
    with open_through(proxy, client_tls) as ws:
        seen = json.loads(ws.recv(IO_TIMEOUT).data)
        # The server's peer is the proxy (127.0.0.1); the client's address (::1) is in the header.
        assert seen == {"peer": "127.0.0.1", "x-forwarded-for": ["::1"], "x-forwarded-proto": "https"}
        ws.send("through the proxy")
        assert ws.recv(IO_TIMEOUT).text == "through the proxy"
        ws.send(b"\x00" * 200_000)  # a message larger than the proxies' buffers
        assert ws.recv(IO_TIMEOUT).data == b"\x00" * 200_000
    assert ws.close_code == 1000


def test_the_proxy_replaces_a_forwarded_for_sent_by_the_client(
    deployed: tuple[Proxy, Backends], client_tls: ssl.SSLContext
) -> None:
    proxy, _ = deployed
    with open_through(proxy, client_tls, **{"X-Forwarded-For": "203.0.113.66"}) as ws:
        assert json.loads(ws.recv(IO_TIMEOUT).data)["x-forwarded-for"] == ["::1"]


def test_the_origin_check_sees_the_public_origin(deployed: tuple[Proxy, Backends], client_tls: ssl.SSLContext) -> None:
    proxy, _ = deployed
    with pytest.raises(InvalidStatus) as refused:
        open_through(proxy, client_tls, Origin="https://evil.example")
    assert refused.value.status == 403  # ws4web's answer, passed through the proxy


def test_plain_http_is_redirected_to_https(deployed: tuple[Proxy, Backends]) -> None:
    proxy, _ = deployed
    conn = http.client.HTTPConnection("::1", proxy.http_port, timeout=IO_TIMEOUT)
    try:
        conn.request("GET", "/ws", headers={"Host": "chat.example"})
        response = conn.getresponse()
        assert response.status == 301
        assert response.getheader("Location", "").startswith("https://chat.example")
    finally:
        conn.close()


def test_a_server_shutdown_reaches_the_client_as_1001(
    deployed: tuple[Proxy, Backends], client_tls: ssl.SSLContext
) -> None:
    proxy, backends = deployed
    clients = [open_through(proxy, client_tls) for _ in range(4)]  # least connections: both servers get some
    try:
        for ws in clients:
            ws.recv(IO_TIMEOUT)
        backends.shutdown()  # what SIGTERM does to serve()
        for ws in clients:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(IO_TIMEOUT)
            assert closed.value.code == 1001
    finally:
        for ws in clients:
            ws.terminate()


# The idle timeout: the page sets the proxy's to 75 s against ws4web's ping_interval of 20 s.
# Here the proxy's is 2 s; a connection that stays silent for 4 s is cut without pings and
# kept with them. (No duration is asserted: only whether the connection is still open.)
IDLE = 4.0


@pytest.mark.parametrize("ping_interval", [None, 0.5], ids=["no-keepalive", "keepalive"])
def test_keepalive_holds_an_idle_connection_open_past_the_proxy_timeout(
    kind: str, ping_interval: float | None, tmp_path: Path, client_tls: ssl.SSLContext
) -> None:
    backends = Backends(ping_interval=ping_interval)
    proxy = None
    try:
        proxy = Proxy(kind, tmp_path, backends, idle_timeout="2s")
        with open_through(proxy, client_tls) as ws:
            ws.recv(IO_TIMEOUT)
            if ping_interval is None:
                with pytest.raises(ConnectionClosed):  # the proxy cut the silent connection
                    ws.recv(timeout=IDLE + IO_TIMEOUT)
            else:
                with pytest.raises(TimeoutError):  # reads for IDLE seconds, answering the pings: no message
                    ws.recv(timeout=IDLE)
                ws.send("still here")
                assert ws.recv(IO_TIMEOUT).text == "still here"
    finally:
        if proxy is not None:
            proxy.stop()
        backends.shutdown()


def test_the_systemd_unit_parses(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    python = os.path.realpath(shutil.which("python3") or "/usr/bin/python3")
    unit = substitute(fenced("ini"), {"/srv/chat/venv/bin/python3": python})
    path = tmp_path / "chat@8001.service"  # an instance of the template: %i is 8001
    path.write_text(unit)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, check=False)
    # verify exits 0 on a directive it ignores; anything it prints is a mistake in the unit.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result
