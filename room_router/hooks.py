"""Backend hooks: the calls the edge makes to the platform's backend before it
lets something happen (docs/BACKEND.md): the publish proxy (an action of a
kind the room's config names), the connect proxy (a ``hello``, with
``--connect-proxy``) and the join proxy (a join of a room whose config sets
``join_proxy``).

Theory of operation
-------------------
A hook is one JSON ``POST <--backend-url>/liveroom/<hook>`` answered by a
JSON decision, ``{"allow": true, ...}`` or ``{"allow": false, "code",
"message"}``. The backend is a dependency the edge does not control, so each
hook is guarded three ways, and every guard fails *closed*: what needs the
backend is refused with ``unavailable`` (temporary, advice ``retry``, with
``retry_after`` and a ``reason``), never let through unchecked.

- a timeout per call (``--hook-timeout``, 1 s): a slow answer is no answer;
- a cap on calls in flight per hook (``--hook-concurrency``): one more is
  refused at once (``backend_busy``) rather than queued, so a slow backend
  costs the edge a bounded number of waiting frames, not a growing queue;
- a circuit breaker per hook (``plumbing/breaker.py``, the model backends'
  own): after ``--hook-breaker-threshold`` failures in a row (timeouts,
  connection errors, non-200 answers, malformed answers) calls are refused
  at once (``backend_open``) for ``--hook-breaker-reset`` seconds, then one
  probe call decides whether it closes again.

A refusal by the backend (``allow: false``) is not a failure of the hook:
it becomes ``rejected`` (``reason``: the backend's ``code``). The parsing of
the answers is pure (``publish_answer``, ``connect_answer``,
``join_answer``): a backend bug (a body breaking the kind's rules, an
``info`` over 1 KiB, an unknown role) is a malformed answer, refused as
``unavailable`` and logged (rate-limited), and the room never sees it.

Every call is signed: ``Authorization: Bearer <secret>`` (``--hook-secret``,
else the backend API key ``LIVEROOM_API_KEY``), so the backend can tell the
edge from anyone else; ``X-Liveroom-Hook`` names the hook.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plumbing.breaker import CLOSED, CircuitBreaker
from plumbing.ratelog import RateLimitedLog
from wire.decode import value_fault
from wire.errors import LiveroomError, Rejected, Unavailable
from wire.frames import ROOM_ROLES
from wire.incoming import action_body

T = TypeVar("T")

PUBLISH: Final = "publish"
CONNECT: Final = "connect"
JOIN: Final = "join"
HOOKS: Final = (PUBLISH, CONNECT, JOIN)

# Bounds of what the backend answers (a bug there must not hurt a room).
MAX_ANSWER_BYTES: Final = 64 * 1024
MAX_INFO_BYTES: Final = 1024
MAX_CODE_CHARS: Final = 64
MAX_MESSAGE_CHARS: Final = 200
# Fields a backend may add to a built-in kind's body (a gift's price).
MAX_EXTRA_FIELDS: Final = 16
# What ``unavailable`` advises when the breaker says nothing better.
RETRY_AFTER: Final = 0.5
# The least retry_after a refusal advises (0 would read as "at once").
MIN_RETRY_AFTER: Final = 0.05


@dataclass(frozen=True, slots=True)
class HookConfig:
    """The hooks' flags (liveroom/flags.py); no ``url``: no hooks at all."""

    url: str | None = None
    timeout: float = 1.0
    concurrency: int = 64
    breaker_threshold: int = 5
    breaker_reset: float = 5.0
    connect: bool = False
    secret: str | None = None


class Malformed(Exception):
    """The backend's answer is not one the protocol allows (says why)."""


# -- the answers, parsed (pure) ------------------------------------------------
def _decision(answer: Any) -> bool:
    """``allow`` of an answer; Malformed when there is none. A refusal is
    raised as ``Rejected`` with the backend's code and message."""
    if not isinstance(answer, dict) or type(answer.get("allow")) is not bool:
        raise Malformed("the answer is not a JSON object with a boolean 'allow'")
    if answer["allow"]:
        return True
    code = answer.get("code", "refused")
    message = answer.get("message", "refused by the platform")
    if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE_CHARS:
        raise Malformed(f"'code' must be a string of 1..{MAX_CODE_CHARS} chars")
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
        raise Malformed(f"'message' must be a string of at most {MAX_MESSAGE_CHARS} chars")
    raise Rejected(message or "refused by the platform", reason=code)


