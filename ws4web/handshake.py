"""The opening handshake rules (RFC 6455 §4), for both sides, sans I/O.

Server: :func:`check_request` validates an upgrade request, :func:`accept` builds
the 101 answer (subprotocol and extension negotiation included), :func:`reject`
turns any :class:`~ws4web.exceptions.InvalidHandshake` into the HTTP response to
send. Client: :func:`client_request` builds the request (refusing, with
ValueError, anything that would not reach the wire as given: see
:func:`check_client_offer`), :func:`check_response` validates the answer.
Adapters that read HTTP themselves (CherryPy, WSGI) build a
:class:`~ws4web.http11.Request` from their own objects and use the same rules.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http
import ipaddress
import os
import re
from collections.abc import Callable, Sequence

from .auth import Authenticator, Origins, check_origin
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
    "check_client_offer",
    "check_host",
    "check_request",
    "check_response",
    "check_target",
    "client_request",
    "generate_key",
    "parse_extensions",
    "quote_target",
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
    """The one value of a header that must not repeat. A comma counts as a repeat:
    WSGI and ASGI servers join repeated fields into one comma-separated value
    (RFC 9110 §5.3), and none of these values (a base64 key or accept value, a
    version number) can hold a comma itself."""
    values = headers.get_all(name)
    if len(values) > 1 or (values and "," in values[0]):
        raise InvalidHeader(f"more than one {name} header")
    return values[0] if values else None


def check_version(request: Request) -> None:
    """RFC 6455 §4.2.1 item 1: an upgrade needs HTTP/1.1 or later."""
    version = _HTTP_VERSION.fullmatch(request.version)
    if version is None or (int(version[1]), int(version[2])) < (1, 1):
        raise InvalidMessage(f"{request.version} cannot upgrade to WebSocket")


def check_host_field(request: Request) -> None:
    """RFC 6455 §4.2.1 item 2: a Host header field."""
    if request.headers.get("Host") is None:
        raise InvalidHeader("missing Host header")


def check_request(request: Request) -> str:
    """Validate an upgrade request (RFC 6455 §4.2.1); return its Sec-WebSocket-Key."""
    if request.method != "GET":
        raise InvalidMethod(f"method {request.method} is not GET", headers=[("Allow", "GET")])
    check_version(request)
    headers = request.headers
    # §4.2.1 items 3-4; tokens are case-insensitive and may sit in comma lists.
    if "websocket" not in (t.lower() for t in headers.tokens("Upgrade")):
        raise InvalidUpgrade("missing 'Upgrade: websocket'", headers=_UPGRADE_HEADERS)
    if "upgrade" not in (t.lower() for t in headers.tokens("Connection")):
        raise InvalidUpgrade("missing 'Connection: Upgrade'", headers=_UPGRADE_HEADERS)
    check_host_field(request)
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
    origins: Origins | None = None,
    authenticate: Authenticator | None = None,
) -> Accepted:
    """Validate ``request`` and build the 101 response, or raise InvalidHandshake.

    ``origins`` is the Origin allow-list (an :class:`~ws4web.auth.OriginPolicy`
    or its entries; None checks nothing); ``authenticate(request)`` may raise Unauthorized / Forbidden.
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
    """The upgrade request a client sends (RFC 6455 §4.1).

    ``host`` is the Host header (``name``, ``name:port``, ``[v6]:port``); ``path``
    the origin-form request target, already percent-encoded (:func:`quote_target`).
    ValueError for anything that could not go on the wire as given, before a
    byte is written: see :func:`check_client_offer` and :func:`check_target`.
    """
    check_target(path)
    _check_host_header(host)
    offers = check_client_offer(subprotocols, extensions, headers)
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
    if offers:
        request_headers.add("Sec-WebSocket-Extensions", offers)
    for name, value in headers:
        request_headers.add(name, value)
    return Request("GET", path, request_headers)


