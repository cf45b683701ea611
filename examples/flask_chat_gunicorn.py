"""The Flask chat demo (examples/flask_chat_werkzeug.py) for gunicorn: ``app`` is the WSGI application.

Run it from the repository root::

    gunicorn -c examples/flask_chat_gunicorn_conf.py -k gthread --threads 32 -b 127.0.0.1:8080 \
        --chdir examples flask_chat_gunicorn:app
    gunicorn -c examples/flask_chat_gunicorn_conf.py -k gevent -b 127.0.0.1:8080 \
        --chdir examples flask_chat_gunicorn:app

The configuration (examples/flask_chat_gunicorn_conf.py) makes a stopping worker
close every chat with 1001 (Going Away), on Ctrl-C and on SIGTERM.

Use one worker (``-w 1``, the default): the chat room lives in the process, so
users on different workers would not see each other. With ``-k sync`` every
WebSocket occupies the worker for its whole life (one chat user at a time) and
the arbiter kills a worker silent for ``--timeout`` seconds; prefer gthread or
gevent.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flask_chat_werkzeug import app

__all__ = ["app"]
