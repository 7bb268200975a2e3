"""A polling client of a room's state, through a CDN or straight at the origin.

It keeps what a client must keep: the epoch, the total, each section's
partial and value, and the head's ETag. ``poll_once`` fetches the head (a
``304`` when nothing changed costs a few bytes), compares it with what it
holds, and fetches only the sections whose partial moved, at their immutable
URLs. A new epoch means the store started over: every section is read again.
A head that is ``404`` means the room has no state (yet, or any more).

    async with aiohttp.ClientSession() as http:
        poller = StatePoller(http, "http://127.0.0.1:8081", "demo")
        changed = await poller.poll_once()
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urljoin

import aiohttp
import msgpack

from wire.codecs import JSON, MSGPACK
from wire.urls import head_url


class StatePoller:
    __slots__ = ("base", "codec", "epoch", "etag", "http", "requests", "room", "total",
                 "values", "versions")

    def __init__(self, http: aiohttp.ClientSession, base: str, room: str,
                 codec: str = JSON) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.room = room
        self.codec = codec
        self.epoch: str | None = None
        self.etag: str | None = None
        self.total = 0
        self.versions: dict[str, int] = {}
        self.values: dict[str, Any] = {}
        self.requests = 0

    def _headers(self) -> dict[str, str]:
        accept = "application/msgpack" if self.codec == MSGPACK else "application/json"
        return {"Accept": accept, "Accept-Encoding": "gzip"}

    async def _get(self, path: str, etag: str | None = None) -> tuple[int, Any, str | None]:
        headers = self._headers()
        if etag:
            headers["If-None-Match"] = etag
        self.requests += 1
        async with self.http.get(urljoin(self.base + "/", path.lstrip("/")),
                                 headers=headers) as r:
            if r.status != 200:
                return r.status, None, r.headers.get("ETag")
            raw = await r.read()
            body = (msgpack.unpackb(raw, raw=False) if self.codec == MSGPACK
                    else json.loads(raw))
            return 200, body, r.headers.get("ETag")

    async def poll_once(self) -> list[str]:
        """One round: the names of the sections that changed (in name order)."""
        status, head, etag = await self._get(head_url(self.room), self.etag)
        if status == 304:
            return []
        if status == 404:
            # The room has no state (never written, or dropped when idle):
            # hold nothing; the sections we held are the ones that changed.
            held = sorted(self.versions)
            self.epoch, self.etag, self.total, self.versions, self.values = (
                None, None, 0, {}, {})
            return held
        if status != 200:
            raise RuntimeError(f"head of {self.room!r} answered {status}")
        self.etag = etag
        if head["epoch"] != self.epoch:
            self.epoch, self.versions, self.values = head["epoch"], {}, {}
        moved = [s for s, p in sorted(head["versions"].items()) if self.versions.get(s) != p]
        bodies = await asyncio.gather(*(self._get(head["sections"][s]) for s in moved))
        changed = []
        for s, (st, body, _) in zip(moved, bodies, strict=True):
            if st == 200 and body["partial"] >= head["versions"][s]:
                self.versions[s] = body["partial"]
                self.values[s] = body["value"]
                changed.append(s)
        for gone in set(self.versions) - set(head["versions"]):
            del self.versions[gone]
            self.values.pop(gone, None)
        # total follows the sections actually held: it names what we have.
        self.total = sum(self.versions.values())
        if self.total != head["total"]:
            self.etag = None  # not complete yet (raced a change): do not take a 304 next time
        return changed
