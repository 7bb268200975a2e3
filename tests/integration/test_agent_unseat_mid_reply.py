"""A character stopped in the middle of a reply (its seat removed, the
process stopping) stops its model call too, and leaves no task pending.

Found by the fuzzer (loadtest/fuzz), which seats and unseats characters in
busy rooms: the server logged "Task was destroyed but it is pending!" for
the waiter of ``RoomAgent._generate``; ``asyncio.wait`` cancels nothing it
waits for, so when the reply itself was cancelled, the waiter and the model
call (streaming on, holding its gateway slot, into a closed link) stayed
pending. No server is needed: the event loop's tasks are the subject."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from llm_agents.backends.base import Chunk, ReplyRequest
from llm_agents.character import SHIPPED_DIR, load_character
from llm_agents.policy import Trigger
from llm_agents.quota import MemoryQuotaStore, QuotaLimits
from llm_agents.runtime import AgentConfig, RoomAgent


class EndlessBackend:
    """A model that streams a word every 10 ms until it is cancelled."""

    label = "scripted"

    def __init__(self) -> None:
        self.words = 0
        self.cancelled = asyncio.Event()

    async def stream(self, request: ReplyRequest) -> AsyncIterator[Chunk]:
        try:
            while True:
                self.words += 1
                yield "word "
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def close(self) -> None:
        pass


async def test_a_reply_cancelled_from_outside_stops_its_model_call_and_waiter() -> None:
    backend = EndlessBackend()
    quota = MemoryQuotaStore(QuotaLimits())
    agent = RoomAgent(load_character(SHIPPED_DIR / "quiz_master.toml"), "r", backend,  # type: ignore[arg-type]
                      quota, AgentConfig(), lambda on_frame: None)  # type: ignore[arg-type,return-value]
    now = agent.clock()
    reservation = await quota.reserve("r", "u", 100, now)
    emitted: list[str] = []
    before = asyncio.all_tasks()
    reply = asyncio.create_task(agent._generate(
        Trigger("mention", now, "u", "U", "quinn?"), [], "reply-1", emitted.append,
        reservation, watch=True))

    async def streaming() -> None:
        while backend.words < 3:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(streaming(), 5)
    reply.cancel()  # what RoomAgent.stop does to its worker mid-reply
    await asyncio.gather(reply, return_exceptions=True)

    await asyncio.wait_for(backend.cancelled.wait(), 2)
    words = backend.words
    await asyncio.sleep(0.1)
    assert backend.words == words, "the model call streamed on after the reply was cancelled"
    left: set[Any] = {t for t in asyncio.all_tasks() - before
                      if t is not asyncio.current_task() and not t.done()}
    assert not left, f"tasks left pending: {left}"
