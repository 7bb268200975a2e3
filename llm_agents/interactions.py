"""Direct interactions: for clients that are not in the room.

A client asks one character of a room for a reply; the reply streams into
a store, event by event, and the client reads it back as Server-Sent Events
(``llm_agents.interactions_http`` has the routes and their shapes).

This module holds the two things the rest stands on: ``InteractionStore``,
the interface of the durable record (an interaction row, its events in
``seq`` order), and ``Interactions``, the service that runs an interaction
and tells its listeners when an event was stored. The stores:
``llm_agents.interactions_sqlite`` (``liveroom serve``, and an agents
process on its own) and ``llm_agents.interactions_postgres`` (``liveroom
agents --postgres``: any agents process answers for any interaction, and a
stream run by another process is read by polling the store).

Durable: every interaction and every event is written to the store before
listeners are told, so a client that reconnects (or asks after a restart)
gets the whole stream from the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from edge.auth import Identity
from llm_agents.backends.base import Usage
from llm_agents.policy import INTERACTION, Trigger
from llm_agents.prompt import build_messages, estimate_tokens
from llm_agents.runtime import AgentRuntime, RoomAgent
from wire.errors import NotFound

log = logging.getLogger("liveroom.agents.interactions")
# How often finished interactions past their retention are purged.
PURGE_EVERY_S = 3600.0


class InteractionStore(Protocol):
    """The durable record: one row per interaction (``status`` running,
    done or failed) and its events in ``seq`` order. ``open`` marks failed
    ("interrupted") what a stopped process left running."""

    async def open(self) -> None: ...

    async def create(self, row: dict[str, Any]) -> None: ...

    async def add_event(self, interaction: str, seq: int, event: str, data: str) -> None: ...

    async def finish(self, interaction: str, status: str, reply: str, error: str | None,
                     prompt_tokens: int | None, completion_tokens: int | None,
                     finished: float) -> None: ...

    async def get(self, interaction: str) -> dict[str, Any] | None: ...

    async def events_after(self, interaction: str,
                           seq: int) -> list[tuple[int, str, str]]: ...

    async def purge(self, finished_before: float) -> int:
        """Forget the interactions (and their events) that finished before
        ``finished_before``; never a running one. Returns how many."""
        ...

    async def close(self) -> None: ...


class Interactions:
    """Runs interactions and tells listeners when events were stored."""

    def __init__(self, runtime: AgentRuntime, store: InteractionStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.store = store
        self._clock = clock
        # Interaction id -> one Event per waiting listener, set when the
        # interaction changes; a listener removes its own when it leaves.
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._retention: asyncio.Task[None] | None = None
        # The interactions this process runs (the others are another's).
        self._running: set[str] = set()

    def _notify(self, interaction: str) -> None:
        for ev in self._waiters.get(interaction, ()):
            ev.set()

    def runs_here(self, interaction: str) -> bool:
        """Whether this process runs ``interaction``: its listeners are then
        woken on each stored event; another process's must poll the store."""
        return interaction in self._running

    @contextmanager
    def watching(self, interaction: str) -> Iterator[asyncio.Event]:
        """An Event set each time this process stores an event of
        ``interaction`` (or finishes it), for as long as the block runs."""
        changed = asyncio.Event()
        waiters = self._waiters.setdefault(interaction, set())
        waiters.add(changed)
        try:
            yield changed
        finally:
            waiters.discard(changed)
            if not waiters:
                self._waiters.pop(interaction, None)

    async def create(self, room: str, name: str, ident: Identity, text: str) -> dict[str, Any]:
        agent = self.runtime.get(room, name)
        if agent is None:
            raise NotFound(f"no agent {name!r} in room {room!r}", field="agent")
        iid = uuid.uuid4().hex
        now = self._clock()
        trigger = Trigger(INTERACTION, now, ident.user, ident.name, text, {"interaction": iid})
        estimate = estimate_tokens(build_messages(agent.character, agent.window, trigger),
                                   agent.character.max_reply_tokens)
        # Raises QuotaExceeded (429) before anything is stored or run.
        reservation = await agent.quota.reserve(room, ident.user, estimate, now,
                                                tier=ident.tier)
        await self.store.create({"id": iid, "room": room, "agent": name, "user": ident.user,
                                 "text": text, "status": "running", "created": now})
        task = asyncio.create_task(self._run(agent, iid, ident, text, reservation))
        self._tasks.add(task)
        self._running.add(iid)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._running.discard(iid))
        return {"id": iid, "status": "running", "room": room, "agent": name,
                "events": f"/v1/interactions/{iid}/events"}

    async def _run(self, agent: RoomAgent, iid: str, ident: Identity, text: str,
                   reservation: Any) -> None:
        seq = 0
        # Events are stored in order by one writer: emit() is called from the
        # generation (synchronously), the writes happen here.
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

        async def writer() -> None:
            nonlocal seq
            while (item := await queue.get()) is not None:
                seq += 1
                await self.store.add_event(iid, seq, item[0], item[1])
                self._notify(iid)

        w = asyncio.create_task(writer())
        status, reply = "failed", ""
        error: str | None = "internal"
        usage: Usage | None = None
        try:
            outcome = await agent.interact(
                iid, ident.user, ident.name, text, reservation,
                lambda chunk: queue.put_nowait(("delta", json.dumps({"text": chunk}))))
            reply, error, usage = outcome.text, outcome.error, outcome.usage
            status = "failed" if error else "done"
        except Exception:
            log.exception("interaction %s failed", iid)
        finally:
            done: dict[str, Any] = {"status": status, "text": reply}
            if error:
                done["error"] = error
            if usage is not None:
                done["usage"] = {"prompt_tokens": usage.prompt_tokens,
                                 "completion_tokens": usage.completion_tokens,
                                 "reported": usage.reported}
            queue.put_nowait(("done", json.dumps(done)))
            queue.put_nowait(None)
            await w
            await self.store.finish(iid, status, reply, error,
                                    usage.prompt_tokens if usage else None,
                                    usage.completion_tokens if usage else None, self._clock())
            self._notify(iid)

    async def owned(self, interaction: str, user: str) -> dict[str, Any]:
        """The interaction's row, if ``user`` asked for it; else NotFound
        (another user's interaction is not told apart from a missing one)."""
        row = await self.store.get(interaction)
        if row is None or row["user"] != user:
            raise NotFound("no such interaction")
        return row

    async def room_agents(self, room: str, user: str) -> dict[str, Any]:
        """The room's characters, their breaker, and today's token usage of
        the room and of ``user``."""
        agents = [a for (r, _), a in self.runtime.agents.items() if r == room]
        out: dict[str, Any] = {"room": room, "agents": []}
        for a in agents:
            breaker = getattr(a.backend, "breaker", None)
            out["agents"].append({
                "name": a.character.name, "display_name": a.character.display_name,
                "backend": a.backend.label, "replies": a.replies,
                "breaker": breaker.state if breaker is not None else None})
        if agents:
            room_used, user_used = await agents[0].quota.used(room, user, self._clock())
            out["quota"] = {"room_used": room_used, "user_used": user_used}
        return out

    def keep_for(self, seconds: float, every: float = PURGE_EVERY_S) -> None:
        """Purge the interactions finished more than ``seconds`` ago, now
        and every ``every`` seconds (0: keep them all)."""
        if seconds > 0 and self._retention is None:
            self._retention = asyncio.create_task(self._purge_loop(seconds, every))

    async def _purge_loop(self, seconds: float, every: float) -> None:
        while True:
            try:
                n = await self.store.purge(self._clock() - seconds)
                if n:
                    log.info("purged %d interactions finished over %.0f s ago", n, seconds)
            except Exception:  # a database outage: try again next time
                log.warning("purging old interactions failed", exc_info=True)
            await asyncio.sleep(every)

    async def close(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            await asyncio.gather(self._retention, return_exceptions=True)
            self._retention = None
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

