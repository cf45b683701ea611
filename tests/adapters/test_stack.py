"""Tests for ws4web.adapters._stack: finding the server's request object up the call stack."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest

from ws4web.adapters._stack import cheroot_request, find_on_stack


class Server:
    def call_app(self, app: Any) -> Any:
        return app()


class Subclass(Server):
    def call_app(self, app: Any) -> Any:  # a server's subclass that overrides the method
        return app()


def test_nothing_is_found_where_no_caller_is_one() -> None:
    assert find_on_stack(Server) is None


@pytest.mark.parametrize("cls", [Server, Subclass])
def test_the_nearest_caller_is_found(cls: type[Server]) -> None:
    outer, inner = cls(), cls()
    found = outer.call_app(lambda: inner.call_app(lambda: find_on_stack(Server)))
    assert found is inner


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
        # A server's own subclass, with its own respond(), is found too.
        def respond(self) -> None:
            Gateway(self).respond()

    for cls in (HTTPRequest, Overriding):
        req = cls(server, conn)
        req.inheaders = {}
        req.ready = False
        req.chunked_write = False
        req.respond()
        assert found.pop() is req
    assert cheroot_request() is None  # outside a request
