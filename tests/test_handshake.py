"""Tests for ws4web.handshake: the opening handshake rules of RFC 6455 §4, both sides."""

from __future__ import annotations

import base64
import http
from collections.abc import Sequence

import pytest

from ws4web.exceptions import (
    Forbidden,
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidMethod,
    InvalidStatus,
    InvalidUpgrade,
    InvalidVersion,
    NegotiationError,
)
from ws4web.extensions.base import ClientExtensionFactory, Extension, ExtensionParams, ServerExtensionFactory
from ws4web.frames import Frame
from ws4web.handshake import (
    GUID,
    accept,
    accept_key,
    check_client_offer,
    check_host,
    check_request,
    check_response,
    check_target,
    client_request,
    generate_key,
    parse_extensions,
    quote_target,
    reject,
    serialize_extensions,
)
from ws4web.http11 import Headers, Request, Response, parse_request, parse_response
from ws4web.streams import StreamReader

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

BASE_HEADERS = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def make_request(
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    drop: Sequence[str] = (),
    replace: dict[str, str] | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> Request:
    replace = replace or {}
    headers = Headers()
    for name, value in BASE_HEADERS:
        if name in drop:
            continue
        headers.add(name, replace.get(name, value))
    for name, value in extra:
        headers.add(name, value)
    return Request(method, "/chat", headers, version)


def make_response(*, drop: Sequence[str] = (), extra: Sequence[tuple[str, str]] = (), key: str = KEY) -> Response:
    headers = Headers()
    for name, value in [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]:
        if name not in drop:
            headers.add(name, value)
    for name, value in extra:
        headers.add(name, value)
    return Response(101, "Switching Protocols", headers)


# -- extension factories used by the negotiation tests ----------------------------------


class Tagged(Extension):
    """An extension that only records the parameters it was negotiated with."""

    rsv_mask = 0x40

    def __init__(self, name: str, params: ExtensionParams) -> None:
        self.name = name
        self.params = params

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


class ServerFactory(ServerExtensionFactory):
    """Accepts offers whose ``ok`` parameter is not "no"; echoes the params."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[ExtensionParams] = []

    def process_request_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> tuple[ExtensionParams, Extension] | None:
        self.seen.append(params)
        if ("ok", "no") in params:
            return None
        if ("bad", None) in params:
            raise NegotiationError("invalid offer")
        return params, Tagged(self.name, params)


class ClientFactory(ClientExtensionFactory):
    def __init__(self, name: str, params: ExtensionParams) -> None:
        self.name = name
        self.params = params

    def get_request_params(self) -> ExtensionParams:
        return self.params

    def process_response_params(self, params: ExtensionParams, accepted: Sequence[Extension]) -> Extension:
        if ("refuse", None) in params:
            raise NegotiationError("bad response")
        return Tagged(self.name, params)


# -- keys -----------------------------------------------------------------------------


def test_accept_key_rfc_example() -> None:
    # RFC 6455 §1.3.
    assert accept_key(KEY) == ACCEPT
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_generate_key() -> None:
    keys = {generate_key() for _ in range(8)}
    assert len(keys) == 8
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16
        assert check_request(make_request(replace={"Sec-WebSocket-Key": key})) == key


# -- server: check_request ------------------------------------------------------------------


def test_valid_request() -> None:
    assert check_request(make_request()) == KEY


@pytest.mark.parametrize(
    ("upgrade", "connection"),
    [
        ("WebSocket", "upgrade"),
        ("websocket", "keep-alive, Upgrade"),
        ("h2c, WEBSOCKET", "Upgrade,keep-alive"),
        ("  websocket  ", "  UPGRADE  "),
    ],
)
def test_tokens_are_case_insensitive_in_lists(upgrade: str, connection: str) -> None:
    assert check_request(make_request(replace={"Upgrade": upgrade, "Connection": connection})) == KEY


def test_connection_tokens_in_separate_headers() -> None:
    request = make_request(replace={"Connection": "keep-alive"}, extra=[("Connection", "Upgrade")])
    assert check_request(request) == KEY


@pytest.mark.parametrize("method", ["POST", "HEAD", "get", "PUT"])
def test_method_must_be_get(method: str) -> None:
    with pytest.raises(InvalidMethod) as info:
        check_request(make_request(method=method))
    assert info.value.status == 405
    assert info.value.headers == [("Allow", "GET")]
    response = reject(info.value)
    assert response.status == 405
    assert response.headers.get("Allow") == "GET"


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/0.9", "HTTP/1.x", "HTTP/11", "HTTP/1.1 ", "SPDY/3"])
def test_http_version_must_be_at_least_1_1(version: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check_request(make_request(version=version))
    assert info.value.status == 400


def test_later_http_versions_are_fine() -> None:
    assert check_request(make_request(version="HTTP/2.0")) == KEY


@pytest.mark.parametrize(
    ("drop", "replace"),
    [
        (["Upgrade"], {}),
        (["Connection"], {}),
        ([], {"Upgrade": "h2c"}),
        ([], {"Upgrade": "websockets"}),
        ([], {"Connection": "keep-alive"}),
        ([], {"Connection": "upgrade-insecure"}),
    ],
)
def test_missing_upgrade_or_connection(drop: list[str], replace: dict[str, str]) -> None:
    with pytest.raises(InvalidUpgrade) as info:
        check_request(make_request(drop=drop, replace=replace))
    assert info.value.status == 426
    response = reject(info.value)
    assert response.status == 426
    assert response.reason == "Upgrade Required"
    # RFC 9110 §15.5.22: a 426 names the protocol to upgrade to.
    assert response.headers.get("Upgrade") == "websocket"
    assert "upgrade" in (t.lower() for t in response.headers.tokens("Connection"))


def test_missing_host() -> None:
    with pytest.raises(InvalidHeader, match="Host") as info:
        check_request(make_request(drop=["Host"]))
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("drop", "replace", "extra"),
    [
        (["Sec-WebSocket-Key"], {}, []),  # missing
        ([], {}, [("Sec-WebSocket-Key", KEY)]),  # duplicate
        ([], {"Sec-WebSocket-Key": "not base64!!"}, []),
        ([], {"Sec-WebSocket-Key": base64.b64encode(bytes(15)).decode()}, []),  # wrong length
        ([], {"Sec-WebSocket-Key": base64.b64encode(bytes(17)).decode()}, []),
        ([], {"Sec-WebSocket-Key": ""}, []),
        ([], {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}, []),  # padding missing
        ([], {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==é"}, []),  # not ASCII
    ],
)
def test_bad_key(drop: list[str], replace: dict[str, str], extra: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidHeader, match="Sec-WebSocket-Key") as info:
        check_request(make_request(drop=drop, replace=replace, extra=extra))
    assert info.value.status == 400
    assert not isinstance(info.value, InvalidUpgrade)


@pytest.mark.parametrize(("drop", "replace"), [(["Sec-WebSocket-Version"], {}), ([], {"Sec-WebSocket-Version": "8"})])
def test_bad_version(drop: list[str], replace: dict[str, str]) -> None:
    with pytest.raises(InvalidVersion) as info:
        check_request(make_request(drop=drop, replace=replace))
    assert info.value.status == 426
    assert info.value.headers == [("Sec-WebSocket-Version", "13")]
    response = reject(info.value)
    assert response.status == 426
    assert response.headers.get("Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize("value", ["7", "", "13 "])
def test_version_must_be_exactly_13(value: str) -> None:
    request = make_request(replace={"Sec-WebSocket-Version": value})
    with pytest.raises(InvalidVersion):
        check_request(request)


def test_duplicate_version_header() -> None:
    with pytest.raises(InvalidHeader, match="more than one") as info:
        check_request(make_request(extra=[("Sec-WebSocket-Version", "13")]))
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Sec-WebSocket-Version", "13, 8"),
        ("Sec-WebSocket-Version", "13,13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ=="),
    ],
)
def test_comma_joined_values_are_repeated_headers(name: str, value: str) -> None:
    """WSGI and ASGI servers join repeated header lines with commas (RFC 9110 §5.3):
    the joined value is refused as the repeat it is, 400, on every door."""
    with pytest.raises(InvalidHeader, match=f"more than one {name}") as info:
        check_request(make_request(replace={name: value}))
    assert info.value.status == 400


# -- server: accept ------------------------------------------------------------------------


def test_accept_builds_101() -> None:
    accepted = accept(make_request(), headers=[("Server", "ws4web-test")])
    response = accepted.response
    assert (response.status, response.reason, response.body) == (101, "Switching Protocols", b"")
    assert response.headers.items() == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", ACCEPT),
        ("Server", "ws4web-test"),
    ]
    assert accepted.subprotocol is None
    assert accepted.extensions == []


def test_accept_refuses_bad_requests() -> None:
    with pytest.raises(InvalidUpgrade):
        accept(make_request(drop=["Upgrade"]))


def test_subprotocol_follows_the_client_order() -> None:
    request = make_request(extra=[("Sec-WebSocket-Protocol", "chat, superchat"), ("Sec-WebSocket-Protocol", "v3")])
    accepted = accept(request, subprotocols=["v3", "superchat", "chat"])
    assert accepted.subprotocol == "chat"
    assert accepted.response.headers.get_all("Sec-WebSocket-Protocol") == ["chat"]
    accepted = accept(request, subprotocols=["v3", "superchat"])
    assert accepted.subprotocol == "superchat"
    accepted = accept(request, subprotocols=["v3"])
    assert accepted.subprotocol == "v3"


def test_no_common_subprotocol() -> None:
    request = make_request(extra=[("Sec-WebSocket-Protocol", "chat")])
    for supported in ([], ["other"]):
        accepted = accept(request, subprotocols=supported)
        assert accepted.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in accepted.response.headers
    # Nothing offered: nothing selected, even if the server supports some.
    accepted = accept(make_request(), subprotocols=["chat"])
    assert accepted.subprotocol is None
    assert "Sec-WebSocket-Protocol" not in accepted.response.headers


def test_custom_subprotocol_selector() -> None:
    request = make_request(extra=[("Sec-WebSocket-Protocol", "a, b, c")])
    calls: list[tuple[list[str], list[str]]] = []

    def last(offered: Sequence[str], supported: Sequence[str]) -> str | None:
        calls.append((list(offered), list(supported)))
        return offered[-1]

    accepted = accept(request, subprotocols=["a"], select_subprotocol=last)
    assert accepted.subprotocol == "c"
    assert accepted.response.headers.get("Sec-WebSocket-Protocol") == "c"
    assert calls == [(["a", "b", "c"], ["a"])]
    # A selector alone (no list of supported names) is enough.
    assert accept(request, select_subprotocol=lambda offered, supported: None).subprotocol is None
    assert accept(request, select_subprotocol=lambda offered, supported: "b").subprotocol == "b"


def test_selector_returning_an_unoffered_name() -> None:
    request = make_request(extra=[("Sec-WebSocket-Protocol", "a, b")])
    with pytest.raises(NegotiationError, match="not offered") as info:
        accept(request, select_subprotocol=lambda offered, supported: "z")
    assert info.value.status == 400


def test_extension_negotiation_on_the_server() -> None:
    request = make_request(
        extra=[
            ("Sec-WebSocket-Extensions", "x-one; ok=no, x-one; a=1; b, x-unknown"),
            ("Sec-WebSocket-Extensions", "x-one; second, x-two"),
        ]
    )
    one, two = ServerFactory("x-one"), ServerFactory("x-two")
    accepted = accept(request, extensions=[one, two])
    # The first acceptable offer of each extension wins; later ones are skipped.
    assert one.seen == [[("ok", "no")], [("a", "1"), ("b", None)]]
    assert two.seen == [[]]
    assert [(e.name, getattr(e, "params", None)) for e in accepted.extensions] == [
        ("x-one", [("a", "1"), ("b", None)]),
        ("x-two", []),
    ]
    assert accepted.response.headers.get_all("Sec-WebSocket-Extensions") == ["x-one; a=1; b, x-two"]


def test_extension_negotiation_declined_or_not_offered() -> None:
    factory = ServerFactory("x-one")
    accepted = accept(make_request(extra=[("Sec-WebSocket-Extensions", "x-one; ok=no")]), extensions=[factory])
    assert accepted.extensions == []
    assert "Sec-WebSocket-Extensions" not in accepted.response.headers
    accepted = accept(make_request(), extensions=[factory])
    assert accepted.extensions == []
    # Offers are ignored when the server has no extensions at all, even malformed ones.
    assert accept(make_request(extra=[("Sec-WebSocket-Extensions", ";;;")])).extensions == []


def test_extension_negotiation_errors() -> None:
    with pytest.raises(NegotiationError):
        accept(make_request(extra=[("Sec-WebSocket-Extensions", "x-one; bad")]), extensions=[ServerFactory("x-one")])
    with pytest.raises(InvalidHeader):
        accept(make_request(extra=[("Sec-WebSocket-Extensions", "x-one;")]), extensions=[ServerFactory("x-one")])


# -- server: reject ----------------------------------------------------------------------


def test_reject_response() -> None:
    exc = InvalidHeader("missing Host header")
    response = reject(exc)
    assert (response.status, response.reason) == (400, "Bad Request")
    assert response.body == b"400 Bad Request: missing Host header\n"
    assert response.headers.get("Content-Length") == str(len(response.body))
    assert response.headers.get("Content-Type") == "text/plain; charset=utf-8"
    assert response.headers.get("Connection") == "close"


def test_reject_keeps_headers_body_and_status() -> None:
    exc = Forbidden("go away", headers=[("WWW-Authenticate", "Basic"), ("X-A", "1")], body="déjà\n".encode())
    response = reject(exc)
    assert response.status == 403
    assert response.body == "déjà\n".encode()
    assert response.headers.get("Content-Length") == "7"
    assert response.headers.items()[:2] == [("WWW-Authenticate", "Basic"), ("X-A", "1")]
    # The response parses back into the same thing.
    reader = StreamReader(response.serialize())
    parser = parse_response(reader)
    with pytest.raises(StopIteration) as stop:
        next(parser)
    parsed = stop.value.value
    assert (parsed.status, parsed.body) == (403, response.body)


def test_reject_unusual_status() -> None:
    response = reject(InvalidHandshake("odd", status=599))
    assert (response.status, response.reason) == (599, "Error")
    response = reject(InvalidHandshake("teapot", status=418))
    assert (response.status, response.reason) == (418, http.HTTPStatus(418).phrase)


# -- client side -----------------------------------------------------------------------------


def test_client_request() -> None:
    request = client_request(
        "example.com:8080",
        "/path?q=1",
        KEY,
        subprotocols=["chat", "superchat"],
        extensions=[ClientFactory("x-one", [("a", "1"), ("b", None)]), ClientFactory("x-two", [])],
        headers=[("Origin", "http://example.com")],
    )
    assert (request.method, request.path, request.version) == ("GET", "/path?q=1", "HTTP/1.1")
    assert request.headers.items() == [
        ("Host", "example.com:8080"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Extensions", "x-one; a=1; b, x-two"),
        ("Origin", "http://example.com"),
    ]
    assert check_request(request) == KEY


def test_minimal_client_request() -> None:
    request = client_request("h", "/", KEY)
    assert "Sec-WebSocket-Protocol" not in request.headers
    assert "Sec-WebSocket-Extensions" not in request.headers


def test_check_response_accepts() -> None:
    assert check_response(make_response(), KEY) == (None, [])
    response = make_response(extra=[("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Extensions", "x-one; a=1")])
    subprotocol, extensions = check_response(
        response, KEY, subprotocols=["superchat", "chat"], extensions=[ClientFactory("x-one", [])]
    )
    assert subprotocol == "chat"
    assert [(e.name, getattr(e, "params", None)) for e in extensions] == [("x-one", [("a", "1")])]


def test_check_response_tokens_case_insensitive() -> None:
    response = Response(
        101,
        "Switching Protocols",
        Headers([("upgrade", "WebSocket"), ("connection", "keep-alive, UPGRADE"), ("sec-websocket-accept", ACCEPT)]),
    )
    assert check_response(response, KEY) == (None, [])


@pytest.mark.parametrize("status", [200, 400, 403, 426, 500, 302])
def test_check_response_non_101(status: int) -> None:
    headers = Headers([("Content-Length", "4"), ("X-Why", "because")])
    response = Response(status, "Nope", headers, b"body")
    with pytest.raises(InvalidStatus) as info:
        check_response(response, KEY)
    exc = info.value
    assert exc.status == status
    assert exc.headers == [("Content-Length", "4"), ("X-Why", "because")]
    assert exc.body == b"body"
    assert str(status) in str(exc)


@pytest.mark.parametrize(
    ("drop", "extra", "key"),
    [
        (["Upgrade"], [], KEY),
        (["Connection"], [], KEY),
        (["Sec-WebSocket-Accept"], [], KEY),
        ([], [("Sec-WebSocket-Accept", ACCEPT)], KEY),  # duplicate
        ([], [], "AQIDBAUGBwgJCgsMDQ4PEC=="),  # the accept of another key
    ],
)
def test_check_response_bad_headers(drop: list[str], extra: list[tuple[str, str]], key: str) -> None:
    response = make_response(drop=drop, extra=extra)
    with pytest.raises(InvalidHeader):
        check_response(response, key)


def test_check_response_wrong_upgrade_value() -> None:
    response = make_response(drop=["Upgrade"], extra=[("Upgrade", "h2c")])
    with pytest.raises(InvalidHeader, match="Upgrade"):
        check_response(response, KEY)


@pytest.mark.parametrize(
    ("chosen", "offered"),
    [("chat", []), ("chat", ["superchat"]), ("chat, superchat", ["chat", "superchat"])],
)
def test_check_response_unoffered_subprotocol(chosen: str, offered: list[str]) -> None:
    with pytest.raises(NegotiationError):
        check_response(make_response(extra=[("Sec-WebSocket-Protocol", chosen)]), KEY, subprotocols=offered)


def test_check_response_extensions() -> None:
    response = make_response(extra=[("Sec-WebSocket-Extensions", "x-two")])
    with pytest.raises(NegotiationError, match="unoffered extension"):
        check_response(response, KEY, extensions=[ClientFactory("x-one", [])])
    with pytest.raises(NegotiationError, match="unoffered extension"):
        check_response(response, KEY)
    response = make_response(extra=[("Sec-WebSocket-Extensions", "x-one; refuse")])
    with pytest.raises(NegotiationError, match="bad response"):
        check_response(response, KEY, extensions=[ClientFactory("x-one", [])])
    response = make_response(extra=[("Sec-WebSocket-Extensions", "x-one; =")])
    with pytest.raises(InvalidHeader):
        check_response(response, KEY, extensions=[ClientFactory("x-one", [])])


def test_full_handshake_over_bytes() -> None:
    key = generate_key()
    request = client_request("localhost", "/ws", key, subprotocols=["b", "a"])
    reader = StreamReader(request.serialize())
    parser = parse_request(reader)
    with pytest.raises(StopIteration) as stop:
        next(parser)
    server_side = stop.value.value
    accepted = accept(server_side, subprotocols=["a", "b"])
    assert accepted.subprotocol == "b"
    reader = StreamReader(accepted.response.serialize())
    response_parser = parse_response(reader)
    with pytest.raises(StopIteration) as stop:
        next(response_parser)
    assert check_response(stop.value.value, key, subprotocols=["b", "a"]) == ("b", [])


# -- parse_extensions (RFC 6455 §9.1) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], []),
        ([""], []),
        (["permessage-deflate"], [("permessage-deflate", [])]),
        (
            ["permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits=10"],
            [
                ("permessage-deflate", [("client_max_window_bits", None)]),
                ("permessage-deflate", [("server_max_window_bits", "10")]),
            ],
        ),
        (["a ; b = 1 ;c", "d"], [("a", [("b", "1"), ("c", None)]), ("d", [])]),
        (['a; b="10"'], [("a", [("b", "10")])]),
        (['a; b="1\\0"'], [("a", [("b", "10")])]),  # quoted-pair unescaped
        ([" , a ,, b , "], [("a", []), ("b", [])]),
        (["x-foo;p=tok-en.1"], [("x-foo", [("p", "tok-en.1")])]),
    ],
)
def test_parse_extensions(values: list[str], expected: list[tuple[str, ExtensionParams]]) -> None:
    assert parse_extensions(values) == expected


@pytest.mark.parametrize(
    "value",
    [
        "a;",  # empty parameter
        "a; ;b",
        "; a",  # no name
        "a b",  # space inside a name
        '"a"',  # quoted name
        "a; b=",  # missing value
        "a; b=1=2",
        "a; b c",
        'a; b="unterminated',
        'a; b="has space"',  # quoted value must be a token once unquoted (§9.1)
        'a; b="x,y"',
        'a; b=""',
        "a; b=@",  # not a token
        "a/b",
        "é",
    ],
)
def test_parse_extensions_malformed(value: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        parse_extensions([value])
    assert info.value.status == 400


def test_quoted_separators_do_not_split() -> None:
    # Separators inside a quoted string belong to it: one bad parameter, not two elements.
    with pytest.raises(InvalidHeader):
        parse_extensions(['a; b="1;c=2"'])


def test_serialize_extensions_round_trip() -> None:
    offers: list[tuple[str, ExtensionParams]] = [("a", [("b", "1"), ("c", None)]), ("d", [])]
    text = serialize_extensions(offers)
    assert text == "a; b=1; c, d"
    assert parse_extensions([text]) == offers
    assert serialize_extensions([]) == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-A", "b\r\nX-Injected: 1"), ("X-A", "b\nX: 1"), ("X-A", "nul\0"), ("X A", "v"), ("", "v"), ("X-E", "€")],
)
def test_client_request_refuses_headers_that_would_not_survive_the_wire(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        client_request("example.com", "/", "dGhlIHNhbXBsZSBub25jZQ==", headers=[(name, value)])


def test_client_request_keeps_latin1_and_tabs() -> None:
    request = client_request("example.com", "/", "dGhlIHNhbXBsZSBub25jZQ==", headers=[("X-Ok", "caf\xe9\tfine")])
    assert request.headers.get("X-Ok") == "caf\xe9\tfine"


# -- a client that cannot be made to inject ------------------------------------------------------------


@pytest.mark.parametrize(
    "subprotocols",
    [
        ["chat\r\nCookie: session=SECRET"],  # would add a request header
        ["chat, admin"],  # would offer a second protocol
        ["a b"],
        ['"quoted"'],
        ["a;b"],
        ["a/b"],
        [""],
        ["caf\xe9"],
        ["chat", "chat"],  # §4.1 item 10: unique
        "chat",  # a string, not a list: would offer "c", "h", "a", "t"
    ],
)
def test_client_offer_refuses_subprotocols_that_are_not_unique_tokens(subprotocols: Sequence[str]) -> None:
    with pytest.raises(ValueError, match="subprotocol") as info:
        check_client_offer(subprotocols)
    assert "SECRET" not in str(info.value)  # the message names no value: it may be a token
    with pytest.raises(ValueError):
        client_request("example.com", "/", KEY, subprotocols=subprotocols)


def test_client_offer_accepts_token_subprotocols() -> None:
    assert check_client_offer(["chat", "v2.json", "x-token.abc_DEF~1!#$%&'*+^`|"]) == ""


@pytest.mark.parametrize(
    "factory",
    [
        ClientFactory("x\r\nCookie: a", []),
        ClientFactory("x y", []),
        ClientFactory("x", [("a b", None)]),
        ClientFactory("x", [("a", "1, evil")]),
        ClientFactory("x", [("a", "1\r\nX-Injected: 1")]),
        ClientFactory("x", [("a", '"1"')]),
        ClientFactory("x", [("a", "")]),
    ],
)
def test_extension_names_and_parameters_must_be_tokens(factory: ClientFactory) -> None:
    with pytest.raises(ValueError, match="must be a token"):
        serialize_extensions([(factory.name, factory.params)])
    with pytest.raises(ValueError, match="must be a token"):
        check_client_offer(extensions=[factory])
    with pytest.raises(ValueError, match="must be a token"):
        client_request("example.com", "/", KEY, extensions=[factory])


def test_header_value_errors_do_not_repeat_the_value() -> None:
    with pytest.raises(ValueError, match="invalid value for header Cookie") as info:
        check_client_offer(headers=[("Cookie", "session=SECRET\r\nX-Injected: 1")])
    assert "SECRET" not in str(info.value)
    with pytest.raises(ValueError, match="invalid value"):
        check_client_offer(headers=[("X-Del", "a\x7fb")])


@pytest.mark.parametrize(
    "target",
    ["", "chat", "/a b", "/a\x00", "/a\x0bb", "/a\tb", "/caf\xe9", "/a\r\nX: y", "/a#frag", '/a"b', "/a%2", "/a%zz"],
)
def test_request_targets_outside_rfc3986_are_refused(target: str) -> None:
    with pytest.raises(ValueError, match="invalid request target"):
        check_target(target)
    with pytest.raises(ValueError, match="invalid request target"):
        client_request("example.com", target, KEY)


@pytest.mark.parametrize("target", ["/", "/a/b?c=d&e=%20&f=%C3%A9", "/:@!$&'()*+,;=-._~?/?", "/%41%7e"])
def test_request_targets_inside_rfc3986_are_sent_as_given(target: str) -> None:
    check_target(target)
    assert client_request("example.com", target, KEY).serialize().startswith(f"GET {target} HTTP/1.1\r\n".encode())


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("/", "/"),
        ("/a b", "/a%20b"),
        ("/nul\x00vt\x0bdel\x7f", "/nul%00vt%0Bdel%7F"),
        ("/caf\xe9/\u20ac", "/caf%C3%A9/%E2%82%AC"),  # UTF-8, as browsers do
        ("/a?q=[1]&r={x}|^`\\", "/a?q=%5B1%5D&r=%7Bx%7D%7C%5E%60%5C"),
        ('/"<>', "/%22%3C%3E"),
        ("/100%", "/100%25"),  # a "%" that starts no escape
        ("/%41%2f%zz", "/%41%2f%25zz"),  # escapes are kept
        ("/a\r\nX-Injected: 1", "/a%0D%0AX-Injected:%201"),
    ],
)
def test_quote_target(raw: str, quoted: str) -> None:
    assert quote_target(raw) == quoted
    assert quote_target(quoted) == quoted  # idempotent
    check_target(quoted)


@pytest.mark.parametrize(
    ("host", "expected"),
    [("example.com", "example.com"), ("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("[2001:db8::1]", "2001:db8::1")],
)
def test_check_host_accepts(host: str, expected: str) -> None:
    assert check_host(host) == expected


@pytest.mark.parametrize(
    "host",
    ["", "a b", "a\r\nX: y", "a/b", "a@b", "a?b", "[::1", "1::2::3", "caf\xe9.fr", "a\x0bb", "a%20b", "a%0D%0Ab"],
)
def test_check_host_refuses(host: str) -> None:
    with pytest.raises(ValueError):
        check_host(host)


@pytest.mark.parametrize("host", ["h\r\nX-Injected: 1", "h:port", "::1:80", "[::1]x", "h:123456", "h h:80"])
def test_client_request_refuses_bad_host_headers(host: str) -> None:
    with pytest.raises(ValueError):
        client_request(host, "/", KEY)


@pytest.mark.parametrize("host", ["h", "h:8080", "[::1]", "[::1]:9000", "127.0.0.1:1"])
def test_client_request_accepts_host_headers(host: str) -> None:
    assert client_request(host, "/", KEY).headers.get("Host") == host


# -- parse_extensions on adversarial input, each as long as one header line may be ---------------------

MAX_VALUE = 8192 - len("Sec-WebSocket-Extensions: \r\n")  # what fits in one max_line header line


def test_parse_extensions_adversarial_long_inputs() -> None:
    assert parse_extensions(["," * MAX_VALUE]) == []
    assert parse_extensions([" ," * (MAX_VALUE // 2)]) == []
    elements = ", ".join(["a"] * (MAX_VALUE // 3))
    assert parse_extensions([elements]) == [("a", [])] * (MAX_VALUE // 3)
    params = "x" + "; p" * (MAX_VALUE // 3)
    assert parse_extensions([params]) == [("x", [("p", None)] * (MAX_VALUE // 3))]
    quoted = 'x; p="' + "v" * MAX_VALUE + '"'
    assert parse_extensions([quoted]) == [("x", [("p", "v" * MAX_VALUE)])]
    escaped = 'x; p="' + "\\v" * (MAX_VALUE // 2) + '"'  # quoted-pairs: unescaped to a token
    assert parse_extensions([escaped]) == [("x", [("p", "v" * (MAX_VALUE // 2))])]
    many_quotes = ", ".join(['x; p="1"'] * (MAX_VALUE // 10))
    assert parse_extensions([many_quotes]) == [("x", [("p", "1")])] * (MAX_VALUE // 10)


@pytest.mark.parametrize(
    "value",
    [
        "x; p" + " " * MAX_VALUE + "@",  # the old parser backtracked over the spaces: quadratic
        "x; p" + " " * (MAX_VALUE // 2) + "=" + " " * (MAX_VALUE // 2) + "@",
        "x" + " " * MAX_VALUE + "y",
        'x; p="' + "v" * MAX_VALUE,  # never closed
        'x; p="' + "\\" * MAX_VALUE + '"',  # escaped backslashes: not a token once unquoted
        'x; p="' + '\\"' * (MAX_VALUE // 2),  # escaped quotes, never closed
        '"' * MAX_VALUE,
        "x; p=" + '"1"' * (MAX_VALUE // 3),  # quoted strings back to back
        "x" + ";" * MAX_VALUE,
    ],
)
def test_parse_extensions_adversarial_malformed(value: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        parse_extensions([value])
    assert len(str(info.value)) < 200  # the message quotes an excerpt, not the whole header


def test_parse_extensions_separators_inside_quotes_and_whitespace() -> None:
    assert parse_extensions(['a; b="1" , c ;d="e"', "\tf\t;\tg\t=\th\t"]) == [
        ("a", [("b", "1")]),
        ("c", [("d", "e")]),
        ("f", [("g", "h")]),
    ]
    for value in ['a; b="1,c"', 'a; b="1;c=2"', 'a; b="1" c', "a\x0b"]:
        with pytest.raises(InvalidHeader):
            parse_extensions([value])
