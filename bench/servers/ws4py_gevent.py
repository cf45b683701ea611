"""ws4py on gevent: its geventserver.WSGIServer, monkey-patched first as ws4py's docs say."""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--check" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

from bench.servers._common import main, version


def describe() -> str:
    import gevent  # noqa: F401
    from ws4py.server.geventserver import WSGIServer  # type: ignore[import-untyped]  # noqa: F401
    from ws4py.server.wsgiutils import WebSocketWSGIApplication  # type: ignore[import-untyped]  # noqa: F401

    return f"ws4py {version('ws4py')} on gevent {version('gevent')} (monkey-patched)"


def serve(host: str, port: int) -> None:
    from ws4py.server.geventserver import WSGIServer
    from ws4py.server.wsgiutils import WebSocketWSGIApplication
    from ws4py.websocket import EchoWebSocket  # type: ignore[import-untyped]

    WSGIServer((host, port), WebSocketWSGIApplication(handler_cls=EchoWebSocket), log=None).serve_forever()


if __name__ == "__main__":
    main(describe, serve)
