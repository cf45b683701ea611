"""Origin policy and authentication hooks (ws4web/auth.py) and their place in accept()."""

from __future__ import annotations

import base64

import pytest

from ws4web.auth import basic_auth, check_origin
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
