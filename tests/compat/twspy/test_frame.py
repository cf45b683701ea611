"""twspy's Frame and ControlFrame: constructor, payload, pack(), fragment(), unpack_close(); the constants."""

from __future__ import annotations

import pytest

import ws4web.compat.twspy as twspy
from ws4web.frames import Close, CloseCode, Frame, Opcode


def test_frame_is_a_ws4web_frame() -> None:
    frame = twspy.Frame(twspy.OPCODE_TEXT, "héllo", masking_key=b"abcd", mask=True, final=False, rsv1=True)
    assert isinstance(frame, Frame)
    assert (frame.opcode, frame.payload, frame.data, frame.final, frame.fin, frame.rsv1) == (
        Opcode.TEXT, "héllo".encode(), "héllo".encode(), False, False, True
    )  # fmt: skip
    # pack(): unmasked, as a server sends it (a client's connection masks what it sends).
    assert twspy.Frame(twspy.OPCODE_BINARY, b"\x01\x02").pack() == b"\x82\x02\x01\x02"
    assert str(twspy.Frame(twspy.OPCODE_PING, b"x")) == "<Frame opcode=0x9 len=1>"


def test_fragment() -> None:
    frames = twspy.Frame(twspy.OPCODE_TEXT, "abcdefg").fragment(3)
    assert [(f.opcode, f.payload, f.final) for f in frames] == [
        (Opcode.TEXT, b"abc", False),
        (Opcode.CONTINUATION, b"def", False),
        (Opcode.CONTINUATION, b"g", True),
    ]
    with pytest.raises(TypeError):
        twspy.ControlFrame(twspy.OPCODE_PING, b"x").fragment(1)


def test_unpack_close() -> None:
    assert twspy.ControlFrame(twspy.OPCODE_CLOSE, Close(1001, "bye").serialize()).unpack_close() == (1001, "bye")
    assert twspy.ControlFrame(twspy.OPCODE_CLOSE, b"").unpack_close() == (None, "")


def test_constants() -> None:
    assert (twspy.OPCODE_CONTINUATION, twspy.OPCODE_TEXT, twspy.OPCODE_BINARY) == (0, 1, 2)
    assert (twspy.OPCODE_CLOSE, twspy.OPCODE_PING, twspy.OPCODE_PONG) == (8, 9, 10)
    codes = [
        twspy.CLOSE_NORMAL, twspy.CLOSE_GOING_AWAY, twspy.CLOSE_PROTOCOL_ERROR, twspy.CLOSE_NOACCEPT_DTYPE,
        twspy.CLOSE_INVALID_DATA, twspy.CLOSE_POLICY, twspy.CLOSE_MESSAGE_TOOBIG, twspy.CLOSE_MISSING_EXTENSIONS,
        twspy.CLOSE_UNABLE,
    ]  # fmt: skip
    assert codes == [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011]
    assert twspy.CLOSE_UNABLE is CloseCode.INTERNAL_ERROR
