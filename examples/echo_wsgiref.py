"""Echo server on the standard library's wsgiref, a thread per connection (conformance entry point).

    python examples/echo_wsgiref.py --port 9001 [--host 127.0.0.1]

Echoes every message back unchanged, on any path; quiet except for errors.
Ctrl-C or SIGTERM closes every WebSocket with 1001 (Going Away) and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ws4web import WebSocket
from ws4web.adapters.wsgiref import WebSocketWSGIApplication, serve
from ws4web.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from ws4web.messages import Message


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--max-message-size", type=int, default=16 * 2**20)
    parser.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    extensions = [] if args.no_deflate else [ServerPerMessageDeflateFactory()]
    app = WebSocketWSGIApplication(handler_cls=Echo, max_message_size=args.max_message_size, extensions=extensions)
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