def check_client_offer(
    subprotocols: Sequence[str] = (),
    extensions: Sequence[ClientExtensionFactory] = (),
    headers: Sequence[tuple[str, str]] = (),
) -> str:
    """Check what a client is about to offer; return the Sec-WebSocket-Extensions value ("" for none).

    ValueError unless every subprotocol is a token, once (RFC 6455 §4.1 item 10:
    a comma, space or CR/LF in one would forge another protocol or another
    header), every extension name and parameter serializes as tokens
    (:func:`serialize_extensions`), and every header name is a token and its
    value free of CR, LF, NUL and other characters that cannot be sent
    (RFC 9110 §5.1, §5.5). :func:`ws4web.client.connect` calls it before
    connecting, :func:`client_request` again when it builds the request.
    """
    if isinstance(subprotocols, str):
        raise ValueError(f"subprotocols must be a list of names, not the string {subprotocols!r}")
    # The messages name no value: a subprotocol or a header may carry a token, and
    # these errors end up in logs (ReconnectingClient logs why it gave up).
    for index, name in enumerate(subprotocols):
        if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
            raise ValueError(
                f"invalid subprotocol #{index + 1}: must be an RFC 9110 token (no space, comma, quote, CR or LF)"
            )
    if len(set(subprotocols)) != len(subprotocols):
        raise ValueError("invalid subprotocols: one is offered twice")  # §4.1 item 10: unique
    for name, value in headers:
        _check_header(name, value)
    return serialize_extensions([(f.name, f.get_request_params()) for f in extensions]) if extensions else ""


def _check_header(name: str, value: str) -> None:
    """Refuse a header that would not survive the wire as given (RFC 9110 §5.1, §5.5):
    a CR or LF in it would smuggle in another header; other characters could not
    be encoded."""
    if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    if not isinstance(value, str) or not _FIELD_VALUE.fullmatch(value):
        raise ValueError(
            f"invalid value for header {name}: it has CR, LF, NUL or another character that cannot be sent"
        )


# RFC 9110 §5.5 field-value: VCHAR, obs-text (latin-1 high half), SP and HTAB; no CR, LF, NUL or other CTL.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")

# RFC 3986 §3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ). Anything else
# (space, CR, LF, "/", "@" ...) would let a host name inject into a request line or
# header. pct-encoded is left out: no DNS name has a "%", and "exa%20mple" or "a%0D%0Ab"
# is a broken or hostile name, not one to look up.
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=]+")
_PORT = re.compile(r"[0-9]{1,5}")


