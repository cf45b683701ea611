"""Blocking opening handshakes over an already-connected socket, both sides.

This is the low-level entry point: :func:`server_handshake` reads and answers the
upgrade request on a socket you accepted; :func:`client_handshake` sends one on a
socket you connected. :func:`accept_socket` and :func:`connect_socket` go one
step further and return a ready :class:`~ws4web.websocket.WebSocket`. Bytes the
peer sent right after its handshake are kept for the protocol, never lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from .auth import Authenticator
from .connection import end_write_side
from .exceptions import InvalidHandshake, InvalidMessage, RequestAnswered
from .extensions.base import ClientExtensionFactory, Extension, ServerExtensionFactory
from .handshake import SubprotocolSelector, accept, check_response, client_request, generate_key, reject
from .http11 import MAX_HEADERS, MAX_LINE, Request, Response, parse_request, parse_response
from .protocol import CLIENT, SERVER
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
]

logger = logging.getLogger("ws4web.upgrade")

T = TypeVar("T")
W = TypeVar("W", bound=WebSocket)

#: ``process_request(request)`` may return a Response to send instead of upgrading
#: (authentication, origin checks, health checks), or raise InvalidHandshake.
ProcessRequest = Callable[[Request], "Response | None"]


def _run_parser(sock: Any, reader: StreamReader, parser: Generator[None, None, T], timeout: float | None) -> T:
    """Feed ``parser`` from ``sock`` until it returns, within ``timeout`` seconds in all."""
    deadline = None if timeout is None else time.monotonic() + timeout
    return read_with_parser(sock, reader, parser, deadline, lambda: InvalidMessage("handshake timed out", status=408))


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


class ServerHandshakeResult:
    __slots__ = ("data", "extensions", "request", "response", "subprotocol")

    def __init__(
        self, request: Request, response: Response, subprotocol: str | None, extensions: list[Extension], data: bytes
    ) -> None:
        self.request = request
        self.response = response
        self.subprotocol = subprotocol
        self.extensions = extensions
        #: bytes the client sent after its request: the first frames, already read
        self.data = data


def server_handshake(
    sock: Any,
    *,
    timeout: float | None = 10.0,
    max_line: int = MAX_LINE,
    max_headers: int = MAX_HEADERS,
    **options: Any,
) -> ServerHandshakeResult:
    """Read the upgrade request from ``sock`` and answer it.

    ``options`` are those of :func:`answer_request`. On failure the refusal is
    sent (its status from the exception) and the InvalidHandshake is raised; the
    caller closes the socket.
    """
    reader = StreamReader()
    try:
        request = _run_parser(sock, reader, parse_request(reader, max_line=max_line, max_headers=max_headers), timeout)
    except InvalidHandshake as exc:
        send_refusal(sock, reject(exc).serialize())
        raise
    return answer_request(sock, request, bytes(reader.buffer), **options)


def answer_request(
    sock: Any,
    request: Request,
    data: bytes = b"",
    *,
    subprotocols: Sequence[str] = (),
    select_subprotocol: SubprotocolSelector | None = None,
    extensions: Sequence[ServerExtensionFactory] = (),
    process_request: ProcessRequest | None = None,
    origins: Sequence[str | None] | None = None,
    authenticate: Authenticator | None = None,
) -> ServerHandshakeResult:
    """Validate a parsed upgrade request and write the answer to ``sock``.

    ``process_request(request)`` runs first and may answer instead (a Response);
    then the RFC 6455 checks, the Origin allow-list and ``authenticate``.
    ``data`` is what the client sent after its request.
    """
    refusal = process_request(request) if process_request is not None else None
    if refusal is not None:
        send_refusal(sock, refusal.serialize())
        raise RequestAnswered(f"answered by process_request with {refusal.status}", status=refusal.status)
    try:
        accepted = accept(
            request,
            subprotocols=subprotocols,
            select_subprotocol=select_subprotocol,
            extensions=extensions,
            origins=origins,
            authenticate=authenticate,
        )
    except InvalidHandshake as exc:
        send_refusal(sock, reject(exc).serialize())
        raise
    sock.sendall(accepted.response.serialize())
    return ServerHandshakeResult(request, accepted.response, accepted.subprotocol, accepted.extensions, data)


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
    response = _run_parser(sock, reader, parse_response(reader), timeout)
    subprotocol, accepted = check_response(response, key, subprotocols=subprotocols, extensions=extensions)
    return response, subprotocol, accepted, bytes(reader.buffer)


def accept_socket(
    sock: Any,
    handler_cls: type[W] = WebSocket,  # type: ignore[assignment]
    *,
    subprotocols: Sequence[str] = (),
    extensions: Sequence[ServerExtensionFactory] = (),
    process_request: ProcessRequest | None = None,
    timeout: float | None = 10.0,
    **options: Any,
) -> W:
    """Upgrade an accepted socket and return ``handler_cls`` running over it.

    ``options`` go to the handler (``max_message_size``, ``close_timeout``,
    ``primitives`` ...). Call ``run()`` on the result for the callback style.
    """
    result = server_handshake(
        sock, subprotocols=subprotocols, extensions=extensions, process_request=process_request, timeout=timeout
    )
    return handler_cls(
        sock,
        protocols=[result.subprotocol] if result.subprotocol else [],
        extensions=result.extensions,
        side=SERVER,
        data=result.data,
        request=result.request,
        **options,
    )


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
    **options: Any,
) -> W:
    """Send the handshake on a connected socket and return ``handler_cls`` over it."""
    _response, subprotocol, accepted, data = client_handshake(
        sock, host, path, subprotocols=subprotocols, extensions=extensions, headers=headers, timeout=timeout
    )
    return handler_cls(
        sock, protocols=[subprotocol] if subprotocol else [], extensions=accepted, side=CLIENT, data=data, **options
    )
