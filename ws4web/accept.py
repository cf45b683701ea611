"""The front door: one accept policy, one way to build a handler, one registry — for every server door.

Each door (the standard-library server, :mod:`ws4web.upgrade`, the WSGI doors,
CherryPy, ASGI) builds one :class:`AcceptPolicy` from its options, once. Whoever
parsed the HTTP request, the policy decides in one fixed order (see
:meth:`AcceptPolicy.evaluate`); the door then only does what is specific to its
framework: get the request and the socket, write the answer. docs/security.md
lists what is refused, and with which status, on every door.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from .auth import Authenticator, OriginPolicy, Origins, check_origin
from .drivers import DEFAULT_LIMITS, LIMIT_NAMES, Limits
from .exceptions import InvalidHandshake, InvalidMessage, RequestAnswered
from .extensions.base import Extension, ServerExtensionFactory
from .frames import CloseCode
from .handshake import Accepted, SubprotocolSelector, accept, check_host_field, check_version, reject
from .http11 import MAX_HEADERS, MAX_LINE, Headers, Request, Response
from .logs import ConnectionLog, redact_target
from .protocol import SERVER, Protocol
from .websocket import WebSocket

__all__ = [
    "AcceptPolicy",
    "ProcessRequest",
    "Registry",
    "check_handler_class",
    "log_refusal",
    "new_protocol",
    "split_limits",
    "unexpected_error",
]

logger = logging.getLogger("ws4web.accept")

#: ``process_request(request)`` may return a Response to send instead of upgrading
#: (a health check, a redirect, a refusal of its own), or raise InvalidHandshake.
ProcessRequest = Callable[[Request], "Response | None"]

# What ws4py's doors passed to a handler's constructor: a handler written for
# ws4py, with exactly this signature, runs unchanged.
_WS4PY_ARGUMENTS = ("sock", "protocols", "extensions", "environ", "heartbeat_freq")


def split_limits(options: dict[str, Any]) -> Limits:
    """Take the per-connection limits out of ``options`` (the rest stays there).

    ``heartbeat_freq`` (ws4py's name) is a default for ``ping_interval``.
    """
    values = {name: options.pop(name) for name in list(options) if name in LIMIT_NAMES}
    heartbeat = options.get("heartbeat_freq")
    if heartbeat is not None and values.get("ping_interval") is None:
        values["ping_interval"] = heartbeat
    return Limits(**values)


def check_handler_class(handler_cls: Any, options: Mapping[str, Any]) -> None:
    """Refuse, before any connection, a handler class that cannot be built the way
    doors build it: with ws4py's arguments plus ``options`` as keywords."""
    if not (isinstance(handler_cls, type) and issubclass(handler_cls, WebSocket)):
        raise TypeError(f"handler_cls must be a subclass of ws4web.WebSocket, not {handler_cls!r}")
    try:
        signature = inspect.signature(handler_cls)
    except (TypeError, ValueError):  # pragma: no cover - a C-level __init__: nothing to check
        return
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    names = {n for n, p in parameters.items() if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    missing = [name for name in _WS4PY_ARGUMENTS if name not in names]
    if missing:
        raise TypeError(
            f"{handler_cls.__name__}.__init__ must accept the keyword arguments "
            f"{', '.join(_WS4PY_ARGUMENTS)} (as ws4py's did); it lacks {', '.join(missing)}"
        )
    taken = [name for name in options if name in _WS4PY_ARGUMENTS]
    if taken:
        raise TypeError(
            f"{', '.join(map(repr, taken))}: the door passes {', '.join(_WS4PY_ARGUMENTS)} to the handler "
            "itself (the server's subprotocols are 'subprotocols=' or ws4py's 'protocols=')"
        )
    unknown = [name for name in options if name not in names]
    if unknown:
        raise TypeError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"neither a door option, a limit ({', '.join(sorted(LIMIT_NAMES))}) "
            f"nor an argument of {handler_cls.__name__}.__init__"
        )


def new_protocol(side: Any, limits: Limits, extensions: Sequence[Extension], data: bytes) -> Protocol:
    """The sans-I/O protocol for a connection whose handshake is done."""
    return Protocol(
        side,
        data=data,
        max_message_size=limits.max_message_size,
        max_frame_size=limits.max_frame_size,
        extensions=extensions,
    )


class AcceptPolicy:
    """Everything a server door decides about an upgrade request, built once per door.

    ``handler_cls`` and ``handler_options`` (keywords for its constructor) are
    checked here, so a bad option fails when the door is built, not after a 101.
    The per-connection limits (:class:`~ws4web.drivers.Limits`) ride along for
    the driver the door opens.
    """

    def __init__(
        self,
        handler_cls: type[WebSocket] = WebSocket,
        *,
        process_request: ProcessRequest | None = None,
        origins: Origins | None = None,
        authenticate: Authenticator | None = None,
        subprotocols: Sequence[str] = (),
        select_subprotocol: SubprotocolSelector | None = None,
        extensions: Sequence[ServerExtensionFactory] = (),
        handshake_timeout: float | None = 10.0,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        limits: Limits = DEFAULT_LIMITS,
        heartbeat_freq: float | None = None,
        handler_options: Mapping[str, Any] | None = None,
    ) -> None:
        options = dict(handler_options or {})
        check_handler_class(handler_cls, options)
        if isinstance(subprotocols, str):
            raise TypeError("subprotocols must be a sequence of names, not one string")
        if isinstance(origins, str):
            raise TypeError("origins must be a sequence of origins, not one string")
        # Parsed once, here: a malformed entry fails when the door is built.
        origin_policy = origins if origins is None or isinstance(origins, OriginPolicy) else OriginPolicy(origins)
        for factory in extensions:
            if not isinstance(factory, ServerExtensionFactory):
                raise TypeError(f"extensions must be server extension factories, not {factory!r}")
        self.handler_cls = handler_cls
        self.handler_options = options
        self.process_request = process_request
        self.origins = origin_policy
        self.authenticate = authenticate
        self.subprotocols = list(subprotocols)
        self.select_subprotocol = select_subprotocol
        self.extensions = list(extensions)
        self.handshake_timeout = handshake_timeout
        self.max_line = max_line
        self.max_headers = max_headers
        self.limits = limits
        #: ws4py's keepalive interval, passed to handler constructors as ws4py did
        self.heartbeat_freq = heartbeat_freq

    @classmethod
    def from_options(
        cls, handler_cls: type[WebSocket], options: Mapping[str, Any], **door: Any
    ) -> AcceptPolicy:
        """Build a policy from one flat mapping of options, as doors receive them:
        policy names, limits, ws4py's ``protocols`` / ``heartbeat_freq``, and the
        rest for the handler's constructor. ``door`` adds door-chosen defaults."""
        rest = {**door, **options}
        if "protocols" in rest:  # ws4py's name for the server's subprotocols
            if "subprotocols" in rest:
                raise TypeError("give subprotocols or protocols, not both")
            rest["subprotocols"] = rest.pop("protocols") or ()
        limits = split_limits(rest)
        heartbeat = rest.pop("heartbeat_freq", None)
        policy_args = {name: rest.pop(name) for name in list(rest) if name in _POLICY_NAMES}
        return cls(handler_cls, limits=limits, heartbeat_freq=heartbeat, handler_options=rest, **policy_args)

    # -- the decision ------------------------------------------------------------------

    def evaluate(self, request: Request, *, server_checked: bool = False) -> Accepted:
        """Accept ``request`` or raise the InvalidHandshake to answer it with.

        The order is fixed: ``process_request`` (its Response comes back as
        :class:`~ws4web.exceptions.RequestAnswered`), then the RFC 6455 rules
        and the request's shape (no body, single key and version), then the
        Origin allow-list, then ``authenticate``, then subprotocol and extension
        negotiation. ``server_checked``: see :meth:`negotiate`.
        """
        if self.process_request is not None:
            answer = self.process_request(request)
            if answer is not None:
                raise RequestAnswered(
                    f"answered by process_request with {answer.status}", response=answer, status=answer.status
                )
        return self.negotiate(request, server_checked=server_checked)

    def negotiate(self, request: Request, *, server_checked: bool = False) -> Accepted:
        """Everything :meth:`evaluate` does after ``process_request`` (for doors that
        must await an async ``process_request`` themselves).

        ``server_checked=True`` is for doors whose server validated the upgrade and
        sends the 101 itself (ASGI): the RFC 6455 §4.2.1 rules are the server's and
        are skipped here, the rest runs in the same order, and ``Accepted.response``
        is not meant to be sent.
        """
        if len(request.headers) > self.max_headers:
            raise InvalidMessage(f"more than {self.max_headers} headers", status=431)
        for name, value in request.headers:
            if len(name) + len(value) + 2 > self.max_line:
                raise InvalidMessage(f"header line longer than {self.max_line} bytes", status=431)
        origins, authenticate = self.origins, self.authenticate
        if server_checked:
            if request.version.startswith("HTTP/1."):
                # uvicorn 0.55 was seen to upgrade a request with no Host: these two
                # rules hold on every door that can see them.
                check_version(request)
                check_host_field(request)
            # The hooks see the request as it came; handshake.accept, which starts with
            # the RFC checks, only negotiates, on a copy with those fields in order.
            if origins is not None:
                check_origin(request, origins)
            if authenticate is not None:
                authenticate(request)
            request, origins, authenticate = _upgrade_in_order(request), None, None
        return accept(
            request,
            subprotocols=self.subprotocols,
            select_subprotocol=self.select_subprotocol,
            extensions=self.extensions,
            origins=origins,
            authenticate=authenticate,
        )

    @staticmethod
    def refusal(exc: InvalidHandshake) -> Response:
        """The HTTP response that answers a refused request."""
        if isinstance(exc, RequestAnswered) and isinstance(exc.response, Response):
            return exc.response
        return reject(exc)

    # -- the handler ------------------------------------------------------------------------

    def make_handler(
        self, sock: Any, accepted: Accepted, environ: Mapping[str, Any] | None = None
    ) -> WebSocket:
        """Build the handler as ws4py did, plus this door's handler options.

        Call it before sending the 101: if the constructor raises, answer 500.
        """
        return self.handler_cls(
            sock,
            protocols=[accepted.subprotocol] if accepted.subprotocol else [],
            extensions=accepted.extensions,
            environ=environ,
            heartbeat_freq=self.heartbeat_freq,
            **self.handler_options,
        )

    def new_protocol(self, accepted: Accepted, data: bytes = b"") -> Protocol:
        return new_protocol(SERVER, self.limits, accepted.extensions, data)


_POLICY_NAMES = frozenset(
    {
        "process_request",
        "origins",
        "authenticate",
        "subprotocols",
        "select_subprotocol",
        "extensions",
        "handshake_timeout",
        "max_line",
        "max_headers",
    }
)

# The fields RFC 6455 §4.2.1 rules on (and the body ones, a smuggling guard for
# doors that read frames from the socket themselves).
_UPGRADE_FIELDS = frozenset(
    {"upgrade", "connection", "host", "sec-websocket-key", "sec-websocket-version"}
    | {"transfer-encoding", "content-length"}
)


def _upgrade_in_order(request: Request) -> Request:
    """``request`` as handshake.accept wants it, for a server that validated it already."""
    headers = Headers((n, v) for n, v in request.headers if n.lower() not in _UPGRADE_FIELDS)
    for name, value in (
        ("Host", request.headers.get("Host") or "localhost"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),  # a placeholder: the server answers the real one
        ("Sec-WebSocket-Version", "13"),
    ):
        headers.add(name, value)
    return Request("GET", request.path, headers, "HTTP/1.1")


def log_refusal(log: ConnectionLog, target: str, exc: InvalidHandshake) -> None:
    """One line per refused handshake, the same on every door: INFO for a refusal,
    DEBUG for a ``process_request`` answer or a peer that sent no request,
    WARNING for a 501 (a server that cannot carry WebSockets)."""
    if isinstance(exc, RequestAnswered):
        level = logging.DEBUG
    elif exc.status == 501:
        level = logging.WARNING  # the server cannot hand its socket over: a deployment to fix
    elif isinstance(exc, InvalidMessage) and str(exc).startswith("connection closed"):
        level = logging.DEBUG  # a TCP probe (health check, port scan) that sent nothing
    else:
        level = logging.INFO
    log.log(level, "handshake refused (HTTP %d) %s: %s", exc.status, redact_target(target), exc)


def unexpected_error(exc: BaseException) -> InvalidHandshake:
    """A hook or constructor failed: answer 500 (the details stay in the log)."""
    return InvalidHandshake(f"internal error ({type(exc).__name__})", status=500)


class Registry:
    """The open connections of one door: broadcast, and graceful shutdown with 1001.

    Safe from threads and from greenlets without a lock (a gevent server must
    never meet a threading lock): ``set.add``, ``discard`` and ``copy`` are each
    one step under the GIL, and :meth:`add` looks at ``stopping`` after adding.
    """

    def __init__(self) -> None:
        self._handlers: set[WebSocket] = set()
        self.stopping = False

    def add(self, handler: WebSocket) -> bool:
        """Track ``handler``; False (not tracked) once shutdown has begun."""
        if self.stopping:
            return False
        self._handlers.add(handler)
        if self.stopping:  # shutdown began meanwhile, and may have missed it
            self._handlers.discard(handler)
            return False
        return True

    def discard(self, handler: WebSocket) -> None:
        self._handlers.discard(handler)

    def __len__(self) -> int:
        return len(self._handlers)

    def __iter__(self) -> Iterator[WebSocket]:
        """A snapshot: iterating is safe while connections come and go."""
        return iter(self._handlers.copy())

    def broadcast(self, payload: Any, binary: bool | None = None) -> int:
        """Send one message to every open connection; returns how many took it."""
        sent = 0
        for handler in self:
            try:
                handler.send(payload, binary)
                sent += 1
            except Exception as exc:  # one dead peer must not stop the rest
                logger.debug("broadcast to %s failed: %s", handler.id, exc)
        return sent

    def shutdown(
        self,
        code: int = CloseCode.GOING_AWAY,
        reason: str = "server shutting down",
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Admit no more; close every connection with ``code`` (RFC 6455 §7.4.1: 1001,
        going away); drop those not closed within ``timeout`` seconds."""
        self.stopping = True
        targets = self._handlers.copy()
        for handler in targets:
            try:
                handler.close(code, reason)
            except Exception as exc:
                logger.debug("closing %s failed: %s", handler.id, exc)
        deadline = clock() + timeout
        for handler in targets:
            try:
                if not handler.connection.wait_closed(max(0.0, deadline - clock())):
                    handler.terminate()  # past the deadline: drop it
            except Exception as exc:  # pragma: no cover - already gone
                logger.debug("dropping %s failed: %s", handler.id, exc)

