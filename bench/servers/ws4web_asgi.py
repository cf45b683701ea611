"""ws4web's ASGI adapter on uvicorn, served by its conformance echo server examples/echo_asgi.py."""

from __future__ import annotations

from bench.servers._common import describe_example, main, run_example

ADAPTER = "ws4web.adapters.asgi"
EXAMPLE = "echo_asgi.py"


def describe() -> str:
    return describe_example(ADAPTER, EXAMPLE, "ASGI adapter on uvicorn")


def serve(host: str, port: int) -> None:
    run_example(ADAPTER, EXAMPLE, host, port)


if __name__ == "__main__":
    main(describe, serve)
