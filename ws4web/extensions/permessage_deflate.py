"""permessage-deflate (RFC 7692): the extension and its server and client negotiation factories.

Use it by passing a factory to the handshake::

    WebSocketServer(Echo, extensions=[ServerPerMessageDeflateFactory()])
    connect(url, extensions=[ClientPerMessageDeflateFactory()])

The negotiated :class:`PerMessageDeflate` compresses every data message it
sends (RSV1 on the first frame, §6) and inflates every message received with
RSV1. Inflation is bounded: a message never grows past the ``max_size`` the
protocol passes in, however small the compressed frame (a "zip bomb" is refused
with 1009 after at most ``max_size`` bytes were produced).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

from ..exceptions import NegotiationError, PayloadTooBig, ProtocolError
from ..frames import Frame, Opcode
from .base import ClientExtensionFactory, Extension, ExtensionParams, ServerExtensionFactory

__all__ = [
    "ClientPerMessageDeflateFactory",
    "PerMessageDeflate",
    "ServerPerMessageDeflateFactory",
    "inflate_bounded",
]

logger = logging.getLogger("ws4web.extensions.permessage_deflate")

NAME = "permessage-deflate"
RSV1 = 0x40

#: The empty stored block that Z_SYNC_FLUSH ends with: the sender strips it from
#: every message (§7.2.1) and the receiver appends it back (§7.2.2).
TRAILER = b"\x00\x00\xff\xff"

# Output produced per zlib call while inflating. Each call is capped, so the
# size limit is checked after at most this many bytes past it.
_INFLATE_STEP = 256 * 1024

# Below this payload size the trailer is appended to a copy of the data (one
# decompress call); above it, it is fed separately (no copy of a big payload).
_JOIN_TRAILER = 4096

# §7.1.2.1 / §7.1.2.2: "a decimal integer value without leading zeroes between 8
# to 15, inclusive". Matching exact strings rejects "09", "+9", " 9" and "0x9".
_WINDOW_VALUES = {str(bits): bits for bits in range(8, 16)}

# A server's defaults are sized for many connections (docs/compression.md, "Cost and
# defaults"): a 4 KiB window each way and memLevel 5 keep ~50 KiB per connection instead
# of ~300 KiB, and level 1 halves the CPU per message for ~20 % more bytes on the wire.
SERVER_WINDOW_BITS = 12
SERVER_MEM_LEVEL = 5
SERVER_COMPRESSION_LEVEL = 1

_SERVER_NCT = "server_no_context_takeover"
_CLIENT_NCT = "client_no_context_takeover"
_SERVER_BITS = "server_max_window_bits"
_CLIENT_BITS = "client_max_window_bits"
_KNOWN = (_SERVER_NCT, _CLIENT_NCT, _SERVER_BITS, _CLIENT_BITS)


def compressor_window_bits(window_bits: int) -> int:
    """The window zlib's compressor is created with for a negotiated window.

    zlib (1.2.9 and later) refuses a 256-byte window (8 bits) for raw deflate:
    ``compressobj(wbits=-8)`` raises ValueError. A 9-bit compressor is a safe
    stand-in, which zlib itself used to substitute silently: deflate never emits
    a match farther back than the window size minus MIN_LOOKAHEAD (262 bytes),
    so a 512-byte window produces distances of at most 250 bytes, all within the
    256-byte window the peer was promised.
    """
    return max(window_bits, 9)


def decompressor_window_bits(window_bits: int) -> int:
    # Inflating with a larger window than the peer uses is always correct; 9
    # instead of 8 also tolerates peers whose deflate maps 8 to 9 without
    # zlib's distance guarantee, at a cost of 256 bytes.
    return max(window_bits, 9)


def _check_bits(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= 15:
        raise ValueError(f"{name} must be an integer between 8 and 15, not {value!r}")


def _check_compression(compression_level: int, mem_level: int, min_size: int) -> None:
    if not -1 <= compression_level <= 9:
        raise ValueError(f"compression_level must be between -1 and 9, not {compression_level!r}")
    if not 1 <= mem_level <= 9:
        raise ValueError(f"mem_level must be between 1 and 9, not {mem_level!r}")
    if min_size < 0:
        raise ValueError(f"min_size must not be negative, not {min_size!r}")


def inflate_bounded(decompressor: zlib._Decompress, data: bytes, limit: int | None, *, trailer: bool = False) -> bytes:
    """Inflate ``data`` (then :data:`TRAILER` if ``trailer``), refusing more than ``limit`` bytes.

    zlib is asked for at most ``limit + 1`` bytes in steps of at most
    ``_INFLATE_STEP``, so memory stays proportional to the limit whatever the
    ratio of the input; PayloadTooBig is raised as soon as the output passes
    ``limit``. Corrupt deflate data raises ProtocolError: RFC 7692 does not name
    a status code, and a broken compressed stream is a framing-level failure of
    the negotiated extension, not a payload that is merely inconsistent with its
    message type (1007), so the connection is failed with 1002.
    """
    if trailer and len(data) < _JOIN_TRAILER:
        inputs: tuple[bytes, ...] = (data + TRAILER,)
    elif trailer:
        inputs = (data, TRAILER)
    else:
        inputs = (data,)
    pieces: list[bytes] = []
    size = 0
    try:
        for chunk in inputs:
            pending = chunk
            while not decompressor.eof:
                step = _INFLATE_STEP if limit is None else min(_INFLATE_STEP, limit - size + 1)
                piece = decompressor.decompress(pending, step)
                if piece:
                    size += len(piece)
                    if limit is not None and size > limit:
                        raise PayloadTooBig(f"message inflates to over {limit} bytes")
                    pieces.append(piece)
                pending = decompressor.unconsumed_tail
                # A short output with no input left means zlib needs more input.
                # A full one may leave output held inside zlib (the middle of a
                # long match): call again with the empty tail to drain it.
                if not pending and len(piece) < step:
                    break
    except zlib.error as exc:
        raise ProtocolError(f"invalid compressed data: {exc}") from exc
    if len(pieces) == 1:
        return pieces[0]
    return b"".join(pieces)


class PerMessageDeflate(Extension):
    """permessage-deflate, negotiated, on one connection.

    ``local_*`` parameters govern what this side sends, ``remote_*`` what it
    receives: a server's local window is the negotiated ``server_max_window_bits``.
    ``*_no_context_takeover`` means each message is compressed with a fresh
    LZ77 window; the zlib state is then released between messages, so an idle
    connection holds no compressor (or decompressor) at all.

    ``min_size``: data messages sent in one frame and shorter than this go out
    uncompressed (RSV1 clear, §6). :meth:`skip_next_message` does the same for
    the next message only.
    """

    name = NAME
    rsv_mask = RSV1

    def __init__(
        self,
        *,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        compression_level: int = zlib.Z_DEFAULT_COMPRESSION,
        mem_level: int = 8,
        min_size: int = 0,
    ) -> None:
        _check_bits("local_max_window_bits", local_max_window_bits)
        _check_bits("remote_max_window_bits", remote_max_window_bits)
        _check_compression(compression_level, mem_level, min_size)
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.compression_level = compression_level
        self.mem_level = mem_level
        self.min_size = min_size

        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        # Receiving: a compressed message is in progress (its later frames are
        # inflated too). Sending: the message in progress is being compressed.
        self._inflating = False
        self._deflating = False
        self._skip_next = False

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits})"
        )

    def skip_next_message(self) -> None:
        """Send the next data message uncompressed, whatever its size.

        Call it right before sending, from the thread that sends: another
        thread's send in between would take the opt-out for its own message.
        """
        self._skip_next = True

    # -- receiving -------------------------------------------------------------------

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Inflate the frames of compressed messages; ``max_size`` bounds this frame's output."""
        opcode = frame.opcode
        if opcode >= 8:
            # §6.1: the "Per-Message Compressed" bit MUST NOT be set on control frames.
            if frame.rsv1:
                raise ProtocolError("RSV1 set on a control frame")
            return frame
        if opcode is Opcode.CONTINUATION:
            # §6.1: ... nor on the non-first frames of a message.
            if frame.rsv1:
                raise ProtocolError("RSV1 set on a continuation frame")
            if not self._inflating:
                return frame  # an uncompressed message (or a sequencing error the protocol reports)
        else:
            if not frame.rsv1:
                self._inflating = False
                return frame
            self._inflating = True
            if self._decompressor is None or self.remote_no_context_takeover:
                self._decompressor = zlib.decompressobj(wbits=-decompressor_window_bits(self.remote_max_window_bits))
        decompressor = self._decompressor
        assert decompressor is not None
        data = inflate_bounded(decompressor, frame.data, max_size, trailer=frame.fin)  # §7.2.2
        if frame.fin:
            self._inflating = False
            if self.remote_no_context_takeover or decompressor.eof:
                # No window to keep: release zlib's memory until the next message.
                # A stream the peer ended with a BFINAL block (§7.2.3.4) cannot be
                # continued either; the next message starts a fresh one.
                self._decompressor = None
        return Frame(opcode, data, frame.fin, False, frame.rsv2, frame.rsv3)

    # -- sending ---------------------------------------------------------------------

    def encode(self, frame: Frame) -> Frame:
        """Compress data messages: RSV1 on the first frame, trailer stripped from the last."""
        opcode = frame.opcode
        if opcode >= 8:
            return frame
        if opcode is Opcode.CONTINUATION:
            if not self._deflating:
                return frame
        else:
            skip, self._skip_next = self._skip_next, False
            self._deflating = False
            if frame.rsv1:
                # Already compressed by the caller (send_frame): send as built,
                # with its continuations.
                return frame
            if skip or (frame.fin and len(frame.data) < self.min_size):
                return frame
            self._deflating = True
            if self._compressor is None or self.local_no_context_takeover:
                self._compressor = zlib.compressobj(
                    self.compression_level,
                    zlib.DEFLATED,
                    -compressor_window_bits(self.local_max_window_bits),
                    self.mem_level,
                )
        compressor = self._compressor
        assert compressor is not None
        # A sync flush per frame lets the peer inflate each frame as it arrives,
        # so a fragmented message streams instead of waiting for its end.
        data = compressor.compress(frame.data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if frame.fin:
            # §7.2.1: remove the 00 00 ff ff that ends the sync flush. An empty
            # message thus becomes the single byte 0x00 (§7.2.3.6).
            data = data[:-4]
            self._deflating = False
            if self.local_no_context_takeover:
                self._compressor = None
        return Frame(opcode, data, frame.fin, opcode is not Opcode.CONTINUATION, frame.rsv2, frame.rsv3)


# -- negotiation (RFC 7692 §7.1) -----------------------------------------------------------


class _InvalidParams(ValueError):
    """Parameters that break §7.1: a server declines the offer, a client fails."""


def _parse_params(params: ExtensionParams, *, offer: bool) -> dict[str, int | None]:
    """Check one offer or response (§7.1) and return its parameters by name.

    Window-bits values become ints; value-less parameters map to None.
    """
    found: dict[str, int | None] = {}
    for name, value in params:
        if name not in _KNOWN:
            raise _InvalidParams(f"unknown parameter {name!r}")
        if name in found:
            raise _InvalidParams(f"duplicate parameter {name!r}")
        if name in (_SERVER_NCT, _CLIENT_NCT):
            if value is not None:  # §7.1.1.1, §7.1.1.2: "This extension parameter has no value."
                raise _InvalidParams(f"{name} takes no value")
            found[name] = None
        elif value is None:
            # §7.1.2.2: only an offer may carry client_max_window_bits without a value.
            if name == _SERVER_BITS or not offer:
                raise _InvalidParams(f"{name} needs a value")
            found[name] = None
        else:
            bits = _WINDOW_VALUES.get(value)
            if bits is None:
                raise _InvalidParams(f"invalid {name} value {value!r}")
            found[name] = bits
    return found


def _build_params(
    server_nct: bool, client_nct: bool, server_bits: int | None, client_bits: int | bool | None
) -> ExtensionParams:
    params: ExtensionParams = []
    if server_nct:
        params.append((_SERVER_NCT, None))
    if client_nct:
        params.append((_CLIENT_NCT, None))
    if server_bits is not None:
        params.append((_SERVER_BITS, str(server_bits)))
    if client_bits is True:
        params.append((_CLIENT_BITS, None))
    elif client_bits is not None and client_bits is not False:
        params.append((_CLIENT_BITS, str(client_bits)))
    return params


def _rsv1_taken(accepted: Sequence[Extension]) -> bool:
    # permessage-deflate owns RSV1 (§6); so would another compression extension.
    return any(extension.rsv_mask & RSV1 for extension in accepted)


class ServerPerMessageDeflateFactory(ServerExtensionFactory):
    """Accept permessage-deflate offers, within the limits configured here.

    ``server_no_context_takeover``: compress every message from scratch (saves
    this side's compressor memory between messages). ``client_no_context_takeover``:
    require the same of the client (saves the decompressor). ``server_max_window_bits``
    caps the window this side compresses with; ``client_max_window_bits`` asks the
    client to cap its own, which it can only do if its offer carries that
    parameter (§7.1.2.2); otherwise the offer is accepted with a full window.
    ``None`` for either leaves that window at 15 bits. The defaults (12-bit
    windows, memLevel 5, level 1) are chosen for a server holding many
    connections; docs/compression.md gives the measured trade-off.

    An offer with unknown, duplicate or malformed parameters is declined (§7),
    so the next offer in the header gets its chance; none fails the handshake.
    """

    name = NAME

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = SERVER_WINDOW_BITS,
        client_max_window_bits: int | None = SERVER_WINDOW_BITS,
        compression_level: int = SERVER_COMPRESSION_LEVEL,
        mem_level: int = SERVER_MEM_LEVEL,
        min_size: int = 0,
    ) -> None:
        if server_max_window_bits is not None:
            _check_bits("server_max_window_bits", server_max_window_bits)
        if client_max_window_bits is not None:
            _check_bits("client_max_window_bits", client_max_window_bits)
        _check_compression(compression_level, mem_level, min_size)
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.compression_level = compression_level
        self.mem_level = mem_level
        self.min_size = min_size

    def process_request_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> tuple[ExtensionParams, Extension] | None:
        if _rsv1_taken(accepted):
            return None
        try:
            offer = _parse_params(params, offer=True)
        except _InvalidParams as exc:
            # §7: "A server MUST decline an extension negotiation offer for this
            # extension if" a parameter is unknown, invalid or repeated.
            logger.debug("declining a permessage-deflate offer: %s", exc)
            return None

        # §7.1.1.1: a server that accepts an offer with server_no_context_takeover
        # MUST include it in the response; it may also choose it on its own.
        server_nct = self.server_no_context_takeover or _SERVER_NCT in offer
        # §7.1.1.2: offered, it is the client's promise; sent, the server's demand.
        # Echoing the promise keeps the response explicit.
        client_nct = self.client_no_context_takeover or _CLIENT_NCT in offer

        # §7.1.2.1: answer with the offered value or a smaller one; a server may
        # also limit its window unasked.
        server_bits = offer.get(_SERVER_BITS)
        limit = self.server_max_window_bits
        if server_bits is not None:
            if limit is not None:
                server_bits = min(server_bits, limit)
        elif limit is not None and limit < 15:
            server_bits = limit  # 15 is the default: no need to say it

        # §7.1.2.2: the response names client_max_window_bits only if the offer
        # did, with a value no larger than an offered one.
        client_bits: int | None = None
        if _CLIENT_BITS in offer:
            offered = offer[_CLIENT_BITS]
            client_limit = self.client_max_window_bits
            if offered is None:
                client_bits = client_limit
            else:
                client_bits = offered if client_limit is None else min(offered, client_limit)

        response = _build_params(server_nct, client_nct, server_bits, client_bits)
        extension = PerMessageDeflate(
            local_no_context_takeover=server_nct,
            remote_no_context_takeover=client_nct,
            local_max_window_bits=server_bits or 15,
            remote_max_window_bits=client_bits or 15,
            compression_level=self.compression_level,
            mem_level=self.mem_level,
            min_size=self.min_size,
        )
        return response, extension


