"""``twspy.websocket``: :class:`websocket`, a socket that does the opening handshake, then sends and receives frames.

Server side: ``bind()``, ``listen()``, then ``accept()`` reads and answers the
upgrade request and returns the client's :class:`websocket` (which also
unpacks as ``(websocket, address)``, as ``socket.accept()`` does). Client
side: ``connect(address)`` sends the upgrade request for ``location``. Then
``send(*frames)`` and ``recv()`` move :class:`~ws4web.compat.twspy.frame.Frame`
objects; the handshake, masking (RFC 6455 §5.3), answering pings and the
closing handshake are ws4web's (:mod:`ws4web.upgrade`, the blocking driver).
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ...accept import AcceptPolicy
from ...auth import basic_auth
from ...exceptions import ConnectionClosed, InvalidHandshake
from ...extensions.base import ClientExtensionFactory, ServerExtensionFactory
from ...frames import Frame as _Frame
from ...http11 import Request
from ...messages import PongControlMessage
from ...protocol import CLIENT, SERVER
from ...upgrade import client_handshake, server_handshake, wrap_socket
from ...websocket import WebSocket
from .errors import SocketClosed
from .frame import twspy_frame

__all__ = ["Endpoint", "add_hooks", "websocket"]

H = TypeVar("H")

#: The socket methods and attributes a websocket passes through, as twspy's did.
INHERITED_ATTRS = frozenset(
    {
        "bind", "listen", "fileno", "getpeername", "getsockname", "getsockopt", "setsockopt",
        "setblocking", "settimeout", "gettimeout", "shutdown", "family", "type", "proto",
    }
)  # fmt: skip

FrameHook = Callable[[Any], Any]


class Endpoint(WebSocket):
    """The ws4web connection behind a websocket; ``on_pong`` hears pongs (for Connection.onpong)."""

    on_pong: Callable[[bytes], object] | None = None

    def ponged(self, message: PongControlMessage) -> None:
        if self.on_pong is not None:
            self.on_pong(message.data)


class websocket:  # twspy's name
    """A socket speaking WebSocket frames.

    ``protocols``: subprotocols (offered by a client, accepted by a server);
    ``extensions``: ws4web extension factories (client or server, for the side
    this socket is on); ``origin`` (client): the Origin header; ``location``
    (client): the resource to ask for; ``trusted_origins`` (server): the
    accepted Origin values (empty: any); ``locations`` (server): the resources
    served (others are answered 404); ``auth``: ``(user, password)`` sent (client)
    or required (server) with HTTP Basic authentication. ``sfamily`` and
    ``sproto`` make the underlying socket when ``sock`` is not given.
    """

    def __init__(
        self,
        sock: socket.socket | None = None,
        protocols: Sequence[str] = (),
        extensions: Sequence[ClientExtensionFactory | ServerExtensionFactory] = (),
        origin: str | None = None,
        location: str = "/",
        trusted_origins: Sequence[str] = (),
        locations: Sequence[str] = (),
        auth: tuple[str, str] | None = None,
        sfamily: int = socket.AF_INET,
        sproto: int = 0,
    ) -> None:
        for factory in extensions:
            if not isinstance(factory, (ClientExtensionFactory, ServerExtensionFactory)):
                raise TypeError(f"extensions are ws4web extension factories, not {factory!r}")
        self.protocols = list(protocols)
        self.extensions = list(extensions)
        self.origin = origin
        self.location = location
        self.trusted_origins = list(trusted_origins)
        self.locations = [path.rstrip("/") or "/" for path in locations]
        self.auth = auth
        self.sock = sock if sock is not None else socket.socket(sfamily, socket.SOCK_STREAM, sproto)
        #: the ws4web WebSocket running this connection, once the handshake is done
        self.endpoint: Endpoint | None = None
        #: the peer's address (accepted websockets)
        self.address: Any = None
        self.secure = False
        self._ssl_context: ssl.SSLContext | None = None
        self._policy: AcceptPolicy | None = None
        self.hooks_send: list[FrameHook] = []
        self.hooks_recv: list[FrameHook] = []

    def __getattr__(self, name: str) -> Any:
        if name in INHERITED_ATTRS:
            return getattr(self.sock, name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __iter__(self) -> Iterator[Any]:
        """``client, address = server.accept()`` works as with a socket."""
        return iter((self, self.address))

    # -- the handshake --------------------------------------------------------------------------

    def server_policy(self) -> AcceptPolicy:
        """The accept policy made of this listening socket's options (built once)."""
        if self._policy is None:
            options: dict[str, Any] = {
                "subprotocols": self.protocols,
                "extensions": [f for f in self.extensions if isinstance(f, ServerExtensionFactory)],
            }
            if self.trusted_origins:
                options["origins"] = self.trusted_origins
            if self.locations:
                options["process_request"] = self._check_location
            if self.auth is not None:
                user, password = self.auth
                options["authenticate"] = basic_auth({user: password})
            self._policy = AcceptPolicy.from_options(Endpoint, options)
        return self._policy

    def _check_location(self, request: Request) -> None:
        path = request.path.split("?", 1)[0].rstrip("/") or "/"
        if path not in self.locations:
            raise InvalidHandshake(f"no resource at {path}", status=404)

    def accept(self) -> websocket:
        """Accept a client and complete its handshake; HandshakeError (answered) if it is refused."""
        sock, address = self.sock.accept()
        try:
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_side=True)
            result = server_handshake(sock, self.server_policy())
        except BaseException:
            sock.close()
            raise
        client = websocket(sock)
        client.secure = self.secure
        client.address = address
        client.endpoint = wrap_socket(
            sock, Endpoint, side=SERVER, data=result.data, subprotocol=result.subprotocol, extensions=result.extensions
        )
        client.endpoint.request = result.request  # the upgrade request: path, headers
        return client

    def connect(self, address: tuple[str, int]) -> None:
        """Connect to ``address`` and complete the handshake for ``location``."""
        self.sock.connect(address)
        host = address[0] or "localhost"
        if self._ssl_context is not None:
            self.sock = self._ssl_context.wrap_socket(self.sock, server_hostname=host)
        headers: list[tuple[str, str]] = []
        if self.origin is not None:
            headers.append(("Origin", self.origin))
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode("ascii")
            headers.append(("Authorization", f"Basic {token}"))
        host_header = f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
        _response, subprotocol, accepted, data = client_handshake(
            self.sock,
            host_header,
            self.location,
            subprotocols=self.protocols,
            extensions=[f for f in self.extensions if isinstance(f, ClientExtensionFactory)],
            headers=headers,
        )
        self.sock.settimeout(None)
        self.endpoint = wrap_socket(
            self.sock, Endpoint, side=CLIENT, data=data, subprotocol=subprotocol, extensions=accepted
        )

    def enable_ssl(
        self,
        server_side: bool = False,
        keyfile: str | None = None,
        certfile: str | None = None,
        ca_certs: str | None = None,
        cert_reqs: ssl.VerifyMode | None = None,
    ) -> None:
        """Use TLS (``wss://``): a server needs ``certfile`` (and ``keyfile``); a client
        verifies the server against ``ca_certs`` (or the system's) unless
        ``cert_reqs=ssl.CERT_NONE``. Call it before ``accept()`` or ``connect()``."""
        if self.endpoint is not None:
            raise ssl.SSLError("can only enable SSL before the handshake")
        if server_side:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            if certfile is None:
                raise ValueError("a TLS server needs certfile")
            context.load_cert_chain(certfile, keyfile)
        else:
            context = ssl.create_default_context(cafile=ca_certs)
            if certfile is not None:
                context.load_cert_chain(certfile, keyfile)
        if cert_reqs is not None:
            if cert_reqs == ssl.CERT_NONE:
                context.check_hostname = False
            context.verify_mode = cert_reqs
        self._ssl_context = context
        self.secure = True

    # -- frames ---------------------------------------------------------------------------------

    def _connection(self) -> Endpoint:
        if self.endpoint is None:
            raise OSError("not connected: accept() or connect() first")
        return self.endpoint

    def send(self, *frames: Any) -> None:
        """Send frames (masked by a client, as RFC 6455 §5.3 requires)."""
        endpoint = self._connection()
        for given in frames:
            frame = given
            for hook in self.hooks_send:
                frame = hook(frame)
            if not isinstance(frame, _Frame):
                raise TypeError(f"send() takes frames, not {frame!r}")
            try:
                endpoint.send_frame(frame)
            except ConnectionClosed as exc:
                raise SocketClosed(exc.code, exc.reason) from exc

    def recv(self) -> Any:
        """The next frame, data or control (ws4web has already answered a ping or a close)."""
        endpoint = self._connection()
        try:
            frame: Any = twspy_frame(endpoint.recv_frame())
        except ConnectionClosed as exc:
            raise SocketClosed(exc.code, exc.reason) from exc
        for hook in self.hooks_recv:
            frame = hook(frame)
        return frame

    def recvn(self, n: int) -> list[Any]:
        """Exactly ``n`` frames."""
        return [self.recv() for _ in range(n)]

    def add_hook(self, send: FrameHook | None = None, recv: FrameHook | None = None, prepend: bool = False) -> None:
        """Functions applied to each frame sent (before it goes out) and received (before
        ``recv()`` returns it), in the order twspy applied them."""
        add_hooks(self.hooks_send, self.hooks_recv, send, recv, prepend)

    def close(self) -> None:
        """Close the socket (a connection is dropped without a closing handshake, as
        twspy's did; :class:`~ws4web.compat.twspy.connection.Connection` closes cleanly)."""
        if self.endpoint is not None:
            self.endpoint.terminate()
        else:
            self.sock.close()


def add_hooks(sends: list[H], recvs: list[H], send: H | None, recv: H | None, prepend: bool) -> None:
    """twspy's hook order: send hooks run in the order added (``prepend``: first), receive
    hooks the other way round, so that a send/recv pair undoes itself."""
    if send is not None:
        if prepend:
            sends.insert(0, send)
        else:
            sends.append(send)
    if recv is not None:
        if prepend:
            recvs.append(recv)
        else:
            recvs.insert(0, recv)
