"""The extension API (RFC 6455 §9) and the extensions ws4web ships."""

from .base import ClientExtensionFactory, Extension, ServerExtensionFactory

__all__ = ["ClientExtensionFactory", "Extension", "ServerExtensionFactory"]
