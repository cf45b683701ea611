"""Tests for ws4web.adapters._stack: finding the server's request object up the call stack."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest

from ws4web.adapters._stack import cheroot_request, find_on_stack, method_codes


class Server:
    def call_app(self, app: Any) -> Any:
        return app()


class Subclass(Server):
    def call_app(self, app: Any) -> Any:  # overrides: its code is not one of Server's
        return app()


def test_nothing_is_found_where_no_caller_is_one() -> None:
    assert find_on_stack(Server) is None
    assert find_on_stack(Server, method_codes(Server)) is None


@pytest.mark.parametrize("quick", [False, True], ids=["every frame", "method codes first"])
@pytest.mark.parametrize("cls", [Server, Subclass])
def test_the_nearest_caller_is_found(cls: type[Server], quick: bool) -> None:
    outer, inner = cls(), cls()
    codes = method_codes(Server) if quick else frozenset()
    found = outer.call_app(lambda: inner.call_app(lambda: find_on_stack(Server, codes)))
    assert found is inner


def test_method_codes_are_the_class_own_functions() -> None:
    assert method_codes(Server) == {id(Server.call_app.__code__)}
    assert id(Subclass.call_app.__code__) not in method_codes(Server)


def test_the_cheroot_request_is_found_up_the_stack() -> None:
    # cheroot's own HTTPRequest.respond() calls the gateway, which calls the application,
    # which calls the adapter: a gateway that calls the lookup stands in for the rest.
    server_module = pytest.importorskip("cheroot.server")
    HTTPRequest = server_module.HTTPRequest
    found: list[Any] = []

    class Gateway:
        def __init__(self, req: Any) -> None:
            pass

        def respond(self) -> None:
            found.append(cheroot_request())

    server = SimpleNamespace(max_request_body_size=0, gateway=Gateway, ssl_adapter=None)
    conn = SimpleNamespace(rfile=io.BytesIO(), wfile=io.BytesIO())

    class Overriding(HTTPRequest):  # type: ignore[misc,valid-type]
        # A subclass's own respond() is not one of HTTPRequest's methods: the full walk finds it.
        def respond(self) -> None:
            Gateway(self).respond()

    assert id(HTTPRequest.respond.__code__) in method_codes(HTTPRequest)  # the quick look finds it
    for cls in (HTTPRequest, Overriding):
        req = cls(server, conn)
        req.inheaders = {}
        req.ready = False
        req.chunked_write = False
        req.respond()
        assert found.pop() is req
    assert cheroot_request() is None  # outside a request
