"""Pub/sub for WebSocket connections: a :class:`Hub` of named groups, in one process or across many.

``Hub()`` keeps everything in this process (standard library only).
``Hub(RedisBackplane(url))`` reaches the same groups in every process that
shares the Redis server; it needs the ``redis`` package (``pip install
ws4web[redis]``) and is imported from :mod:`ws4web.pubsub.redis`, so this module
never imports ``redis`` itself. See docs/pubsub.md.
"""

from __future__ import annotations

from .hub import Backplane, Hub, HubStats, Overflow, RateLimit

__all__ = ["Backplane", "Hub", "HubStats", "Overflow", "RateLimit"]
