"""``ws4py.client``: :class:`WebSocketBaseClient`, ws4py's client constructor and ``connect()`` on ws4web's handshake.

``WebSocketBaseClient(url, protocols, extensions, heartbeat_freq, ssl_options,
headers, exclude_headers)`` as in ws4py. The URL may be ``ws://``, ``wss://``,
their ``http://`` / ``https://`` spellings, or ``ws+unix:///path/to.sock``.
``connect()`` opens the socket, sends the handshake (with an ``Origin`` header, as
ws4py did, unless excluded), checks the answer (RFC 6455 §4.1), then calls
``handshake_ok()``, whose override decides where the connection runs:

* here, nowhere until the caller runs it (``run()``, ``start()``, or a
  :class:`~ws4web.compat.ws4py.manager.WebSocketManager` it is added to);
* :mod:`~ws4web.compat.ws4py.client.threadedclient`: a thread of its own;
* :mod:`~ws4web.compat.ws4py.client.geventclient`: a greenlet, with gevent's
  sockets and primitives (no monkey-patching).

What differs from ws4py: certificates and host names are verified unless
``ssl_options`` says otherwise (``{"cert_reqs": ssl.CERT_NONE}``); ``opened()``
runs when the connection starts running, not inside ``connect()``; and
redirects are not followed, nor proxies used, as in ws4py
(:class:`ws4web.WebSocketClient <ws4web.client.WebSocketClient>` does both).
"""

from __future__ import annotations

import logging
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from ....accept import new_protocol, split_limits
from ....client import HeadersArg, parse_url
from ....concurrency import THREADING, Primitives
from ....drivers.blocking import BlockingDriver
from ....drivers.selector import Loop, SelectorDriver
from ....exceptions import InvalidURI
from ....extensions.base import ClientExtensionFactory
from ....logs import ConnectionLog, connection_log, redact_url
from ....protocol import CLIENT, Protocol
from ....upgrade import client_handshake
from ....websocket import WebSocket

__all__ = ["Network", "WebSocketBaseClient"]

logger = logging.getLogger("ws4web.compat.ws4py.client")

# Headers RFC 6455 §4.1 requires in every opening handshake: they cannot be excluded.
_REQUIRED = frozenset({"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"})

# ws4py's ssl_options keys that have an SSLContext equivalent.
_SSL_OPTIONS = frozenset({"certfile", "keyfile", "ca_certs", "cert_reqs", "check_hostname", "ciphers"})


class Network:
    """How a client opens its socket and its TLS context: the standard library's
    modules, or gevent's (:mod:`gevent.socket`, :mod:`gevent.ssl`) for the gevent client."""

    def __init__(self, socket_module: Any, ssl_module: Any) -> None:
        self.socket = socket_module
        self.ssl = ssl_module

    def open_tcp(self, host: str, port: int, timeout: float | None) -> Any:
        return self.socket.create_connection((host, port), timeout=timeout)

    def open_unix(self, path: str, timeout: float | None) -> Any:
        sock = self.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return sock

    def tls_context(self, options: Mapping[str, Any]) -> ssl.SSLContext:
        """An SSLContext from ws4py's ``ssl_options``; verifying unless told otherwise."""
        unknown = sorted(set(options) - _SSL_OPTIONS)
        if unknown:
            raise TypeError(
                f"ssl_options {', '.join(map(repr, unknown))} not supported "
                f"(supported: {', '.join(sorted(_SSL_OPTIONS))}; or pass ssl_context=)"
            )
        context: ssl.SSLContext = self.ssl.create_default_context(cafile=options.get("ca_certs"))
        if options.get("certfile"):
            context.load_cert_chain(options["certfile"], options.get("keyfile"))
        if "cert_reqs" in options:
            if options["cert_reqs"] == ssl.CERT_NONE:
                context.check_hostname = False
            context.verify_mode = options["cert_reqs"]
        if "check_hostname" in options:
            context.check_hostname = bool(options["check_hostname"])
        if options.get("ciphers"):
            context.set_ciphers(options["ciphers"])
        return context


