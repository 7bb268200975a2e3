"""A seated character's stage part: what its replies change on its stage
(``llm_agents.acting``) and its walk about the room (``llm_agents.world``).

``Staging`` is composed into ``RoomAgent`` (``llm_agents.runtime``), which
hands it the room's frames and each reply's stage part:

- ``schema`` is the JSON schema a reply is asked for (None: plain text);
- ``apply(change)`` validates a reply's stage part and writes the fields it
  sets through the agent's own stage write (compare-and-set on
  ``stage.<name>``); a refused one is logged and counted
  (``liveroom_agent_stage_changes_total{outcome=<reason>}``) and nothing
  else happens: the reply has already gone out;
- the world's tick runs only while the room has a member who is not one of
  this process's characters there (``room_agents``): it starts on the
  ``joined``/``online`` count that shows one, and stops on the count that
  shows none, so an empty room costs nothing. It writes ``positions.<name>``
  (lossy, latest wins) at most ``hz`` times a second and only when the
  place changed; a refused or failed write is logged once and the tick goes
  on (the next place replaces it anyway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from llm_agents.acting import StageChange, StageRefused, reply_schema, validate_stage
from llm_agents.character import Character
from llm_agents.link import RoomLink
from llm_agents.metrics import AgentMetrics
from llm_agents.world import START_X, Walker
from wire.errors import LiveroomError

# Refusals a room or a model can cause at will: rate-limited (plumbing/ratelog.py).
refused_log = logging.getLogger("liveroom.agents.refused")


class Staging:
    def __init__(self, character: Character, room: str, link: RoomLink,
                 set_stage: Callable[..., Awaitable[None]], clock: Callable[[], float],
                 metrics: AgentMetrics | None) -> None:
        self.character = character
        self.room = room
        self.link = link
        self._set_stage = set_stage
        self._clock = clock
        self._metrics = metrics
        self.schema = reply_schema(character.acting) if character.acting else None
        self.applied = 0
        self.refused = 0
        # How many of this process's characters sit in the room (the runtime
        # sets it when the agent is kept); the world ticks while the room has more members.
        self.room_agents: Callable[[], int] = lambda: 1
        self.walker: Walker | None = None
        if character.world is not None:
            start = START_X.get(str(character.stage.get("position", "")), 0.5)
            self.walker = Walker(character.world, f"{room}/{character.name}", clock(), start)
        self.section = f"positions.{character.name}"
        self.writes = 0
        self._tick: asyncio.Task[None] | None = None

    # -- acting ------------------------------------------------------------
    async def apply(self, change: StageChange, current: dict[str, Any]) -> None:
        acting = self.character.acting
        if acting is None:
            return
        try:
            fields = validate_stage(acting, change)
        except StageRefused as err:
            self.refused += 1
            self._count(err.reason)
            refused_log.warning("agent %s: stage part refused (%s): %s",
                                self.character.name, err.reason, err)
            return
        changes = {k: v for k, v in fields.items() if current.get(k) != v}
        self.applied += 1
        self._count("applied")
        if changes:
            await self._set_stage(**changes)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.stage.labels(self.character.name, outcome).inc()

    # -- the world ---------------------------------------------------------
    def on_members(self, members: int) -> None:
        """The room's member count changed: tick while anyone else is there."""
        if self.walker is None:
            return
        wanted = members > self.room_agents()
        if wanted and self._tick is None:
            self._tick = asyncio.create_task(self._run(), name=f"world-{self.character.name}")
        elif not wanted and self._tick is not None:
            self._tick.cancel()
            self._tick = None

    def on_gift(self) -> None:
        if self.walker is not None:
            self.walker.react(self._clock())

    @property
    def ticking(self) -> bool:
        return self._tick is not None

    async def _run(self) -> None:
        walker = self.walker
        assert walker is not None
        period = 1.0 / walker.config.hz
        loop = asyncio.get_running_loop()
        last: dict[str, Any] | None = None
        failed = False
        at = loop.time()
        while True:
            value = walker.step(self._clock())
            if value != last:
                try:
                    await self.link.write_state(self.room, self.section, value, None)
                    last, failed = value, False
                    self.writes += 1
                except LiveroomError as err:
                    if not failed:
                        refused_log.warning("agent %s: positions write refused: %s",
                                            self.character.name, err)
                    failed = True
            # The next step one period after the last one's start, never
            # sooner: a slow write makes the tick slower, not faster.
            at = max(at + period, loop.time())
            await asyncio.sleep(at - loop.time())

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            await asyncio.gather(self._tick, return_exceptions=True)
            self._tick = None
