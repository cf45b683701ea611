"""Echo client (conformance entry point).

    python examples/echo_client.py ws://127.0.0.1:9001/path

Connects, sends every message back unchanged (text as text, binary as binary)
until the server closes, then exits 0. Exits 1 if the connection cannot open.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ws4web import ConnectionClosed, InvalidHandshake, connect
from ws4web.extensions.permessage_deflate import ClientPerMessageDeflateFactory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--max-message-size", type=int, default=16 * 2**20)
    parser.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    try:
        extensions = [] if args.no_deflate else [ClientPerMessageDeflateFactory()]
        ws = connect(args.url, max_message_size=args.max_message_size, extensions=extensions)
    except (OSError, InvalidHandshake) as exc:
        print(f"cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1
    try:
        for message in ws:
            ws.send(message)
    except ConnectionClosed:
        pass  # closed with an error code: still a finished run for the peer
    finally:
        ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
