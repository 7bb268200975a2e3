"""Handlers by event name, sync or async, for the client and its rooms."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("liveroom.client")

Handler = Callable[..., Any]


class Emitter:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    def on(self, event: str, handler: Handler) -> Handler:
        """Call ``handler`` on ``event`` (a coroutine function is awaited, in
        order with the frames: the next frame waits for it)."""
        self._handlers.setdefault(event, []).append(handler)
        return handler

    def off(self, event: str, handler: Handler) -> None:
        if handler in self._handlers.get(event, []):
            self._handlers[event].remove(handler)

    async def emit(self, event: str, *args: Any) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # One application handler's failure must not stop the client.
                log.exception("%s handler failed", event)
