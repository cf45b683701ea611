"""The extension API: negotiation from headers, then frame transforms.

An extension is negotiated during the opening handshake by a factory, then sits
in the protocol: every received frame passes through :meth:`Extension.decode`
(last negotiated first), every sent frame through :meth:`Extension.encode` (first
negotiated first). An extension owns the RSV bits in :attr:`Extension.rsv_mask`;
an RSV bit that no negotiated extension owns is a protocol error (RFC 6455 §5.2).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..frames import Frame

__all__ = ["ClientExtensionFactory", "Extension", "ExtensionParams", "ServerExtensionFactory"]

# One extension offer or response: its parameters, in order; a value-less
# parameter has the value None (RFC 6455 §9.1).
ExtensionParams = list[tuple[str, "str | None"]]


class Extension:
    """A negotiated extension, active on one connection."""

    name: str = ""
    rsv_mask: int = 0  # 0x40 for RSV1, 0x20 for RSV2, 0x10 for RSV3

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Transform a received frame; raise PayloadTooBig past ``max_size``."""
        raise NotImplementedError

    def encode(self, frame: Frame) -> Frame:
        """Transform a frame about to be sent."""
        raise NotImplementedError

    def skip_next_message(self) -> None:
        """Leave the next message sent untransformed, where the extension allows it
        (``send(..., compress=False)``); the default does nothing."""


class ServerExtensionFactory:
    """Server side of negotiation: accept or decline one offer from the client."""

    name: str = ""

    def process_request_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> tuple[ExtensionParams, Extension] | None:
        """Accept the offer (response params and the extension) or decline it (None).

        Raise :class:`~ws4web.exceptions.NegotiationError` for an invalid offer
        that must fail the handshake; return None for one to skip.
        """
        raise NotImplementedError


class ClientExtensionFactory:
    """Client side of negotiation: make an offer, then accept the server's answer."""

    name: str = ""

    def get_request_params(self) -> ExtensionParams:
        raise NotImplementedError

    def process_response_params(self, params: ExtensionParams, accepted: Sequence[Extension]) -> Extension:
        """Accept the server's response or raise NegotiationError."""
        raise NotImplementedError
