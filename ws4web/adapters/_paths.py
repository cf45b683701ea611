"""Route paths with parameters (``/chat/{room}``): one matching rule for both WebSocketMiddleware classes.

The WSGI middleware (:mod:`ws4web.adapters.middleware`) and the ASGI one
(:mod:`ws4web.adapters.asgi`) match the same patterns the same way, and hand
the parameters on where their kind of app looks for a router's: ASGI's
``scope["path_params"]`` (as Starlette's and FastAPI's routers do), WSGI's
``environ["wsgiorg.routing_args"]``. The doors put them in the handler's
:attr:`~ws4web.websocket.WebSocket.view_args`. docs/adapters.md ("Route
paths") is the manual.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = [
    "CONVERTERS",
    "Converter",
    "PathPattern",
    "PathRoutes",
    "asgi_path",
    "environ_params",
    "scope_params",
    "with_environ_params",
    "with_scope_params",
    "wsgi_path",
]

T = TypeVar("T")


class Converter:
    """What one ``{name:kind}`` parameter matches (a regular expression within the path) and what it becomes."""

    __slots__ = ("convert", "regex")

    def __init__(self, regex: str, convert: Callable[[str], Any]) -> None:
        self.regex = regex
        self.convert = convert


#: The parameter kinds, with the names and meanings Starlette and FastAPI routes give them:
#: ``{room}`` is ``{room:str}``, one segment; ``path`` may span segments (and be empty).
CONVERTERS: Mapping[str, Converter] = {
    "str": Converter(r"[^/]+", str),
    "path": Converter(r".*", str),
    "int": Converter(r"[0-9]+", int),
    "float": Converter(r"[0-9]+(?:\.[0-9]+)?", float),
    "uuid": Converter(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID),
}

_PARAMETER = re.compile(r"\{([^{}]*)\}")


class PathPattern:
    """One route path: literal text and ``{name}`` / ``{name:kind}`` parameters, matched against a whole path."""

    __slots__ = ("_converters", "_regex", "names", "pattern")

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise ValueError(f"route path {pattern!r} must be a str starting with '/'")
        self.pattern = pattern
        parts: list[str] = []
        converters: dict[str, Converter] = {}
        end = 0
        for found in _PARAMETER.finditer(pattern):
            parts.append(_literal(pattern, pattern[end : found.start()]))
            name, _, kind = found.group(1).partition(":")
            kind = kind or "str"
            if not name.isidentifier():
                raise ValueError(f"route path {pattern!r}: parameter name {name!r} is not an identifier")
            if name in converters:
                raise ValueError(f"route path {pattern!r}: parameter {name!r} appears twice")
            converter = CONVERTERS.get(kind)
            if converter is None:
                raise ValueError(
                    f"route path {pattern!r}: unknown parameter kind {kind!r} (known: {', '.join(CONVERTERS)})"
                )
            converters[name] = converter
            parts.append(f"(?P<{name}>{converter.regex})")
            end = found.end()
        parts.append(_literal(pattern, pattern[end:]))
        #: the parameters' names, in order
        self.names = tuple(converters)
        self._converters = converters
        self._regex = re.compile("".join(parts)) if converters else None

    def match(self, path: str) -> dict[str, Any] | None:
        """The parameters, converted, if ``path`` matches the whole pattern; else None."""
        if self._regex is None:
            return {} if path == self.pattern else None
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        try:
            return {name: self._converters[name].convert(value) for name, value in found.groupdict().items()}
        except ValueError:  # digits past int()'s limit (4300 by default): no route, not a crash
            return None

    def __repr__(self) -> str:
        return f"PathPattern({self.pattern!r})"


def _literal(pattern: str, text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"route path {pattern!r}: unbalanced brace in {text!r}")
    return re.escape(text)


class PathRoutes(Mapping[str, T], Generic[T]):
    """Route paths to targets (a read-only mapping ``pattern -> target``), and the one rule that picks one.

    A path matches a route when it matches the route's whole pattern. Routes
    without parameters are looked up first (``/ws/admin`` wins over
    ``/ws/{room}``); the others are tried in the order given, the first match
    wins.
    """

    def __init__(self, routes: Mapping[str, T]) -> None:
        self._targets: dict[str, T] = {}
        self._exact: dict[str, T] = {}
        self._patterns: list[tuple[PathPattern, T]] = []
        for path, target in routes.items():
            pattern = PathPattern(path)
            self._targets[path] = target
            if pattern.names:
                self._patterns.append((pattern, target))
            else:
                self._exact[path] = target

    def match(self, path: str) -> tuple[T, dict[str, Any]] | None:
        """The target for ``path`` and the parameters it carries, or None."""
        if path in self._exact:
            return self._exact[path], {}
        for pattern, candidate in self._patterns:
            params = pattern.match(path)
            if params is not None:
                return candidate, params
        return None

    def __getitem__(self, path: str) -> T:
        return self._targets[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __repr__(self) -> str:
        return f"PathRoutes({self._targets!r})"


# -- the path each kind of app matches, and where the parameters travel --------------------------


def asgi_path(scope: Mapping[str, Any]) -> str:
    """``scope["path"]`` relative to ``scope["root_path"]``, as Starlette's router sees it."""
    path = str(scope.get("path", "")) or "/"
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def wsgi_path(environ: Mapping[str, Any]) -> str:
    """``PATH_INFO`` (relative to ``SCRIPT_NAME``, PEP 3333) as text, as ASGI's ``scope["path"]`` has it."""
    path = environ.get("PATH_INFO", "") or "/"
    if not isinstance(path, str):
        return "/"
    try:
        # PEP 3333: the server decoded the path's bytes as latin-1; ASGI decodes them as UTF-8.
        return path.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that decoded it as text already
        return path


def with_scope_params(scope: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``scope`` whose ``path_params`` add ``params`` to those an outer router set."""
    merged = {**(scope.get("path_params") or {}), **params}
    return {**scope, "path_params": merged}


def scope_params(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The path parameters a router put in an ASGI scope (``{}`` when none did)."""
    params = scope.get("path_params")
    return dict(params) if isinstance(params, Mapping) else {}


_ROUTING_ARGS = "wsgiorg.routing_args"


def with_environ_params(environ: dict[str, Any], params: Mapping[str, Any]) -> None:
    """Add ``params`` to ``environ["wsgiorg.routing_args"]`` (the wsgiorg routing_args convention)."""
    args, named = _routing_args(environ)
    environ[_ROUTING_ARGS] = (args, {**named, **params})


def environ_params(environ: Mapping[str, Any]) -> dict[str, Any]:
    """The named path parameters a router put in a WSGI environ (``{}`` when none did)."""
    return dict(_routing_args(environ)[1])


def _routing_args(environ: Mapping[str, Any]) -> tuple[tuple[Any, ...], Mapping[str, Any]]:
    value = environ.get(_ROUTING_ARGS)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
        return tuple(value[0]), value[1]
    return (), {}
