"""The floor: a raw TCP echo in Python, one thread per connection, no WebSocket framing at all."""

from __future__ import annotations

import socket
import sys
import threading

from bench.servers._common import main


def describe() -> str:
    return f"raw TCP echo, thread per connection, Python {sys.version.split()[0]}"


def _echo(conn: socket.socket) -> None:
    # recv() into a fresh bytes object each time rather than a buffer kept per
    # connection: an idle connection then holds only its thread and socket.
    try:
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
    except OSError:
        pass


def serve(host: str, port: int) -> None:
    server = socket.create_server((host, port), backlog=1024)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main(describe, serve)
