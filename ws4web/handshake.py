"""The opening handshake rules (RFC 6455 §4), for both sides, sans I/O.

Server: :func:`check_request` validates an upgrade request, :func:`accept` builds
the 101 answer (subprotocol and extension negotiation included), :func:`reject`
turns any :class:`~ws4web.exceptions.InvalidHandshake` into the HTTP response to
send. Client: :func:`client_request` builds the request, :func:`check_response`
validates the answer. Adapters that read HTTP themselves (CherryPy, WSGI) build a
:class:`~ws4web.http11.Request` from their own objects and use the same rules.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http
import os
import re
from collections.abc import Callable, Sequence

from .auth import Authenticator, check_origin
from .exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidMethod,
    InvalidStatus,
    InvalidUpgrade,
    InvalidVersion,
    NegotiationError,
)
from .extensions.base import ClientExtensionFactory, Extension, ExtensionParams, ServerExtensionFactory
from .http11 import Headers, Request, Response

__all__ = [
    "GUID",
    "Accepted",
    "SubprotocolSelector",
    "accept",
    "accept_key",
    "check_request",
    "check_response",
    "client_request",
    "generate_key",
    "parse_extensions",
    "reject",
    "serialize_extensions",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

#: ``select_subprotocol(offered, supported)`` returns one of ``offered``, or None.
SubprotocolSelector = Callable[[Sequence[str], Sequence[str]], "str | None"]

_HTTP_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
_UPGRADE_HEADERS = (("Upgrade", "websocket"), ("Connection", "Upgrade"))


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2 item 5.4)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """A fresh random Sec-WebSocket-Key (RFC 6455 §4.1 item 7)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _single(headers: Headers, name: str) -> str | None:
    values = headers.get_all(name)
    if len(values) > 1:
        raise InvalidHeader(f"more than one {name} header")
    return values[0] if values else None


def check_request(request: Request) -> str:
    """Validate an upgrade request (RFC 6455 §4.2.1); return its Sec-WebSocket-Key."""
    if request.method != "GET":
        raise InvalidMethod(f"method {request.method} is not GET", headers=[("Allow", "GET")])
    version = _HTTP_VERSION.fullmatch(request.version)
    if version is None or (int(version[1]), int(version[2])) < (1, 1):  # §4.2.1 item 1
        raise InvalidMessage(f"{request.version} cannot upgrade to WebSocket")
    headers = request.headers
    # §4.2.1 items 3-4; tokens are case-insensitive and may sit in comma lists.
    if "websocket" not in (t.lower() for t in headers.tokens("Upgrade")):
        raise InvalidUpgrade("missing 'Upgrade: websocket'", headers=_UPGRADE_HEADERS)
    if "upgrade" not in (t.lower() for t in headers.tokens("Connection")):
        raise InvalidUpgrade("missing 'Connection: Upgrade'", headers=_UPGRADE_HEADERS)
    if headers.get("Host") is None:  # §4.2.1 item 2
        raise InvalidHeader("missing Host header")
    # An upgrade request has no body (RFC 6455 §4.1: a GET, whose body has no meaning,
    # RFC 9110 §9.3.1). Whatever follows the head is WebSocket frames, so a body would
    # be read as frames: refuse it before any 101 (request smuggling).
    if "Transfer-Encoding" in headers:
        raise InvalidHeader("a handshake request cannot have a body (Transfer-Encoding)")
    lengths = headers.get_all("Content-Length")
    if lengths and any(value.strip() != "0" for value in lengths):
        raise InvalidHeader("a handshake request cannot have a body (Content-Length)")
    key = _single(headers, "Sec-WebSocket-Key")
    if key is None:
        raise InvalidHeader("missing Sec-WebSocket-Key header")
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:  # §4.2.1 item 5
        raise InvalidHeader("Sec-WebSocket-Key is not 16 bytes in base64")
    ws_version = _single(headers, "Sec-WebSocket-Version")
    if ws_version != "13":  # §4.2.2 item 4: answer 426 and name the version we speak
        raise InvalidVersion(
            f"unsupported Sec-WebSocket-Version {ws_version!r}", headers=[("Sec-WebSocket-Version", "13")]
        )
    return key


