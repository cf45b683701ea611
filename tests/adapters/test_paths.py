"""The route path rule both WebSocketMiddleware classes share: patterns, converters, order, where parameters travel."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from starlette.routing import compile_path

from ws4web.adapters._paths import (
    CONVERTERS,
    PathPattern,
    PathRoutes,
    asgi_path,
    environ_params,
    scope_params,
    with_environ_params,
    with_scope_params,
    wsgi_path,
)

ROOM = "3f2b8c1e-9a4d-4e6f-8b1a-2c3d4e5f6a7b"


@pytest.mark.parametrize(
    ("pattern", "path", "params"),
    [
        ("/ws", "/ws", {}),
        ("/ws", "/ws/", None),
        ("/ws", "/wsx", None),
        ("/ws", "/WS", None),
        ("/chat/{room}", "/chat/lobby", {"room": "lobby"}),
        ("/chat/{room}", "/chat/", None),
        ("/chat/{room}", "/chat/a/b", None),
        ("/chat/{room:str}", "/chat/é t", {"room": "é t"}),
        ("/item/{n:int}", "/item/42", {"n": 42}),
        ("/item/{n:int}", "/item/-1", None),
        ("/item/{n:int}", "/item/4x", None),
        ("/item/{n:int}", "/item/" + "9" * 5000, None),  # past int()'s digit limit: no match, no error
        ("/at/{x:float}", "/at/1.5", {"x": 1.5}),
        ("/at/{x:float}", "/at/7", {"x": 7.0}),
        ("/at/{x:float}", "/at/.5", None),
        ("/files/{rest:path}", "/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        ("/files/{rest:path}", "/files/", {"rest": ""}),
        ("/files/{rest:path}", "/files", None),
        ("/u/{id:uuid}", f"/u/{ROOM}", {"id": uuid.UUID(ROOM)}),
        ("/u/{id:uuid}", "/u/not-a-uuid", None),
        ("/{a}/{b:int}.json", "/x/7.json", {"a": "x", "b": 7}),
        ("/a.b/{c}", "/aXb/c", None),  # literal text is literal, not a regular expression
        ("/a.b/{c}", "/a.b/c", {"c": "c"}),
    ],
)
def test_pattern_matches_the_whole_path_and_converts(pattern: str, path: str, params: dict[str, Any] | None) -> None:
    assert PathPattern(pattern).match(path) == params


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/chat/{room}", "/chat/lobby"),
        ("/item/{n:int}", "/item/42"),
        ("/item/{n:int}", "/item/4x"),
        ("/at/{x:float}", "/at/1.5"),
        ("/files/{rest:path}", "/files/a/b"),
        ("/u/{id:uuid}", f"/u/{ROOM}"),
        ("/u/{id:uuid}", f"/u/{ROOM.upper()}"),
        ("/{a}/{b:int}.json", "/x/7.json"),
    ],
)
def test_the_same_paths_match_as_under_starlette_routes(pattern: str, path: str) -> None:
    """One syntax, one meaning: a FastAPI or Starlette route and a middleware route agree."""
    regex, _, convertors = compile_path(pattern)
    found = regex.match(path)
    theirs = None if found is None else {k: convertors[k].convert(v) for k, v in found.groupdict().items()}
    assert PathPattern(pattern).match(path) == theirs


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("ws", "must be a str starting with '/'"),
        ("", "must be a str starting with '/'"),
        ("/chat/{room:slug}", "unknown parameter kind 'slug'"),
        ("/chat/{}", "not an identifier"),
        ("/chat/{1st}", "not an identifier"),
        ("/{a}/{a}", "appears twice"),
        ("/chat/{room", "unbalanced brace"),
        ("/chat/room}", "unbalanced brace"),
    ],
)
def test_bad_patterns_fail_when_the_routes_are_built(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathRoutes({pattern: "target"})


def test_converters_are_the_documented_set() -> None:
    assert sorted(CONVERTERS) == ["float", "int", "path", "str", "uuid"]


def test_routes_without_parameters_first_then_patterns_in_order() -> None:
    routes = PathRoutes({"/ws/{room}": "room", "/ws/admin": "admin", "/ws/{n:int}": "never", "/{x:path}": "any"})
    assert routes.match("/ws/admin") == ("admin", {})
    assert routes.match("/ws/7") == ("room", {"room": "7"})  # the first pattern that matches wins
    assert routes.match("/other/x") == ("any", {"x": "other/x"})
    assert PathRoutes({"/ws": 1}).match("/ws/") is None


def test_routes_are_a_read_only_mapping_of_the_patterns_given() -> None:
    routes = PathRoutes({"/b/{x}": 2, "/a": 1})
    assert list(routes) == ["/b/{x}", "/a"] and len(routes) == 2
    assert routes["/b/{x}"] == 2 and dict(routes) == {"/b/{x}": 2, "/a": 1}
    with pytest.raises(KeyError):
        routes["/b/y"]


# -- the path each kind of app matches ------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "path"),
    [
        ({"path": "/ws"}, "/ws"),
        ({"path": "/api/ws", "root_path": "/api"}, "/ws"),
        ({"path": "/api", "root_path": "/api"}, "/"),
        ({"path": "/apiws", "root_path": "/api"}, "/apiws"),  # not below the root
        ({"path": "/ws", "root_path": "/api"}, "/ws"),  # a server that leaves the root out of path
        ({}, "/"),
    ],
)
def test_asgi_path_is_relative_to_the_root_path(scope: dict[str, Any], path: str) -> None:
    assert asgi_path(scope) == path


@pytest.mark.parametrize(
    ("environ", "path"),
    [
        ({"PATH_INFO": "/ws", "SCRIPT_NAME": "/site"}, "/ws"),
        ({"PATH_INFO": ""}, "/"),
        ({}, "/"),
        ({"PATH_INFO": "/chat/\xc3\xa9"}, "/chat/é"),  # PEP 3333: UTF-8 bytes as latin-1
        ({"PATH_INFO": "/chat/\xff"}, "/chat/\ufffd"),  # not UTF-8: replaced, as uvicorn does
        ({"PATH_INFO": "/chat/\u20ac"}, "/chat/\u20ac"),  # a server that decoded it as text
    ],
)
def test_wsgi_path_is_path_info_as_text(environ: dict[str, Any], path: str) -> None:
    assert wsgi_path(environ) == path


def test_scope_params_merge_with_an_outer_routers_and_leave_the_scope_alone() -> None:
    scope = {"type": "websocket", "path": "/org/7/chat/x", "path_params": {"org": 7}}
    inner = with_scope_params(scope, {"room": "x"})
    assert scope_params(inner) == {"org": 7, "room": "x"}
    assert scope["path_params"] == {"org": 7} and inner["path"] == scope["path"]
    assert scope_params({"type": "websocket"}) == {}
    assert scope_params({"path_params": "junk"}) == {}


def test_environ_params_follow_the_wsgiorg_routing_args_convention() -> None:
    environ: dict[str, Any] = {"wsgiorg.routing_args": (("positional",), {"org": "acme"})}
    with_environ_params(environ, {"room": "x"})
    assert environ["wsgiorg.routing_args"] == (("positional",), {"org": "acme", "room": "x"})
    assert environ_params(environ) == {"org": "acme", "room": "x"}
    assert environ_params({}) == {}
    assert environ_params({"wsgiorg.routing_args": "junk"}) == {}
