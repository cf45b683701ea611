"""ws4web's ASGI adapter on uvicorn, served by its conformance echo server examples/echo_asgi.py.

Plain ``def`` callback by default; WS4WEB_ASGI_ASYNC=1 (the ws4web-asgi-async target) runs the
``async def`` one.
"""

from __future__ import annotations

import os

from bench.servers._common import describe_example, main, run_example

ADAPTER = "ws4web.adapters.asgi"
EXAMPLE = "echo_asgi.py"


def describe() -> str:
    style = "async def" if os.environ.get("WS4WEB_ASGI_ASYNC") == "1" else "plain def"
    return describe_example(ADAPTER, EXAMPLE, f"ASGI adapter on uvicorn, {style} callback")


def serve(host: str, port: int) -> None:
    run_example(ADAPTER, EXAMPLE, host, port)


if __name__ == "__main__":
    main(describe, serve)
