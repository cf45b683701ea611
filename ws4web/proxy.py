"""Client-side proxies: choosing one from the environment, and tunnelling through HTTP CONNECT or SOCKS.

:func:`proxy_from_environment` reads the usual ``*_proxy`` variables for a ws:// or
wss:// URL; :func:`open_tunnel` connects to a proxy and returns a socket tunnelled
to the WebSocket server, on which the caller does TLS (for wss://) and the opening
handshake exactly as on a direct connection.

Environment rules (curl's, except where marked; every tool differs a little, so
they are written down here):

* ws:// uses ``http_proxy``, wss:// uses ``https_proxy``; either falls back to
  ``all_proxy``. The lowercase variable wins over the uppercase one (``HTTP_PROXY``,
  ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``). A variable set to the empty string
  counts as unset, as in curl, so it does not hide its uppercase twin.
* ``HTTP_PROXY`` (uppercase only) is ignored when ``REQUEST_METHOD`` is set: in a
  CGI process any client can set it with a ``Proxy:`` request header (httpoxy,
  CVE-2016-5385). This is :func:`urllib.request.getproxies`' rule; curl ignores
  ``HTTP_PROXY`` always.
* A proxy value without a scheme (``proxy.local:3128``) means ``http://``.
* ``no_proxy`` is a list separated by commas or white space; an entry matches when:

  - it is ``*``: every host (curl wants ``*`` as the whole value);
  - it is a domain name: that host name and its subdomains, case-insensitively, with a
    leading ``.`` or ``*.`` ignored (``*.`` is not curl's) (``example.com``, ``.example.com`` and
    ``*.example.com`` all match ``example.com`` and ``ws.example.com``, never
    ``badexample.com``), and a trailing ``.`` ignored on both sides. A URL whose
    host is an IP address never matches a domain entry: ``0.1`` is not a suffix
    of ``10.0.0.1``;
  - it is an IP address: the same address (``::1`` and ``0::1`` are one address);
    names are never resolved to compare them with addresses;
  - it is a CIDR block (``10.0.0.0/8``, ``fd00::/8``): an IP address inside it;
  - it ends with ``:port`` (``example.com:8443``, ``[::1]:9000``): as above, and
    only for that port (the URL's, or 80 / 443 by default).

Tunnels:

* ``http://`` proxies: ``CONNECT host:port`` (RFC 9110 §9.3.6); ``user:pass@`` in
  the proxy URL is sent percent-decoded as ``Proxy-Authorization: Basic``
  (RFC 9110 §11.7.2, RFC 7617).
* ``https://`` proxies: the same inside TLS to the proxy. The returned socket is
  then an :class:`ssl.SSLSocket`: fine for ws://, but a wss:// connection would
  need TLS inside TLS, which ``SSLContext.wrap_socket`` cannot do (it writes on
  the raw file descriptor, past the proxy's TLS); callers must refuse wss://
  through an https:// proxy.
* ``socks5://`` and ``socks4://`` (names resolved here, the proxy gets an address),
  ``socks5h://`` and ``socks4a://`` (names resolved by the proxy), through the
  optional package python-socks (``pip install ws4web[socks]``); ``user:pass@``
  is sent with RFC 1929 (SOCKS5) or as the user id (SOCKS4).

Default proxy ports when the URL has none: 80 for http, 443 for https, 1080 for
SOCKS (curl assumes 1080 for every kind; requests and Go use the scheme's port).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Generator, Mapping
from typing import TypeVar

from .exceptions import InvalidMessage, InvalidURI, ProxyError
from .handshake import check_host
from .http11 import Headers, Response, parse_response_head
from .logs import redact_url
from .streams import StreamReader
from .upgrade import read_with_parser

__all__ = ["ProxyError", "ProxyTimeout", "SocksError", "open_tunnel", "proxy_from_environment"]

T = TypeVar("T")

_HTTP_SCHEMES = ("http", "https")
_SOCKS_SCHEMES = ("socks5", "socks5h", "socks4", "socks4a")
_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080, "socks4a": 1080}

_LENGTH = re.compile(r"[0-9]{1,18}")

MAX_INTERIM = 8  # 1xx answers skipped before the final one
MAX_REFUSAL_BODY = 65536  # bytes of a refusal's body kept for the exception


# ProxyError (ws4web.exceptions, re-exported here) carries the proxy's HTTP status when
# it answered CONNECT (407: proxy credentials missing or wrong), with its headers
# and body; 502 when its answer was missing, malformed or followed by stray bytes.


class ProxyTimeout(ProxyError, TimeoutError):
    """The proxy did not complete the tunnel within the timeout (``status`` 504)."""

    status = 504


class SocksError(ProxyError):
    """A SOCKS proxy refused or broke the exchange; ``reply_code`` is its reply code, if it sent one.

    ``status`` is 407 for an authentication failure, else 502.
    """

    status = 502

    def __init__(self, message: str, *, status: int | None = None, reply_code: int | None = None) -> None:
        super().__init__(message, status=status)
        self.reply_code = reply_code


# -- choosing a proxy ------------------------------------------------------------------------------


def _getenv(environ: Mapping[str, str], name: str) -> str | None:
    """``name`` (lowercase) else its uppercase twin; empty counts as unset, as in curl."""
    value = environ.get(name, "").strip()
    if value:
        return value
    upper = name.upper()
    if upper == "HTTP_PROXY" and "REQUEST_METHOD" in environ:
        return None  # httpoxy: a CGI client controls HTTP_PROXY through its Proxy: header
    return environ.get(upper, "").strip() or None


def _split_entry(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address / CIDR block."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host, port = entry, ""
    return host, int(port) if port.isdigit() else None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _no_proxy_matches(host: str, port: int, no_proxy: str) -> bool:
    host = host.lower().rstrip(".")
    address = _ip(host)
    for raw in re.split(r"[\s,]+", no_proxy):
        if not raw:
            continue
        if raw == "*":
            return True
        name, entry_port = _split_entry(raw.lower())
        if entry_port is not None and entry_port != port:
            continue
        if "/" in name:
            try:
                network = ipaddress.ip_network(name, strict=False)
            except ValueError:
                continue  # not a CIDR block: an entry nothing can match
            if address is not None and address in network:
                return True
            continue
        entry_address = _ip(name)
        if entry_address is not None:
            if address == entry_address:
                return True
            continue
        if address is not None:
            continue  # an IP address is not a domain name: "0.1" must not match 10.0.0.1 as a suffix
        name = name.removeprefix("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def proxy_from_environment(url: str) -> str | None:
    """The proxy URL the environment sets for the ws:// or wss:// ``url``, or None to go direct.

    The rules are in this module's docstring. The result always has a scheme.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("ws", "http"):
        variable, default_port = "http_proxy", 80
    elif scheme in ("wss", "https"):
        variable, default_port = "https_proxy", 443
    else:
        raise InvalidURI(f"{redact_url(url)!r} is not a ws:// or wss:// URL")
    if not parts.hostname:
        raise InvalidURI(f"{redact_url(url)!r} has no host")
    try:
        port = parts.port or default_port
    except ValueError:
        raise InvalidURI(f"{redact_url(url)!r} has an invalid port") from None
    environ = os.environ
    no_proxy = _getenv(environ, "no_proxy")
    if no_proxy and _no_proxy_matches(parts.hostname, port, no_proxy):
        return None
    proxy = _getenv(environ, variable) or _getenv(environ, "all_proxy")
    if proxy is None:
        return None
    return proxy if "://" in proxy else "http://" + proxy


