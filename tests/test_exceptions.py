"""Tests for ws4web.exceptions: the exception tree, close codes, HTTP statuses."""

from __future__ import annotations

import pytest

from ws4web import exceptions
from ws4web.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    Forbidden,
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidMethod,
    InvalidOrigin,
    InvalidPayload,
    InvalidStatus,
    InvalidUpgrade,
    InvalidURI,
    InvalidVersion,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    Unauthorized,
    WebSocketError,
    closed_exception,
)


def test_tree() -> None:
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, WebSocketError)
        assert issubclass(cls, Exception)
    assert issubclass(ConnectionClosedOK, ConnectionClosed)
    assert issubclass(ConnectionClosedError, ConnectionClosed)
    assert issubclass(InvalidPayload, ProtocolError)
    assert issubclass(PayloadTooBig, ProtocolError)
    assert issubclass(InvalidUpgrade, InvalidHeader)
    for cls in (
        InvalidMessage,
        InvalidMethod,
        InvalidHeader,
        InvalidVersion,
        InvalidOrigin,
        Unauthorized,
        Forbidden,
        NegotiationError,
        InvalidStatus,
    ):
        assert issubclass(cls, InvalidHandshake)
    assert not issubclass(InvalidURI, InvalidHandshake)
    assert not issubclass(ProtocolError, ConnectionClosed)


def test_protocol_error_codes() -> None:
    assert ProtocolError.code == 1002
    assert InvalidPayload.code == 1007
    assert PayloadTooBig.code == 1009
    assert PayloadTooBig("big").code == 1009


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (InvalidHandshake, 400),
        (InvalidMessage, 400),
        (InvalidMethod, 405),
        (InvalidHeader, 400),
        (InvalidUpgrade, 426),
        (InvalidVersion, 426),
        (InvalidOrigin, 403),
        (Unauthorized, 401),
        (Forbidden, 403),
        (NegotiationError, 400),
    ],
)
def test_handshake_statuses(cls: type[InvalidHandshake], status: int) -> None:
    exc = cls("message")
    assert exc.status == status
    assert str(exc) == "message"
    assert exc.headers == []
    assert exc.body is None


def test_handshake_error_overrides() -> None:
    exc = InvalidMessage("too long", status=431, headers=(("Retry-After", "1"),), body=b"x")
    assert exc.status == 431
    assert exc.headers == [("Retry-After", "1")]
    assert exc.body == b"x"
    # The override is per instance, never on the class.
    assert InvalidMessage("other").status == 400
    assert InvalidStatus("answered 404", status=404).status == 404


def test_connection_closed() -> None:
    exc = ConnectionClosed(1001, "going away", 1000)
    assert (exc.code, exc.reason, exc.sent_code) == (1001, "going away", 1000)
    assert str(exc) == "connection closed with code 1001 (going away)"
    assert str(ConnectionClosed(1006)) == "connection closed with code 1006"
    assert ConnectionClosed(1006).sent_code is None
    assert exc.args == (1001, "going away")


@pytest.mark.parametrize(
    ("code", "sent", "cls"),
    [
        (1000, None, ConnectionClosedOK),
        (1000, 1000, ConnectionClosedOK),
        (1001, 1000, ConnectionClosedOK),
        (1000, 1001, ConnectionClosedOK),
        (1001, None, ConnectionClosedOK),
        (1000, 1002, ConnectionClosedError),
        (1000, 1011, ConnectionClosedError),
        (1002, 1002, ConnectionClosedError),
        (1005, 1005, ConnectionClosedError),
        (1006, None, ConnectionClosedError),
        (1006, 1000, ConnectionClosedError),
        (4000, 4000, ConnectionClosedError),
    ],
)
def test_closed_exception(code: int, sent: int | None, cls: type[ConnectionClosed]) -> None:
    exc = closed_exception(code, "r", sent)
    assert type(exc) is cls
    assert (exc.code, exc.reason, exc.sent_code) == (code, "r", sent)
