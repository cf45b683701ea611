"""ws4web's CherryPy adapter, served by its conformance echo server examples/echo_cherrypy.py."""

from __future__ import annotations

from bench.servers._common import describe_example, main, run_example

ADAPTER = "ws4web.adapters.cherrypy"
EXAMPLE = "echo_cherrypy.py"


def describe() -> str:
    return describe_example(ADAPTER, EXAMPLE, "CherryPy adapter")


def serve(host: str, port: int) -> None:
    run_example(ADAPTER, EXAMPLE, host, port)


if __name__ == "__main__":
    main(describe, serve)
