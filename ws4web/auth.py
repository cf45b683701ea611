"""Who may open a WebSocket: the Origin policy and authentication hooks, sans I/O.

Both run inside :func:`ws4web.handshake.accept`, after the request passed the
RFC 6455 checks, so every adapter applies them the same way.

**Cross-site WebSocket hijacking.** Browsers send cookies and HTTP credentials with
a WebSocket handshake to any site, whatever page opened it, and the same-origin
policy does not apply to WebSockets. A server that authenticates by cookie must
therefore check ``Origin`` or any web page can act as the logged-in user. ws4web
does not check Origin by default, because non-browser clients send none and only
the application knows its own origins; pass ``origins=[...]`` whenever browsers
connect with ambient credentials. The entries and how they match are described
in :class:`OriginPolicy` and docs/security.md.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, Union

from .exceptions import InvalidOrigin, Unauthorized
from .http11 import Request

__all__ = ["Authenticator", "Origin", "OriginPolicy", "Origins", "basic_auth", "check_origin", "parse_origin"]

#: ``authenticate(request)`` returns None to let the request through, or raises
#: Unauthorized (401) / Forbidden (403) / any InvalidHandshake with its status and body.
Authenticator = Callable[[Request], None]

#: What ``origins=`` takes: a built :class:`OriginPolicy`, or its entries.
Origins = Union["OriginPolicy", Sequence[Union[str, None]]]

# RFC 6454 §6.2 serializes an origin as scheme "://" host [ ":" port ].
_ORIGIN = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://(\[[^\]]*\]|[^:\[\]]*)(?::([0-9]{1,5}))?")
# A host name: dot-separated labels of letters, digits, "-" and "_" (RFC 1123 and
# common practice); ASCII only, as browsers send it (punycode for IDNs).
_LABEL = r"[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class Origin(NamedTuple):
    """An origin in canonical form: lower-case scheme and host, IPv6 compressed in brackets,
    the scheme's default port made explicit (None for a scheme without one)."""

    scheme: str
    host: str
    port: int | None


def parse_origin(text: str) -> Origin | None:
    """``text`` as an :class:`Origin` (``https://Example.com:443`` → ``("https", "example.com", 443)``),
    or None if it is not a serialized tuple origin (``null``, a path, a malformed host or port)."""
    match = _ORIGIN.fullmatch(text)
    if match is None:
        return None
    scheme, host, port_text = match[1].lower(), match[2].lower(), match[3]
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    elif not _HOST_NAME.fullmatch(host):
        return None
    if port_text is None:
        return Origin(scheme, host, _DEFAULT_PORTS.get(scheme))
    port = int(port_text)
    return Origin(scheme, host, port) if port <= 65535 else None


def _is_ip(host: str) -> bool:
    if host.startswith("["):
        return True
    try:
        ipaddress.IPv4Address(host.rstrip("."))
    except ValueError:
        return False
    return True


