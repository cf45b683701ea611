"""Command line: an interactive WebSocket client (like wscat) and the chat demo server.

    ws4web URL [--header "Name: value"]... [--subprotocol P]... [--insecure] [--wait S] [--timeout S]
    ws4web serve [--host 127.0.0.1] [--port 8080] [--adapter stdlib|cherrypy|gevent|asgi]
    ws4web --version

``ws4web`` is the console script pip installs; ``python -m ws4web`` is the same program.

Client: each line typed is sent as a text message; incoming messages print on
their own line as they arrive (``< text``; binary as its length and hex).
Ctrl-D (end of input) closes with 1000, Ctrl-C or SIGTERM with 1001; either way
the close code the server answered prints. When the server closes first, its
code and reason print and the program ends. Messages go to stdout, everything
else (connected, closed, errors) to stderr, so that ``... --wait 1 < lines > replies``
works (``--wait``: a server stops sending once it reads our close, so replies to
the last lines need time to arrive).
A handshake that takes over a second says "connecting to URL"; a refusal prints
its status and the first line of its body. URLs print redacted (no credentials,
no query values).
Exit status: 0 when the connection ended with 1000 or 1001, 1 for any other end
(refused, unreachable, another close code), 2 for a usage error (a malformed URL
included: one line, never a traceback), 130 for Ctrl-C before the connection was up.

serve: runs the chat demo of :mod:`ws4web.demo` (``<adapter>_app.main``) until
Ctrl-C or SIGTERM, which close every open chat with 1001.
"""

from __future__ import annotations

import argparse
import html
import http
import importlib
import os
import re
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType, ModuleType
from typing import TextIO

from . import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI, __version__, connect
from .client import parse_url
from .demo import ADAPTERS
from .frames import CloseCode
from .logs import redact_url
from .messages import Message
from .websocket import WebSocket

PROMPT = "> "
#: bytes of a binary message shown in hex; the rest is elided
PREVIEW = 32
#: characters of a refusal's body shown: its first line of text, cut to this width
BODY_WIDTH = 100
#: bytes of a refusal's body looked at for that line
BODY_SCAN = 64 * 1024
#: seconds of handshake after which the CLI says it is still connecting
CONNECTING_NOTICE = 1.0
#: seconds between two signals to the main thread when the server has closed
WAKE_INTERVAL = 0.05

# RFC 9110 §5.6.2: a header name is a token, and so is a subprotocol (RFC 6455 §4.1).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: a field value is visible characters, spaces, tabs and obs-text (Latin-1);
# never CR, LF or NUL, which would end the header early or smuggle in another one.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# C0 and C1 controls other than tab and newline: a server could move the cursor, retitle
# the window or hide text with them, so they print escaped.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# An HTML error page, read as text: comments, scripts and styles go, block elements end
# a line (so a title and a heading are lines of their own), other tags just go.
_HTML_DROP = re.compile(r"<!--.*?(?:-->|$)|<(script|style)\b.*?(?:</\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_HTML_BLOCK = re.compile(
    r"</?(?:address|article|aside|blockquote|body|br|center|dd|div|dl|dt|footer|form|h[1-6]|head|header|hr|html|"
    r"li|main|nav|ol|p|pre|section|table|td|th|title|tr|ul)\b[^<>]*>",
    re.IGNORECASE,
)
# [^<>]: a stray "<" ends a tag attempt, so a body of "<<<<" costs linear time, not quadratic.
_HTML_TAG = re.compile(r"<[^<>]*>")


def _first_line(body: bytes, content_type: str) -> str:
    """What a refusal's body says in one line: its first line of text (an HTML page's
    title or heading), whitespace collapsed, cut to BODY_WIDTH; "" if it has no text."""
    text = body[:BODY_SCAN].decode("utf-8", "replace")
    if "html" in content_type.lower() or text.lstrip().startswith("<"):
        text = _HTML_TAG.sub("", _HTML_BLOCK.sub("\n", _HTML_DROP.sub("", text)))
        text = html.unescape(text)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    first = lines[0]
    if len(first) > BODY_WIDTH:
        return first[: BODY_WIDTH - 4].rstrip() + " ..."
    return first + (" ..." if len(lines) > 1 or len(body) > BODY_SCAN else "")


def _show(message: Message) -> str:
    """One incoming message as the terminal shows it."""
    data = bytes(message.data)
    if message.is_text:
        return "< " + _printable(data.decode("utf-8", "replace"))
    more = " ..." if len(data) > PREVIEW else ""
    return f"< [binary, {len(data)} bytes] {data[:PREVIEW].hex(' ')}{more}".rstrip()


