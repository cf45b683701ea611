"""``twspy.connection``: :class:`Connection`, messages over a :class:`~ws4web.compat.twspy.websocket.websocket`.

Subclass it and override ``onopen()``, ``onmessage(message)``, ``onpong(payload)``,
``onclose(code, reason)`` (or twspy's README form ``onclose(message)``, which gets
a :class:`~ws4web.compat.twspy.errors.SocketClosed`) and ``onerror(exc)``; then
``receive_forever()``. Control frames are ws4web's: pings are answered, the
closing handshake completed, fragments joined.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from ...exceptions import ConnectionClosed
from ...frames import CloseCode
from ...messages import Message
from .errors import SocketClosed
from .message import twspy_message
from .websocket import Endpoint, add_hooks, websocket

__all__ = ["Connection", "positional_arity"]

MessageHook = Callable[[Any], Any]


class Connection:
    """Messages over ``sock``, a :class:`~ws4web.compat.twspy.websocket.websocket` whose handshake is done;
    ``onopen()`` runs at once."""

    def __init__(self, sock: websocket) -> None:
        if sock.endpoint is None:
            raise ValueError("Connection() takes a websocket whose handshake is done (accept() or connect())")
        self.sock = sock
        self.hooks_send: list[MessageHook] = []
        self.hooks_recv: list[MessageHook] = []
        self._endpoint: Endpoint = sock.endpoint
        self._endpoint.on_pong = self._pong
        self.onopen()

    def send(self, message: Any, fragment_size: int | None = None, mask: bool = False) -> None:
        """Send a message (``TextMessage``, ``BinaryMessage``, ``str`` or ``bytes``); with
        ``fragment_size``, in frames of at most that many payload bytes. A client masks
        every frame whatever ``mask`` says (RFC 6455 §5.3)."""
        for hook in self.hooks_send:
            message = hook(message)
        try:
            if fragment_size is None:
                self._endpoint.send(message)
            else:
                self._endpoint.send(_chunks(message, fragment_size), binary=_is_binary(message))
        except ConnectionClosed as exc:
            raise SocketClosed(exc.code, exc.reason) from exc

    def recv(self) -> Any:
        """The next message; SocketClosed once the connection is closed."""
        try:
            message: Any = twspy_message(self._endpoint.recv())
        except ConnectionClosed as exc:
            raise SocketClosed(exc.code, exc.reason) from exc
        for hook in self.hooks_recv:
            message = hook(message)
        return message

    def receive_forever(self) -> None:
        """``onmessage()`` for each message until the connection closes, then ``onclose()``.

        An exception from ``onmessage()`` goes to ``onerror()`` and receiving goes on,
        as in twspy; a network error ends the connection (``onerror()``, then ``onclose()``)."""
        while True:
            try:
                message = self.recv()
            except SocketClosed as closed:
                self._closed(closed.code, closed.reason)
                return
            except OSError as exc:
                self.onerror(exc)
                self._endpoint.terminate()
                self._closed(CloseCode.ABNORMAL_CLOSURE, "")
                return
            try:
                self.onmessage(message)
            except Exception as exc:
                self.onerror(exc)

    def send_ping(self, payload: str | bytes = b"") -> None:
        self._endpoint.ping(payload.encode() if isinstance(payload, str) else payload)
        self.onping(payload)

    def send_close_frame(self, code: int | None = None, reason: str = "") -> None:
        """Start the closing handshake (no code: an empty close frame)."""
        self._endpoint.close(CloseCode.NO_STATUS_RCVD if code is None else code, reason)

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Close cleanly: send a close frame, wait for the peer's (at most ``close_timeout``),
        call ``onclose()``, close the socket."""
        self.send_close_frame(code, reason)
        # Without another reader, close() finished the handshake itself; with one (a
        # receive_forever() thread), that thread does, bounded by close_timeout.
        self._endpoint.connection.wait_closed()
        self._closed(code, reason)

    def add_hook(self, send: MessageHook | None = None, recv: MessageHook | None = None, prepend: bool = False) -> None:
        """Functions applied to each message sent and received (JSON encoding, say)."""
        add_hooks(self.hooks_send, self.hooks_recv, send, recv, prepend)

    def _pong(self, payload: bytes) -> None:
        self.onpong(payload)

    def _closed(self, code: int | None, reason: str) -> None:
        onclose: Any = self.onclose  # twspy's form, or its README's
        if positional_arity(onclose) == 1:
            onclose(SocketClosed(code, reason))
        else:
            onclose(code, reason)
        self.sock.close()

    # -- the handlers (override these) ------------------------------------------------------------

    def onopen(self) -> None:
        """Called once, from the constructor."""

    def onmessage(self, message: Any) -> None:
        """Called for each message: a ``TextMessage`` (``payload``: str) or a ``BinaryMessage``."""

    def onping(self, payload: str | bytes) -> None:
        """Called after a ping was sent."""

    def onpong(self, payload: bytes) -> None:
        """Called for each pong received."""

    def onclose(self, code: int | None, reason: str) -> None:
        """Called once, when the connection has closed."""

    def onerror(self, e: BaseException) -> None:
        """Called with what ``onmessage()`` raised, or the network error that ended the connection."""


def _is_binary(message: Any) -> bool:
    return not isinstance(message, str) and not (isinstance(message, Message) and message.is_text)


def _chunks(message: Any, size: int) -> Iterator[bytes]:
    data = message.data if isinstance(message, Message) else message
    if isinstance(data, str):
        data = data.encode()
    if size < 1:
        raise ValueError("fragment_size must be at least 1")
    if not data:
        yield b""
    for i in range(0, len(data), size):
        yield bytes(data[i : i + size])


def positional_arity(method: Callable[..., Any]) -> int | None:
    """How many positional arguments a bound method takes (None for ``*args``): twspy's code
    called ``onclose(code, reason)``, its README's examples took ``(message)`` or ``(client)``."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a C function: assume twspy's form
        return None
    count = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count
