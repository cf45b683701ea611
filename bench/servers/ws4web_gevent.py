"""ws4web's gevent adapter on gevent.pywsgi, served by its conformance echo server examples/echo_gevent.py."""

from __future__ import annotations

from bench.servers._common import describe_example, main, run_example

ADAPTER = "ws4web.adapters.gevent"
EXAMPLE = "echo_gevent.py"


def describe() -> str:
    return describe_example(ADAPTER, EXAMPLE, "gevent adapter on gevent.pywsgi")


def serve(host: str, port: int) -> None:
    run_example(ADAPTER, EXAMPLE, host, port)


if __name__ == "__main__":
    main(describe, serve)
