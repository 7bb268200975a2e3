"""A process's memory service: the characters' notes read for a prompt,
written after a reply, summarised by the model when they grow, purged after
their retention.

The agent (``llm_agents.runtime.RoomAgent``) calls ``recall`` before it
builds a prompt and ``remember`` after a reply reached the room; both run on
the agent's own task, never on the fan-out path, and a store that fails
costs the character its memory for that reply, never the reply (logged).

Writes of one (room, character) are serialised by one lock (a read, the
pure update of ``llm_agents.memory``, a write), so the line a reply adds
while a summary is being made is never lost: the summary is folded in under
the same lock, over the lines it was made from only. At most one summary
runs per record; it goes through the character's backend as a request of
kind ``summary`` (the lowest priority), and when it fails the hard bounds
still hold (the oldest lines are dropped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from llm_agents.character import Character
from llm_agents.memory import (
    MemoryLimits,
    MemoryStore,
    Notes,
    Recall,
    SummaryJob,
    add_lines,
    fold,
    summary_job,
    summary_messages,
)
from llm_agents.policy import GIFT, SUMMARY, Trigger

log = logging.getLogger("liveroom.agents.memory")
# How often records past their retention are purged.
PURGE_EVERY_S = 3600.0

# Asks the character's backend for a summary: (the trigger of kind
# ``summary``, the messages) -> the text ("" when the model failed).
Summarise = Callable[[Trigger, list[dict[str, str]]], Awaitable[str]]


def exchange_lines(character: Character, trigger: Trigger, reply: str) -> list[str]:
    """What a reply adds to memory: what it answered (when a viewer said or
    gave something) and what the character said."""
    who = trigger.user_name or trigger.user
    lines: list[str] = []
    if trigger.kind == GIFT:
        lines.append(f"{who} sent {trigger.detail.get('count', 1)} x "
                     f"{trigger.detail.get('gift', 'gift')}")
    elif trigger.text and who:
        lines.append(f"{who}: {trigger.text}")
    lines.append(f"{character.display_name}: {reply}")
    return lines


class AgentMemory:
    def __init__(self, store: MemoryStore, limits: MemoryLimits,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.limits = limits
        self._clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._summarising: set[tuple[str, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._retention: asyncio.Task[None] | None = None
        self.summaries = 0

    def _lock(self, room: str, character: str) -> asyncio.Lock:
        # One per seated (room, character): bounded by the seats.
        return self._locks.setdefault((room, character), asyncio.Lock())

    async def recall(self, room: str, character: str, user: str, user_name: str) -> Recall:
        """The notes a prompt for ``user`` in ``room`` is given."""
        if not self.limits.enabled:
            return Recall()
        try:
            room_notes = await self.store.load(room, character, "")
            user_notes = await self.store.load(room, character, user) if user else None
        except Exception:
            log.warning("memory of %s in %s unreadable", character, room, exc_info=True)
            return Recall()
        return Recall(room_notes, user_notes, user_name)

    async def remember(self, room: str, character: Character, trigger: Trigger, reply: str,
                       summarise: Summarise) -> None:
        """Add a finished reply (and what it answered) to the room's notes and,
        when it answered a viewer, to that viewer's; start a summary of a
        record that grew past its threshold."""
        if not self.limits.enabled or not reply:
            return
        lines = exchange_lines(character, trigger, reply)
        users = [""] + ([trigger.user] if trigger.user and trigger.user != character.name
                        else [])
        for user in users:
            try:
                notes = await self._add(room, character.name, user, lines)
            except Exception:
                log.warning("memory of %s in %s not saved", character.name, room, exc_info=True)
                continue
            job = summary_job(notes, self.limits)
            key = (room, character.name, user)
            if job is not None and key not in self._summarising:
                self._summarising.add(key)
                about = f"with {trigger.user_name or user}" if user else "in the room"
                task = asyncio.create_task(self._summarise(key, character, job, about,
                                                           summarise))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _add(self, room: str, character: str, user: str, lines: list[str]) -> Notes:
        async with self._lock(room, character):
            notes = await self.store.load(room, character, user) or Notes(room, character, user)
            notes = add_lines(notes, lines, self._clock(), self.limits)
            await self.store.save(notes, self.limits.users_per_room)
            return notes

    async def _summarise(self, key: tuple[str, str, str], character: Character,
                         job: SummaryJob, about: str, summarise: Summarise) -> None:
        room, name, user = key
        try:
            trigger = Trigger(SUMMARY, self._clock(), user, "", "",
                              None, {"job": job, "limit": self.limits.summary_chars})
            text = await summarise(trigger, summary_messages(character.display_name, job,
                                                             about, self.limits))
            if not text.strip():
                return  # the model failed: the hard bounds keep the record small
            async with self._lock(room, name):
                notes = await self.store.load(room, name, user)
                if notes is None:
                    return
                await self.store.save(fold(notes, job, text, self._clock(), self.limits),
                                      self.limits.users_per_room)
            self.summaries += 1
        except Exception:
            log.warning("summary of %s's memory in %s failed", name, room, exc_info=True)
        finally:
            self._summarising.discard(key)

    async def idle(self) -> None:
        """Wait for the summaries in flight (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def keep_for(self, every: float = PURGE_EVERY_S) -> None:
        """Purge the records past the retention now and every ``every`` s."""
        if self.limits.enabled and self.limits.retention_s > 0 and self._retention is None:
            self._retention = asyncio.create_task(self._purge_loop(every))

    async def purge(self) -> int:
        return await self.store.purge(self._clock() - self.limits.retention_s)

    async def _purge_loop(self, every: float) -> None:
        while True:
            try:
                n = await self.purge()
                if n:
                    log.info("forgot %d memory records older than %.0f days", n,
                             self.limits.retention_days)
            except Exception:  # a database outage: try again next time
                log.warning("purging old memory failed", exc_info=True)
            await asyncio.sleep(every)

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = list(self._tasks)
        if self._retention is not None:
            tasks.append(self._retention)
            self._retention = None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