# -- opening a tunnel ------------------------------------------------------------------------------


class _ProxyURL:
    __slots__ = ("host", "password", "port", "scheme", "username")

    def __init__(self, url: str) -> None:
        if "://" not in url:
            raise InvalidURI(f"proxy URL {redact_url(url)!r} has no scheme (write http://host:port)")
        parts = urllib.parse.urlsplit(url)
        self.scheme = parts.scheme.lower()
        if self.scheme not in _HTTP_SCHEMES + _SOCKS_SCHEMES:
            raise InvalidURI(
                f"unsupported proxy scheme {parts.scheme!r} in {redact_url(url)!r}: "
                f"use one of {', '.join(s + '://' for s in _HTTP_SCHEMES + _SOCKS_SCHEMES)}"
            )
        if not parts.hostname:
            raise InvalidURI(f"proxy URL {redact_url(url)!r} has no host")
        self.host = parts.hostname
        try:
            self.port = parts.port or _DEFAULT_PORTS[self.scheme]
        except ValueError:
            raise InvalidURI(f"proxy URL {redact_url(url)!r} has an invalid port") from None
        self.username = urllib.parse.unquote(parts.username) if parts.username is not None else None
        self.password = urllib.parse.unquote(parts.password) if parts.password is not None else None

    @property
    def address(self) -> str:
        return _authority(self.host, self.port)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_target(host: str, port: int) -> str:
    """The host without brackets, after checking it cannot break the CONNECT line."""
    host = check_host(host)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"invalid port {port!r}")
    return host


