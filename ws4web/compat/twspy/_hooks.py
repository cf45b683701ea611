"""Calling a twspy ``onclose`` override with what it takes: twspy's code passed ``(code, reason)``,
its README's examples took ``(message)`` (a Connection) or only ``(client)`` (a Server)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def positional_arity(method: Callable[..., Any]) -> int | None:
    """How many positional arguments a bound method takes; None for ``*args``."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - a C function: assume twspy's form
        return None
    count = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count
