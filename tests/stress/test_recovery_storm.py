"""Recovery storm: 1,000 members of a room whose state keeps changing drop at
once, then come back at once with their versions and epoch
(docs/PROTOCOL.md, "Using the versions", "Epochs", "Honest recovery").

Every member keeps the room's state as the protocol tells a client to: the
``epoch``, a partial version and a value per section, the ``total``; it
applies ``joined``, pushed ``state`` frames and ``sync`` replies, and after
each WebSocket message checks ``sum(versions) == total`` (a gap: it sends
``sync``). The writer (the backend API, one section after another, with
compare-and-set) writes each section's own partial into its value
(``{"p": partial}``), so a member can tell a value that does not match the
version it holds: a recovery that was not honest.

Two storms:

1. *The network drops* every member at once (sockets aborted, no close)
   while the writer goes on; they reconnect at once with ``known`` and
   ``epoch``: each ``joined`` must say ``recovered: true`` and bring exactly
   what changed.
2. *The server restarts* (SIGTERM: every member gets 4101; the in-memory
   store starts a new epoch, the writer writes the room again and goes on);
   the members reconnect at once to the new process with their old versions and epoch:
   each ``joined`` must say ``recovered: false`` with ``epoch_changed`` (or,
   should the state have survived with its epoch, ``true`` and the diff) and
   bring every section.

Counted and asserted, over all members: zero gaps, zero duplicate (not
newer) state frames, zero dishonest replies, and at the end every member's
versions equal the server's head, every value matching its version. One
asyncio process with raw sockets plays all members (loadtest/raw_ws.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import pytest

from loadtest.raw_ws import RawWebSocket
from tests.stress.conftest import Figures
from tests.support import API_KEY, LiveServer, free_port, until

pytestmark = [pytest.mark.stress, pytest.mark.timeout(180)]

MEMBERS = 1000
SECTIONS = [f"s{i}" for i in range(5)]
WRITES_PER_S = 20.0
DOWN_S = 1.0  # how long the members stay away while the writer goes on
T = 30.0  # bound on one member's connect and join, storm included
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Member:
    """One client holding the room's state, as PROTOCOL.md describes it."""

    def __init__(self, srv: LiveServer, room: str, user: str) -> None:
        self.srv, self.room, self.token = srv, room, srv.token(user)
        self.ws: RawWebSocket | None = None
        self.task: asyncio.Task[None] | None = None
        self.epoch: str | None = None
        self.versions: dict[str, int] = {}
        self.values: dict[str, Any] = {}
        self.total = 0
        self.gaps = self.duplicates = 0
        self.recovered: list[tuple[bool, str | None]] = []
        self.dishonest: list[str] = []
        self.closes: list[int] = []

    async def connect(self, resume: bool) -> None:
        ws = self.ws = await RawWebSocket.connect("127.0.0.1", self.srv.port, timeout=T)
        ws.send_obj({"type": "hello", "token": self.token, "v": 1})
        join: dict[str, Any] = {"type": "join", "room": self.room, "ref": 1}
        if resume:
            join.update(known=dict(self.versions), epoch=self.epoch)
        ws.send_obj(join)
        async with asyncio.timeout(T):
            while True:
                frames = await ws.messages()
                assert frames, f"closed {ws.close_code} before joined"
                joined = [f for f in frames if f["type"] == "joined"]
                assert all(f["type"] != "error" for f in frames), frames
                if joined:
                    self.apply_reply(joined[0], resume)
                    break
        self.task = asyncio.create_task(self.read())

    def apply_reply(self, reply: dict[str, Any], resumed: bool) -> None:
        """``joined`` or ``sync``: check it is honest, then apply it."""
        held = dict(self.versions)
        if resumed:
            self.check_honest(reply, held)
        if reply["epoch"] != self.epoch:
            self.values.clear()  # versions of another epoch say nothing
        self.epoch = reply["epoch"]
        for s in reply["sections"]:
            self.values[s["section"]] = s["value"]
        self.versions = dict(reply["versions"])
        self.total = reply["total"]
        for section, partial in self.versions.items():
            if self.values.get(section, {}).get("p") != partial:
                self.dishonest.append(f"{section}: value {self.values.get(section)} "
                                      f"is not version {partial}")

    def check_honest(self, reply: dict[str, Any], held: dict[str, int]) -> None:
        recovered, reason = reply.get("recovered"), reply.get("reason")
        self.recovered.append((bool(recovered), reason))
        sent = {s["section"] for s in reply["sections"]}
        if recovered is True:
            if reply["epoch"] != self.epoch:
                self.dishonest.append("recovered across an epoch change")
            changed = {s for s, p in reply["versions"].items() if held.get(s) != p}
            if sent != changed:
                self.dishonest.append(f"recovered: sent {sorted(sent)}, changed {sorted(changed)}")
        elif recovered is False:
            if reason == "epoch_changed" and reply["epoch"] == self.epoch:
                self.dishonest.append("epoch_changed without a change of epoch")
            if sent != set(reply["versions"]):
                self.dishonest.append(f"not recovered ({reason}) but not every section sent")
        else:
            self.dishonest.append(f"a resumed join without recovered: {reply}")

    async def read(self) -> None:
        ws = self.ws
        assert ws is not None
        while frames := await ws.messages():
            for f in frames:
                if f["type"] == "state" and f["room"] == self.room:
                    section, partial = f["section"], f["partial"]
                    if partial <= self.versions.get(section, 0):
                        self.duplicates += 1
                        continue
                    self.versions[section] = partial
                    self.values[section] = f["value"]
                    self.total = max(self.total, f["total"])
                elif f["type"] == "sync":
                    self.apply_reply(f, True)
            if sum(self.versions.values()) != self.total:
                self.gaps += 1
                ws.send_obj({"type": "sync", "room": self.room, "known": dict(self.versions),
                             "epoch": self.epoch, "ref": self.gaps})
        assert ws.close_code is not None
        self.closes.append(ws.close_code)

    def drop(self) -> None:
        if self.ws is not None:
            self.ws.abort()
        if self.task is not None:
            self.task.cancel()

    async def stopped(self) -> None:
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