def _left(deadline: float | None, what: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise ProxyTimeout(f"timed out {what}")
    return left


def _feed(
    sock: socket.socket,
    reader: StreamReader,
    parser: Generator[None, None, T],
    deadline: float | None,
    what: str,
) -> T:
    """Run ``parser`` on bytes from ``sock`` until it returns; the deadline covers the whole message."""
    return read_with_parser(sock, reader, parser, deadline, lambda: ProxyTimeout(f"timed out {what}"))


def _read_head(reader: StreamReader) -> Generator[None, None, Response]:
    """A status line and headers, skipping 1xx interim answers (RFC 9110 §15.2).

    No body is read: a 2xx answer to CONNECT has none whatever its headers say
    (RFC 9110 §9.3.6), and the bytes after it belong to the tunnel.
    """
    for _ in range(MAX_INTERIM + 1):
        response = yield from parse_response_head(reader)
        if 100 <= response.status < 200 and response.status != 101:
            continue
        return response
    raise InvalidMessage(f"more than {MAX_INTERIM} interim answers")


def _read_refusal_body(reader: StreamReader, headers: Headers) -> Generator[None, None, bytes]:
    length = headers.get("Content-Length")
    if length is not None and _LENGTH.fullmatch(length) and int(length) <= MAX_REFUSAL_BODY:
        return (yield from reader.read_exact(int(length)))
    # Without a usable length, waiting for EOF could take the whole timeout: keep what came.
    return reader.take(min(len(reader.buffer), MAX_REFUSAL_BODY))


def _refusal_message(proxy: _ProxyURL, authority: str, response: Response) -> str:
    message = f"proxy {proxy.address} refused CONNECT {authority}: {response.status} {response.reason}".rstrip()
    if response.status == 407:
        challenge = response.headers.get("Proxy-Authenticate") or ""
        if proxy.username is None:
            message += " (proxy authentication required: put user:password@ in the proxy URL)"
        else:
            message += " (proxy authentication failed: the proxy rejected the user:password in the proxy URL)"
        scheme = challenge.split(" ", 1)[0]
        if challenge and scheme.lower() != "basic":
            message += f"; the proxy asks for {scheme} authentication, only Basic is supported"
    return message


def _http_connect(sock: socket.socket, proxy: _ProxyURL, host: str, port: int, deadline: float | None) -> socket.socket:
    authority = _authority(host, port)
    # RFC 9110 §9.3.6: the request target is authority-form; Host carries the same.
    head = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.username is not None:
        credentials = f"{proxy.username}:{proxy.password or ''}".encode()  # RFC 7617 §2.1: UTF-8
        head.append("Proxy-Authorization: Basic " + base64.b64encode(credentials).decode("ascii"))
    sock.settimeout(_left(deadline, f"sending CONNECT to proxy {proxy.address}"))
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))

    what = f"waiting for proxy {proxy.address} to answer CONNECT {authority}"
    reader = StreamReader()
    try:
        response = _feed(sock, reader, _read_head(reader), deadline, what)
    except ProxyError:
        raise
    except InvalidMessage as exc:
        # http11 reports EOF and broken limits as InvalidMessage; say who broke what.
        if reader.eof:
            raise ProxyError(
                f"proxy {proxy.address} closed the connection before completing its answer to CONNECT {authority}",
                status=502,
            ) from exc
        raise ProxyError(
            f"proxy {proxy.address} gave no valid answer to CONNECT {authority}: {exc}", status=502
        ) from exc
    if not 200 <= response.status < 300:
        try:
            body = _feed(sock, reader, _read_refusal_body(reader, response.headers), deadline, what)
        except (ProxyTimeout, EOFError, OSError):  # the status is what matters: keep what came of the body
            body = reader.take(min(len(reader.buffer), MAX_REFUSAL_BODY))
        raise ProxyError(
            _refusal_message(proxy, authority, response),
            status=response.status,
            headers=response.headers.items(),
            body=body,
        )
    if reader.buffer:
        # Nothing may come through the tunnel before the client speaks (neither TLS
        # nor RFC 6455 servers talk first): such bytes come from the proxy itself.
        raise ProxyError(
            f"proxy {proxy.address} sent {len(reader.buffer)} bytes after its {response.status} answer "
            f"to CONNECT {authority}, before the server could have spoken",
            status=502,
            headers=response.headers.items(),
        )
    return sock


