"""gunicorn configuration for examples/flask_chat_gunicorn.py: a stopping worker closes every chat with 1001.

    gunicorn -c examples/flask_chat_gunicorn_conf.py -k gthread --threads 32 -b 127.0.0.1:8080 \
        --chdir examples flask_chat_gunicorn:app

Without these hooks a worker told to stop gracefully (SIGTERM) waits
``--graceful-timeout`` for chats that never end by themselves, then is killed,
and one told to stop now (Ctrl-C) drops them: the browsers see 1006 either way.
The master reads this file before any worker exists, so nothing here imports
the application: a gevent worker must import it itself, after monkey-patching.
"""

from __future__ import annotations

import signal
from typing import Any


def _shutdown() -> None:
    # The worker's application has imported it by now (flask_chat_gunicorn imports it).
    from flask_chat_werkzeug import ws

    ws.shutdown(timeout=2.0)  # 1001 Going Away to every open chat


def worker_int(worker: Any) -> None:
    """In a worker told to stop now (Ctrl-C, SIGQUIT): close the chats first."""
    _shutdown()


def post_worker_init(worker: Any) -> None:
    """In a worker once it serves: a graceful stop (SIGTERM) closes the chats first, then lets
    gunicorn finish the worker's other requests."""
    graceful = signal.getsignal(signal.SIGTERM)

    def stop(signum: int, frame: Any) -> None:
        _shutdown()
        if callable(graceful):
            graceful(signum, frame)

    if type(worker).__module__.startswith("gunicorn.workers.ggevent"):
        # A gevent worker may run this handler in gevent's hub, which must not wait
        # for the closing handshakes: they run in a greenlet of their own.
        import gevent

        signal.signal(signal.SIGTERM, lambda signum, frame: gevent.spawn(stop, signum, frame))
    else:
        signal.signal(signal.SIGTERM, stop)
