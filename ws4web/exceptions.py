"""The one exception tree of ws4web.

::

    WebSocketError
    ├── ConnectionClosed            the connection is closed; carries code and reason
    │   ├── ConnectionClosedOK      closed with 1000 or 1001 on both sides
    │   └── ConnectionClosedError   anything else (1006 when no close frame arrived)
    ├── ProtocolError               the peer broke RFC 6455: close with 1002
    │   ├── InvalidPayload          bad UTF-8 or bad close reason: close with 1007
    │   └── PayloadTooBig           over a configured limit: close with 1009
    ├── InvalidHandshake            the HTTP upgrade failed; ``status`` is what to answer
    │   ├── InvalidMessage          not parseable HTTP, or over the size limits (400)
    │   ├── InvalidMethod           not GET (405)
    │   ├── InvalidHeader           a missing, duplicate or malformed header (400)
    │   │   └── InvalidUpgrade      Upgrade / Connection do not ask for websocket (426)
    │   ├── InvalidVersion          Sec-WebSocket-Version is not 13 (426)
    │   ├── InvalidOrigin           refused by the origin policy (403)
    │   ├── Unauthorized            credentials missing or wrong (401)
    │   ├── Forbidden               refused by an authentication hook (403)
    │   ├── NegotiationError        subprotocol or extension negotiation failed (400)
    │   ├── RequestAnswered         not an error: process_request answered instead of upgrading
    │   ├── InvalidStatus           client side: the server answered something but 101
    │   │   └── InvalidRedirect     a redirect the client will not follow (wss→ws, loop, no Location)
    │   └── ProxyError              client side: the proxy refused or broke the tunnel
    ├── InvalidURI                  a URL the client cannot connect to
    └── SendQueueFull               reconnecting client: no room to keep a message while offline

Protocol errors carry the close code they map to in :attr:`ProtocolError.code`; the
protocol turns them into close frames in exactly one place
(:meth:`ws4web.protocol.Protocol.fail`). Handshake errors carry the HTTP status
in :attr:`InvalidHandshake.status`; adapters answer with it (see
:func:`ws4web.handshake.reject`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Forbidden",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidMessage",
    "InvalidMethod",
    "InvalidOrigin",
    "InvalidPayload",
    "InvalidRedirect",
    "InvalidStatus",
    "InvalidURI",
    "InvalidUpgrade",
    "InvalidVersion",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyError",
    "RequestAnswered",
    "SendQueueFull",
    "Unauthorized",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Base class of every exception ws4web raises on purpose."""


class ConnectionClosed(WebSocketError):
    """The connection is closed: nothing more can be sent or received.

    ``code`` and ``reason`` are what the peer sent (1006 and ``""`` if it sent no
    close frame); ``sent_code`` is what we sent, ``None`` if we sent nothing.
    """

    def __init__(self, code: int, reason: str = "", sent_code: int | None = None) -> None:
        self.code = code
        self.reason = reason
        self.sent_code = sent_code
        super().__init__(code, reason)

    def __str__(self) -> str:
        text = f"connection closed with code {self.code}"
        if self.reason:
            text += f" ({self.reason})"
        return text


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (1000 Normal Closure or 1001 Going Away)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code, or without a close handshake."""


class ProtocolError(WebSocketError):
    """The peer violated RFC 6455; the connection is failed with :attr:`code`."""

    code: ClassVar[int] = 1002


class InvalidPayload(ProtocolError):
    """A text payload or close reason is not valid UTF-8 (RFC 6455 §8.1)."""

    code: ClassVar[int] = 1007


class PayloadTooBig(ProtocolError):
    """A frame or message exceeds a configured size limit."""

    code: ClassVar[int] = 1009


class InvalidHandshake(WebSocketError):
    """The opening handshake failed.

    ``status`` is the HTTP status a server should answer; ``headers`` are extra
    response headers that go with it (e.g. ``Sec-WebSocket-Version: 13`` on 426).
    """

    status: int = 400

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.headers = list(headers)
        self.body = body


class InvalidMessage(InvalidHandshake):
    """The HTTP message could not be parsed, or broke a size limit."""


class InvalidMethod(InvalidHandshake):
    """The upgrade request did not use GET (RFC 6455 §4.2.1 item 1)."""

    status = 405


class InvalidHeader(InvalidHandshake):
    """A header is missing, repeated or malformed."""


class InvalidUpgrade(InvalidHeader):
    """The request does not ask for ``Upgrade: websocket`` over ``Connection: upgrade``."""

    status = 426


class InvalidVersion(InvalidHandshake):
    """Sec-WebSocket-Version is not 13 (RFC 6455 §4.4)."""

    status = 426


class InvalidOrigin(InvalidHandshake):
    """The Origin header is refused by the server's origin policy."""

    status = 403


class Unauthorized(InvalidHandshake):
    """Credentials are missing or wrong (HTTP 401)."""

    status = 401


class Forbidden(InvalidHandshake):
    """An authentication hook refused the request (HTTP 403)."""

    status = 403


class NegotiationError(InvalidHandshake):
    """Subprotocol or extension negotiation failed."""


class RequestAnswered(InvalidHandshake):
    """Server side: ``process_request`` answered the request (a redirect, a health
    check, a refusal of its own) instead of upgrading it. Logged at DEBUG only.

    ``response`` is that answer (a :class:`ws4web.http11.Response`).
    """

    def __init__(self, message: str = "", *, response: object = None, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.response = response


class InvalidStatus(InvalidHandshake):
    """Client side: the server answered with a status other than 101.

    ``status``, ``headers`` and ``body`` hold the server's response.
    """


class InvalidRedirect(InvalidStatus):
    """Client side: a redirect that is not followed — too many, from wss:// to an
    insecure URL, or without a usable ``Location``. ``status``/``headers`` are the
    redirecting response's."""


class ProxyError(InvalidHandshake):
    """Client side: the proxy refused the tunnel (``status``: 407 when it wants
    credentials, 403/502 ...) or broke the exchange."""

    status: int = 502  # Bad Gateway: what a failed tunnel amounts to


class InvalidURI(WebSocketError):
    """The URL is not a ws:// or wss:// URL the client can connect to."""


class SendQueueFull(WebSocketError):
    """A reconnecting client is offline and its bounded queue of unsent messages is
    full: this message was NOT sent and will not be (retry later, or drop it)."""


def closed_exception(code: int, reason: str, sent_code: int | None) -> ConnectionClosed:
    """The ConnectionClosed subclass that fits a received (or absent) close code."""
    normal = (1000, 1001)  # CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY
    if code in normal and (sent_code is None or sent_code in normal):
        return ConnectionClosedOK(code, reason, sent_code)
    return ConnectionClosedError(code, reason, sent_code)