#: The standard library's sockets.
STDLIB = Network(socket, ssl)


class _Handshaken:
    """A connection whose handshake is done, waiting for a driver."""

    __slots__ = ("log", "protocol")

    def __init__(self, protocol: Protocol, log: ConnectionLog) -> None:
        self.protocol = protocol
        self.log = log


class WebSocketBaseClient(WebSocket):
    """ws4py's client base class, on ws4web's handshake and drivers.

    ``protocols`` are the subprotocols offered, ``extensions`` ws4web client
    extension factories (``ClientPerMessageDeflateFactory()`` ...),
    ``heartbeat_freq`` the keepalive ping interval, ``ssl_options`` ws4py's dict
    (``certfile``, ``keyfile``, ``ca_certs``, ``cert_reqs``, ``check_hostname``,
    ``ciphers``) or ``ssl_context`` a ready context, ``headers`` extra handshake
    headers, ``exclude_headers`` names of headers not to send (``origin``).
    ``timeout`` bounds connecting and the handshake; the other keywords are
    ws4web's limits (``max_message_size`` ...).
    """

    #: how sockets are opened
    network: ClassVar[Network] = STDLIB
    #: the concurrency primitives of the blocking driver
    primitives: ClassVar[Primitives] = THREADING

    def __init__(
        self,
        url: str,
        protocols: Sequence[str] | None = None,
        extensions: Sequence[ClientExtensionFactory] | None = None,
        heartbeat_freq: float | None = None,
        ssl_options: Mapping[str, Any] | None = None,
        headers: HeadersArg = None,
        exclude_headers: Sequence[str] | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = 10.0,
        **options: Any,
    ) -> None:
        self.url = url
        scheme, _, rest = url.partition("://")
        #: the URL's scheme as given (``ws``, ``wss``, ``http``, ``https``, ``ws+unix``)
        self.scheme = scheme.lower()
        #: the Unix socket's path, for ``ws+unix://`` (None otherwise)
        self.unix_socket_path: str | None = None
        if self.scheme == "ws+unix":
            parsed = urllib.parse.urlsplit(url)
            if not parsed.path:
                raise InvalidURI(f"{redact_url(url)!r} names no socket path")
            self.unix_socket_path = urllib.parse.unquote(parsed.path)
            target = parse_url("ws://localhost/" + ("?" + parsed.query if parsed.query else ""))
        else:
            # ws4py accepted the http(s) spelling of a WebSocket URL (RFC 6455 §3 maps them 1:1).
            mapped = {"http": "ws", "https": "wss"}.get(self.scheme, self.scheme)
            target = parse_url(f"{mapped}://{rest}")
        if target.user_info is not None:
            raise InvalidURI(
                f"{redact_url(url)!r}: credentials in the URL are not sent by this client; "
                "pass headers=[('Authorization', ...)], or use ws4web.WebSocketClient"
            )
        self._target = target
        self.host = target.host
        self.port = target.port
        #: the request target: path and query
        self.resource = target.resource
        if ssl_options and ssl_context is not None:
            raise TypeError("give ssl_options or ssl_context, not both")
        self.ssl_options = dict(ssl_options or {})
        self._ssl_context = ssl_context
        if ssl_context is not None and not target.secure:
            raise TypeError(f"ssl_context is for wss:// URLs, not {redact_url(url)!r}")
        if target.secure and ssl_context is None:
            self._ssl_context = self.network.tls_context(self.ssl_options)  # a bad option fails here
        self.extra_headers = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        self.exclude_headers = [name.lower() for name in exclude_headers or ()]
        required = sorted(set(self.exclude_headers) & _REQUIRED)
        if required:
            raise ValueError(f"cannot exclude {', '.join(required)}: RFC 6455 §4.1 requires them")
        self._offered = list(protocols or ())
        factories = list(extensions or ())
        for factory in factories:
            if not isinstance(factory, ClientExtensionFactory):
                raise TypeError(
                    f"extensions are ws4web client extension factories "
                    f"(ws4web.extensions.permessage_deflate.ClientPerMessageDeflateFactory()...), not {factory!r}"
                )
        self._factories = factories
        self._timeout = timeout
        rest_options = {**options, "heartbeat_freq": heartbeat_freq}
        self._limits = split_limits(rest_options)
        del rest_options["heartbeat_freq"]
        if rest_options:
            names = ", ".join(map(repr, rest_options))
            raise TypeError(f"unknown option{'s' if len(rest_options) > 1 else ''}: {names}")
        self._handshaken: _Handshaken | None = None
        WebSocket.__init__(self, None, heartbeat_freq=heartbeat_freq)

    @property
    def bind_addr(self) -> str | tuple[str, int]:
        """The Unix socket path, or ``(host, port)``."""
        return self.unix_socket_path or (self.host, self.port)

    @property
    def handshake_headers(self) -> list[tuple[str, str]]:
        """The headers sent besides those RFC 6455 §4.1 requires (which ws4web adds itself)."""
        headers = list(self.extra_headers)
        if "origin" not in self.exclude_headers and not any(k.lower() == "origin" for k, _ in headers):
            port = urllib.parse.urlsplit(self.url).port if self.unix_socket_path is None else None
            host = f"[{self.host}]" if ":" in self.host else self.host
            headers.append(("Origin", f"{self.scheme}://{host}" + (f":{port}" if port else "")))
        return [(k, v) for k, v in headers if k.lower() not in self.exclude_headers]

    # -- connecting ------------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and complete the opening handshake, then call :meth:`handshake_ok`.

        Raises InvalidStatus (``.status``) when the server refuses, InvalidHandshake
        (ws4py's ``HandshakeError``) for a bad answer, OSError for network errors.
        """
        network = self.network
        if self.unix_socket_path is not None:
            sock = network.open_unix(self.unix_socket_path, self._timeout)
        else:
            sock = network.open_tcp(self.host, self.port, self._timeout)
        try:
            if self._target.secure:
                assert self._ssl_context is not None
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
            _response, subprotocol, accepted, data = client_handshake(
                sock,
                self._target.host_header,
                self.resource,
                subprotocols=self._offered,
                extensions=self._factories,
                headers=self.handshake_headers,
                timeout=self._timeout,
            )
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.protocols = [subprotocol] if subprotocol else []
        self.extensions = accepted
        self._handshaken = _Handshaken(
            new_protocol(CLIENT, self._limits, accepted, data), connection_log(logger, sock, None)
        )
        try:
            self.handshake_ok()
        except BaseException:
            if self._handshaken is not None:
                self._handshaken = None
                sock.close()
            raise
        if self._handshaken is not None:
            self.run_blocking()  # bound, so that send() and run() work; nothing runs it yet

    def handshake_ok(self) -> None:
        """Called once the handshake is done. Here: nothing; the caller runs the
        connection (``run()``, ``start()``, or ``manager.add(self)`` from an override)."""

    # -- where the connection runs (the doors of this client) ----------------------------------

    @property
    def waiting_to_run(self) -> bool:
        """True from the end of the handshake until a driver runs the connection."""
        return self._handshaken is not None

    def run_blocking(self) -> None:
        """Bind the connection to a blocking driver (read by whoever calls ``run()``)."""
        handshaken = self._take_handshaken()
        driver = BlockingDriver(
            self.sock, handshaken.protocol, handshaken.log, limits=self._limits, primitives=self.primitives
        )
        self.bind(driver)

    def run_on(self, loop: Loop, on_ended: Callable[[], object] | None = None) -> None:
        """Run the connection on a selector ``loop`` from now on (a manager's); ``on_ended``
        is called once after ``closed()`` returned."""
        handshaken = self._take_handshaken()
        driver = SelectorDriver(self.sock, handshaken.protocol, handshaken.log, loop, limits=self._limits)
        driver.on_ended = on_ended
        self.bind(driver)
        driver.start()

    def _take_handshaken(self) -> _Handshaken:
        handshaken = self._handshaken
        if handshaken is None:
            raise RuntimeError("connect() first (or the connection already runs)")
        self._handshaken = None
        return handshaken