def publish_answer(answer: Any, kind: str, sent: Any, max_comment_chars: int,
                   max_value_bytes: int) -> Any:
    """The body to fan out: the backend's ``body`` (``sent`` when it gives
    none), held to the kind's rules and the value rule. A built-in kind's
    body keeps the fields the backend added (a gift's price), at most
    ``MAX_EXTRA_FIELDS``. ``Rejected`` for a refusal, Malformed for a bug."""
    _decision(answer)
    if "body" not in answer:
        return sent
    body = answer["body"]
    if value_fault(body, max_value_bytes) is not None:
        raise Malformed("the body breaks the value rule")
    try:
        checked = action_body(kind, body, None, max_comment_chars)
    except LiveroomError as err:
        raise Malformed(f"the body breaks the rules of kind {kind!r}: {err.message}") from None
    if checked is body or not isinstance(body, dict):
        return checked
    extra = {k: v for k, v in body.items() if k not in checked}
    if len(extra) > MAX_EXTRA_FIELDS or not all(isinstance(k, str) for k in extra):
        raise Malformed(f"at most {MAX_EXTRA_FIELDS} extra fields, named by strings")
    return {**checked, **extra}


def connect_answer(answer: Any) -> dict[str, Any] | None:
    """The ``info`` to attach to the user (None: none); ``Rejected`` for a
    refusal, Malformed for a bug (an ``info`` that is not a map of at most
    ``MAX_INFO_BYTES`` under the value rule)."""
    _decision(answer)
    info = answer.get("info")
    if info is None:
        return None
    if not isinstance(info, dict) or value_fault(info, MAX_INFO_BYTES) is not None:
        raise Malformed(f"'info' must be a map of at most {MAX_INFO_BYTES} bytes (msgpack)")
    return info


def join_answer(answer: Any) -> str | None:
    """The role granted in the room (None: the token's); ``Rejected`` for a
    refusal, Malformed for a bug."""
    _decision(answer)
    role = answer.get("role")
    if role is not None and role not in ROOM_ROLES:
        raise Malformed(f"'role' must be one of {', '.join(ROOM_ROLES)}")
    return role if isinstance(role, str) else None


