"""One chat lobby served by two processes on two stacks, joined by a Redis backplane.

    python examples/pubsub_two_processes.py demo [--redis redis://127.0.0.1:6379/0]
    python examples/pubsub_two_processes.py stdlib   --port 9101 --redis redis://127.0.0.1:6379/0
    python examples/pubsub_two_processes.py cherrypy --port 9102 --redis redis://127.0.0.1:6379/0

``stdlib`` runs ws4web's own WebSocketServer, ``cherrypy`` the same handler
under CherryPy (the ws4web tool); both put their clients in the group "lobby"
of a :class:`~ws4web.pubsub.Hub` over a :class:`~ws4web.pubsub.redis.RedisBackplane`,
so a client of either sees what clients of both say. Connect with
``ws://127.0.0.1:9101/lobby?ann`` (the query is your name) and send text.

Either server stops on Ctrl-C or SIGTERM, closing its clients with 1001 (Going Away).

``demo`` starts both servers (and a throwaway redis-server on a free port when
no ``--redis`` is given and redis-server is installed), connects ann to the
first and bob to the second, lets them talk and prints what each one saw;
it exits with status 0 when each saw the other.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ws4web import WebSocket, connect
from ws4web.messages import Message
from ws4web.pubsub import Hub
from ws4web.pubsub.redis import RedisBackplane

GROUP = "lobby"

# One hub per process, shared by every connection the process serves.
hub: Hub | None = None


class LobbyMember(WebSocket):
    """A client in the lobby: what it sends goes to everyone, in every process."""

    def opened(self) -> None:
        assert hub is not None and self.request is not None
        self.name = self.request.path.partition("?")[2] or "anonymous"
        hub.join(GROUP, self, name=self.name)
        # Subscribing to the group's channel is asynchronous: wait until it is
        # confirmed, so the welcome also means "from now on you see everything".
        backplane = hub.backplane
        if isinstance(backplane, RedisBackplane):
            backplane.wait_ready(5.0)
        self.send(f"* welcome {self.name}; online: {', '.join(hub.presence(GROUP))}")
        hub.publish(GROUP, f"* {self.name} joined")

    def received_message(self, message: Message) -> None:
        assert hub is not None
        hub.publish(GROUP, f"{self.name}: {message.data.decode(errors='replace')}")

    def closed(self, code: int, reason: str | None = None) -> None:
        # The hub has already taken us out of the lobby (it wraps closed()).
        if hub is not None and hasattr(self, "name"):
            with contextlib.suppress(RuntimeError):
                hub.publish(GROUP, f"* {self.name} left")


def make_hub(redis_url: str) -> Hub:
    return Hub(RedisBackplane(redis_url, heartbeat=2.0, presence_ttl=6.0))


# -- the two servers ---------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_stdlib(port: int, redis_url: str) -> None:
    from ws4web import WebSocketServer

    global hub
    hub = make_hub(redis_url)
    server = WebSocketServer(LobbyMember, "127.0.0.1", port)
    print(f"stdlib server on ws://127.0.0.1:{server.port}/{GROUP}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the server as Ctrl-C does: 1001 to every client
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown(timeout=2.0)
        hub.close()


def run_cherrypy(port: int, redis_url: str) -> None:
    import cherrypy

    from ws4web.adapters.cherrypy import install

    global hub
    # The engine listens before it has finished starting, and a signal in between aborts
    # the start (exit status 70, or a traceback): Ctrl-C and SIGTERM wait until it has
    # started. They are blocked before any thread exists (the hub's too): threads inherit the mask.
    stops = {signal.SIGINT, signal.SIGTERM}
    mask = getattr(signal, "pthread_sigmask", None)  # POSIX only
    if mask is not None:
        mask(signal.SIG_BLOCK, stops)
    try:
        try:
            hub = make_hub(redis_url)

            class Root:
                @cherrypy.expose
                def default(self, *args: str, **kwargs: str) -> str:
                    return ""  # the websocket tool answered 101 already

            install()
            cherrypy.config.update(
                {
                    "server.socket_host": "127.0.0.1",
                    "server.socket_port": port,
                    "engine.autoreload.on": False,
                    "checker.on": False,
                    "log.screen": False,
                }
            )
            config = {"/": {"tools.websocket.on": True, "tools.websocket.handler_cls": LobbyMember}}
            cherrypy.tree.mount(Root(), "/", config)
            cherrypy.engine.subscribe("stop", hub.close)
            if hasattr(cherrypy.engine, "signal_handler"):
                cherrypy.engine.signal_handler.subscribe()  # SIGTERM stops the engine cleanly
            cherrypy.engine.start()
        finally:
            if mask is not None:
                mask(signal.SIG_UNBLOCK, stops)  # a signal held back is handled here
        print(f"cherrypy server on ws://127.0.0.1:{port}/{GROUP}", flush=True)
        cherrypy.engine.block()  # handles Ctrl-C itself
    except KeyboardInterrupt:  # a Ctrl-C held back during the start
        cherrypy.engine.exit()


# -- the demo ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def _process(args: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        _wait_for_port(port, 20.0)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def _redis(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    if shutil.which("redis-server") is None:
        raise SystemExit("give --redis URL, or install redis-server to let the demo start one")
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with _process(command, port):
        yield f"redis://127.0.0.1:{port}/0"


def _read_until(ws: WebSocket, wanted: str, seen: list[str], timeout: float = 10.0) -> bool:
    """Collect messages into ``seen`` until one contains ``wanted``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = ws.recv(max(0.0, deadline - time.monotonic())).data.decode()
        except TimeoutError:
            break
        seen.append(text)
        if wanted in text:
            return True
    return False