class OriginPolicy:
    """A validated Origin allow-list; build it once, where the server is configured.

    Entries:

    * an exact origin, ``scheme://host[:port]``: schemes and hosts compare
      case-insensitively, a default port (80 for http/ws, 443 for https/wss) may
      be written or not, IPv6 addresses go in brackets and compare as addresses
      (``https://[::1]:8443``);
    * ``scheme://*.domain[:port]``: any subdomain of ``domain``, at any depth
      (``https://*.example.com`` admits ``https://a.example.com`` and
      ``https://a.b.example.com``), never ``domain`` itself (list it too) nor
      ``https://evilexample.com`` or ``https://example.com.evil.net``. ``domain``
      needs at least two labels, its last not all digits, so that ``*.com`` or a
      pattern over IP addresses cannot be written; IP addresses never match a
      wildcard;
    * ``None``: requests without an Origin header (non-browser clients).

    No other pattern syntax exists: ``?``, ``[``, ``]`` and a ``*`` anywhere else
    make an entry invalid. ``"null"`` is refused too: browsers send it for
    sandboxed frames and ``file:`` pages, which any site can create, so admitting
    it would admit everyone. ValueError names the first malformed entry.
    """

    __slots__ = ("_exact", "_no_origin", "_wildcards", "entries")

    def __init__(self, entries: Iterable[str | None]) -> None:
        if isinstance(entries, str):
            raise ValueError(f"origins must be a list of origins, not the string {entries!r}")
        self.entries: tuple[str | None, ...] = tuple(entries)
        self._exact: set[Origin] = set()
        self._wildcards: list[Origin] = []  # host = ".domain" (with the dot)
        self._no_origin = False
        for entry in self.entries:
            if entry is None:
                self._no_origin = True
            elif not isinstance(entry, str):
                raise ValueError(f"invalid origin entry {entry!r}: a string or None")
            elif entry.strip().lower() == "null":
                raise ValueError(
                    "invalid origin entry 'null': browsers send it for sandboxed frames and file: pages, "
                    "which any site can create; admitting it would admit everyone"
                )
            elif "://*." in entry:
                self._wildcards.append(_parse_wildcard(entry))
            else:
                origin = parse_origin(entry)
                if origin is None:
                    raise ValueError(
                        f"invalid origin entry {entry!r}: write scheme://host[:port] (no path, not even '/'), "
                        "scheme://*.domain[:port] or None"
                    )
                self._exact.add(origin)

    def allows(self, origin: str | None) -> bool:
        """True if a request whose Origin header is ``origin`` (None: no header) is admitted."""
        if origin is None:
            return self._no_origin
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if parsed in self._exact:
            return True
        if _is_ip(parsed.host):
            return False
        host = parsed.host.rstrip(".")
        return any(
            parsed.scheme == w.scheme and parsed.port == w.port and host.endswith(w.host) for w in self._wildcards
        )

    def check(self, request: Request) -> None:
        """Raise InvalidOrigin (403) unless the request's Origin is admitted; two Origin headers never are."""
        values = request.headers.get_all("Origin")
        if len(values) > 1:
            raise InvalidOrigin("more than one Origin header")
        origin = values[0] if values else None
        if not self.allows(origin):
            raise InvalidOrigin(f"origin {origin!r} is not allowed")

    def __iter__(self) -> Iterator[str | None]:
        """The entries, as given: ``OriginPolicy(policy)`` and ``list(policy)`` work."""
        return iter(self.entries)

    def __repr__(self) -> str:
        return f"OriginPolicy({list(self.entries)!r})"


def _parse_wildcard(entry: str) -> Origin:
    scheme, _, rest = entry.partition("://*.")
    origin = parse_origin(f"{scheme}://{rest}")
    if origin is None or "*" in rest or origin.host.startswith("["):
        raise ValueError(f"invalid origin entry {entry!r}: write scheme://*.domain[:port]")
    labels = origin.host.rstrip(".").split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        raise ValueError(
            f"invalid origin entry {entry!r}: a wildcard needs a domain of at least two labels, not an address"
        )
    return origin._replace(host="." + origin.host.rstrip("."))


@functools.lru_cache(maxsize=64)
def _policy(entries: tuple[str | None, ...]) -> OriginPolicy:
    return OriginPolicy(entries)


def check_origin(request: Request, origins: Origins) -> None:
    """Raise InvalidOrigin (403) unless the request's Origin is admitted by ``origins``.

    ``origins`` is an :class:`OriginPolicy` or its entries; entries are parsed
    (and cached) on first use, so a malformed one raises ValueError here: build
    the policy where the server is configured to hear about it at start-up.
    """
    if not isinstance(origins, OriginPolicy):
        if isinstance(origins, str):
            raise ValueError(f"origins must be a list of origins, not the string {origins!r}")
        origins = _policy(tuple(origins))
    origins.check(request)


# RFC 9110 §5.6.4 quoted-string: qdtext is HTAB, SP and VCHAR but '"' and '\', which need a quoted-pair.
_REALM = re.compile(r"[\t\x20-\x7e]+")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def basic_auth(credentials: Mapping[str, str] | Callable[[str, str], bool], realm: str = "ws4web") -> Authenticator:
    """An authenticator for HTTP Basic credentials (RFC 7617).

    ``credentials`` maps user names to passwords, or is a ``check(user, password)``
    callable. Passwords are compared in constant time. ``realm`` is printable
    ASCII (ValueError for CR, LF or any other control or non-ASCII character);
    ``"`` and ``\\`` in it are sent as quoted-pairs (RFC 9110 §5.6.4).
    """
    if not _REALM.fullmatch(realm):
        raise ValueError(f"invalid realm {realm!r}: printable ASCII only (RFC 7617 §2, RFC 9110 §5.6.4)")

    def check(user: str, password: str) -> bool:
        if callable(credentials):
            return bool(credentials(user, password))
        expected = credentials.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    challenge = [("WWW-Authenticate", f'Basic realm={_quote(realm)}, charset="UTF-8"')]

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
