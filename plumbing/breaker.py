"""A circuit breaker for a backend (model server, platform hook); pure, time as an argument.

closed -> open after ``threshold`` consecutive failures; while open every
call is refused at once (the caller fails fast instead of piling up
requests on a dead server); after ``reset_after_s`` one probe call is let
through (half-open): its success closes the breaker, its failure opens it
again for another ``reset_after_s``.
"""

from __future__ import annotations

from typing import Final

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"


class CircuitBreaker:
    __slots__ = ("failures", "opened_at", "probing", "reset_after_s", "state", "threshold")

    def __init__(self, threshold: int = 3, reset_after_s: float = 10.0) -> None:
        self.threshold = threshold
        self.reset_after_s = reset_after_s
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False

    def allow(self, now: float) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN and now - self.opened_at >= self.reset_after_s:
            self.state = HALF_OPEN
            self.probing = False
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def success(self, now: float) -> None:
        self.state = CLOSED
        self.failures = 0
        self.probing = False

    def failure(self, now: float) -> None:
        self.failures += 1
        self.probing = False
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.state = OPEN
            self.opened_at = now

    def retry_after(self, now: float) -> float:
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.reset_after_s - now)
