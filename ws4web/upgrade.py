"""Opening handshakes over a socket you already hold, both sides: the low-level doors.

:func:`accept_socket` reads and answers the upgrade request on a socket you
accepted and returns a ready handler; :func:`connect_socket` sends one on a
socket you connected; :func:`wrap_socket` runs a handler over a socket whose
handshake was done elsewhere. All three run the blocking driver
(:mod:`ws4web.drivers.blocking`). Bytes the peer sent right after its handshake
are kept for the protocol, never lost. docs/sans-io.md has the long version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, TypeVar

from .accept import AcceptPolicy, check_handler_class, log_refusal, new_protocol, split_limits, unexpected_error
from .concurrency import THREADING, Primitives
from .drivers.base import end_write_side
from .drivers.blocking import BlockingDriver
from .drivers.selector import Loop, SelectorDriver
from .exceptions import InvalidHandshake, InvalidMessage
from .extensions.base import ClientExtensionFactory, Extension
from .handshake import Accepted, check_response, client_request, generate_key
from .http11 import Request, Response, parse_request, parse_response
from .logs import ConnectionLog, connection_log
from .protocol import CLIENT, SERVER, Side
from .streams import StreamReader
from .websocket import WebSocket

__all__ = [
    "ServerHandshakeResult",
    "accept_socket",
    "client_handshake",
    "connect_socket",
    "read_with_parser",
    "send_refusal",
    "server_handshake",
    "wrap_socket",
]

logger = logging.getLogger("ws4web.upgrade")

T = TypeVar("T")
W = TypeVar("W", bound=WebSocket)


def read_with_parser(
    sock: Any,
    reader: StreamReader,
    parser: Generator[None, None, T],
    deadline: float | None,
    timed_out: Callable[[], Exception],
) -> T:
    """Feed ``parser`` (a generator pulling from ``reader``) from ``sock`` until it returns.

    ``deadline`` (a ``time.monotonic()`` value) covers the whole message, so a peer
    sending a byte a second cannot hold the connection open (slowloris); past it,
    ``timed_out()`` is raised. The socket's timeout is restored afterwards.
    """
    old_timeout = sock.gettimeout()
    try:
        next(parser)
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise timed_out()
                sock.settimeout(left)
            try:
                data = sock.recv(4096)
            except TimeoutError as exc:
                raise timed_out() from exc
            if data:
                reader.feed_data(data)
            else:
                reader.feed_eof()
            next(parser)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        sock.settimeout(old_timeout)


def _timed_out() -> Exception:
    return InvalidMessage("handshake timed out", status=408)


class ServerHandshakeResult:
    """An upgrade that was answered 101: the request, the decision, and the bytes
    the client sent after its request (its first frames, already read)."""

    __slots__ = ("accepted", "data", "request")

    def __init__(self, request: Request, accepted: Accepted, data: bytes) -> None:
        self.request = request
        self.accepted = accepted
        self.data = data

    @property
    def response(self) -> Response:
        return self.accepted.response

    @property
    def subprotocol(self) -> str | None:
        return self.accepted.subprotocol

    @property
    def extensions(self) -> list[Extension]:
        return self.accepted.extensions


def _read_request(sock: Any, policy: AcceptPolicy) -> tuple[Request, bytes]:
    reader = StreamReader()
    deadline = None if policy.handshake_timeout is None else time.monotonic() + policy.handshake_timeout
    parser = parse_request(reader, max_line=policy.max_line, max_headers=policy.max_headers)
    request = read_with_parser(sock, reader, parser, deadline, _timed_out)
    return request, bytes(reader.buffer)


def server_handshake(sock: Any, policy: AcceptPolicy | None = None, **options: Any) -> ServerHandshakeResult:
    """Read the upgrade request from ``sock`` and answer it: 101, or the refusal.

    ``policy`` (or ``options`` to build one: ``origins``, ``authenticate``,
    ``subprotocols``, ``process_request``, ``handshake_timeout`` ...) decides.
    On refusal the answer is sent and the InvalidHandshake raised; the caller
    closes the socket.
    """
    if policy is None:
        policy = AcceptPolicy.from_options(WebSocket, options)
    try:
        request, data = _read_request(sock, policy)
        accepted = policy.evaluate(request)
    except InvalidHandshake as exc:
        send_refusal(sock, AcceptPolicy.refusal(exc).serialize())
        raise
    sock.sendall(accepted.response.serialize())
    return ServerHandshakeResult(request, accepted, data)


def send_refusal(sock: Any, data: bytes, linger: float = 1.0) -> None:
    """Send an HTTP refusal so that the client can read it, then leave the socket to close.

    Closing a socket with unread input makes TCP send a reset, and a reset can
    destroy the refusal in the client's receive buffer before it is read (a
    client still trickling its request, say). So: send, end our write side, and
    read and discard what is still coming for up to ``linger`` seconds or
    64 KiB — a lingering close, as HTTP servers do. Best effort: the client may
    already be gone.
    """
    try:
        sock.sendall(data)
        end_write_side(sock)
        deadline = time.monotonic() + linger
        drained = 0
        while drained < 65536:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            chunk = sock.recv(4096)
            if not chunk:
                break
            drained += len(chunk)
    except (OSError, ValueError):
        pass


def client_handshake(
    sock: Any,
    host: str,
    path: str,
    *,
    subprotocols: Sequence[str] = (),
    extensions: Sequence[ClientExtensionFactory] = (),
    headers: Sequence[tuple[str, str]] = (),
    timeout: float | None = 10.0,
) -> tuple[Response, str | None, list[Extension], bytes]:
    """Send the upgrade request on ``sock`` and validate the answer.

    Returns (response, subprotocol, extensions, bytes read past the response).
    Raises InvalidStatus (with the server's status, headers and body) on refusal.
    """
    key = generate_key()
    request = client_request(host, path, key, subprotocols=subprotocols, extensions=extensions, headers=headers)
    sock.sendall(request.serialize())
    reader = StreamReader()
    deadline = None if timeout is None else time.monotonic() + timeout
    response = read_with_parser(sock, reader, parse_response(reader), deadline, _timed_out)
    subprotocol, accepted = check_response(response, key, subprotocols=subprotocols, extensions=extensions)
    return response, subprotocol, accepted, bytes(reader.buffer)


def accept_socket(
    sock: Any,
    handler_cls: type[W] = WebSocket,  # type: ignore[assignment]
    *,
    primitives: Primitives = THREADING,
    **options: Any,
) -> W:
    """Upgrade an accepted socket and return ``handler_cls`` running over it.

    ``options`` are a server door's: the accept policy (``origins``,
    ``authenticate``, ``subprotocols``, ``extensions``, ``process_request``,
    ``handshake_timeout`` ...), the limits (``max_message_size`` ...), and the
    rest for ``handler_cls``'s constructor — all checked before a byte is read.
    A refused request is answered (401, 403 ...) and raised as InvalidHandshake.
    Call ``run()`` on the result for callbacks, or use it in pull style.
    """
    policy = AcceptPolicy.from_options(handler_cls, options)
    log = connection_log(logger, sock, None)
    request: Request | None = None
    try:
        request, data = _read_request(sock, policy)
        accepted = policy.evaluate(request)
        try:
            handler = policy.make_handler(sock, accepted)
        except Exception as exc:
            log.exception("could not build %s", handler_cls.__name__)
            raise unexpected_error(exc) from exc
    except InvalidHandshake as exc:
        log_refusal(log, request.path if request is not None else "", exc)
        send_refusal(sock, AcceptPolicy.refusal(exc).serialize())
        raise
    sock.sendall(accepted.response.serialize())
    driver = BlockingDriver(
        sock, policy.new_protocol(accepted, data), log, limits=policy.limits, primitives=primitives
    )
    handler.bind(driver, request)
    return handler  # type: ignore[return-value]


def connect_socket(
    sock: Any,
    host: str,
    path: str = "/",
    handler_cls: type[W] = WebSocket,  # type: ignore[assignment]
    *,
    subprotocols: Sequence[str] = (),
    extensions: Sequence[ClientExtensionFactory] = (),
    headers: Sequence[tuple[str, str]] = (),
    timeout: float | None = 10.0,
    primitives: Primitives = THREADING,
    **options: Any,
) -> W:
    """Send the handshake on a connected socket and return ``handler_cls`` over it.

    ``options``: the limits (``max_message_size`` ...) and ``handler_cls``'s own
    constructor arguments, checked before anything is sent.
    """
    limits = split_limits(options)
    heartbeat = options.pop("heartbeat_freq", None)
    check_handler_class(handler_cls, options)
    _response, subprotocol, accepted, data = client_handshake(
        sock, host, path, subprotocols=subprotocols, extensions=extensions, headers=headers, timeout=timeout
    )
    handler = handler_cls(
        sock,
        protocols=[subprotocol] if subprotocol else [],
        extensions=accepted,
        environ=None,
        heartbeat_freq=heartbeat,
        **options,
    )
    log = connection_log(logger, sock, None)
    driver = BlockingDriver(
        sock, new_protocol(CLIENT, limits, accepted, data), log, limits=limits, primitives=primitives
    )
    handler.bind(driver)
    return handler


def wrap_socket(
    sock: Any,
    handler_cls: type[W] = WebSocket,  # type: ignore[assignment]
    *,
    side: Side = SERVER,
    data: bytes = b"",
    subprotocol: str | None = None,
    extensions: Sequence[Extension] = (),
    environ: Mapping[str, Any] | None = None,
    primitives: Primitives = THREADING,
    loop: Loop | None = None,
    log: ConnectionLog | None = None,
    **options: Any,
) -> W:
    """Run ``handler_cls`` over ``sock``, whose opening handshake was done elsewhere.

    ``side`` is this end's (a client masks its frames); ``data`` the bytes read
    past the handshake; ``options`` the limits and the handler's own arguments.
    The blocking driver runs it (``primitives`` for gevent), or with ``loop`` a
    :class:`~ws4web.drivers.selector.Loop` does: then call ``start()`` on the result.
    """
    limits = split_limits(options)
    heartbeat = options.pop("heartbeat_freq", None)
    check_handler_class(handler_cls, options)
    handler = handler_cls(
        sock,
        protocols=[subprotocol] if subprotocol else [],
        extensions=list(extensions),
        environ=environ,
        heartbeat_freq=heartbeat,
        **options,
    )
    protocol = new_protocol(side, limits, list(extensions), data)
    log = log if log is not None else connection_log(logger, sock, None)
    driver: BlockingDriver | SelectorDriver
    if loop is not None:
        driver = SelectorDriver(sock, protocol, log, loop, limits=limits)
    else:
        driver = BlockingDriver(sock, protocol, log, limits=limits, primitives=primitives)
    handler.bind(driver)
    return handler

