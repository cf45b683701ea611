"""ws4web.compat.ws4py's top level and its alias modules: ws4py's names, bound to ws4web's objects."""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
from pathlib import Path

import pytest

import ws4web
from ws4web import testing
from ws4web.compat import ws4py
from ws4web.compat.ws4py import exc, framing, messaging, websocket
from ws4web.frames import Opcode
from ws4web.handshake import accept_key


def test_constants() -> None:
    # WS_KEY is the GUID of the accept computation (RFC 6455 §1.3).
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    assert base64.b64encode(hashlib.sha1(key.encode() + ws4py.WS_KEY).digest()).decode() == accept_key(key)
    assert ws4py.WS_VERSION == (13,)


def test_configure_logger_routes_ws4web_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ws.log"
    logger = ws4py.configure_logger(stdout=True, filepath=str(path), level=logging.DEBUG)
    try:
        assert logger is logging.getLogger("ws4web")
        logging.getLogger("ws4web.server").debug("a record from a ws4web module")
        assert "DEBUG a record from a ws4web module" in capsys.readouterr().out
        assert "a record from a ws4web module" in path.read_text()
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(logging.NOTSET)


def test_format_addresses() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        b = socket.create_connection(listener.getsockname())
        a, _ = listener.accept()
    with a, b:
        ws = ws4web.WebSocket(a)
        local, peer = a.getsockname(), a.getpeername()
        assert ws4py.format_addresses(ws) == f"[Local => {local[0]}:{local[1]} | Remote => {peer[0]}:{peer[1]}]"
    assert ws4py.format_addresses(ws4web.WebSocket(None)) == "[Bound to None]"


def test_aliases_are_ws4web_objects() -> None:
    assert websocket.WebSocket is ws4web.WebSocket
    assert messaging.TextMessage is ws4web.TextMessage and messaging.BinaryMessage is ws4web.BinaryMessage
    assert messaging.PongControlMessage is ws4web.PongControlMessage
    assert exc.HandshakeError is ws4web.InvalidHandshake
    assert exc.WebSocketException is ws4web.WebSocketError
    assert exc.StreamClosed is ws4web.ConnectionClosed
    assert issubclass(exc.FrameTooLargeException, exc.ProtocolException)
    assert (framing.OPCODE_TEXT, framing.OPCODE_BINARY, framing.OPCODE_PONG) == (1, 2, 10)
    assert framing.OPCODE_CLOSE is Opcode.CLOSE


@pytest.mark.parametrize("door", ["server", "blocking"])
def test_echo_websocket_keeps_the_type(door: str) -> None:
    with testing.connect(websocket.EchoWebSocket, door=door) as ws:
        ws.send("text")
        assert ws.recv() == ws4web.TextMessage("text")
        ws.send(b"\x00\xff")
        assert ws.recv() == ws4web.BinaryMessage(b"\x00\xff")
