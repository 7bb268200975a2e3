"""What every fuzz worker shares (``Fuzz``): the target, its tokens, the stop
signal, the pace, and the counts the report is made of (``Stats``)."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from edge.auth import mint_token, role_everywhere
from loadtest.fuzz.target import Server


@dataclass
class Stats:
    frames: Counter[str] = field(default_factory=Counter)  # transport/codec -> sent
    attacks: Counter[str] = field(default_factory=Counter)  # transport/name -> sent
    errors: Counter[str] = field(default_factory=Counter)  # error code -> received
    closes: Counter[str] = field(default_factory=Counter)  # transport/code -> seen
    http: Counter[str] = field(default_factory=Counter)  # status -> answers
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

    async def token(self, user: str, role: str = "viewer") -> str:
        key = (user, role)
        if key not in self.tokens:
            role, rooms = role_everywhere(role)
            if self.server.secret:
                self.tokens[key] = mint_token(self.server.secret, user, user, role, time.time(),
                                              86400, rooms)
            else:
                assert self.http is not None
                async with self.http.post(f"{self.server.url}/v1/dev/token",
                                          json={"user": user, "role": role,
                                                "rooms": rooms, "ttl": 86400}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"POST /v1/dev/token answered {r.status}: "
                                           "the server must run with --dev")
                    self.tokens[key] = (await r.json())["token"]
        return self.tokens[key]

    async def pause(self, rng: random.Random) -> None:
        # About 60 frames a second per connection: under the server's
        # per-connection frame rate, so frames reach the checks behind it.
        await asyncio.sleep(0.01 + 0.01 * rng.random())

    def count_frame(self, transport: str, f: dict[str, Any]) -> None:
        if f.get("type") == "error":
            code = str(f.get("code"))
            self.stats.errors[code] += 1
            if code == "internal":
                self.stats.fail(f"{transport}: internal error frame {f}")

    def count_close(self, transport: str, code: int | None) -> None:
        self.stats.closes[f"{transport}/{code}"] += 1
        if code == 1011:
            self.stats.fail(f"{transport}: closed 1011 (internal error)")
