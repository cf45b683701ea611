"""``ws4py.client.threadedclient``: :class:`WebSocketClient`, whose ``connect()`` starts a thread for the callbacks."""

from __future__ import annotations

import threading
from typing import Any

from . import WebSocketBaseClient

__all__ = ["WebSocketClient"]


class WebSocketClient(WebSocketBaseClient):
    """ws4py's threaded client: ``connect()`` completes the handshake and starts a
    thread that runs ``opened()``, ``received_message()`` ... until the connection
    closes. ``run_forever()`` waits for that thread; ``daemon`` (True by default,
    as in ws4py) says whether it keeps the process alive. The constructor is
    :class:`~ws4web.compat.ws4py.client.WebSocketBaseClient`'s.
    """

    def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        self._th = threading.Thread(target=self.run, name="WebSocketClient", daemon=True)

    @property
    def daemon(self) -> bool:
        """Whether the client's thread is a daemon thread (set it before ``connect()``)."""
        return self._th.daemon

    @daemon.setter
    def daemon(self, flag: bool) -> None:
        self._th.daemon = flag

    def handshake_ok(self) -> None:
        """Start the client's thread."""
        self.run_blocking()
        self._th.start()

    def run_forever(self) -> None:
        """Block until the connection has ended (Ctrl-C still gets through)."""
        if self._th.ident is not None:
            while self._th.is_alive():
                self._th.join(timeout=0.1)
            return
        # Not run by this client's thread (a manager runs it, or nothing yet).
        while not self.connection.wait_closed(0.1):
            pass
