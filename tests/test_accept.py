"""The front door's policy (ws4web/accept.py): requests in, an Accepted or a refusal out.

The doors' own tests (tests/test_bad_input.py, one column per door) check that each
door answers what this policy decides; here the policy is checked on its own.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ws4web import WebSocket
from ws4web.accept import AcceptPolicy, Registry, log_refusal, split_limits, unexpected_error
from ws4web.auth import basic_auth
from ws4web.drivers import DEFAULT_LIMITS
from ws4web.exceptions import (
    Forbidden,
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidOrigin,
    InvalidUpgrade,
    RequestAnswered,
    Unauthorized,
)
from ws4web.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from ws4web.http11 import Headers, Request, Response
from ws4web.logs import ConnectionLog

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key


def upgrade(*extra: tuple[str, str], path: str = "/", version: str = "HTTP/1.1", host: bool = True) -> Request:
    headers = Headers([("Host", "example.com")] if host else [])
    for name, value in (
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
        *extra,
    ):
        headers.add(name, value)
    return Request("GET", path, headers, version)


# -- building the policy: bad options fail here, before any connection ------------------


class Ws4pyHandler(WebSocket):
    """ws4py's exact constructor head."""

    def __init__(self, sock: Any, protocols: Any = None, extensions: Any = None, environ: Any = None,
                 heartbeat_freq: Any = None) -> None:  # fmt: skip
        super().__init__(sock, protocols, extensions, environ, heartbeat_freq)


def test_unknown_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="'version'"):
        AcceptPolicy.from_options(Ws4pyHandler, {"version": 13})


