"""A WebSocket client on the standard library alone: ws:// and wss://.

``connect(url)`` returns a pull-style :class:`~ws4web.websocket.WebSocket`;
:class:`WebSocketClient` is the callback style (subclass it, ``connect()``, then
``run_forever()``). Certificates and host names are verified by default; a
``user:pass@`` in the URL sends HTTP Basic credentials. The handshake follows
redirects (301/302/303/307/308, never from wss:// to ws://; to another origin
only with the headers listed in ``forward_headers``) and goes through an HTTP
CONNECT or SOCKS proxy when one is configured (``proxy=``, or the
``http_proxy``/``https_proxy``/``no_proxy`` environment variables; see
:mod:`ws4web.proxy`). Nothing the caller passes can inject into the request:
see docs/client.md. :mod:`ws4web.reconnect` keeps a connection up across drops.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import ssl
import urllib.parse
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple, Union

from .accept import check_handler_class, new_protocol, split_limits
from .drivers.blocking import BlockingDriver
from .exceptions import InvalidRedirect, InvalidStatus, InvalidURI
from .extensions.base import ClientExtensionFactory, Extension
from .handshake import check_client_offer, check_host, quote_target
from .logs import connection_log, redact_url
from .protocol import CLIENT
from .upgrade import client_handshake
from .websocket import WebSocket

__all__ = ["REDIRECT_STATUSES", "HeadersArg", "WebSocketClient", "WebSocketURL", "connect", "parse_url"]

#: Extra handshake headers: a list of (name, value) pairs (a name may repeat) or a dict.
HeadersArg = Union[Sequence[tuple[str, str]], dict[str, str], None]

logger = logging.getLogger("ws4web.client")

#: Handshake answers the client follows to their ``Location`` (RFC 9110 §15.4).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class WebSocketURL(NamedTuple):
    secure: bool
    host: str
    port: int
    resource: str  # path and query, as sent in the request line
    user_info: tuple[str, str] | None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def origin(self) -> tuple[bool, str, int]:
        return (self.secure, self.host.lower(), self.port)

    def geturl(self) -> str:
        """The URL again, without credentials."""
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.resource}"


def parse_url(url: str) -> WebSocketURL:
    """Split a ws:// or wss:// URL (RFC 6455 §3).

    The path and query are percent-encoded where RFC 3986 requires it (a space,
    NUL, VT, non-ASCII ... becomes ``%XX`` of its UTF-8 bytes), so they cannot
    break the request line; a non-ASCII host name is IDNA-encoded. InvalidURI
    (its message without the URL's credentials or query values) otherwise.
    """
    safe = redact_url(url)
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0].rpartition("@")[2]
    if authority.startswith("[") and authority.partition("]")[2][:1] not in ("", ":"):
        # RFC 3986 §3.2.2: only ":" port may follow an IP-literal's "]". Checked before
        # urllib, whose own check (and message) differs between Python releases.
        raise InvalidURI(f"{safe!r} has characters after the IPv6 address")
    try:
        # urllib deletes tabs, CRs and LFs anywhere in a URL (WHATWG): encode them instead,
        # so that what is sent is what was written.
        parsed = urllib.parse.urlsplit(url.replace("\t", "%09").replace("\r", "%0D").replace("\n", "%0A"))
    except ValueError as exc:  # e.g. an unclosed "[" in the host
        raise InvalidURI(f"{safe!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("ws", "wss"):
        raise InvalidURI(f"{safe!r} is not a ws:// or wss:// URL")
    if parsed.fragment or "#" in url:  # §3: fragment identifiers MUST NOT be used
        raise InvalidURI(f"{safe!r} has a fragment")
    if not parsed.hostname:
        raise InvalidURI(f"{safe!r} has no host")
    if authority.startswith("[") and ":" not in parsed.hostname:
        # RFC 3986 §3.2.2: an IP-literal is an IPv6 address (IPvFuture names no address
        # anything can connect to).
        raise InvalidURI(f"{safe!r}: only an IPv6 address goes between [ and ]")
    secure = parsed.scheme == "wss"
    try:
        port = parsed.port
    except ValueError:
        raise InvalidURI(f"{safe!r} has an invalid port") from None
    if port == 0:
        raise InvalidURI(f"{safe!r} has an invalid port")
    try:
        host = check_host(_ascii_host(parsed.hostname))
        resource = quote_target((parsed.path or "/") + ("?" + parsed.query if parsed.query else ""))
        if ":" not in host:
            _check_dns_name(host)
    except ValueError as exc:  # UnicodeError included
        raise InvalidURI(f"{safe!r}: {exc}") from None
    user_info = None
    if parsed.username is not None:
        user_info = (urllib.parse.unquote(parsed.username), urllib.parse.unquote(parsed.password or ""))
    return WebSocketURL(secure, host, port or (443 if secure else 80), resource, user_info)


def _ascii_host(host: str) -> str:
    # Names go to DNS and into the Host header in their ASCII form (RFC 5890 A-labels).
    return host if host.isascii() else host.encode("idna").decode("ascii")


def _check_dns_name(host: str) -> None:
    # RFC 1035 §2.3.4 / RFC 1123 §2.1: labels of 1 to 63 octets, 253 in all (one trailing
    # dot allowed). The resolver's IDNA step would otherwise fail with a raw UnicodeError.
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253:
        raise ValueError(f"host name longer than 253 characters ({len(name)})")
    for label in name.split("."):
        if not label:
            raise ValueError(f"empty label in host name {host!r}")
        if len(label) > 63:
            raise ValueError(f"host name label longer than 63 characters: {label[:20]}...")


def _basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _open(
    url: WebSocketURL,
    ssl_context: ssl.SSLContext | None,
    timeout: float | None,
    server_hostname: str | None,
    proxy: str | bool | None = True,
    proxy_ssl_context: ssl.SSLContext | None = None,
) -> socket.socket:
    proxy_url = _proxy_for(url, proxy)
    if proxy_url is None:
        sock = socket.create_connection((url.host, url.port), timeout=timeout)
    else:
        from .proxy import open_tunnel

        if url.secure and proxy_url.lower().startswith("https:"):
            # The tunnel would be TLS inside TLS, which ssl.SSLContext.wrap_socket
            # cannot layer; an http:// proxy still gives end-to-end TLS to the server.
            raise InvalidURI(
                "wss:// through an https:// proxy is not supported; "
                f"use an http:// proxy for {redact_url(url.geturl())}"
            )
        sock = open_tunnel(proxy_url, url.host, url.port, timeout=timeout, ssl_context_for_proxy=proxy_ssl_context)
    try:
        if url.secure:
            context = ssl_context if ssl_context is not None else ssl.create_default_context()
            sock.settimeout(timeout)
            sock = context.wrap_socket(sock, server_hostname=server_hostname or url.host)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def _proxy_for(url: WebSocketURL, proxy: str | bool | None) -> str | None:
    if proxy is None or proxy is False:
        return None
    if proxy is True:
        from .proxy import proxy_from_environment

        return proxy_from_environment(url.geturl())
    return proxy


# A Location arrives decoded as latin-1: characters that can appear nowhere in a
# URI (controls, space, non-ASCII) are percent-encoded as the bytes the server sent,
# before urllib (which drops tabs and newlines) sees them; parse_url encodes the rest.
_NOT_IN_URI = re.compile(r"[^\x21-\x7e]")


def _encode_location(location: str) -> str:
    def encode(match: re.Match[str]) -> str:
        char = match.group()
        data = char.encode("latin-1") if char <= "\xff" else char.encode("utf-8")
        return "".join(f"%{b:02X}" for b in data)

    return _NOT_IN_URI.sub(encode, location.strip(" \t"))


def _follow(first: WebSocketURL, url: WebSocketURL, exc: InvalidStatus, redirects_left: int) -> WebSocketURL:
    """The URL a redirect points to, or InvalidRedirect if it must not be followed."""
    if redirects_left <= 0:
        raise InvalidRedirect("too many redirects", status=exc.status, headers=exc.headers, body=exc.body)
    location = next((value for name, value in exc.headers if name.lower() == "location"), None)
    if not location:
        raise InvalidRedirect(f"HTTP {exc.status} without a Location", status=exc.status, headers=exc.headers)
    joined = urllib.parse.urljoin(url.geturl(), _encode_location(location))
    # A Location may name the HTTP form of the resource (RFC 6455 §3 maps it 1:1).
    scheme, sep, rest = joined.partition("://")
    joined = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme.lower()) + sep + rest
    try:
        target = parse_url(joined)
    except InvalidURI as bad:
        raise InvalidRedirect(
            f"redirect to {redact_url(location)!r}: {bad}", status=exc.status, headers=exc.headers
        ) from bad
    if target.origin == first.origin and target.user_info is None:
        target = target._replace(user_info=first.user_info)  # the caller's origin: the caller's credentials
    if url.secure and not target.secure:
        # Following would send the handshake (cookies, tokens) in clear text.
        raise InvalidRedirect(
            f"refusing to follow a redirect from wss:// to {redact_url(target.geturl())}",
            status=exc.status,
            headers=exc.headers,
        )
    return target


def _header_items(headers: HeadersArg) -> list[tuple[str, str]]:
    return list(headers.items() if isinstance(headers, dict) else headers or ())


def _forwardable(forward_headers: Collection[str]) -> frozenset[str]:
    if isinstance(forward_headers, str):
        raise ValueError(f"forward_headers must be a list of header names, not the string {forward_headers!r}")
    check_client_offer(headers=[(name, "") for name in forward_headers])  # each name a token
    return frozenset(name.lower() for name in forward_headers)


def connect(
    url: str,
    *,
    protocols: Sequence[str] | None = None,
    headers: HeadersArg = None,
    extensions: Sequence[ClientExtensionFactory] = (),
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float | None = 10.0,
    max_redirects: int = 10,
    forward_headers: Collection[str] = (),
    proxy: str | bool | None = True,
    proxy_ssl_context: ssl.SSLContext | None = None,
    handler_cls: type[WebSocket] = WebSocket,
    **options: Any,
) -> WebSocket:
    """Open a WebSocket to ``url`` and return it, ready for ``send``/``recv``.

    Redirects are followed up to ``max_redirects`` times. While they stay on the
    origin (scheme, host and port) of ``url``, the handshake carries everything
    it started with; a redirect to another origin sends none of ``headers``
    except those named in ``forward_headers`` (case-insensitive), never the
    URL's ``user:pass@``, and is refused (InvalidRedirect) when ``protocols`` are
    offered unless ``"Sec-WebSocket-Protocol"`` is in ``forward_headers``.
    ``proxy=True`` takes the proxy from the environment, a URL
    (``http://user:pass@host:3128``, ``socks5h://host:1080``) forces one,
    ``None`` connects directly; ``proxy_ssl_context`` verifies an ``https://``
    proxy.

    Raises ValueError before connecting when a subprotocol, extension parameter
    or header could not go on the wire as given (see
    :func:`ws4web.handshake.check_client_offer`); InvalidURI for a bad URL;
    InvalidStatus (``.status``, ``.headers``, ``.body``) when the server
    refuses, InvalidRedirect for a redirect it will not follow, ProxyError when
    the proxy refuses, InvalidHandshake for any other handshake failure,
    OSError for network errors. ``options`` go to the WebSocket
    (``max_message_size`` ...).
    """
    target = parse_url(url)
    limits = split_limits(options)
    heartbeat = options.pop("heartbeat_freq", None)
    check_handler_class(handler_cls, options)  # before any byte goes out
    sock, subprotocol, accepted, data = _handshake(
        target,
        protocols,
        headers,
        extensions,
        ssl_context,
        server_hostname,
        timeout,
        max_redirects,
        proxy,
        proxy_ssl_context,
        forward_headers,
    )
    handler = handler_cls(
        sock,
        protocols=[subprotocol] if subprotocol else [],
        extensions=accepted,
        environ=None,
        heartbeat_freq=heartbeat,
        **options,
    )
    driver = BlockingDriver(
        sock, new_protocol(CLIENT, limits, accepted, data), connection_log(logger, sock, None), limits=limits
    )
    handler.bind(driver)
    return handler


def _handshake(
    target: WebSocketURL,
    protocols: Sequence[str] | None,
    headers: HeadersArg,
    extensions: Sequence[ClientExtensionFactory],
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    timeout: float | None,
    max_redirects: int,
    proxy: str | bool | None,
    proxy_ssl_context: ssl.SSLContext | None = None,
    forward_headers: Collection[str] = (),
) -> tuple[socket.socket, str | None, list[Extension], bytes]:
    """Connect and complete the opening handshake, following redirects."""
    items = _header_items(headers)
    check_client_offer(protocols or (), extensions, items)  # ValueError before a byte goes anywhere
    subprotocols = list(protocols or ())
    forwarded = _forwardable(forward_headers)
    first = target
    for redirects_left in range(max_redirects, -1, -1):
        same_origin = target.origin == first.origin
        sent = items if same_origin else [item for item in items if item[0].lower() in forwarded]
        sock = _open(target, ssl_context, timeout, server_hostname if same_origin else None, proxy, proxy_ssl_context)
        try:
            _response, subprotocol, accepted, data = client_handshake(
                sock,
                target.host_header,
                target.resource,
                subprotocols=subprotocols,
                extensions=extensions,
                headers=_with_credentials(target, sent),
                timeout=timeout,
            )
        except InvalidStatus as exc:
            sock.close()
            if exc.status not in REDIRECT_STATUSES or isinstance(exc, InvalidRedirect):
                raise
            target = _follow(first, target, exc, redirects_left)
            if target.origin != first.origin and subprotocols and "sec-websocket-protocol" not in forwarded:
                raise InvalidRedirect(
                    f"refusing to offer the subprotocols to {redact_url(target.geturl())}, another origin "
                    "(they may carry a token); list 'Sec-WebSocket-Protocol' in forward_headers to allow it",
                    status=exc.status,
                    headers=exc.headers,
                ) from None
            continue
        except BaseException:
            sock.close()
            raise
        return sock, subprotocol, accepted, data
    raise AssertionError("unreachable: _follow raises when no redirect is left")  # pragma: no cover


def _with_credentials(url: WebSocketURL, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``items`` plus Basic credentials from the URL's ``user:pass@``, unless an Authorization is given."""
    if url.user_info is not None and not any(k.lower() == "authorization" for k, _ in items):
        return [*items, ("Authorization", _basic_auth(*url.user_info))]
    return items


class WebSocketClient(WebSocket):
    """The callback-style client, as ws4py had it::

        class Echo(WebSocketClient):
            def received_message(self, message):
                self.send(message)

        ws = Echo("ws://127.0.0.1:9000/")
        ws.connect()
        ws.run_forever()

    ``connect()`` follows redirects (``forward_headers`` included) and uses a proxy
    exactly as :func:`connect` does.
    """

    def __init__(
        self,
        url: str,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[ClientExtensionFactory] | None = None,
        heartbeat_freq: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        headers: HeadersArg = None,
        *,
        timeout: float | None = 10.0,
        max_redirects: int = 10,
        forward_headers: Collection[str] = (),
        proxy: str | bool | None = True,
        proxy_ssl_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self._target = parse_url(url)  # fail early on a bad URL
        self._offered_protocols = list(protocols or ())
        self._extension_factories = list(extensions or ())
        self._ssl_context = ssl_context
        self._headers = headers
        self._timeout = timeout
        self._max_redirects = max_redirects
        self._forward_headers = forward_headers
        self._proxy = proxy
        self._proxy_ssl_context = proxy_ssl_context
        rest = {**options, "heartbeat_freq": heartbeat_freq}
        self._limits = split_limits(rest)
        del rest["heartbeat_freq"]
        if rest:
            raise TypeError(f"unknown option{'s' if len(rest) > 1 else ''}: {', '.join(map(repr, rest))}")
        WebSocket.__init__(self, None, heartbeat_freq=heartbeat_freq)

    def connect(self) -> None:
        """Open the connection and complete the handshake (redirects and proxy included)."""
        sock, subprotocol, accepted, data = _handshake(
            self._target,
            self._offered_protocols,
            self._headers,
            self._extension_factories,
            self._ssl_context,
            None,
            self._timeout,
            self._max_redirects,
            self._proxy,
            self._proxy_ssl_context,
            self._forward_headers,
        )
        self.sock = sock
        self.protocols = [subprotocol] if subprotocol else []
        self.extensions = accepted
        driver = BlockingDriver(
            sock,
            new_protocol(CLIENT, self._limits, accepted, data),
            connection_log(logger, sock, None),
            limits=self._limits,
        )
        self.bind(driver)

    def run_forever(self) -> None:
        """Run the callback loop until the connection closes."""
        self.run()