class ClientPerMessageDeflateFactory(ClientExtensionFactory):
    """Offer permessage-deflate and accept the server's answer if it is valid.

    ``server_no_context_takeover`` and ``server_max_window_bits`` are requests
    the server must grant (§7.1.1.1, §7.1.2.1), or the connection fails.
    ``client_no_context_takeover`` promises not to use context takeover.
    ``client_max_window_bits``: True (the default) offers it without a value,
    letting the server cap the client's window; an int offers that cap; None
    leaves it out, and then the server cannot ask for one.
    """

    name = NAME

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: int | bool | None = True,
        compression_level: int = zlib.Z_DEFAULT_COMPRESSION,
        mem_level: int = 8,
        min_size: int = 0,
    ) -> None:
        if server_max_window_bits is not None:
            _check_bits("server_max_window_bits", server_max_window_bits)
        if client_max_window_bits is False:
            client_max_window_bits = None
        if client_max_window_bits is not None and client_max_window_bits is not True:
            _check_bits("client_max_window_bits", client_max_window_bits)
        _check_compression(compression_level, mem_level, min_size)
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits: int | bool | None = client_max_window_bits
        self.compression_level = compression_level
        self.mem_level = mem_level
        self.min_size = min_size

    def get_request_params(self) -> ExtensionParams:
        return _build_params(
            self.server_no_context_takeover,
            self.client_no_context_takeover,
            self.server_max_window_bits,
            self.client_max_window_bits,
        )

    def process_response_params(self, params: ExtensionParams, accepted: Sequence[Extension]) -> Extension:
        # Every failure here is one RFC 7692 §7.1 says MUST fail the connection.
        if _rsv1_taken(accepted):
            raise NegotiationError("the server accepted permessage-deflate with RSV1 already in use")
        try:
            response = _parse_params(params, offer=False)
        except _InvalidParams as exc:
            raise NegotiationError(f"invalid permessage-deflate response: {exc}") from exc

        if self.server_no_context_takeover and _SERVER_NCT not in response:
            raise NegotiationError("the server ignored server_no_context_takeover")
        server_nct = _SERVER_NCT in response  # §7.1.1.1: the server may add it unasked
        client_nct = self.client_no_context_takeover or _CLIENT_NCT in response

        server_bits = response.get(_SERVER_BITS)
        if self.server_max_window_bits is not None:
            if server_bits is None:
                raise NegotiationError("the server ignored server_max_window_bits")
            if server_bits > self.server_max_window_bits:
                raise NegotiationError(
                    f"server_max_window_bits={server_bits} exceeds the offered {self.server_max_window_bits}"
                )

        client_bits = response.get(_CLIENT_BITS)
        offered = self.client_max_window_bits
        if client_bits is not None:
            if offered is None:
                raise NegotiationError("the server sent client_max_window_bits, which was not offered")
            if offered is not True and client_bits > offered:
                raise NegotiationError(f"client_max_window_bits={client_bits} exceeds the offered {offered}")
        elif offered is not None and offered is not True:
            client_bits = offered  # §7.1.2.2: the offered value binds the client anyway

        return PerMessageDeflate(
            local_no_context_takeover=client_nct,
            remote_no_context_takeover=server_nct,
            local_max_window_bits=client_bits or 15,
            remote_max_window_bits=server_bits or 15,
            compression_level=self.compression_level,
            mem_level=self.mem_level,
            min_size=self.min_size,
        )
