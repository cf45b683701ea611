"""Tests of ws4web.extensions; rfc_server is shared by the permessage-deflate tests."""

from __future__ import annotations

from ws4web.extensions.permessage_deflate import ServerPerMessageDeflateFactory


def rfc_server(**options: object) -> ServerPerMessageDeflateFactory:
    """A server factory with RFC 7692's defaults (15-bit windows) instead of ws4web's server defaults.

    The negotiation tests check the RFC's rules against these; the defaults have their own tests.
    """
    settings: dict[str, object] = {"server_max_window_bits": None, "client_max_window_bits": None, **options}
    return ServerPerMessageDeflateFactory(**settings)  # type: ignore[arg-type]
