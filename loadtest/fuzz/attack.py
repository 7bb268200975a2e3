"""What every fuzz worker shares (``Fuzz``): the target, its tokens (their
claims: loadtest/fuzz/tokens.py), the action ids seen (what a retract
names), the stop signal, the pace, and the counts the report is made of
(``Stats``)."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from loadtest.fuzz.payloads import ROOMS, valid_frame
from loadtest.fuzz.target import Server
from loadtest.fuzz.tokens import BAD, GOOD, claims


@dataclass
class Stats:
    frames: Counter[str] = field(default_factory=Counter)  # transport/codec -> sent
    attacks: Counter[str] = field(default_factory=Counter)  # transport/name -> sent
    errors: Counter[str] = field(default_factory=Counter)  # error code -> received
    replies: Counter[str] = field(default_factory=Counter)  # frame type -> received
    tokens: Counter[str] = field(default_factory=Counter)  # token profile -> hellos
    closes: Counter[str] = field(default_factory=Counter)  # transport/code -> seen
    http: Counter[str] = field(default_factory=Counter)  # status -> answers
    api: Counter[str] = field(default_factory=Counter)  # backend API "route status" -> answers
    connections: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # first of each client-side error

    def fail(self, what: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(what)


class Fuzz:
    """What every worker shares: the target, the tokens, the clock, the counts."""

    def __init__(self, server: Server, args: argparse.Namespace, stats: Stats) -> None:
        self.server, self.args, self.stats = server, args, stats
        self.stop = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None
        self.tokens: dict[tuple[str, str], str] = {}
        self.connections: set[Any] = set()
        # Action ids the fuzzers saw, by room: what their retracts name.
        self.action_ids: dict[str, deque[str]] = {}
        # Set by the run: the canary's room and users, for the attacks that
        # try (and must fail) to moderate them.
        self.canary_room = ""
        self.canary_users: tuple[str, ...] = ()

    def profile(self, rng: random.Random) -> str:
        """A token profile (loadtest/fuzz/tokens.py): mostly good ones, one
        connection in twenty with a token refused at hello."""
        if rng.random() < 0.05:
            return rng.choice(sorted(BAD))
        return rng.choice(["viewer", "viewer", "host", "moderator", "mixed", *sorted(GOOD)])

    async def token(self, user: str, profile: str = "viewer") -> str:
        key = (user, profile)
        if key not in self.tokens:
            spec = GOOD.get(profile) or BAD[profile]
            if self.server.secret:
                self.tokens[key] = jwt.encode(claims(user, spec, time.time()),
                                              self.server.secret, algorithm="HS256")
            elif profile in BAD:
                self.tokens[key] = "not.a.token"  # someone else's server: no secret to sign
            else:
                self.tokens[key] = await self.dev_token(user, spec[0], spec[1])
        return self.tokens[key]

    async def dev_token(self, user: str, role: str, rooms: Any) -> str:
        assert self.http is not None
        async with self.http.post(f"{self.server.url}/v1/dev/token",
                                  json={"user": user, "role": role,
                                        "rooms": rooms, "ttl": 86400}) as r:
            if r.status != 200:
                raise RuntimeError(f"POST /v1/dev/token answered {r.status}: "
                                   "the server must run with --dev")
            token: str = (await r.json())["token"]
            return token

    def frame(self, rng: random.Random, joined: list[str] | None = None) -> dict[str, Any]:
        """A valid frame, about one of the rooms the connection ``joined``
        one time in three (so that frames get past the membership check to
        the room's policy: its kinds, slow mode, sections, moderation); a
        retract names an action id seen in its room (now and then one of
        another room)."""
        # One frame in ten more an action: the room policies are about them.
        f = valid_frame(rng, ftype="action" if rng.random() < 0.1 else None)
        if joined and "room" in f and rng.random() < 0.35:
            f["room"] = rng.choice(joined)
        if f["type"] == "moderate" and f.get("op") == "retract" and rng.random() < 0.7:
            room = f["room"] if rng.random() < 0.8 else rng.choice(ROOMS)
            ids = self.action_ids.get(room)
            if ids:
                f["id"] = rng.choice(ids)
        return f

    def burst(self, rng: random.Random, joined: list[str]) -> list[dict[str, Any]]:
        """A few honest actions in a row to one joined room: past its slow
        mode, its action rate and its kinds (loadtest/fuzz/target.py)."""
        room = rng.choice(joined)
        frames = [valid_frame(rng, ftype="action") for _ in range(rng.randrange(2, 6))]
        for f in frames:
            f["room"] = room
        return frames

    def seen_action(self, f: dict[str, Any]) -> None:
        room, action_id = f.get("room"), f.get("id")
        if isinstance(room, str) and (room in ROOMS or room == self.canary_room) \
                and isinstance(action_id, str):
            self.action_ids.setdefault(room, deque(maxlen=32)).append(action_id)

    async def pause(self, rng: random.Random) -> None:
        # About 60 frames a second per connection: under the server's
        # per-connection frame rate, so frames reach the checks behind it.
        await asyncio.sleep(0.01 + 0.01 * rng.random())

    def count_frame(self, transport: str, f: dict[str, Any]) -> None:
        ftype = str(f.get("type"))
        self.stats.replies[ftype] += 1
        if ftype == "action":
            self.seen_action(f)
        elif ftype in ("moderated", "retract") and self.canary_room \
                and f.get("room") == self.canary_room:
            self.stats.fail(f"{transport}: a fuzzer's moderation reached the canary: {f}")
        if ftype == "error":
            code = str(f.get("code"))
            self.stats.errors[code] += 1
            if code == "internal":
                self.stats.fail(f"{transport}: internal error frame {f}")

    def count_close(self, transport: str, code: int | None) -> None:
        self.stats.closes[f"{transport}/{code}"] += 1
        if code == 1011:
            self.stats.fail(f"{transport}: closed 1011 (internal error)")
