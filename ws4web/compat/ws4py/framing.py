"""``ws4py.framing``: the opcode constants (members of :class:`~ws4web.frames.Opcode`, which are ints).

ws4py's ``Frame`` class has no alias: ws4web's :class:`~ws4web.frames.Frame`
takes ``(opcode, data, fin, rsv1, rsv2, rsv3)`` and masks by the connection's
side (see docs/migrating-from-ws4py.md).
"""

from __future__ import annotations

from ...frames import Opcode

__all__ = ["OPCODE_BINARY", "OPCODE_CLOSE", "OPCODE_CONTINUATION", "OPCODE_PING", "OPCODE_PONG", "OPCODE_TEXT"]

OPCODE_CONTINUATION = Opcode.CONTINUATION
OPCODE_TEXT = Opcode.TEXT
OPCODE_BINARY = Opcode.BINARY
OPCODE_CLOSE = Opcode.CLOSE
OPCODE_PING = Opcode.PING
OPCODE_PONG = Opcode.PONG
