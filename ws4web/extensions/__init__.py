"""The extension API (RFC 6455 §9) and the extensions ws4web ships."""

from .base import ClientExtensionFactory, Extension, ServerExtensionFactory
from .permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate, ServerPerMessageDeflateFactory

__all__ = [
    "ClientExtensionFactory",
    "ClientPerMessageDeflateFactory",
    "Extension",
    "PerMessageDeflate",
    "ServerExtensionFactory",
    "ServerPerMessageDeflateFactory",
]
