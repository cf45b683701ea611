"""A WebSocket client on the standard library alone: ws:// and wss://.

``connect(url)`` returns a pull-style :class:`~ws4web.websocket.WebSocket`;
:class:`WebSocketClient` is the callback style (subclass it, ``connect()``, then
``run_forever()``). Certificates and host names are verified by default; a
``user:pass@`` in the URL sends HTTP Basic credentials. The handshake follows
redirects (301/302/303/307/308, never from wss:// to ws://) and goes through an
HTTP CONNECT or SOCKS proxy when one is configured (``proxy=``, or the
``http_proxy``/``https_proxy``/``no_proxy`` environment variables; see
:mod:`ws4web.proxy`). :mod:`ws4web.reconnect` keeps a connection up across drops.
"""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import Any, NamedTuple

from .accept import check_handler_class, new_protocol, split_limits
from .drivers.blocking import BlockingDriver
from .exceptions import InvalidRedirect, InvalidStatus, InvalidURI
from .extensions.base import ClientExtensionFactory, Extension
from .logs import connection_log
from .protocol import CLIENT
from .upgrade import client_handshake
from .websocket import WebSocket

__all__ = ["REDIRECT_STATUSES", "WebSocketClient", "WebSocketURL", "connect", "parse_url"]

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
    """Split a ws:// or wss:// URL (RFC 6455 §3)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("ws", "wss"):
        raise InvalidURI(f"{url!r} is not a ws:// or wss:// URL")
    if parsed.fragment:  # §3: fragment identifiers MUST NOT be used
        raise InvalidURI(f"{url!r} has a fragment")
    if not parsed.hostname:
        raise InvalidURI(f"{url!r} has no host")
    secure = parsed.scheme == "wss"
    try:
        port = parsed.port or (443 if secure else 80)
    except ValueError as exc:
        raise InvalidURI(f"{url!r} has an invalid port") from exc
    resource = parsed.path or "/"
    if parsed.query:
        resource += "?" + parsed.query
    user_info = None
    if parsed.username is not None:
        user_info = (urllib.parse.unquote(parsed.username), urllib.parse.unquote(parsed.password or ""))
    return WebSocketURL(secure, parsed.hostname, port, resource, user_info)


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
                f"wss:// through an https:// proxy is not supported; use an http:// proxy for {url.geturl()}"
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


def _follow(url: WebSocketURL, exc: InvalidStatus, redirects_left: int) -> WebSocketURL:
    """The URL a redirect points to, or InvalidRedirect if it must not be followed."""
    if redirects_left <= 0:
        raise InvalidRedirect("too many redirects", status=exc.status, headers=exc.headers, body=exc.body)
    location = next((value for name, value in exc.headers if name.lower() == "location"), None)
    if not location:
        raise InvalidRedirect(f"HTTP {exc.status} without a Location", status=exc.status, headers=exc.headers)
    joined = urllib.parse.urljoin(url.geturl(), location.strip())
    # A Location may name the HTTP form of the resource (RFC 6455 §3 maps it 1:1).
    scheme, sep, rest = joined.partition("://")
    joined = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme.lower()) + sep + rest
    try:
        target = parse_url(joined)
    except InvalidURI as bad:
        raise InvalidRedirect(f"redirect to {location!r}: {bad}", status=exc.status, headers=exc.headers) from bad
    if target.origin == url.origin and target.user_info is None:
        target = target._replace(user_info=url.user_info)  # same origin: same credentials
    if url.secure and not target.secure:
        # Following would send the handshake (cookies, tokens) in clear text.
        raise InvalidRedirect(
            f"refusing to follow a redirect from wss:// to {target.geturl()}", status=exc.status, headers=exc.headers
        )
    return target


def _handshake_headers(
    url: WebSocketURL, headers: Sequence[tuple[str, str]] | dict[str, str] | None
) -> list[tuple[str, str]]:
    items = list(headers.items() if isinstance(headers, dict) else headers or ())
    if url.user_info is not None and not any(k.lower() == "authorization" for k, _ in items):
        items.append(("Authorization", _basic_auth(*url.user_info)))
    return items


def connect(
    url: str,
    *,
    protocols: Sequence[str] | None = None,
    headers: Sequence[tuple[str, str]] | dict[str, str] | None = None,
    extensions: Sequence[ClientExtensionFactory] = (),
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float | None = 10.0,
    max_redirects: int = 10,
    proxy: str | bool | None = True,
    proxy_ssl_context: ssl.SSLContext | None = None,
    handler_cls: type[WebSocket] = WebSocket,
    **options: Any,
) -> WebSocket:
    """Open a WebSocket to ``url`` and return it, ready for ``send``/``recv``.

    Redirects are followed up to ``max_redirects`` times; credentials (the URL's
    ``user:pass@`` and any ``Authorization`` header) are dropped when a redirect
    leaves the original scheme, host and port. ``proxy=True`` takes the proxy
    from the environment, a URL (``http://user:pass@host:3128``,
    ``socks5h://host:1080``) forces one, ``None`` connects directly;
    ``proxy_ssl_context`` verifies an ``https://`` proxy.

    Raises InvalidStatus (``.status``, ``.headers``, ``.body``) when the server
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
    headers: Sequence[tuple[str, str]] | dict[str, str] | None,
    extensions: Sequence[ClientExtensionFactory],
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    timeout: float | None,
    max_redirects: int,
    proxy: str | bool | None,
    proxy_ssl_context: ssl.SSLContext | None = None,
) -> tuple[socket.socket, str | None, list[Extension], bytes]:
    """Connect and complete the opening handshake, following redirects."""
    first = target
    for redirects_left in range(max_redirects, -1, -1):
        same_origin = target.origin == first.origin
        sock = _open(target, ssl_context, timeout, server_hostname if same_origin else None, proxy, proxy_ssl_context)
        try:
            _response, subprotocol, accepted, data = client_handshake(
                sock,
                target.host_header,
                target.resource,
                subprotocols=list(protocols or ()),
                extensions=extensions,
                headers=_handshake_headers(target, headers if same_origin else _without_credentials(headers)),
                timeout=timeout,
            )
        except InvalidStatus as exc:
            sock.close()
            if exc.status not in REDIRECT_STATUSES or isinstance(exc, InvalidRedirect):
                raise
            target = _follow(target, exc, redirects_left)
            continue
        except BaseException:
            sock.close()
            raise
        return sock, subprotocol, accepted, data
    raise AssertionError("unreachable: _follow raises when no redirect is left")  # pragma: no cover


def _without_credentials(
    headers: Sequence[tuple[str, str]] | dict[str, str] | None,
) -> list[tuple[str, str]]:
    items = list(headers.items() if isinstance(headers, dict) else headers or ())
    return [(k, v) for k, v in items if k.lower() not in ("authorization", "cookie")]


class WebSocketClient(WebSocket):
    """The callback-style client, as ws4py had it::

        class Echo(WebSocketClient):
            def received_message(self, message):
                self.send(message)

        ws = Echo("ws://127.0.0.1:9000/")
        ws.connect()
        ws.run_forever()

    ``connect()`` follows redirects and uses a proxy exactly as :func:`connect` does.
    """

    def __init__(
        self,
        url: str,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[ClientExtensionFactory] | None = None,
        heartbeat_freq: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        headers: Sequence[tuple[str, str]] | dict[str, str] | None = None,
        *,
        timeout: float | None = 10.0,
        max_redirects: int = 10,
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