def test_handler_options_reach_a_constructor_that_takes_them() -> None:
    class Named(WebSocket):
        def __init__(self, *args: Any, name: str = "", **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.name = name

    policy = AcceptPolicy.from_options(Named, {"name": "ann", "max_queue": 7})
    assert policy.handler_options == {"name": "ann"}
    assert policy.limits.max_queue == 7
    handler = policy.make_handler(None, policy.evaluate(upgrade()))
    assert isinstance(handler, Named) and handler.name == "ann"


def test_a_handler_that_is_not_a_websocket_is_refused() -> None:
    with pytest.raises(TypeError, match=r"subclass of ws4web\.WebSocket"):
        AcceptPolicy(object)  # type: ignore[arg-type]


def test_a_constructor_without_ws4py_arguments_is_refused() -> None:
    class Narrow(WebSocket):
        def __init__(self, sock: Any) -> None:
            super().__init__(sock)

    with pytest.raises(TypeError, match="lacks protocols, extensions, environ, heartbeat_freq"):
        AcceptPolicy(Narrow)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"subprotocols": "chat"}, "not one string"),
        ({"origins": "https://a.example"}, "not one string"),
        ({"extensions": [object()]}, "server extension factories"),
        ({"protocols": ["a"], "subprotocols": ["b"]}, "not both"),
        ({"environ": {}}, "passes sock, protocols"),
    ],
)
def test_malformed_options_fail_when_the_door_is_built(options: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        AcceptPolicy.from_options(WebSocket, options)


def test_ws4py_names_protocols_and_heartbeat_freq() -> None:
    policy = AcceptPolicy.from_options(WebSocket, {"protocols": ["chat"], "heartbeat_freq": 20.0})
    assert policy.subprotocols == ["chat"]
    assert policy.limits.ping_interval == 20.0  # heartbeat_freq is ping_interval's default
    assert policy.heartbeat_freq == 20.0


def test_split_limits_takes_only_the_limits() -> None:
    options: dict[str, Any] = {"max_message_size": 10, "origins": None, "name": "x"}
    limits = split_limits(options)
    assert limits.max_message_size == 10
    assert limits.max_queue == DEFAULT_LIMITS.max_queue
    assert options == {"origins": None, "name": "x"}


# -- the decision, in its fixed order ----------------------------------------------------------


def test_a_good_request_is_accepted_with_rfc_6455s_answer() -> None:
    accepted = AcceptPolicy().evaluate(upgrade())
    assert accepted.response.status == 101
    # RFC 6455 §1.3: the example key's accept value.
    assert accepted.response.headers.get("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accepted.subprotocol is None and accepted.extensions == []


def test_process_request_answers_first_and_keeps_its_status() -> None:
    seen: list[str] = []

    def health(request: Request) -> Response | None:
        seen.append(request.path)
        return Response(200, "OK", Headers([("Content-Type", "text/plain")]), b"ok") if request.path == "/h" else None

    policy = AcceptPolicy(process_request=health)
    not_an_upgrade = Request("GET", "/h", Headers([("Host", "x")]))  # answered before the RFC checks
    with pytest.raises(RequestAnswered) as info:
        policy.evaluate(not_an_upgrade)
    assert info.value.status == 200
    assert AcceptPolicy.refusal(info.value).body == b"ok"
    assert policy.evaluate(upgrade(path="/ws")).response.status == 101
    assert seen == ["/h", "/ws"]


def test_rfc_checks_run_before_origins_and_authenticate() -> None:
    called: list[str] = []

    def authenticate(request: Request) -> None:
        called.append("authenticate")

    policy = AcceptPolicy(origins=["https://good.example"], authenticate=authenticate)
    with pytest.raises(InvalidUpgrade):
        policy.evaluate(Request("GET", "/", Headers([("Host", "x"), ("Origin", "https://evil.example")])))
    with pytest.raises(InvalidOrigin):  # origins before authenticate
        policy.evaluate(upgrade(("Origin", "https://evil.example")))
    assert called == []
    policy.evaluate(upgrade(("Origin", "https://good.example")))
    assert called == ["authenticate"]


@pytest.mark.parametrize(
    ("extra", "status", "error"),
    [
        ((("Content-Length", "5"),), 400, InvalidHeader),  # a body would be read as frames
        ((("Transfer-Encoding", "chunked"),), 400, InvalidHeader),
        ((("Sec-WebSocket-Key", KEY),), 400, InvalidHeader),  # two keys
        ((("Sec-WebSocket-Version", "13"),), 400, InvalidHeader),  # two versions
    ],
)
def test_the_request_shape_is_checked(extra: tuple[tuple[str, str], ...], status: int, error: type) -> None:
    with pytest.raises(error) as info:
        AcceptPolicy().evaluate(upgrade(*extra))
    assert info.value.status == status


def test_header_count_and_line_length_limits_answer_431() -> None:
    policy = AcceptPolicy(max_headers=8, max_line=100)
    with pytest.raises(InvalidMessage) as info:
        policy.evaluate(upgrade(*[(f"X-{i}", "v") for i in range(4)]))
    assert info.value.status == 431
    with pytest.raises(InvalidMessage) as info:
        policy.evaluate(upgrade(("X-Long", "v" * 100)))
    assert info.value.status == 431


def test_authenticate_refuses_with_its_status() -> None:
    policy = AcceptPolicy(authenticate=basic_auth({"ann": "secret"}))
    with pytest.raises(Unauthorized) as info:
        policy.evaluate(upgrade())
    assert AcceptPolicy.refusal(info.value).headers.get("WWW-Authenticate") == 'Basic realm="ws4web", charset="UTF-8"'

    def deny(request: Request) -> None:
        raise Forbidden("not today")

    with pytest.raises(Forbidden):
        AcceptPolicy(authenticate=deny).evaluate(upgrade())


def test_subprotocol_is_the_clients_first_supported_choice() -> None:
    policy = AcceptPolicy(subprotocols=["b", "a"])
    accepted = policy.evaluate(upgrade(("Sec-WebSocket-Protocol", "x, a, b")))
    assert accepted.subprotocol == "a"  # RFC 6455 §4.1 item 10: the client's order
    assert accepted.response.headers.get("Sec-WebSocket-Protocol") == "a"
    handler = policy.make_handler(None, accepted)
    assert handler.protocols == ["a"]


def test_select_subprotocol_decides_when_given() -> None:
    policy = AcceptPolicy(subprotocols=["a", "b"], select_subprotocol=lambda offered, supported: supported[-1])
    assert policy.evaluate(upgrade(("Sec-WebSocket-Protocol", "a, b"))).subprotocol == "b"


def test_permessage_deflate_is_negotiated_when_offered() -> None:
    policy = AcceptPolicy(extensions=[ServerPerMessageDeflateFactory()])
    accepted = policy.evaluate(upgrade(("Sec-WebSocket-Extensions", "permessage-deflate")))
    assert [e.name for e in accepted.extensions] == ["permessage-deflate"]
    assert policy.evaluate(upgrade()).extensions == []


# -- a server that validated the upgrade itself (ASGI) ------------------------------------


def test_server_checked_skips_the_rfc_checks_but_not_the_hooks() -> None:
    called: list[str] = []

    def authenticate(request: Request) -> None:
        called.append(request.headers.get("Origin") or "")

    policy = AcceptPolicy(origins=["https://good.example"], authenticate=authenticate, subprotocols=["chat"])
    # Starlette's TestClient sends no Upgrade and a short key: its server's checks passed.
    request = Request(
        "GET",
        "/",
        Headers([("Host", "testserver"), ("Origin", "https://good.example"), ("Sec-WebSocket-Protocol", "chat")]),
    )
    accepted = policy.evaluate(request, server_checked=True)
    assert accepted.subprotocol == "chat"
    assert called == ["https://good.example"]
    with pytest.raises(InvalidOrigin):
        policy.evaluate(Request("GET", "/", Headers([("Host", "x"), ("Origin", "https://evil.example")])),
                        server_checked=True)  # fmt: skip


def test_server_checked_still_wants_host_and_http_1_1() -> None:
    """RFC 6455 §4.2.1 items 1-2, which uvicorn 0.55 was seen to let through."""
    policy = AcceptPolicy()
    with pytest.raises(InvalidHeader, match="Host"):
        policy.evaluate(upgrade(host=False), server_checked=True)
    with pytest.raises(InvalidMessage, match=r"HTTP/1\.0"):
        policy.evaluate(upgrade(version="HTTP/1.0"), server_checked=True)
    # HTTP/2 (RFC 8441) has neither a Host header nor an Upgrade: not checked there.
    assert policy.evaluate(Request("GET", "/", Headers(), "HTTP/2"), server_checked=True)


# -- refusals: their answer and their log line ----------------------------------------------


def test_refusal_is_the_status_with_its_headers() -> None:
    response = AcceptPolicy.refusal(InvalidHandshake("nope", status=418))
    assert response.status == 418
    assert AcceptPolicy.refusal(unexpected_error(ValueError("secret detail"))).status == 500
    assert b"secret detail" not in AcceptPolicy.refusal(unexpected_error(ValueError("secret detail"))).body


@pytest.mark.parametrize(
    ("exc", "level"),
    [
        (InvalidUpgrade("missing 'Upgrade: websocket'"), logging.INFO),
        (RequestAnswered("answered", status=200), logging.DEBUG),
        (InvalidMessage("connection closed before the request"), logging.DEBUG),  # a TCP probe
        (InvalidHandshake("cannot hand the socket over", status=501), logging.WARNING),
    ],
)
def test_log_refusal_levels_and_no_query_values(
    exc: InvalidHandshake, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    log = ConnectionLog(logging.getLogger("ws4web.test_accept"), "c1", "127.0.0.1:5")
    with caplog.at_level(logging.DEBUG, logger="ws4web.test_accept"):
        log_refusal(log, "/chat?token=hunter2", exc)
    (record,) = caplog.records
    assert record.levelno == level
    assert "hunter2" not in record.getMessage()


# -- the registry -------------------------------------------------------------------------------


class Recorder(WebSocket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[Any] = []

    @property
    def id(self) -> str:  # type: ignore[override]
        return "recorder"  # unbound: no connection to name it

    def send(self, payload: Any, binary: bool | None = None) -> None:  # type: ignore[override]
        if payload == "boom":
            raise OSError("peer gone")
        self.sent.append(payload)


def test_registry_admits_nothing_once_shutting_down() -> None:
    registry = Registry()
    first = Recorder(None)
    assert registry.add(first)
    registry.stopping = True
    assert not registry.add(Recorder(None))
    assert list(registry) == [first]


def test_broadcast_counts_who_took_it_and_survives_a_failure() -> None:
    registry = Registry()
    a, b = Recorder(None), Recorder(None)
    registry.add(a)
    registry.add(b)
    assert registry.broadcast("hi") == 2
    assert a.sent == b.sent == ["hi"]
    assert registry.broadcast("boom") == 0
    registry.discard(a)
    assert len(registry) == 1
