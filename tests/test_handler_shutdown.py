"""Issue 13, at the end: each door's shutdown ends pull-style and callback handlers alike.

Each door of tests/doors.py starts for one test, with tests/test_handler_apis.py's handlers: a
pull-style one waiting in ``recv()`` and a callback one idle. Stopping the door closes both (1001,
Going Away; plain uvicorn says 1012, Service Restart), runs their ``closed()``, and leaves no
thread behind (``running`` checks). A module of its own: a door started per test cannot run beside
test_handler_apis's door of the same kind (CherryPy's engine is process-wide).
"""

from __future__ import annotations

import itertools

import pytest

from ws4web import ConnectionClosed, WebSocket, connect

from .conftest import TIMEOUT, Worker
from .doors import DOORS, running
from .test_handler_apis import ENDPOINTS, Recorded, recv_text

pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.timeout(60),
]

_connections = itertools.count()


def until_closed(ws: WebSocket) -> int:
    """Read until the server closes; the code it closed with."""
    while True:
        try:
            ws.recv(timeout=TIMEOUT)
        except ConnectionClosed as closed:
            return closed.code


@pytest.mark.parametrize("name", list(DOORS))
def test_stopping_the_door_closes_every_handler(name: str) -> None:
    endpoints = {endpoint: ENDPOINTS[endpoint] for endpoint in ("iterate", "callbacks")}
    clients: list[tuple[WebSocket, str]] = []
    try:
        with running(name, endpoints) as door:
            for endpoint in endpoints:
                path = f"{door.path(endpoint)}?shutdown={next(_connections)}"
                ws = connect(f"ws://127.0.0.1:{door.port(endpoint)}{path}", timeout=TIMEOUT, close_timeout=2.0)
                clients.append((ws, path))
            pull, callbacks = (ws for ws, _ in clients)
            pull.send("ready")
            assert recv_text(pull) == "ready"  # the pull-style handler waits in recv() again
            assert recv_text(callbacks) == "opened"
            # Each client reads on, in a thread of its own, to answer the server's close.
            readers = [Worker(until_closed, ws, thread_name="shutdown-client") for ws, _ in clients]
        going_away = 1012 if name == "uvicorn" else 1001  # uvicorn's own code when it stops
        for reader, (_, path) in zip(readers, clients, strict=True):
            assert reader.join() == going_away
            assert Recorded.ending(path)[0] == going_away
    finally:
        for ws, _ in clients:
            ws.terminate()