# -- the caller ------------------------------------------------------------------
class HookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "liveroom_hook_calls_total", "Backend hook calls by outcome: allowed, rejected, "
            "timeout, error (connection, non-200), malformed, busy (the concurrency cap), "
            "open (the breaker)", ["hook", "outcome"], registry=registry)
        self.seconds = Histogram(
            "liveroom_hook_seconds", "Time a backend hook call took (answered calls)",
            ["hook"], buckets=(1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry)
        self.breaker_open = Gauge("liveroom_hook_breaker_open",
                                  "1 while a hook's circuit breaker is open or half-open",
                                  ["hook"], registry=registry)
        self.in_flight = Gauge("liveroom_hook_in_flight", "Backend hook calls in flight",
                               ["hook"], registry=registry)


class HookClient:
    """Calls the backend's hooks with a timeout, a concurrency cap and a
    circuit breaker per hook (see the module docstring)."""

    def __init__(self, config: HookConfig, registry: CollectorRegistry, errlog: RateLimitedLog,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        assert config.url, "no --backend-url"
        self.config = config
        self.base = config.url.rstrip("/")
        self.metrics = HookMetrics(registry)
        self.breakers = {h: CircuitBreaker(config.breaker_threshold, config.breaker_reset)
                         for h in HOOKS}
        self._in_flight = dict.fromkeys(HOOKS, 0)
        self._errlog = errlog
        self._monotonic = monotonic
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/json"}
        if config.secret:
            self._headers["Authorization"] = f"Bearer {config.secret}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _refuse(self, hook: str, outcome: str, message: str,
                retry_after: float = RETRY_AFTER) -> Unavailable:
        self.metrics.calls.labels(hook, outcome).inc()
        # Never 0: a breaker a millisecond from its probe still asks the
        # client to wait a little (and a rounded 0 reads as "at once").
        return Unavailable(message, retry_after=round(max(retry_after, MIN_RETRY_AFTER), 3),
                           reason=f"backend_{outcome}")

    async def ask(self, hook: str, payload: Mapping[str, Any],
                  parse: Callable[[Any], T]) -> T:
        """POST ``payload`` to the hook and ``parse`` its JSON answer (one of
        the ``*_answer`` functions): the decision, ``Rejected`` (the backend
        refused), or ``Unavailable`` (no good answer: see the docstring)."""
        breaker = self.breakers[hook]
        now = self._monotonic()
        if not breaker.allow(now):
            raise self._refuse(hook, "open", f"the backend's {hook} hook is failing; "
                               "retry later", breaker.retry_after(now) or RETRY_AFTER)
        if self._in_flight[hook] >= self.config.concurrency:
            if breaker.state != CLOSED:
                breaker.probing = False  # the probe was not made: let the next one be
            raise self._refuse(hook, "busy", f"the backend's {hook} hook has "
                               f"{self.config.concurrency} calls in flight; retry later")
        self._in_flight[hook] += 1
        self.metrics.in_flight.labels(hook).inc()
        try:
            decision = parse(await self._post(hook, payload))
        except Rejected:
            self._succeeded(hook, breaker, "rejected")
            raise
        except Malformed as exc:
            self._failed(hook, breaker)
            self._errlog.warning(f"hook:{hook}:malformed", "backend %s hook: malformed "
                                 "answer (%s)", hook, exc)
            raise self._refuse(hook, "malformed", f"the backend's {hook} hook answered "
                               "wrongly; retry later") from None
        except TimeoutError:
            self._failed(hook, breaker)
            raise self._refuse(hook, "timeout", f"the backend's {hook} hook did not answer "
                               f"within {self.config.timeout:g} s; retry later") from None
        except (aiohttp.ClientError, OSError) as exc:
            self._failed(hook, breaker)
            self._errlog.warning(f"hook:{hook}:{type(exc).__name__}",
                                 "backend %s hook failed: %s", hook, exc)
            raise self._refuse(hook, "error", f"the backend's {hook} hook failed; "
                               "retry later") from None
        finally:
            self._in_flight[hook] -= 1
            self.metrics.in_flight.labels(hook).dec()
        self._succeeded(hook, breaker, "allowed")
        return decision

    def _succeeded(self, hook: str, breaker: CircuitBreaker, outcome: str) -> None:
        breaker.success(self._monotonic())
        self.metrics.breaker_open.labels(hook).set(0)
        self.metrics.calls.labels(hook, outcome).inc()

    def _failed(self, hook: str, breaker: CircuitBreaker) -> None:
        breaker.failure(self._monotonic())
        self.metrics.breaker_open.labels(hook).set(0 if breaker.state == CLOSED else 1)

    async def _post(self, hook: str, payload: Mapping[str, Any]) -> Any:
        """One POST within the timeout: the answer's JSON (Malformed when it
        is not JSON, too big, or the status is not 200)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), raise_for_status=False)
        t0 = self._monotonic()
        data = json.dumps(payload, separators=(",", ":")).encode()
        async with asyncio.timeout(self.config.timeout):
            async with self._session.post(f"{self.base}/liveroom/{hook}", data=data,
                                          headers={**self._headers,
                                                   "X-Liveroom-Hook": hook}) as resp:
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                status = resp.status
        self.metrics.seconds.labels(hook).observe(self._monotonic() - t0)
        if status != 200:
            raise aiohttp.ClientResponseError(resp.request_info, (), status=status,
                                               message=f"status {status}")
        if len(raw) > MAX_ANSWER_BYTES:
            raise Malformed(f"the answer is over {MAX_ANSWER_BYTES} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise Malformed("the answer is not JSON") from None

    def status(self) -> dict[str, Any]:
        """Each hook's breaker and calls in flight (for tests and health)."""
        return {h: {"breaker": b.state, "in_flight": self._in_flight[h]}
                for h, b in self.breakers.items()}
