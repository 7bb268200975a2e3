"""Rate-limited logging, for failures a client can cause at will.

Theory of operation
-------------------
A log line is cheap until a client can make the server write one per frame:
then the log is a disk to fill and a haystack to hide a real failure in. So
every failure a client can trigger (a frame that failed, a fan-out error, an
HTTP request that failed) is logged through one ``LogLimiter``: per *key*
(what failed, chosen by the caller from a bounded set: an exception's type,
a route, a reason), at most ``lines`` lines per ``interval`` seconds. What
is held back is counted; the next line of that key that is let through,
once the interval has passed, says how many similar lines were suppressed.
The metrics still count every failure: the log is for finding one, not for
counting them.

``LogLimiter`` is pure (time comes in as ``now``) and bounded: at most
``max_keys`` keys are tracked; when full, the entries whose interval has run
out are dropped, and if none has, new keys share one overflow entry.
``RateLimitedLog`` is the thin adapter onto a ``logging.Logger``.

A leaf on the ground floor (``plumbing/``): it imports nothing of liveroom,
so every floor may log through it (the edge, the CLI, the NATS bus).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

_OVERFLOW: Final = "(other keys)"


class _Window:
    __slots__ = ("logged", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.logged = 0
        self.suppressed = 0


class LogLimiter:
    """At most ``lines`` log lines per key per ``interval`` seconds."""

    __slots__ = ("_windows", "interval", "lines", "max_keys")

    def __init__(self, lines: int = 5, interval: float = 60.0, max_keys: int = 256) -> None:
        self.lines = lines
        self.interval = interval
        self.max_keys = max_keys
        self._windows: dict[str, _Window] = {}

    def admit(self, key: str, now: float) -> int | None:
        """None: do not log this one (it is counted). Else log it, and the
        int is how many lines of this key were suppressed before it."""
        w = self._windows.get(key)
        if w is None:
            if len(self._windows) >= self.max_keys:
                self._expire(now)
                if len(self._windows) >= self.max_keys:
                    key = _OVERFLOW
                    w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Window(now)
        elif now - w.start >= self.interval:
            w.start = now
            w.logged = 0
        if w.logged >= self.lines:
            w.suppressed += 1
            return None
        w.logged += 1
        suppressed, w.suppressed = w.suppressed, 0
        return suppressed

    def _expire(self, now: float) -> None:
        """Forget the keys whose interval has run out (their suppressed
        count, if any, is lost with them: the metrics have it)."""
        stale = [k for k, w in self._windows.items() if now - w.start >= self.interval]
        for k in stale:
            del self._windows[k]


class RateLimitedLog:
    """A ``logging.Logger`` behind a ``LogLimiter``; ``key`` picks the budget."""

    __slots__ = ("_clock", "limiter", "logger")

    def __init__(self, logger: logging.Logger, limiter: LogLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.limiter = limiter or LogLimiter()
        self._clock = clock

    def log(self, level: int, key: str, msg: str, *args: Any,
            exc_info: BaseException | bool | None = None) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` is over its budget;
        True when it was logged."""
        if not self.logger.isEnabledFor(level):
            return False
        suppressed = self.limiter.admit(key, self._clock())
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def exception(self, key: str, msg: str, *args: Any,
                  exc: BaseException | None = None) -> bool:
        """ERROR with the traceback of ``exc`` (default: the one being handled)."""
        return self.log(logging.ERROR, key, msg, *args, exc_info=exc or True)

    def warning(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args)


class RateLimitFilter(logging.Filter):
    """The same budget for the lines of a library that a client can make
    log (aiohttp's server logs a traceback for every malformed request;
    asyncio and aioquic log transport failures): installed on such a logger,
    it lets through at most ``lines`` records per message template per
    ``interval`` and marks the next one let through with the count held back."""

    def __init__(self, limiter: LogLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.limiter = limiter or LogLimiter()
        self._clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        # The template (not the formatted text) is the key: a bounded set
        # per library, whatever the client put in the arguments.
        suppressed = self.limiter.admit(f"{record.name}:{record.msg}", self._clock())
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} similar suppressed)"
        return True


# Loggers of the libraries under the edge that a client can make write a
# line per request or connection (liveroom.cli installs the filter on them).
# ``liveroom.agents.refused``: a character's writes the edge refused (a
# host can make a room refuse them: a section cap, a kind).
CLIENT_DRIVEN_LOGGERS: Final = ("aiohttp.server", "aiohttp.web", "aiohttp.websocket",
                                "asyncio", "quic", "liveroom.agents.refused")


def limit_client_driven_logs(limiter: LogLimiter | None = None) -> RateLimitFilter:
    """Install one ``RateLimitFilter`` on every logger of CLIENT_DRIVEN_LOGGERS."""
    flt = RateLimitFilter(limiter)
    for name in CLIENT_DRIVEN_LOGGERS:
        logging.getLogger(name).addFilter(flt)
    return flt
