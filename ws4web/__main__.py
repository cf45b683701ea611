"""Command line: an interactive client (like wscat) and the chat demo server.

    python -m ws4web ws://127.0.0.1:8080/ws [--header "Name: value"] [--subprotocol P] [--insecure]
    python -m ws4web serve [--host 127.0.0.1] [--port 8080] [--adapter stdlib|cherrypy|gevent|asgi]

Client: type a line to send it as a text message; incoming messages print as they
arrive (binary as length and hex); Ctrl-D closes with 1000 and prints the close code.
"""

from __future__ import annotations

import argparse
import os
import runpy
import ssl
import sys
import threading
from collections.abc import Sequence

from . import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI, connect
from .messages import Message

ADAPTERS = ("stdlib", "cherrypy", "gevent", "asgi")


def _show(message: Message) -> str:
    if message.is_text:
        return f"< {message.data.decode()}"
    data = bytes(message.data)
    preview = data[:32].hex(" ")
    return f"< [binary, {len(data)} bytes] {preview}{' ...' if len(data) > 32 else ''}"


def run_client(args: argparse.Namespace) -> int:
    headers = []
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep:
            print(f"--header must look like 'Name: value', not {header!r}", file=sys.stderr)
            return 2
        headers.append((name.strip(), value.strip()))
    context = None
    if args.url.startswith("wss:") and args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        ws = connect(
            args.url, protocols=args.subprotocol, headers=headers, ssl_context=context, timeout=args.timeout
        )
    except InvalidStatus as exc:
        print(f"refused: HTTP {exc.status}", file=sys.stderr)
        if exc.body:
            print(exc.body.decode(errors="replace").rstrip(), file=sys.stderr)
        return 1
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        print(f"cannot connect: {exc}", file=sys.stderr)
        return 1
    suffix = f" (subprotocol {ws.subprotocol})" if ws.subprotocol else ""
    print(f"connected to {args.url}{suffix}; Ctrl-D to close", flush=True)
    done = threading.Event()

    def reader() -> None:
        try:
            for message in ws:
                print(_show(message), flush=True)
        except ConnectionClosed:
            pass
        finally:
            print(f"closed: {ws.close_code} {ws.close_reason}".rstrip(), flush=True)
            done.set()
            # The server closed: stop waiting for input.
            if not closing.is_set():
                os._exit(0)

    closing = threading.Event()
    threading.Thread(target=reader, name="ws4web-cli-reader", daemon=True).start()
    try:
        for line in sys.stdin:
            if done.is_set():
                break
            try:
                ws.send(line.rstrip("\n"))
            except ConnectionClosed:
                break
    except KeyboardInterrupt:
        pass
    closing.set()
    ws.close()
    done.wait(args.timeout)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "chat")
    script = os.path.join(root, f"{args.adapter}_app.py")
    if not os.path.exists(script):
        print(f"the chat demo for {args.adapter} is not here ({script}); run from a source checkout", file=sys.stderr)
        return 1
    sys.argv = [script, "--host", args.host, "--port", str(args.port)]
    runpy.run_path(script, run_name="__main__")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        parser = argparse.ArgumentParser(prog="python -m ws4web serve", description="Run the chat demo.")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8080)
        parser.add_argument("--adapter", choices=ADAPTERS, default="stdlib")
        return run_serve(parser.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m ws4web", description="Interactive WebSocket client.")
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument("--header", "-H", action="append", default=[], help="extra header, 'Name: value'")
    parser.add_argument("--subprotocol", "-s", action="append", default=[], help="offer this subprotocol")
    parser.add_argument("--insecure", "-k", action="store_true", help="do not verify the TLS certificate")
    parser.add_argument("--timeout", type=float, default=10.0)
    return run_client(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