class Writer:
    """The backend writes one section after another, ``{"p": partial}``,
    with compare-and-set on the partial it knows."""

    def __init__(self, http: aiohttp.ClientSession, srv: LiveServer, room: str) -> None:
        self.http, self.srv, self.room = http, srv, room
        self.partials = dict.fromkeys(SECTIONS, 0)
        self.writes = 0

    async def write(self) -> None:
        section = SECTIONS[self.writes % len(SECTIONS)]
        p = self.partials[section]
        async with self.http.post(f"{self.srv.url}/v1/rooms/{self.room}/state/{section}",
                                  headers=AUTH, json={"value": {"p": p + 1}, "expect": p}) as r:
            assert r.status == 200, await r.text()
            self.partials[section] = (await r.json())["partial"]
        self.writes += 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.write()
            try:
                await asyncio.wait_for(stop.wait(), 1 / WRITES_PER_S)
            except TimeoutError:
                pass

    def restarted(self) -> None:
        self.partials = dict.fromkeys(SECTIONS, 0)


async def head(http: aiohttp.ClientSession, srv: LiveServer, room: str) -> dict[str, Any]:
    async with http.get(f"{srv.url}/v1/rooms/{room}/state") as r:
        assert r.status == 200
        got: dict[str, Any] = await r.json()
        return got


async def storm(members: list[Member], resume: bool) -> float:
    """Every member connects (and joins) at once; the seconds it took."""
    t0 = time.monotonic()
    await asyncio.gather(*(m.connect(resume) for m in members))
    return time.monotonic() - t0


async def converged(http: aiohttp.ClientSession, srv: LiveServer, room: str,
                    members: list[Member]) -> dict[str, Any]:
    """Once the writer has stopped: every member reaches the head."""
    final = await head(http, srv, room)
    await until(lambda: all(m.total == final["total"] for m in members), 30,
                f"every member at total {final['total']}")
    for m in members:
        assert m.versions == final["versions"] and m.epoch == final["epoch"], \
            (m.epoch, m.versions, final)
    return final


def tally(members: list[Member]) -> dict[str, Any]:
    return {"gaps": sum(m.gaps for m in members),
            "duplicates": sum(m.duplicates for m in members),
            "dishonest": sum(len(m.dishonest) for m in members)}


async def test_1000_members_recover_honestly_from_a_drop_and_a_restart(
        make_server: Any, http: aiohttp.ClientSession, figures: Figures) -> None:
    port = free_port()
    srv: LiveServer = make_server("--port", str(port), "--quic-port", "off", "--no-demo-room")
    room = f"storm-{uuid.uuid4().hex[:8]}"
    writer = Writer(http, srv, room)
    for _ in SECTIONS:
        await writer.write()
    members = [Member(srv, room, f"m{i}") for i in range(MEMBERS)]
    figs: dict[str, Any] = {"members": MEMBERS, "sections": len(SECTIONS),
                            "writes_per_s": WRITES_PER_S}
    try:
        figs["join_s"] = round(await storm(members, resume=False), 2)
        stop = asyncio.Event()
        writing = asyncio.create_task(writer.run(stop))
        await asyncio.sleep(1.0)

        # Storm 1: the network drops everyone; the room goes on changing.
        for m in members:
            m.drop()
        await asyncio.gather(*(m.stopped() for m in members))
        await asyncio.sleep(DOWN_S)
        figs["drop_rejoin_s"] = round(await storm(members, resume=True), 2)
        await asyncio.sleep(1.0)
        stop.set()
        await writing
        final = await converged(http, srv, room, members)
        outcomes = Counter(r for m in members for r in m.recovered)
        figs["drop"] = {"total": final["total"], "recovered": outcomes[(True, None)],
                        **tally(members)}
        assert outcomes == {(True, None): MEMBERS}, outcomes

        # Storm 2: the server restarts (4101 to everyone, a new epoch).
        srv.stop()
        await asyncio.gather(*(m.stopped() for m in members))
        closes = Counter(c for m in members for c in m.closes)
        srv.start()
        writer.restarted()
        for _ in SECTIONS:
            await writer.write()
        for m in members:
            m.recovered.clear()
        stop = asyncio.Event()
        writing = asyncio.create_task(writer.run(stop))
        figs["restart_rejoin_s"] = round(await storm(members, resume=True), 2)
        await asyncio.sleep(1.0)
        stop.set()
        await writing
        final = await converged(http, srv, room, members)
        outcomes = Counter(r for m in members for r in m.recovered)
        figs["restart"] = {"total": final["total"], "closes": dict(closes),
                           "outcomes": {f"{ok}/{why}": n for (ok, why), n in outcomes.items()},
                           **tally(members)}
        assert closes == {4101: MEMBERS}, closes
        assert set(outcomes) <= {(False, "epoch_changed"), (True, None)}, outcomes
    finally:
        for m in members:
            m.drop()
        figures(**figs)
    dishonest = [d for m in members for d in m.dishonest]
    assert not dishonest, dishonest[:5]
    assert tally(members) == {"gaps": 0, "duplicates": 0, "dishonest": 0}
