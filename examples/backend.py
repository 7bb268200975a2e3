"""A small platform backend for liveroom's hooks (docs/BACKEND.md): it prices
gifts, keeps a balance per user and refuses a gift beyond it.

    python -m examples.backend --port 8090 --initial-balance 100

and point liveroom at it (a rooms config proxying ``gift``)::

    LIVEROOM_API_KEY=secret liveroom serve --dev --backend-url http://127.0.0.1:8090 \\
        --rooms-config examples/rooms.toml

What it shows a platform:
- ``POST /liveroom/publish``: a ``gift`` is priced from ``PRICES`` (count x
  price), charged to the sender's balance and answered with the priced body
  (``price``, ``total`` added); a gift beyond the balance gets ``allow:
  false, code: insufficient_funds``; an unknown gift ``unknown_gift``. The
  decision is kept per (user id, action id): a retry gets the same answer
  and is never charged twice. Other kinds are allowed as sent.
- ``POST /liveroom/connect``: allows everyone but the ``--blocked`` users
  (``code: blocked``); attaches ``info: {"tier": "vip" | "basic"}``.
- ``POST /liveroom/join``: a room with a member list (``POST /memberships``)
  admits only its members, with their role there (``code: not_a_member``);
  any other room is open.
- ``POST /liveroom/events``: liveroom's event webhooks, their signature
  checked with ``LIVEROOM_WEBHOOK_SECRET`` when it is set (401 otherwise,
  which liveroom retries), recorded (``GET /events``).
- ``GET /balances``, ``GET /charges``: the ledger, for tests and a look.

Every hook request must carry ``Authorization: Bearer <secret>`` when the
backend has a secret (``LIVEROOM_API_KEY`` or ``LIVEROOM_HOOK_SECRET``, as
liveroom signs with). State is in memory: a demo, not a bank.

Faults, for tests (seeded, ``--seed``): ``--fail-rate`` answers 500 (half of
them before deciding, half after: the charge is made and the answer lost),
``--timeout-rate`` decides, then answers only after ``--timeout-seconds``
(past liveroom's hook timeout). With ``--control``, ``POST /control`` sets
these and a broken ``answer`` mode (``not_json``, ``no_allow``,
``bad_body``, ``huge_info``, ``bad_role``) at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from room_router.webhooks import verify

log = logging.getLogger("examples.backend")

# Price of one of each gift, in the platform's coins.
PRICES: dict[str, int] = {"rose": 1, "heart": 5, "star": 10, "rocket": 50}
MAX_EVENTS = 1000


@dataclass
class Faults:
    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 2.0
    # "" (answer well) or a way to answer wrongly (see the module docstring).
    answer: str = ""


@dataclass
class Ledger:
    """Balances, charges and the decision per (user, action id)."""

    initial: int
    balances: dict[str, int] = field(default_factory=dict)
    charges: list[dict[str, Any]] = field(default_factory=list)
    decisions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    refusals: list[dict[str, Any]] = field(default_factory=list)

    def balance(self, user: str) -> int:
        return self.balances.setdefault(user, self.initial)

    def decide_gift(self, user: str, action_id: str, body: Any) -> dict[str, Any]:
        """The decision for a gift, made once per (user, action id): no
        await inside, so two copies of one request cannot both charge."""
        key = (user, action_id)
        known = self.decisions.get(key)
        if known is not None:
            return known
        gift = body.get("gift") if isinstance(body, dict) else None
        count = body.get("count", 1) if isinstance(body, dict) else 1
        price = PRICES.get(gift) if isinstance(gift, str) else None
        if price is None:
            decision = {"allow": False, "code": "unknown_gift",
                        "message": f"no gift called {gift!r}"}
        elif self.balance(user) < price * count:
            decision = {"allow": False, "code": "insufficient_funds",
                        "message": f"{count} x {gift} costs {price * count}, the balance is "
                                   f"{self.balance(user)}"}
            self.refusals.append({"user": user, "id": action_id, "gift": gift,
                                  "count": count, "total": price * count})
        else:
            self.balances[user] = self.balance(user) - price * count
            self.charges.append({"user": user, "id": action_id, "gift": gift,
                                 "count": count, "total": price * count})
            decision = {"allow": True, "body": {"gift": gift, "count": count,
                                                "price": price, "total": price * count}}
        self.decisions[key] = decision
        return decision


class Backend:
    def __init__(self, *, initial_balance: int, faults: Faults, seed: int,
                 secret: str | None, blocked: frozenset[str] = frozenset(),
                 vips: frozenset[str] = frozenset(), control: bool = False) -> None:
        self.ledger = Ledger(initial_balance)
        self.faults = faults
        self.rng = random.Random(seed)
        self.secret = secret
        self.blocked = blocked
        self.vips = vips
        self.control = control
        self.memberships: dict[str, dict[str, str]] = {}
        self.events: deque[Any] = deque(maxlen=MAX_EVENTS)
        self.calls: dict[str, int] = {}
        # The webhooks' signing secret (docs/BACKEND.md, Events).
        self.webhook_secret = os.environ.get("LIVEROOM_WEBHOOK_SECRET")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_post("/liveroom/publish", self.publish)
        app.router.add_post("/liveroom/connect", self.connect)
        app.router.add_post("/liveroom/join", self.join)
        app.router.add_post("/liveroom/events", self.record_event)
        app.router.add_get("/balances", self.get_balances)
        app.router.add_get("/charges", self.get_charges)
        app.router.add_get("/events", self.get_events)
        app.router.add_get("/calls", self.get_calls)
        app.router.add_post("/memberships", self.set_membership)
        app.router.add_post("/control", self.set_control)
        return app

    async def _read(self, request: web.Request) -> dict[str, Any]:
        if self.secret:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), self.secret.encode()):
                raise web.HTTPUnauthorized(text="bad hook secret")
        hook = request.path.rsplit("/", 1)[-1]
        self.calls[hook] = self.calls.get(hook, 0) + 1
        body = await request.json()
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="a JSON object is expected")
        return body

    async def _answer(self, decide: Any) -> web.Response:
        """Decide (a no-argument function), with the faults in force."""
        f = self.faults
        roll = self.rng.random()
        if roll < f.fail_rate / 2:
            return web.Response(status=500, text="injected failure (before deciding)")
        decision = decide()
        if roll < f.fail_rate:
            return web.Response(status=500, text="injected failure (after deciding)")
        if roll < f.fail_rate + f.timeout_rate:
            await asyncio.sleep(f.timeout_seconds)
        if f.answer == "not_json":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if f.answer == "no_allow":
            return web.json_response({"ok": True})
        return web.json_response(decision)

    async def publish(self, request: web.Request) -> web.Response:
        req = await self._read(request)
        user = req.get("user", {}).get("id", "")

        def decide() -> dict[str, Any]:
            if req.get("kind") != "gift":
                return {"allow": True}
            decision = self.ledger.decide_gift(user, str(req.get("id")), req.get("body"))
            if self.faults.answer == "bad_body" and decision["allow"]:
                return {"allow": True, "body": {"gift": "rose", "count": 100_000}}
            return decision

        return await self._answer(decide)

    async def connect(self, request: web.Request) -> web.Response:
        req = await self._read(request)
        user = str(req.get("user", ""))

        def decide() -> dict[str, Any]:
            if user in self.blocked:
                return {"allow": False, "code": "blocked", "message": "this account is blocked"}
            if self.faults.answer == "huge_info":
                return {"allow": True, "info": {"bio": "x" * 4000}}
            return {"allow": True, "info": {"tier": "vip" if user in self.vips else "basic"}}

        return await self._answer(decide)

    async def join(self, request: web.Request) -> web.Response:
        req = await self._read(request)
        room = str(req.get("room", ""))
        user = str(req.get("user", {}).get("id", ""))

        def decide() -> dict[str, Any]:
            if self.faults.answer == "bad_role":
                return {"allow": True, "role": "emperor"}
            members = self.memberships.get(room)
            if members is None:
                return {"allow": True}
            if user not in members:
                return {"allow": False, "code": "not_a_member",
                        "message": f"room {room} is for its members"}
            return {"allow": True, "role": members[user]}

        return await self._answer(decide)

    async def record_event(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.webhook_secret is not None and not verify(
                self.webhook_secret, request.headers.get("X-Liveroom-Signature", ""), raw,
                time.time()):
            raise web.HTTPUnauthorized(text="bad signature")
        try:
            batch = json.loads(raw)
        except ValueError:
            raise web.HTTPBadRequest(text="not JSON") from None
        events = batch.get("events") if isinstance(batch, dict) else None
        self.events.extend(events if isinstance(events, list) else [batch])
        return web.json_response({"ok": True})

    async def get_balances(self, request: web.Request) -> web.Response:
        return web.json_response(self.ledger.balances)

    async def get_charges(self, request: web.Request) -> web.Response:
        return web.json_response({"charges": self.ledger.charges,
                                  "refusals": self.ledger.refusals})

    async def get_events(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.events))

    async def get_calls(self, request: web.Request) -> web.Response:
        return web.json_response(self.calls)

    async def set_membership(self, request: web.Request) -> web.Response:
        """``{"room", "user", "role"}``: ``role`` null removes the user; a
        room whose list empties is open again."""
        req = await request.json()
        members = self.memberships.setdefault(str(req["room"]), {})
        if req.get("role") is None:
            members.pop(str(req["user"]), None)
            if not members:
                del self.memberships[str(req["room"])]
        else:
            members[str(req["user"])] = str(req["role"])
        return web.json_response(self.memberships)

    async def set_control(self, request: web.Request) -> web.Response:
        if not self.control:
            raise web.HTTPForbidden(text="start with --control")
        req = await request.json()
        for name in ("fail_rate", "timeout_rate", "timeout_seconds", "answer"):
            if name in req:
                setattr(self.faults, name, req[name])
        return web.json_response(self.faults.__dict__)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m examples.backend", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090, help="0: a free one (logged)")
    p.add_argument("--initial-balance", type=int, default=100)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--timeout-rate", type=float, default=0.0)
    p.add_argument("--timeout-seconds", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--blocked", default="", help="comma-separated user ids refused at connect")
    p.add_argument("--vips", default="", help="comma-separated user ids with tier vip")
    p.add_argument("--control", action="store_true", help="enable POST /control (tests)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    secret = os.environ.get("LIVEROOM_HOOK_SECRET") or os.environ.get("LIVEROOM_API_KEY")
    backend = Backend(initial_balance=args.initial_balance,
                      faults=Faults(args.fail_rate, args.timeout_rate, args.timeout_seconds),
                      seed=args.seed, secret=secret, control=args.control,
                      blocked=frozenset(u for u in args.blocked.split(",") if u),
                      vips=frozenset(u for u in args.vips.split(",") if u))
    asyncio.run(serve(backend, args.host, args.port))


async def serve(backend: Backend, host: str, port: int) -> None:
    runner = web.AppRunner(backend.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    bound = server.sockets[0].getsockname()[1] if server is not None else port  # type: ignore[attr-defined]
    log.info("backend listening on http://%s:%d", host, bound)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
