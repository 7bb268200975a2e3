"""Pure decisions of the client: how long to wait before reconnecting, when
to renew a token, what a close or a refused ``hello`` means.

No I/O and no event loop, so each rule is tested on its own
(tests/unit/test_sdk_python.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from dataclasses import dataclass, field

from wire.close_codes import close_advice

# What to do after a connection ended (see ``after_close``).
RECONNECT = "reconnect"
RENEW_TOKEN = "renew_token"
GIVE_UP = "give_up"


@dataclass
class Backoff:
    """Exponential backoff with full jitter: the n-th wait is uniform in
    ``[0, min(cap, base * 2**n)]``, so clients dropped together (an edge
    killed under thousands of them) do not come back together."""

    base: float = 0.25
    cap: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempts = 0


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without checking the signature (the
    client only needs to know when to renew; the server checks the rest).
    None when the token is not a JWT with a numeric ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


def refresh_delay(exp: float | None, now: float, margin: float = 30.0) -> float | None:
    """Seconds from ``now`` until the connection should be renewed with a
    fresh token: ``margin`` before ``exp``, but never later than three
    quarters of the time left (a token of a few seconds still gets renewed
    before the server closes with 4200). None: the token does not expire."""
    if exp is None:
        return None
    left = exp - now
    return max(0.0, left - min(margin, left / 4))


def after_close(code: int | None) -> str:
    """RECONNECT, RENEW_TOKEN or GIVE_UP after a close with ``code`` (None:
    the connection dropped without a close: a killed server, a lost network,
    a heartbeat that went unanswered)."""
    if code is None:
        return RECONNECT
    return {"reconnect": RECONNECT, "renew_token": RENEW_TOKEN}.get(close_advice(code), GIVE_UP)


def after_hello_error(frame: dict[str, object]) -> str:
    """What a refused ``hello`` means: an expired token is renewed; a backend
    that did not answer (``unavailable``) is retried after a backoff; any
    other refusal (a forged token, a banned user, too many connections) would
    fail the same way again."""
    code = frame.get("code")
    if code == "unauthorized" and frame.get("expired") is True:
        return RENEW_TOKEN
    if code in ("unavailable", "internal", "rate_limited"):
        return RECONNECT
    return GIVE_UP