def _socks_connect(proxy: _ProxyURL, host: str, port: int, deadline: float | None) -> socket.socket:
    try:
        from python_socks import ProxyError as SocksFailure
        from python_socks import ProxyTimeoutError, ProxyType
        from python_socks.sync import Proxy
    except ImportError as exc:
        raise ImportError(
            f"{proxy.scheme}:// proxies need the python-socks package: pip install ws4web[socks]"
        ) from exc
    kind = ProxyType.SOCKS5 if proxy.scheme.startswith("socks5") else ProxyType.SOCKS4
    # socks5h and socks4a send the name for the proxy to resolve; socks5 and socks4
    # resolve it here and send an address (RFC 1928 §5 ATYP, SOCKS 4A).
    remote_dns = proxy.scheme in ("socks5h", "socks4a")
    client = Proxy(kind, proxy.host, proxy.port, username=proxy.username, password=proxy.password, rdns=remote_dns)
    what = f"opening {proxy.scheme} tunnel through {proxy.address} to {_authority(host, port)}"
    try:
        # python-socks applies the timeout to each socket operation, not to the whole exchange.
        return client.connect(host, port, timeout=_left(deadline, what))
    except ProxyTimeoutError:
        raise ProxyTimeout(f"timed out {what}") from None
    except SocksFailure as exc:
        text = str(exc)
        status = 407 if "authentication" in text.lower() else 502
        raise SocksError(f"{what}: {text}", status=status, reply_code=exc.error_code) from exc


def open_tunnel(
    proxy_url: str,
    host: str,
    port: int,
    *,
    timeout: float | None,
    ssl_context_for_proxy: ssl.SSLContext | None = None,
) -> socket.socket:
    """A socket connected through the proxy at ``proxy_url`` to ``host:port``.

    ``timeout`` bounds the whole setup (connecting to the proxy, TLS to it, the
    CONNECT or SOCKS exchange; python-socks bounds each of its reads instead); the
    returned socket keeps it as its timeout, like :func:`socket.create_connection`,
    so that the caller's TLS handshake is bounded too. ``ssl_context_for_proxy``
    verifies an https:// proxy (default: :func:`ssl.create_default_context`).

    Raises ProxyError (``.status`` is the proxy's answer, 407 when proxy
    credentials are missing or wrong; 502 for a missing or malformed answer)
    when the proxy refuses or answers badly — including sending bytes before the
    server could have, which are never silently dropped; SocksError (a
    ProxyError with ``.reply_code``) for SOCKS failures; ProxyTimeout (a
    ProxyError and a TimeoutError, status 504) when it is too slow; OSError
    when it cannot be reached; InvalidURI for a bad proxy URL; ValueError for a
    bad host or port; ImportError for SOCKS without python-socks.
    """
    proxy = _ProxyURL(proxy_url)
    host = _check_target(host, port)
    deadline = None if timeout is None else time.monotonic() + timeout
    if proxy.scheme in _SOCKS_SCHEMES:
        sock = _socks_connect(proxy, host, port, deadline)
    else:
        try:
            sock = socket.create_connection(
                (proxy.host, proxy.port), timeout=_left(deadline, f"connecting to proxy {proxy.address}")
            )
        except TimeoutError:
            raise ProxyTimeout(f"timed out connecting to proxy {proxy.address}") from None
        try:
            _set_nodelay(sock)
            if proxy.scheme == "https":
                context = ssl_context_for_proxy if ssl_context_for_proxy is not None else ssl.create_default_context()
                sock.settimeout(_left(deadline, f"in TLS with proxy {proxy.address}"))
                try:
                    sock = context.wrap_socket(sock, server_hostname=proxy.host)
                except TimeoutError:
                    raise ProxyTimeout(f"timed out in TLS with proxy {proxy.address}") from None
            _http_connect(sock, proxy, host, port, deadline)
        except BaseException:
            sock.close()
            raise
    try:
        _set_nodelay(sock)
        sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def _set_nodelay(sock: socket.socket) -> None:
    # Nagle would hold a small frame back until the previous one is acked, as in
    # ws4web.connection; the tunnel is one TCP connection to the proxy.
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
