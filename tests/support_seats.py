"""Test support for seats: ``AgentsProcess`` (a real ``liveroom agents``)
and ``Ears`` (one viewer per room that mentions characters and counts
their answers, per trigger)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from edge.client import ClosedError, LiveroomClient
from llm_agents.seats import Seat
from tests.support import API_KEY, JWT_SECRET, LoggedProcess, until

_LISTENING = re.compile(r"agents listening on http://[\d.]+:(\d+)")
BACKEND = {"Authorization": f"Bearer {API_KEY}"}


class AgentsProcess:
    """``liveroom agents`` in a child process, scripted characters without
    cooldown; ``url`` is its API once started."""

    def __init__(self, data_dir: Path, edge_ws: str, *args: str) -> None:
        self.port = 0
        self.child = LoggedProcess("agents", self._on_line)
        self.cmd = [sys.executable, "-m", "liveroom.cli", "agents", "--edge-url", edge_ws,
                    "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir),
                    "--agent-backend", "scripted", "--agent-cooldown", "0",
                    "--agent-word-delay", "0.005", *args]

    def _on_line(self, line: str) -> bool:
        m = _LISTENING.search(line)
        if m:
            self.port = int(m.group(1))
        return m is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AgentsProcess:
        env = {**os.environ, "LIVEROOM_JWT_SECRET": JWT_SECRET, "LIVEROOM_API_KEY": API_KEY,
               "PYTHONUNBUFFERED": "1"}
        self.child.start(self.cmd, env, 30.0)
        return self


class Ears:
    """A viewer in each room. ``ask(seat)`` mentions the seat's character
    in its room; every ``agent.say`` that answers one of our comments is
    counted per (room, comment seq, character)."""

    def __init__(self) -> None:
        self.clients: dict[str, LiveroomClient] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # (room, text) and (room, seq) of our comments -> (seat, ask number)
        self._asked: dict[tuple[str, str], tuple[Seat, int]] = {}
        self.triggers: dict[tuple[str, int], tuple[Seat, int]] = {}
        self.answers: Counter[tuple[str, int, str]] = Counter()
        self._n = 0
        self.online: dict[str, int] = {}  # each room's last online count

    async def open(self, ws_url: str, rooms: list[str], token: Any) -> None:
        for i, room in enumerate(rooms):
            client = await LiveroomClient.connect(ws_url, token(f"ear-{i}"))
            joined = await client.join(room)
            assert joined["type"] == "joined", joined
            self.clients[room] = client
            self._tasks.append(asyncio.create_task(self._listen(room, client)))

    async def _listen(self, room: str, client: LiveroomClient) -> None:
        with contextlib.suppress(ClosedError):
            while True:
                try:
                    frame = await client.recv(timeout=3600)
                except TimeoutError:
                    continue
                if frame.get("type") == "online" and frame.get("room") == room:
                    self.online[room] = frame["count"]
                if frame.get("type") != "action" or frame.get("room") != room:
                    continue
                body = frame.get("body") or {}
                if frame.get("kind") == "comment":
                    asked = self._asked.get((room, body.get("text")))
                    if asked is not None:
                        self.triggers[(room, frame["seq"])] = asked
                elif frame.get("kind") == "agent.say" and body.get("reply_to"):
                    seq = body["reply_to"].get("seq")
                    self.answers[(room, seq, frame["from"]["id"])] += 1

    async def ask(self, seat: Seat) -> None:
        self._n += 1
        text = f"hey {seat.character} #{self._n}"
        self._asked[(seat.room, text)] = (seat, self._n)
        await self.clients[seat.room].action(seat.room, "comment", {"text": text})

    def answered(self, since: int = 0) -> set[Seat]:
        """The seats whose character answered one of our comments (one
        asked after the ``since``-th)."""
        return {seat for (room, seq), (seat, n) in self.triggers.items()
                if n > since and self.answers[(room, seq, seat.character)]}

    def doubles(self) -> list[tuple[str, int, str]]:
        """Answers given twice to one comment (two owners of one seat)."""
        return [key for key, n in self.answers.items() if n > 1]

    def mark(self) -> int:
        return self._n

    async def ask_until_answered(self, seats: list[Seat], timeout: float,
                                 every: float = 1.0) -> None:
        """Mention each seat's character, again every ``every`` seconds
        while it has not answered, until every seat answered once."""
        since = self.mark()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            missing = [s for s in seats if s not in self.answered(since)]
            if not missing:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"{len(missing)} seats silent: {missing}")
            for seat in missing:
                await self.ask(seat)
            with contextlib.suppress(TimeoutError):
                await until(lambda m=missing: all(s in self.answered(since) for s in m),
                            min(every, max(0.01, deadline - loop.time())), "answers")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients.values():
            await client.close()