# -- arguments ---------------------------------------------------------------------------


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', not {text!r}")
    if not _FIELD_VALUE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"the value of {name} may hold neither control characters nor non-Latin-1")
    return name, value


def _subprotocol(text: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"a subprotocol is a token (no spaces, commas, quotes ...), not {text!r}")
    return text


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return -1.0
    return value if value < float("inf") else -1.0  # inf and nan are no durations


def _seconds(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def _seconds_or_zero(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}")
    return value


# -- signals -----------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _sigterm_interrupts() -> Callable[[], None]:
    """Make SIGTERM a Ctrl-C: without this it kills the process with no close frame sent.

    Frameworks that handle SIGTERM themselves (CherryPy, gevent, uvicorn) replace
    this handler while they run. Returns what puts the previous handler back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


class _Wakeup(Exception):
    """Raised in the main thread, blocked reading a line, when the server has closed."""


# -- the client --------------------------------------------------------------------------


class _Console:
    """The terminal, shared by the main thread (reading lines) and the reader thread.

    One lock keeps lines whole. On a terminal with readline, an incoming line
    first erases the prompt and the half-typed input, prints, then draws them
    again below: what the user was typing stays on screen and in readline's buffer.
    """

    def __init__(self, out: TextIO, err: TextIO, readline: ModuleType | None) -> None:
        self.out = out
        self.err = err
        self.readline = readline
        self.lock = threading.Lock()
        #: the main thread is reading a line (or about to): only then may _Wakeup be raised
        self.waiting = False

    def show(self, text: str, *, status: bool = False, last: bool = False) -> None:
        """Print ``text`` on its own line: a message on stdout, a ``status`` line on stderr.

        ``last``: no more input will be read, so the prompt is not drawn again.
        """
        stream = self.err if status else self.out
        with self.lock:
            if self.readline is not None and self.waiting:
                # "\r" then ECMA-48 EL (erase line) wipes the prompt; redraw it after the text.
                self.out.write("\r\x1b[K")
                self.out.flush()
                stream.write(text + "\n")
                stream.flush()
                if not last:
                    self.out.write(PROMPT + self.readline.get_line_buffer())
            else:
                stream.write(text + "\n")
            stream.flush()
            self.out.flush()

    def end_input(self, interrupted: bool) -> None:
        """Leave the input line: after Ctrl-C on a fresh line (what was typed stays
        visible, as in a shell); after Ctrl-D over the prompt, which readline leaves behind."""
        with self.lock:
            if self.readline is not None:
                self.out.write("\n" if interrupted else "\r\x1b[K")
            elif interrupted and self.out.isatty():
                self.out.write("\n")  # the terminal echoed ^C
            self.out.flush()

    def read_line(self) -> str | None:
        """The next line of input without its line ending; None at end of input."""
        if self.readline is not None:
            try:
                return input(PROMPT)
            except EOFError:
                return None
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
        if stdin is not None:
            # Bytes, decoded here: a stray invalid byte in piped input costs a U+FFFD, not the session.
            raw = stdin.readline()
            line = raw.decode("utf-8", "replace") if raw else ""
        else:
            line = sys.stdin.readline()
        if not line:
            return None
        return line.removesuffix("\n").removesuffix("\r")


class _Session:
    """One connected client: lines from stdin go out, messages come in on a reader thread."""

    def __init__(self, ws: WebSocket, console: _Console, timeout: float, linger: float = 0.0) -> None:
        self.ws = ws
        self.console = console
        self.timeout = timeout
        self.linger = linger  # seconds to keep printing after the end of input, before closing
        self.closing = threading.Event()  # we started the closing handshake
        self.ended = threading.Event()  # the reader saw the connection end
        self.input_done = threading.Event()  # the main thread reads no more input
        self._wake: Callable[[], None] | None = None  # interrupts the main thread's read
        self._wake_lock = threading.Lock()
        self._exit_to_wake = False  # no way to interrupt the read: end the process instead

    def run(self) -> int:
        reader = threading.Thread(target=self._read, name="ws4web-cli-reader", daemon=True)
        restore = self._install_wakeup()
        try:
            reader.start()
            code = CloseCode.NORMAL_CLOSURE
            end_of_input = False
            try:
                self._send_lines()
                self.console.end_input(interrupted=False)
                end_of_input = True
            except KeyboardInterrupt:
                code = CloseCode.GOING_AWAY  # §7.4.1: the user is leaving
                self.console.end_input(interrupted=True)
            except _Wakeup:
                pass  # the reader has printed how the connection ended, over the prompt
            finally:
                self.input_done.set()
            if end_of_input:
                try:
                    # Replies to the last lines may still be on their way: a server
                    # that reads our close stops sending (§5.5.1), so wait first.
                    self.ended.wait(self.linger)
                except KeyboardInterrupt:
                    code = CloseCode.GOING_AWAY
            self._close(code)
            reader.join(self.timeout)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting for the server's answer
        finally:
            if reader.is_alive():
                self.ws.terminate()
                reader.join(self.timeout)
            restore()
        return 0 if self.ws.close_code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY) else 1

    def _send_lines(self) -> None:
        """Send each line read until end of input or the end of the connection."""
        while True:
            # `waiting` goes up before `ended` is checked: from then on a wakeup
            # signal raises _Wakeup, so the end seen after the check still stops the read.
            self.console.waiting = True
            try:
                if self.ended.is_set():
                    return
                line = self.console.read_line()
            except UnicodeDecodeError:
                self.console.show("! that line is not valid UTF-8; not sent", status=True)
                continue
            finally:
                self.console.waiting = False
            if line is None:
                return
            try:
                self.ws.send(line)
            except ConnectionClosed:
                return

    def _close(self, code: int) -> None:
        if self.ended.is_set():
            return
        self.closing.set()
        try:
            self.ws.close(code)
        except (ConnectionClosed, OSError):
            pass  # already closing or gone: the reader reports how it ended

    def _read(self) -> None:
        try:
            for message in self.ws:
                self.console.show(_show(message))
        except ConnectionClosed:
            pass
        except Exception as exc:  # pragma: no cover - a bug: report it, still end cleanly
            self.console.show(f"! reader failed: {exc!r}", status=True)
            self.ws.terminate()
        finally:
            # `ended` first: a main thread not yet back in read_line() then stops before it.
            self.ended.set()
            server_first = not self.closing.is_set()
            self.console.show(self._ending(), status=True, last=server_first)
            if server_first:
                self._wake_main()

    def _ending(self) -> str:
        code, reason = self.ws.close_code, _printable(self.ws.close_reason)
        text = f"{code} {reason}".rstrip()
        if code == CloseCode.ABNORMAL_CLOSURE:
            return f"connection lost: {text} (no close frame)"
        if self.closing.is_set():
            return f"closed: {text}"
        return f"closed by the server: {text}"

    # The main thread blocks in input() / readline(), which no other thread can
    # interrupt except with a signal; readline then restores the terminal's modes.

    def _install_wakeup(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # run from a thread: no signals; the next line read sees `ended`
        if not hasattr(signal, "SIGUSR1"):  # Windows
            self._exit_to_wake = True
            return lambda: None
        main = threading.get_ident()

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.console.waiting:
                raise _Wakeup

        previous = signal.signal(signal.SIGUSR1, handler)
        self._wake = lambda: signal.pthread_kill(main, signal.SIGUSR1)

        def restore() -> None:
            with self._wake_lock:  # no signal is sent once the old handler is back
                self._wake = None
                signal.signal(signal.SIGUSR1, previous)

        return restore

    def _wake_main(self) -> None:
        """Get the main thread out of its blocking read: the session is over."""
        if self._exit_to_wake:
            self.console.out.flush()
            self.console.err.flush()
            os._exit(0 if self.ws.close_code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY) else 1)
        # A signal that lands after the main thread's last check for pending signals
        # but before its read() blocks is handled without interrupting that read: so
        # signal again until the main thread is out (bounded, should it never come).
        for _ in range(int(self.timeout / WAKE_INTERVAL) + 1):
            with self._wake_lock:
                if self._wake is None or self.input_done.is_set():
                    return
                self._wake()
            if self.input_done.wait(WAKE_INTERVAL):
                return


def _console() -> _Console:
    readline: ModuleType | None = None
    if sys.stdin.isatty() and sys.stdout.isatty():
        try:
            import readline
        except ImportError:  # no line editing here: lines print plainly
            readline = None
    return _Console(sys.stdout, sys.stderr, readline)


def _refusal(exc: InvalidStatus) -> list[str]:
    """The lines that say why the server refused: its status, and its body's first line."""
    try:
        phrase = http.HTTPStatus(exc.status).phrase
    except ValueError:
        phrase = ""
    lines = [f"refused: HTTP {exc.status} {phrase}".rstrip()]
    if type(exc) is not InvalidStatus:  # a subclass says more: a redirect not followed, say
        lines.append(str(exc))
    content_type = next((value for name, value in exc.headers if name.lower() == "content-type"), "")
    if exc.body and (line := _first_line(exc.body, content_type)):
        lines.append(line)
    return [_printable(line) for line in lines]


def _connect(args: argparse.Namespace, shown: str) -> WebSocket:
    """connect(), saying so on stderr when the handshake takes longer than CONNECTING_NOTICE."""
    context = None
    if args.insecure:  # also for a ws:// URL that redirects to wss://
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def notice() -> None:
        print(f"connecting to {shown} (press Ctrl-C to give up)", file=sys.stderr, flush=True)

    timer = threading.Timer(CONNECTING_NOTICE, notice)
    timer.daemon = True
    timer.start()
    try:
        return connect(
            args.url,
            protocols=args.subprotocol,
            headers=args.header,
            ssl_context=context,
            timeout=args.timeout,
            close_timeout=args.timeout,
        )
    finally:
        # cancel() stops a notice not yet shown; join() waits for one being printed,
        # so that it never comes after what follows.
        timer.cancel()
        timer.join()


def run_client(args: argparse.Namespace) -> int:
    shown = redact_url(args.url)
    try:
        parse_url(args.url)  # a usage error: found before connecting anywhere
    except InvalidURI as exc:
        print(f"invalid URL: {exc}", file=sys.stderr)
        return 2
    try:
        ws = _connect(args, shown)
    except InvalidStatus as exc:
        for line in _refusal(exc):
            print(line, file=sys.stderr)
        return 1
    except ssl.SSLCertVerificationError as exc:
        print(
            f"cannot connect: TLS certificate verification failed ({exc.verify_message}); --insecure skips the check",
            file=sys.stderr,
        )
        return 1
    except (OSError, InvalidHandshake, InvalidURI) as exc:  # InvalidURI: wss:// through an https:// proxy
        print(f"cannot connect: {_printable(str(exc))}", file=sys.stderr)
        return 1
    console = _console()
    suffix = f" (subprotocol {_printable(ws.subprotocol)})" if ws.subprotocol else ""
    console.show(f"connected to {shown}{suffix}; Ctrl-D to close", status=True)
    return _Session(ws, console, args.timeout, args.wait).run()


# -- serve -------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    try:
        app = importlib.import_module(f"{__package__}.demo.{args.adapter}_app")
    except ModuleNotFoundError as exc:  # the framework the demo runs on
        missing = (exc.name or "?").partition(".")[0]
        what = missing if args.adapter == "stdlib" else f"'ws4web[{args.adapter}]'"
        print(f"the {args.adapter} chat demo needs {missing!r}: pip install {what}", file=sys.stderr)
        return 1
    try:
        app.main(["--host", args.host, "--port", str(args.port)])
    except OSError as exc:  # the port is taken, the host unknown ...
        print(f"cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass  # Ctrl-C while the app was still starting (importing its framework, say)
    return 0


def _prog() -> str:
    """How the user called us: the console script, or ``python -m ws4web``."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    return "ws4web" if script.startswith("ws4web") else "python -m ws4web"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    restore_sigterm = _sigterm_interrupts()
    try:
        if argv[:1] == ["serve"]:
            parser = argparse.ArgumentParser(prog=f"{_prog()} serve", description="Run the chat demo.")
            parser.add_argument("--host", default="127.0.0.1")
            parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (default: 8080)")
            parser.add_argument("--adapter", choices=ADAPTERS, default="stdlib")
            return run_serve(parser.parse_args(argv[1:]))
        parser = argparse.ArgumentParser(
            prog=_prog(),
            description="Interactive WebSocket client: each line typed is sent as a text message.",
            epilog=f"'{_prog()} serve --help': the chat demo server.",
        )
        parser.add_argument("--version", action="version", version=f"ws4web {__version__}")
        parser.add_argument("url", help="ws:// or wss:// URL")
        parser.add_argument(
            "--header",
            "-H",
            action="append",
            default=[],
            type=_header,
            metavar="'NAME: VALUE'",
            help="extra header (repeatable)",
        )
        parser.add_argument(
            "--subprotocol",
            "-s",
            action="append",
            default=[],
            type=_subprotocol,
            metavar="P",
            help="offer it (repeatable)",
        )
        parser.add_argument("--insecure", "-k", action="store_true", help="wss: do not verify the certificate")
        parser.add_argument(
            "--wait",
            "-w",
            type=_seconds_or_zero,
            default=0.0,
            metavar="SECONDS",
            help="after the end of input, go on printing for this long before closing (for piped input)",
        )
        parser.add_argument(
            "--timeout",
            type=_seconds,
            default=10.0,
            metavar="SECONDS",
            help="for the handshake and the closing one (default: 10)",
        )
        return run_client(parser.parse_args(argv))
    except KeyboardInterrupt:
        # Ctrl-C before a session was up (during the handshake, say): nothing to close.
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        restore_sigterm()


if __name__ == "__main__":
    sys.exit(main())
