"""deflate-frame / x-webkit-deflate-frame: the older per-frame compression draft, as an API example.

This is draft-tyoshino-hybi-websocket-perframe-deflate, which browsers spoke
before RFC 7692 replaced it: every data frame, continuation frames included, is
compressed on its own and flagged with RSV1; the LZ77 window carries over from
frame to frame unless ``no_context_takeover`` was negotiated. Two parameters
exist, each a request to the peer: ``max_window_bits=N`` (cap your window) and
``no_context_takeover`` (reset your window after each frame). New code should use
:mod:`ws4web.extensions.permessage_deflate`; this module mainly shows how an
extension plugs into :mod:`ws4web.extensions.base`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from ..exceptions import NegotiationError, ProtocolError
from ..frames import Frame
from .base import ClientExtensionFactory, Extension, ExtensionParams, ServerExtensionFactory
from .permessage_deflate import RSV1, compressor_window_bits, decompressor_window_bits, inflate_bounded

__all__ = ["ClientDeflateFrameFactory", "DeflateFrame", "ServerDeflateFrameFactory"]

NAMES = ("deflate-frame", "x-webkit-deflate-frame")
_WINDOW_VALUES = {str(bits): bits for bits in range(8, 16)}


class DeflateFrame(Extension):
    """Per-frame deflate on one connection.

    ``local_*`` settings govern the frames this side compresses, ``remote_*``
    the frames it inflates. Frames shorter than ``min_size`` go out plain.
    """

    rsv_mask = RSV1

    def __init__(
        self,
        name: str = NAMES[0],
        *,
        local_no_context_takeover: bool = False,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        compression_level: int = zlib.Z_DEFAULT_COMPRESSION,
        mem_level: int = 8,
        min_size: int = 0,
    ) -> None:
        self.name = name
        self.local_no_context_takeover = local_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.compression_level = compression_level
        self.mem_level = mem_level
        self.min_size = min_size
        self._compressor: zlib._Compress | None = None
        # The peer's no_context_takeover is invisible on the wire, so inflating
        # always keeps the window: that is correct for either choice of the peer.
        self._decompressor = zlib.decompressobj(wbits=-decompressor_window_bits(remote_max_window_bits))

    def __repr__(self) -> str:
        return (
            f"DeflateFrame({self.name!r}, local_no_context_takeover={self.local_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, remote_max_window_bits={self.remote_max_window_bits})"
        )

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if not frame.rsv1:
            return frame
        if frame.is_control:
            raise ProtocolError("RSV1 set on a control frame")
        if self._decompressor.eof:  # the peer ended its stream with a final block
            self._decompressor = zlib.decompressobj(wbits=-decompressor_window_bits(self.remote_max_window_bits))
        data = inflate_bounded(self._decompressor, frame.data, max_size, trailer=True)
        return Frame(frame.opcode, data, frame.fin, False, frame.rsv2, frame.rsv3)

    def encode(self, frame: Frame) -> Frame:
        if frame.is_control or frame.rsv1 or len(frame.data) < self.min_size:
            return frame
        if self._compressor is None:
            self._compressor = zlib.compressobj(
                self.compression_level,
                zlib.DEFLATED,
                -compressor_window_bits(self.local_max_window_bits),  # 8 bits: see permessage_deflate
                self.mem_level,
            )
        data = self._compressor.compress(frame.data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.local_no_context_takeover:
            self._compressor = None
        return Frame(frame.opcode, data[:-4], frame.fin, True, frame.rsv2, frame.rsv3)


def _parse(params: ExtensionParams) -> tuple[bool, int | None]:
    """(no_context_takeover, max_window_bits) from an offer or a response; ValueError if invalid."""
    no_context_takeover = False
    max_window_bits: int | None = None
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            raise ValueError(f"duplicate parameter {name!r}")
        seen.add(name)
        if name == "no_context_takeover" and value is None:
            no_context_takeover = True
        elif name == "max_window_bits" and value in _WINDOW_VALUES:
            max_window_bits = _WINDOW_VALUES[value]
        else:
            raise ValueError(f"invalid parameter {name}={value!r}")
    return no_context_takeover, max_window_bits


def _request(no_context_takeover: bool, max_window_bits: int | None) -> ExtensionParams:
    params: ExtensionParams = []
    if max_window_bits is not None:
        params.append(("max_window_bits", str(max_window_bits)))
    if no_context_takeover:
        params.append(("no_context_takeover", None))
    return params


class ServerDeflateFrameFactory(ServerExtensionFactory):
    """Accept deflate-frame offers; ask the client for ``no_context_takeover`` / ``max_window_bits``."""

    def __init__(
        self,
        name: str = NAMES[0],
        *,
        no_context_takeover: bool = False,
        max_window_bits: int | None = None,
        compression_level: int = zlib.Z_DEFAULT_COMPRESSION,
        mem_level: int = 8,
        min_size: int = 0,
    ) -> None:
        self.name = name
        self.no_context_takeover = no_context_takeover
        self.max_window_bits = max_window_bits
        self.compression_level = compression_level
        self.mem_level = mem_level
        self.min_size = min_size

    def process_request_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> tuple[ExtensionParams, Extension] | None:
        if any(extension.rsv_mask & RSV1 for extension in accepted):
            return None
        try:
            their_nct, their_bits = _parse(params)
        except ValueError:
            return None  # decline; a later offer may be acceptable
        extension = DeflateFrame(
            self.name,
            local_no_context_takeover=their_nct,
            local_max_window_bits=their_bits or 15,
            remote_max_window_bits=self.max_window_bits or 15,
            compression_level=self.compression_level,
            mem_level=self.mem_level,
            min_size=self.min_size,
        )
        return _request(self.no_context_takeover, self.max_window_bits), extension


class ClientDeflateFrameFactory(ClientExtensionFactory):
    """Offer deflate-frame; ask the server for ``no_context_takeover`` / ``max_window_bits``."""

    def __init__(
        self,
        name: str = NAMES[0],
        *,
        no_context_takeover: bool = False,
        max_window_bits: int | None = None,
        compression_level: int = zlib.Z_DEFAULT_COMPRESSION,
        mem_level: int = 8,
        min_size: int = 0,
    ) -> None:
        self.name = name
        self.no_context_takeover = no_context_takeover
        self.max_window_bits = max_window_bits
        self.compression_level = compression_level
        self.mem_level = mem_level
        self.min_size = min_size

    def get_request_params(self) -> ExtensionParams:
        return _request(self.no_context_takeover, self.max_window_bits)

    def process_response_params(self, params: ExtensionParams, accepted: Sequence[Extension]) -> Extension:
        if any(extension.rsv_mask & RSV1 for extension in accepted):
            raise NegotiationError(f"the server accepted {self.name} with RSV1 already in use")
        try:
            their_nct, their_bits = _parse(params)
        except ValueError as exc:
            raise NegotiationError(f"invalid {self.name} response: {exc}") from exc
        return DeflateFrame(
            self.name,
            local_no_context_takeover=their_nct,
            local_max_window_bits=their_bits or 15,
            remote_max_window_bits=self.max_window_bits or 15,
            compression_level=self.compression_level,
            mem_level=self.mem_level,
            min_size=self.min_size,
        )