def demo(redis_url: str | None) -> int:
    stdlib_port, cherrypy_port = _free_port(), _free_port()
    me = os.path.abspath(__file__)
    with _redis(redis_url) as url:
        print(f"redis at {url}")
        with (
            _process([sys.executable, me, "stdlib", "--port", str(stdlib_port), "--redis", url], stdlib_port),
            _process([sys.executable, me, "cherrypy", "--port", str(cherrypy_port), "--redis", url], cherrypy_port),
        ):
            seen: dict[str, list[str]] = {"ann": [], "bob": []}
            ann = connect(f"ws://127.0.0.1:{stdlib_port}/{GROUP}?ann")
            try:
                ok = _read_until(ann, "* welcome ann", seen["ann"])
                bob = connect(f"ws://127.0.0.1:{cherrypy_port}/{GROUP}?bob")
                try:
                    ok = _read_until(bob, "* welcome bob", seen["bob"]) and ok
                    ok = _read_until(ann, "* bob joined", seen["ann"]) and ok  # across processes
                    ann.send("hello from the stdlib server")
                    bob.send("hello from the CherryPy server")
                    ok = _read_until(bob, "ann: hello from the stdlib server", seen["bob"]) and ok
                    ok = _read_until(ann, "bob: hello from the CherryPy server", seen["ann"]) and ok
                finally:
                    bob.close()
                ok = _read_until(ann, "* bob left", seen["ann"]) and ok
            finally:
                ann.close()
    for name, lines in seen.items():
        print(f"{name} saw:")
        for line in lines:
            print(f"    {line}")
    print("OK: each client saw the other's messages" if ok else "FAILED: a message did not arrive")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["demo", "stdlib", "cherrypy"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", default=None, help="redis:// URL (default for servers: redis://127.0.0.1:6379/0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # CherryPy sets its own loggers to INFO: filter at the handler
    if args.mode == "demo":
        signal.signal(signal.SIGTERM, _interrupt)  # as Ctrl-C: the servers it started stop too
        try:
            sys.exit(demo(args.redis))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    url = args.redis or "redis://127.0.0.1:6379/0"
    if args.mode == "stdlib":
        run_stdlib(args.port, url)
    else:
        run_cherrypy(args.port, url)


if __name__ == "__main__":
    main()