def check_host(host: str) -> str:
    """``host`` (a name, an IPv4 address, or an IPv6 address with or without
    brackets) without brackets, or ValueError if it could break a request line or
    a Host header: a name must be an RFC 3986 reg-name without ``%`` escapes
    (ASCII: IDNA-encode first)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r}") from None
    elif not _REG_NAME.fullmatch(host):
        raise ValueError(f"invalid host name {host!r}")
    return host


def _check_host_header(value: str) -> None:
    host, port = value, ""
    if value.startswith("["):
        host, _, rest = value.partition("]")
        host += "]"
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid Host {value!r}")
            port = rest[1:]
    elif ":" in value:
        host, _, port = value.rpartition(":")
        if ":" in host:
            raise ValueError(f"invalid Host {value!r}: an IPv6 address needs brackets")
    if port and not _PORT.fullmatch(port):
        raise ValueError(f"invalid port in Host {value!r}")
    check_host(host)


# RFC 9112 §3.2.1 origin-form = absolute-path [ "?" query ]; RFC 3986 §3.3-3.4:
# pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; the query adds "/" and "?".
_TARGET_CHARS = "A-Za-z0-9\\-._~!$&'()*+,;=:@/?"
_TARGET = re.compile(rf"/(?:[{_TARGET_CHARS}]|%[0-9A-Fa-f]{{2}})*")
# What quote_target encodes: a "%" that starts no escape, and every character outside the set.
_TARGET_UNSAFE = re.compile(rf"%(?![0-9A-Fa-f]{{2}})|[^{_TARGET_CHARS}%]+")


def check_target(target: str) -> None:
    """ValueError unless ``target`` is an origin-form request target (``/path?query``)
    made only of the characters RFC 3986 allows there: a space, NUL, VT, CR/LF or
    non-ASCII character in it would split or corrupt the request line."""
    if not _TARGET.fullmatch(target):
        raise ValueError(f"invalid request target {target!r}: percent-encode it (ws4web.handshake.quote_target)")


def quote_target(target: str) -> str:
    """``target`` with every character RFC 3986 does not allow in a path or query
    (space, controls, ``"<>\\^`{|}[]``, non-ASCII, a ``%`` that starts no escape)
    percent-encoded as UTF-8; existing ``%XX`` escapes are kept, so it is idempotent.
    UnicodeEncodeError (a ValueError) for a lone surrogate."""
    return _TARGET_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), target)


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


# RFC 9110 §5.6.2 token; RFC 6455 §9.1: extension-list = 1#( token *( ";" token [ "=" ( token | quoted-string ) ] ) )
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_TOKEN_RE = re.compile(_TOKEN)
_OWS = r"[ \t]*"
# Every pattern below consumes what it matches and is tried once per position: the
# parse is linear in the header's length (no character-by-character loop in Python).
_LIST_SEPARATORS = re.compile(r"[ \t,]*")  # RFC 9110 §5.6.1: recipients accept empty list elements
_EXT_NAME = re.compile(rf"{_OWS}({_TOKEN}){_OWS}")
_EXT_PARAM = re.compile(
    rf'{_OWS};{_OWS}({_TOKEN}){_OWS}(?:={_OWS}(?:({_TOKEN})|"((?:[^"\\]|\\.)*)"){_OWS})?', re.DOTALL
)
# §9.1: a quoted value must be a token once unquoted, so a quoted-pair can only
# escape a token character (never "\\" itself): dropping every "\\" unquotes it.
_QUOTED_TOKEN = re.compile(r"(?:\\?[-!#$%&'*+.^_`|~0-9a-zA-Z])+")


def parse_extensions(values: Sequence[str]) -> list[tuple[str, ExtensionParams]]:
    """Parse Sec-WebSocket-Extensions header values into (name, params) offers.

    InvalidHeader for anything outside the RFC 6455 §9.1 grammar, including a
    quoted value that is not a token once unquoted.
    """
    result: list[tuple[str, ExtensionParams]] = []
    for value in values:
        end = len(value)
        pos = _skip(_LIST_SEPARATORS, value, 0)
        while pos < end:
            match = _EXT_NAME.match(value, pos)
            if match is None:
                raise _malformed_extensions(value, pos)
            name = match[1]
            pos = match.end()
            params: ExtensionParams = []
            while (param := _EXT_PARAM.match(value, pos)) is not None:
                pname, token, quoted = param.groups()
                if quoted is not None:
                    if not _QUOTED_TOKEN.fullmatch(quoted):
                        raise _malformed_extensions(value, param.start(3))
                    token = quoted.replace("\\", "")
                params.append((pname, token))
                pos = param.end()
            if pos < end and value[pos] != ",":
                raise _malformed_extensions(value, pos)
            pos = _skip(_LIST_SEPARATORS, value, pos)
            result.append((name, params))
    return result


def _skip(pattern: re.Pattern[str], text: str, pos: int) -> int:
    match = pattern.match(text, pos)
    return match.end() if match is not None else pos


def _malformed_extensions(value: str, pos: int) -> InvalidHeader:
    excerpt = value[pos : pos + 40]
    return InvalidHeader(f"malformed Sec-WebSocket-Extensions at character {pos}: {excerpt!r}")


def serialize_extensions(extensions: Sequence[tuple[str, ExtensionParams]]) -> str:
    """The Sec-WebSocket-Extensions value for ``(name, params)`` offers or answers.

    ValueError unless every name, parameter name and value is a token (RFC 6455
    §9.1): anything else could end the header or forge another one.
    """
    for name, params in extensions:
        if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"invalid extension name {name!r}: must be a token")
        for key, value in params:
            if not isinstance(key, str) or not _TOKEN_RE.fullmatch(key):
                raise ValueError(f"invalid parameter name {key!r} of extension {name}: must be a token")
            if value is not None and (not isinstance(value, str) or not _TOKEN_RE.fullmatch(value)):
                raise ValueError(f"invalid value {value!r} of parameter {key} of extension {name}: must be a token")
    return ", ".join(
        "; ".join([name] + [k if v is None else f"{k}={v}" for k, v in params]) for name, params in extensions
    )