class Accepted:
    """The outcome of a successful server handshake."""

    __slots__ = ("extensions", "response", "subprotocol")

    def __init__(self, response: Response, subprotocol: str | None, extensions: list[Extension]) -> None:
        self.response = response
        self.subprotocol = subprotocol
        self.extensions = extensions


def _first_supported(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    # The client lists its protocols by preference (§4.1 item 10); honour its order.
    for name in offered:
        if name in supported:
            return name
    return None


def accept(
    request: Request,
    *,
    subprotocols: Sequence[str] = (),
    select_subprotocol: SubprotocolSelector | None = None,
    extensions: Sequence[ServerExtensionFactory] = (),
    headers: Sequence[tuple[str, str]] = (),
    origins: Sequence[str | None] | None = None,
    authenticate: Authenticator | None = None,
) -> Accepted:
    """Validate ``request`` and build the 101 response, or raise InvalidHandshake.

    ``origins`` is the Origin allow-list (see :mod:`ws4web.auth`; None checks
    nothing); ``authenticate(request)`` may raise Unauthorized / Forbidden.
    """
    key = check_request(request)
    if origins is not None:
        check_origin(request, origins)
    if authenticate is not None:
        authenticate(request)
    response_headers = Headers(
        [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]
    )
    offered = request.headers.tokens("Sec-WebSocket-Protocol")
    subprotocol = None
    if offered and (subprotocols or select_subprotocol):
        subprotocol = (select_subprotocol or _first_supported)(offered, subprotocols)
        if subprotocol is not None:
            if subprotocol not in offered:
                raise NegotiationError(f"selected subprotocol {subprotocol!r} was not offered")
            response_headers.add("Sec-WebSocket-Protocol", subprotocol)
    accepted: list[Extension] = []
    if extensions:
        answers: list[tuple[str, ExtensionParams]] = []
        for name, params in parse_extensions(request.headers.get_all("Sec-WebSocket-Extensions")):
            for factory in extensions:
                if factory.name != name or any(e.name == name for e in accepted):
                    continue
                result = factory.process_request_params(params, accepted)
                if result is not None:
                    response_params, extension = result
                    accepted.append(extension)
                    answers.append((name, response_params))
                    break
        if answers:
            response_headers.add("Sec-WebSocket-Extensions", serialize_extensions(answers))
    for name, value in headers:
        response_headers.add(name, value)
    return Accepted(Response(101, "Switching Protocols", response_headers), subprotocol, accepted)


def reject(exc: InvalidHandshake) -> Response:
    """The HTTP response that refuses a handshake with ``exc.status``."""
    status = exc.status
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    body = exc.body if exc.body is not None else f"{status} {reason}: {exc}\n".encode()
    headers = Headers(exc.headers)
    headers.add("Content-Type", "text/plain; charset=utf-8")
    headers.add("Content-Length", str(len(body)))
    headers.add("Connection", "close")
    return Response(status, reason, headers, body)


def client_request(
    host: str,
    path: str,
    key: str,
    *,
    subprotocols: Sequence[str] = (),
    extensions: Sequence[ClientExtensionFactory] = (),
    headers: Sequence[tuple[str, str]] = (),
) -> Request:
    """The upgrade request a client sends (RFC 6455 §4.1)."""
    request_headers = Headers(
        [
            ("Host", host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
        ]
    )
    if subprotocols:
        request_headers.add("Sec-WebSocket-Protocol", ", ".join(subprotocols))
    if extensions:
        offers = [(f.name, f.get_request_params()) for f in extensions]
        request_headers.add("Sec-WebSocket-Extensions", serialize_extensions(offers))
    for name, value in headers:
        _check_header(name, value)
        request_headers.add(name, value)
    return Request("GET", path, request_headers)


def _check_header(name: str, value: str) -> None:
    """Refuse a header that would not survive the wire as given (RFC 9110 §5.1, §5.5):
    a CR or LF in it would smuggle in another header; other characters could not
    be encoded."""
    if not re.fullmatch(_EXT_TOKEN, name):
        raise ValueError(f"invalid header name {name!r}")
    if any(c in value for c in "\r\n\0") or not all(c == "\t" or " " <= c <= "\xff" for c in value):
        raise ValueError(f"invalid value for header {name}: {value!r}")


def check_response(
    response: Response,
    key: str,
    *,
    subprotocols: Sequence[str] = (),
    extensions: Sequence[ClientExtensionFactory] = (),
) -> tuple[str | None, list[Extension]]:
    """Validate the server's answer (RFC 6455 §4.1, client steps 1-6)."""
    if response.status != 101:
        raise InvalidStatus(
            f"server answered {response.status} {response.reason}",
            status=response.status,
            headers=response.headers.items(),
            body=response.body,
        )
    headers = response.headers
    if "websocket" not in (t.lower() for t in headers.tokens("Upgrade")):
        raise InvalidHeader("response lacks 'Upgrade: websocket'")
    if "upgrade" not in (t.lower() for t in headers.tokens("Connection")):
        raise InvalidHeader("response lacks 'Connection: Upgrade'")
    if _single(headers, "Sec-WebSocket-Accept") != accept_key(key):
        raise InvalidHeader("wrong or missing Sec-WebSocket-Accept")
    subprotocol = None
    chosen = headers.tokens("Sec-WebSocket-Protocol")
    if chosen:
        if len(chosen) > 1 or chosen[0] not in subprotocols:  # §4.1 step 6
            raise NegotiationError(f"server selected an unoffered subprotocol: {', '.join(chosen)}")
        subprotocol = chosen[0]
    accepted: list[Extension] = []
    for name, params in parse_extensions(headers.get_all("Sec-WebSocket-Extensions")):
        candidates = [factory for factory in extensions if factory.name == name]
        if not candidates:  # §4.1 step 5: an extension we did not offer fails the connection
            raise NegotiationError(f"server accepted an unoffered extension {name!r}")
        # Several offers of one extension are fallbacks: the response answers one of them.
        for factory in candidates:
            try:
                accepted.append(factory.process_response_params(params, accepted))
                break
            except NegotiationError:
                if factory is candidates[-1]:
                    raise
    return subprotocol, accepted


# RFC 6455 §9.1: extension-list = 1#( token *( ";" token [ "=" ( token | quoted-string ) ] ) )
_EXT_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_EXT_PARAM = re.compile(rf'\s*({_EXT_TOKEN})\s*(?:=\s*(?:({_EXT_TOKEN})|"((?:[^"\\]|\\.)*)"))?\s*')


def parse_extensions(values: Sequence[str]) -> list[tuple[str, ExtensionParams]]:
    """Parse Sec-WebSocket-Extensions header values into (name, params) offers."""
    result: list[tuple[str, ExtensionParams]] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            if not element.strip():
                continue
            parts = _split_outside_quotes(element, ";")
            name = parts[0].strip()
            if not re.fullmatch(_EXT_TOKEN, name):
                raise InvalidHeader(f"malformed Sec-WebSocket-Extensions: {value!r}")
            params: ExtensionParams = []
            for part in parts[1:]:
                match = _EXT_PARAM.fullmatch(part)
                if match is None:
                    raise InvalidHeader(f"malformed Sec-WebSocket-Extensions: {value!r}")
                pname, token, quoted = match.groups()
                pvalue = (
                    token if token is not None else (re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else None)
                )
                if quoted is not None and not re.fullmatch(_EXT_TOKEN, pvalue or ""):
                    # §9.1: a quoted value must still be a token once unquoted
                    raise InvalidHeader(f"malformed Sec-WebSocket-Extensions: {value!r}")
                params.append((pname, pvalue))
            result.append((name, params))
    return result


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def serialize_extensions(extensions: Sequence[tuple[str, ExtensionParams]]) -> str:
    return ", ".join(
        "; ".join([name] + [k if v is None else f"{k}={v}" for k, v in params]) for name, params in extensions
    )
