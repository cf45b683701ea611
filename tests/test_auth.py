"""Origin policy and authentication hooks (ws4web/auth.py) and their place in accept()."""

from __future__ import annotations

import base64

import pytest

from ws4web.auth import Origin, OriginPolicy, basic_auth, check_origin, parse_origin
from ws4web.exceptions import Forbidden, InvalidOrigin, Unauthorized
from ws4web.handshake import accept, generate_key
from ws4web.http11 import Headers, Request


def make_request(*extra: tuple[str, str]) -> Request:
    headers = Headers(
        [
            ("Host", "example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", generate_key()),
            ("Sec-WebSocket-Version", "13"),
            *extra,
        ]
    )
    return Request("GET", "/chat", headers)


def basic(user: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://example.com", ["https://example.com"]),
        ("HTTPS://Example.COM", ["https://example.com"]),
        ("https://a.example.com", ["https://*.example.com"]),
        (None, [None]),
        (None, ["https://example.com", None]),
    ],
)
def test_origin_allowed(origin: str | None, allowed: list[str | None]) -> None:
    extra = [("Origin", origin)] if origin else []
    check_origin(make_request(*extra), allowed)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://evil.com", ["https://example.com"]),
        ("https://example.com.evil.com", ["https://example.com"]),
        ("http://example.com", ["https://example.com"]),
        (None, ["https://example.com"]),
        ("https://example.com", [None]),
        ("https://example.com", []),
    ],
)
def test_origin_refused_with_403(origin: str | None, allowed: list[str | None]) -> None:
    extra = [("Origin", origin)] if origin else []
    with pytest.raises(InvalidOrigin) as info:
        check_origin(make_request(*extra), allowed)
    assert info.value.status == 403


def test_duplicate_origin_refused() -> None:
    with pytest.raises(InvalidOrigin):
        check_origin(make_request(("Origin", "https://a.com"), ("Origin", "https://a.com")), ["https://a.com"])


def test_basic_auth_with_mapping() -> None:
    authenticate = basic_auth({"ann": "s3cret"}, realm="chat")
    authenticate(make_request(basic("ann", "s3cret")))
    for request in (
        make_request(),
        make_request(basic("ann", "wrong")),
        make_request(basic("bob", "s3cret")),
        make_request(("Authorization", "Bearer abc")),
        make_request(("Authorization", "Basic !!!notbase64")),
        make_request(("Authorization", "Basic " + base64.b64encode(b"no-colon").decode())),
    ):
        with pytest.raises(Unauthorized) as info:
            authenticate(request)
        assert info.value.status == 401
        assert ("WWW-Authenticate", 'Basic realm="chat", charset="UTF-8"') in info.value.headers


def test_basic_auth_with_callable_and_colon_in_password() -> None:
    seen = []

    def check(user: str, password: str) -> bool:
        seen.append((user, password))
        return password == "a:b"

    authenticate = basic_auth(check)
    authenticate(make_request(basic("ann", "a:b")))
    assert seen == [("ann", "a:b")]
    with pytest.raises(Unauthorized):
        authenticate(make_request(basic("ann", "a")))


def test_accept_applies_origin_then_authentication() -> None:
    calls = []

    def authenticate(request: Request) -> None:
        calls.append(request.path)
        if request.headers.get("X-Token") != "ok":
            raise Forbidden("bad token", body=b"go away")

    with pytest.raises(InvalidOrigin):
        accept(make_request(("Origin", "https://evil.com")), origins=["https://example.com"], authenticate=authenticate)
    assert calls == []  # the origin check comes first
    with pytest.raises(Forbidden) as info:
        accept(
            make_request(("Origin", "https://example.com")), origins=["https://example.com"], authenticate=authenticate
        )
    assert info.value.status == 403 and info.value.body == b"go away"
    accepted = accept(
        make_request(("Origin", "https://example.com"), ("X-Token", "ok")),
        origins=["https://example.com"],
        authenticate=authenticate,
    )
    assert accepted.response.status == 101
    assert calls == ["/chat", "/chat"]


# -- exact origins, one wildcard form, entries checked when the policy is built ----------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("https://example.com", Origin("https", "example.com", 443)),
        ("HTTPS://Example.COM:443", Origin("https", "example.com", 443)),
        ("http://example.com:80", Origin("http", "example.com", 80)),
        ("http://example.com:8080", Origin("http", "example.com", 8080)),
        ("https://[::1]:8443", Origin("https", "[::1]", 8443)),
        ("https://[0:0::1]", Origin("https", "[::1]", 443)),
        ("https://[2001:DB8::1]", Origin("https", "[2001:db8::1]", 443)),
        ("https://127.0.0.1:3000", Origin("https", "127.0.0.1", 3000)),
        ("chrome-extension://abcdefgh", Origin("chrome-extension", "abcdefgh", None)),
        ("null", None),
        ("https://example.com/", None),
        ("https://example.com/path", None),
        ("https://user@example.com", None),
        ("https://example.com:99999", None),
        ("https://example.com:", None),
        ("https://[not-v6]", None),
        ("https://exa mple.com", None),
        ("https://*.example.com", None),
        ("https://-a.example.com", None),
        ("example.com", None),
        ("", None),
    ],
)
def test_parse_origin(text: str, parsed: Origin | None) -> None:
    assert parse_origin(text) == parsed


