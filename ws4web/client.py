"""A WebSocket client on the standard library alone: ws:// and wss://.

``connect(url)`` returns a pull-style :class:`~ws4web.websocket.WebSocket`;
:class:`WebSocketClient` is the callback style (subclass it, ``connect()``, then
``run_forever()``). Certificates and host names are verified by default; a
``user:pass@`` in the URL sends HTTP Basic credentials.
"""

from __future__ import annotations

import base64
import socket
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import Any, NamedTuple

from .exceptions import InvalidURI
from .extensions.base import ClientExtensionFactory
from .protocol import CLIENT
from .upgrade import client_handshake
from .websocket import WebSocket

__all__ = ["WebSocketClient", "WebSocketURL", "connect", "parse_url"]


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
) -> socket.socket:
    sock = socket.create_connection((url.host, url.port), timeout=timeout)
    try:
        if url.secure:
            context = ssl_context if ssl_context is not None else ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=server_hostname or url.host)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


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
    handler_cls: type[WebSocket] = WebSocket,
    **options: Any,
) -> WebSocket:
    """Open a WebSocket to ``url`` and return it, ready for ``send``/``recv``.

    Raises InvalidStatus (``.status``, ``.headers``, ``.body``) when the server
    refuses, InvalidHandshake for any other handshake failure, OSError for
    network errors. ``options`` go to the WebSocket (``max_message_size`` ...).
    """
    target = parse_url(url)
    sock = _open(target, ssl_context, timeout, server_hostname)
    try:
        _response, subprotocol, accepted, data = client_handshake(
            sock,
            target.host_header,
            target.resource,
            subprotocols=list(protocols or ()),
            extensions=extensions,
            headers=_handshake_headers(target, headers),
            timeout=timeout,
        )
    except BaseException:
        sock.close()
        raise
    return handler_cls(
        sock, protocols=[subprotocol] if subprotocol else [], extensions=accepted, side=CLIENT, data=data, **options
    )


class WebSocketClient(WebSocket):
    """The callback-style client, as ws4py had it::

    class Echo(WebSocketClient):
        def received_message(self, message):
            self.send(message)

    ws = Echo("ws://127.0.0.1:9000/")
    ws.connect()
    ws.run_forever()
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
        **options: Any,
    ) -> None:
        self.url = url
        self._target = parse_url(url)  # fail early on a bad URL
        self._offered_protocols = list(protocols or ())
        self._extension_factories = list(extensions or ())
        self._ssl_context = ssl_context
        self._headers = headers
        self._timeout = timeout
        self._options = options
        self.heartbeat_freq = heartbeat_freq

    def connect(self) -> None:
        """Open the connection and complete the handshake."""
        sock = _open(self._target, self._ssl_context, self._timeout, None)
        try:
            _response, subprotocol, accepted, data = client_handshake(
                sock,
                self._target.host_header,
                self._target.resource,
                subprotocols=self._offered_protocols,
                extensions=self._extension_factories,
                headers=_handshake_headers(self._target, self._headers),
                timeout=self._timeout,
            )
        except BaseException:
            sock.close()
            raise
        WebSocket.__init__(
            self,
            sock,
            protocols=[subprotocol] if subprotocol else [],
            extensions=accepted,
            heartbeat_freq=self.heartbeat_freq,
            side=CLIENT,
            data=data,
            **self._options,
        )

    def run_forever(self) -> None:
        """Run the callback loop until the connection closes."""
        self.run()
