"""Echo client (conformance entry point).

    python examples/echo_client.py ws://127.0.0.1:9001/path

Connects, sends every message back unchanged (text as text, binary as binary)
until the server closes, then exits 0. Exits 1 if the connection cannot open.
Ctrl-C or SIGTERM closes with 1001 (Going Away) and exits 0 (130 before the
connection was open).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ws4web import ConnectionClosed, InvalidHandshake, InvalidURI, connect
from ws4web.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from ws4web.frames import CloseCode
from ws4web.logs import redact_url


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--max-message-size", type=int, default=16 * 2**20)
    parser.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM leaves as Ctrl-C does
    try:
        extensions = [] if args.no_deflate else [ClientPerMessageDeflateFactory()]
        ws = connect(args.url, max_message_size=args.max_message_size, extensions=extensions)
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        print(f"cannot connect to {redact_url(args.url)}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # nothing open to close
    code = CloseCode.NORMAL_CLOSURE
    try:
        for message in ws:
            ws.send(message)
    except ConnectionClosed:
        pass  # closed with an error code: still a finished run for the peer
    except KeyboardInterrupt:
        code = CloseCode.GOING_AWAY  # RFC 6455 §7.4.1: the client is going away
    finally:
        try:
            ws.close(code)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the server's answer
            ws.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