POLICY = OriginPolicy(
    [
        "https://app.example.com",
        "http://localhost:3000",
        "https://[::1]:8443",
        "https://*.example.org",
        "chrome-extension://abcdefgh",
    ]
)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://APP.Example.com:443", True),  # case and default port normalized
        ("http://app.example.com", False),  # another scheme
        ("https://app.example.com:8443", False),  # another port
        ("https://app.example.com.evil.net", False),
        ("https://evilapp.example.com", False),
        ("http://localhost:3000", True),
        ("http://localhost", False),
        ("https://[::1]:8443", True),  # an exact IPv6 entry matches its own origin
        ("https://[0::1]:8443", True),
        ("https://[::2]:8443", False),
        ("https://a.example.org", True),
        ("https://a.b.example.org", True),  # any depth
        ("https://A.Example.ORG:443", True),
        ("https://example.org", False),  # not the domain itself
        ("https://evilexample.org", False),
        ("https://example.org.evil.net", False),
        ("https://a.example.org.evil.net", False),
        ("http://a.example.org", False),
        ("https://a.example.org:8443", False),
        ("https://a.example.org/x", False),
        ("https://evil.net/.example.org", False),  # "*" does not cross "/"
        ("https://evil.net:1.example.org", False),  # ... nor ":"
        ("chrome-extension://abcdefgh", True),
        ("null", False),
        ("", False),
        (None, False),
    ],
)
def test_origin_policy_matches_exactly(origin: str | None, allowed: bool) -> None:
    assert POLICY.allows(origin) is allowed
    extra = [("Origin", origin)] if origin is not None else []
    if allowed:
        check_origin(make_request(*extra), POLICY)
    else:
        with pytest.raises(InvalidOrigin):
            check_origin(make_request(*extra), POLICY)


def test_none_admits_requests_without_origin_only() -> None:
    policy = OriginPolicy([None])
    assert policy.allows(None) and not policy.allows("https://example.com") and not policy.allows("null")


@pytest.mark.parametrize(
    "entry",
    [
        "https://[ab].example.com",  # fnmatch syntax is not pattern syntax any more
        "https://?.example.com",
        "https://a*.example.com",
        "https://*example.com",
        "https://a.*.example.com",
        "https://*.*.example.com",
        "*",
        "https://*",
        "https://*.com",  # a wildcard over a whole top-level domain
        "https://*.10.0.0.1",  # over addresses
        "https://*.[::1]",
        "https://example.com/",  # a path, even "/"
        "example.com",  # no scheme
        "https://user@example.com",
        "https://example.com:99999",
        "https://[::1",
        "null",  # any sandboxed frame sends it
        "NULL",
        "",
    ],
)
def test_malformed_entries_are_refused_when_the_policy_is_built(entry: str) -> None:
    with pytest.raises(ValueError, match="invalid origin entry"):
        OriginPolicy([entry])
    with pytest.raises(ValueError, match="invalid origin entry"):
        check_origin(make_request(("Origin", "https://example.com")), ["https://example.com", entry])


def test_a_string_is_not_a_list_of_origins() -> None:
    with pytest.raises(ValueError, match="not the string"):
        OriginPolicy("https://example.com")
    with pytest.raises(ValueError, match="not the string"):
        check_origin(make_request(("Origin", "https://example.com")), "https://example.com")


def test_policy_iterates_over_its_entries_and_accept_takes_it() -> None:
    policy = OriginPolicy(["https://example.com", None])
    assert list(policy) == ["https://example.com", None] and list(OriginPolicy(policy)) == list(policy)
    assert accept(make_request(("Origin", "https://example.com")), origins=policy).response.status == 101
    with pytest.raises(InvalidOrigin):
        accept(make_request(("Origin", "https://example.com.evil.net")), origins=policy)


# -- the Basic realm: a quoted-string (RFC 9110 §5.6.4) ------------------------------------------------


@pytest.mark.parametrize(
    ("realm", "challenge"),
    [
        ("chat", 'Basic realm="chat", charset="UTF-8"'),
        ('say "hi"', 'Basic realm="say \\"hi\\"", charset="UTF-8"'),
        ("back\\slash", 'Basic realm="back\\\\slash", charset="UTF-8"'),
        ('x", charset="latin1', 'Basic realm="x\\", charset=\\"latin1", charset="UTF-8"'),  # cannot add a parameter
    ],
)
def test_realm_is_sent_as_a_quoted_string(realm: str, challenge: str) -> None:
    with pytest.raises(Unauthorized) as info:
        basic_auth({"ann": "pw"}, realm=realm)(make_request())
    assert info.value.headers == [("WWW-Authenticate", challenge)]


@pytest.mark.parametrize("realm", ["a\r\nSet-Cookie: x=1", "a\nb", "a\x00", "a\x7f", "caf\xe9", "", "\u20ac"])
def test_realm_that_cannot_be_a_quoted_string_is_refused(realm: str) -> None:
    with pytest.raises(ValueError, match="invalid realm"):
        basic_auth({"ann": "pw"}, realm=realm)
