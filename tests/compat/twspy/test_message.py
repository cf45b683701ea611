"""twspy's messages: ws4web messages with ``payload`` and ``frame()``."""

from __future__ import annotations

import ws4web
import ws4web.compat.twspy as twspy
from ws4web.compat.twspy.message import twspy_message
from ws4web.frames import Opcode


def test_payload_and_frame() -> None:
    text = twspy.TextMessage("héllo")
    assert isinstance(text, ws4web.TextMessage) and text.payload == "héllo" and text.data == "héllo".encode()
    assert (text.frame().opcode, text.frame().payload) == (Opcode.TEXT, "héllo".encode())
    binary = twspy.BinaryMessage(bytearray(b"\x00\xff"))
    assert isinstance(binary, ws4web.BinaryMessage) and binary.payload == b"\x00\xff"
    assert [f.payload for f in binary.fragment(1)] == [b"\x00", b"\xff"]
    assert twspy.Message is ws4web.Message


def test_received_messages_become_twspy_messages() -> None:
    received = twspy_message(ws4web.TextMessage(b"caf\xc3\xa9"))
    assert isinstance(received, twspy.TextMessage) and received.payload == "café"
    data = b"\x01" * 10
    binary = twspy_message(ws4web.BinaryMessage(data))
    assert isinstance(binary, twspy.BinaryMessage) and binary.payload is data  # not copied
