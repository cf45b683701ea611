"""Who may open a WebSocket: the Origin policy and authentication hooks, sans I/O.

Both run inside :func:`ws4web.handshake.accept`, after the request passed the
RFC 6455 checks, so every adapter applies them the same way.

**Cross-site WebSocket hijacking.** Browsers send cookies and HTTP credentials with
a WebSocket handshake to any site, whatever page opened it, and the same-origin
policy does not apply to WebSockets. A server that authenticates by cookie must
therefore check ``Origin`` or any web page can act as the logged-in user. ws4web
does not check Origin by default, because non-browser clients send none and only
the application knows its own origins; pass ``origins=[...]`` (exact origins or
``fnmatch`` patterns such as ``"https://*.example.com"``) whenever browsers
connect with ambient credentials.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
from collections.abc import Callable, Mapping, Sequence

from .exceptions import InvalidOrigin, Unauthorized
from .http11 import Request

__all__ = ["Authenticator", "basic_auth", "check_origin"]

#: ``authenticate(request)`` returns None to let the request through, or raises
#: Unauthorized (401) / Forbidden (403) / any InvalidHandshake with its status and body.
Authenticator = Callable[[Request], None]


def check_origin(request: Request, origins: Sequence[str | None]) -> None:
    """Raise InvalidOrigin (403) unless the request's Origin matches ``origins``.

    ``None`` in ``origins`` admits requests without an Origin header (non-browser
    clients). Origins compare case-insensitively (RFC 6454 §6.2 serializes them in
    lower case).
    """
    values = request.headers.get_all("Origin")
    if len(values) > 1:
        raise InvalidOrigin("more than one Origin header")
    origin = values[0].lower() if values else None
    for allowed in origins:
        if allowed is None:
            if origin is None:
                return
        elif origin is not None and fnmatch.fnmatchcase(origin, allowed.lower()):
            return
    raise InvalidOrigin(f"origin {origin!r} is not allowed")


def basic_auth(
    credentials: Mapping[str, str] | Callable[[str, str], bool], realm: str = "ws4web"
) -> Authenticator:
    """An authenticator for HTTP Basic credentials (RFC 7617).

    ``credentials`` maps user names to passwords, or is a ``check(user, password)``
    callable. Passwords are compared in constant time.
    """

    def check(user: str, password: str) -> bool:
        if callable(credentials):
            return bool(credentials(user, password))
        expected = credentials.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    challenge = [("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"')]

    def authenticate(request: Request) -> None:
        header = request.headers.get("Authorization")
        if header is None:
            raise Unauthorized("missing credentials", headers=challenge)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthorized("unsupported authorization scheme", headers=challenge)
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError):  # ValueError: non-ASCII in the token
            raise Unauthorized("malformed credentials", headers=challenge) from None
        if not sep or not check(user, password):
            raise Unauthorized("invalid credentials", headers=challenge)

    return authenticate
