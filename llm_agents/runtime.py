"""The agent runtime: characters sitting in rooms as members.

Theory of operation
-------------------
A ``RoomAgent`` is one character in one room. Its ``RoomLink`` joins the
room as a member with role ``agent`` and hands it every frame the room
sends (actions, state notices). Frames are read on the agent's own task,
never in the fan-out loop: each one updates the bounded context window and,
through the pure ``SpeakPolicy``, may queue a trigger.

The agent's worker task asks the policy what to answer (``next(now)``) and
sleeps until it is woken by a new trigger or the time the policy names
(cooldown end, silence). A reply:

1. reserves the estimated tokens in the quota (room and user); over quota
   the character declines with its short ``decline`` line;
2. marks its stage section ``speaking`` (compare-and-set on its version; it
   is cleared when the agent falls idle, not after every reply);
3. streams the model's text as ``agent.delta`` actions (``reply_id``, ``i``,
   ``text``), coalesced to one action per ``delta_interval`` seconds so a
   fast model does not flood the room;
4. a character that acts on the stage asks for a structured reply; its
   stage part is validated and written to its stage after the words
   (``llm_agents.staging``; a bad one is refused, the reply still goes);
5. ends with one ``agent.say`` (``reply_id``, the whole ``text``,
   ``reply_to``, ``backend``), marked with ``error`` when the model failed
   and ``cancelled`` when the policy found the reply stale or preempted;
6. settles the quota with the reported (or estimated) usage.

The model call runs in its own task; the worker waits on it *and* on new
triggers, so a higher-priority trigger cancels a reply in flight at once.
Nothing here runs on the fan-out path: the room never waits for a model.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llm_agents.acting import STAGE_TOKENS, StageChange
from llm_agents.backends.base import ModelBackend, ReplyRequest, Usage
from llm_agents.character import Character
from llm_agents.link import RoomLink
from llm_agents.memory import Recall
from llm_agents.memory_service import AgentMemory
from llm_agents.metrics import AgentMetrics
from llm_agents.policy import (
    INTERACTION,
    PolicyConfig,
    SpeakPolicy,
    Trigger,
    classify_action,
    classify_state,
    is_room_activity,
)
from llm_agents.prompt import ContextWindow, action_line, build_messages, estimate_tokens
from llm_agents.quota import QuotaStore, Reservation
from llm_agents.sentences import end_on_sentence
from llm_agents.staging import Staging
from wire.errors import LiveroomError, ModelUnavailable, QuotaExceeded, VersionConflict
from wire.frames import AGENT_DELTA, AGENT_SAY

log = logging.getLogger("liveroom.agents")
refused_log = logging.getLogger("liveroom.agents.refused")  # rate-limited: plumbing/ratelog.py

@dataclass(frozen=True, slots=True)
class AgentConfig:
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # A fast model's tokens are merged into one agent.delta per interval:
    # 5 updates a second read as smooth streaming, and each delta is a message
    # to every member of the room (docs/BENCHMARKS.md).
    delta_interval: float = 0.2
    # In a big room every delta is one more message to every member, and the
    # room's write loops are long: from ``big_room_members`` members on, a
    # reply's tokens are merged into one delta per ``big_room_delta_interval``.
    big_room_members: int = 500
    big_room_delta_interval: float = 1.0
    context_lines: int = 12


@dataclass(slots=True)
class ReplyOutcome:
    reply_id: str
    text: str
    usage: Usage | None
    error: str | None = None
    cancelled: str | None = None
    error_message: str | None = None
    stage: StageChange | None = None


class RoomAgent:
    def __init__(self, character: Character, room: str, backend: ModelBackend,
                 quota: QuotaStore, config: AgentConfig,
                 make_link: Callable[[Callable[[dict[str, Any]], None]], RoomLink],
                 clock: Callable[[], float] = time.time,
                 metrics: AgentMetrics | None = None,
                 memory: AgentMemory | None = None) -> None:
        self.character = character
        self.memory = memory
        self.room = room
        self.backend = backend
        self.quota = quota
        self.config = config
        self.clock = clock
        now = clock()
        self.policy = SpeakPolicy(character, config.policy, now)
        self.window = ContextWindow(config.context_lines)
        self.link = make_link(self._on_frame)
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._turn = 0
        self.metrics = metrics
        self.replies = 0
        self.dropped = 0
        self.members = 0  # the room's member count, from joined/online frames
        self.stage: dict[str, Any] = {"name": character.display_name, **character.stage,
                                      "speaking": False}
        self.staging = Staging(character, room, self.link, self._set_stage, clock, metrics)

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        await self.link.join(self.room)
        await self._set_stage(speaking=False)
        self._worker = asyncio.create_task(self._run(), name=f"agent-{self.character.name}")

    async def stop(self) -> None:
        await self.staging.stop()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
        await self.link.close()

    # -- frames in (the agent's reader task, not the fan-out loop) --------
    def delta_interval(self) -> float:
        """Seconds between two deltas of a reply, by the room's size."""
        cfg = self.config
        if self.members >= cfg.big_room_members:
            return cfg.big_room_delta_interval
        return cfg.delta_interval

    def _on_frame(self, frame: dict[str, Any]) -> None:
        ftype = frame.get("type")
        now = self.clock()
        if ftype in ("joined", "online") and frame.get("room") == self.room:
            count = frame.get("members" if ftype == "joined" else "count")
            if type(count) is int:
                self.members = count
                self.staging.on_members(count)
            return
        if ftype == "action" and frame.get("room") == self.room:
            if is_room_activity(frame, self.character):
                self.policy.observe(now)
            line = action_line(frame)
            if line is not None:
                self.window.add(line)
            trigger = classify_action(self.character, frame, now)
            if frame.get("kind") == "gift":
                self.staging.on_gift()
        elif ftype == "state" and frame.get("room") == self.room:
            trigger = classify_state(self.character, frame, now)
        else:
            return
        if trigger is not None:
            dropped = len(self.policy.offer(trigger))
            if dropped:
                self.dropped += dropped
                if self.metrics is not None:
                    self.metrics.dropped.labels(self.character.name).inc(dropped)
            self._wake.set()

    # -- the worker --------------------------------------------------------
    async def _run(self) -> None:
        while True:
            now = self.clock()
            trigger = self.policy.next(now)
            if trigger is None:
                if self.stage["speaking"]:
                    # Written when the agent falls idle, not after every reply:
                    # a character talking on and on changes its stage twice,
                    # not twice a reply (state goes to every member).
                    await self._set_stage(speaking=False)
                    continue
                self._wake.clear()
                at = self.policy.wake_at(now)
                timeout = None if at is None else max(0.01, at - now)
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            try:
                await self._reply(trigger)
            except Exception:
                log.exception("agent %s: reply failed", self.character.name)
                if self.policy.speaking is not None:
                    self.policy.finished(self.clock())

    async def _reply(self, trigger: Trigger) -> None:
        character = self.character
        now = self.clock()
        self.policy.started(trigger, now)
        reply_id = uuid.uuid4().hex[:16]
        reply_to = dict(trigger.reply_to) if trigger.reply_to else None
        messages = build_messages(character, self.window, trigger, await self._recall(trigger),
                                  acting=self.staging.schema is not None)
        try:
            reservation = await self.quota.reserve(
                self.room, trigger.user, estimate_tokens(messages, character.max_reply_tokens),
                now)
        except QuotaExceeded as err:
            self.link.publish(self.room, AGENT_SAY, {
                "reply_id": reply_id, "text": character.decline, "reply_to": reply_to,
                "backend": self.backend.label, "declined": "quota_exceeded",
                "scope": err.extra.get("scope")})
            self._count("declined")
            self.policy.finished(self.clock())
            return
        if not self.stage["speaking"]:
            await self._set_stage(speaking=True)
        seq = [0]

        def publish_delta(text: str) -> None:
            self.link.publish(self.room, AGENT_DELTA, {"reply_id": reply_id, "i": seq[0],
                                                       "text": text})
            seq[0] += 1

        # The reply's last chunk travels only in the agent.say that follows at
        # once with the whole text: one message fewer to every member.
        outcome = await self._generate(trigger, messages, reply_id, publish_delta,
                                       reservation, watch=True, last_chunk=False,
                                       schema=self.staging.schema)
        if not outcome.error and not outcome.cancelled and self._cut(outcome):
            # Not where the limit cut it (the say's text is what shows).
            outcome.text = end_on_sentence(outcome.text)
        body: dict[str, Any] = {"reply_id": reply_id, "text": outcome.text,
                                "reply_to": reply_to, "backend": self.backend.label}
        if outcome.error:
            body["error"] = outcome.error
            body["error_message"] = outcome.error_message
        if outcome.usage is not None:
            u = outcome.usage
            body["usage"] = {"prompt_tokens": u.prompt_tokens,
                             "completion_tokens": u.completion_tokens, "reported": u.reported}
        if outcome.cancelled:
            body["cancelled"] = outcome.cancelled
        self.link.publish(self.room, AGENT_SAY, body)
        self.replies += 1
        self._count("error" if outcome.error else "cancelled" if outcome.cancelled else "ok")
        if outcome.stage is not None and not outcome.cancelled:
            await self.staging.apply(outcome.stage, self.stage)
        if not outcome.error and not outcome.cancelled:
            await self._remember(trigger, outcome.text)
        if outcome.text and not outcome.error:
            self.window.add(f"{character.display_name}: {outcome.text}")
        self.policy.finished(self.clock())

    def _cut(self, outcome: ReplyOutcome) -> bool:
        """Whether the reply stopped at the character's token or text limit."""
        usage, character = outcome.usage, self.character
        return len(outcome.text) >= character.max_reply_chars or (
            usage is not None and usage.completion_tokens >= character.max_reply_tokens)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.replies.labels(self.character.name, outcome).inc()

    async def _generate(self, trigger: Trigger, messages: list[dict[str, str]], reply_id: str,
                        emit: Callable[[str], None], reservation: Reservation,
                        watch: bool, last_chunk: bool = True,
                        schema: Mapping[str, Any] | None = None) -> ReplyOutcome:
        """Run the model call in its own task; coalesce its text into
        ``emit`` calls (the text still pending at the end too, unless
        ``last_chunk`` is False); settle the quota. With ``watch`` the policy may
        cancel it (stale, preempted) whenever the agent is woken."""
        character = self.character
        request = ReplyRequest(character, trigger, messages, character.max_reply_tokens
                               + (STAGE_TOKENS if schema is not None else 0), self._turn, schema)
        self._turn += 1
        parts: list[str] = []
        pending: list[str] = []
        state: dict[str, Any] = {"usage": None, "error": None, "message": None, "last": 0.0,
                                 "stage": None}
        limit = character.max_reply_chars

        def flush() -> None:
            if pending:
                emit("".join(pending))
                pending.clear()
            state["last"] = self.clock()

        started = self.clock()

        async def consume() -> None:
            size = 0
            try:
                async for item in self.backend.stream(request):
                    if isinstance(item, Usage):
                        state["usage"] = item
                        continue
                    if isinstance(item, StageChange):
                        state["stage"] = item
                        continue
                    item = item[: max(0, limit - size)]
                    if not item:
                        continue
                    if not parts and self.metrics is not None:
                        self.metrics.first_token.labels(character.name).observe(
                            self.clock() - started)
                    size += len(item)
                    parts.append(item)
                    pending.append(item)
                    if self.clock() - state["last"] >= state["interval"]:
                        flush()
            except LiveroomError as err:
                state["error"], state["message"] = err.code, err.message
            except Exception:
                log.exception("agent %s: backend %s failed", character.name, self.backend.label)
                state["error"] = ModelUnavailable.code

        interval = self.delta_interval()
        state["interval"] = interval
        state["last"] = self.clock()
        task = asyncio.create_task(consume())
        cancelled: str | None = None
        # asyncio.wait cancels nothing it waits for: cancelled itself (the agent
        # unseated), the waiter and the model call must not stay pending.
        try:
            while not task.done():
                if not watch:
                    await asyncio.wait({task})
                    break
                self._wake.clear()
                waiter = asyncio.create_task(self._wake.wait())
                deadline = trigger.at + self.config.policy.stale_after_s - self.clock()
                try:
                    await asyncio.wait({task, waiter}, timeout=max(0.01, deadline),
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if task.done():
                    break
                cancelled = self.policy.should_cancel(self.clock())
                if cancelled:
                    task.cancel()
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
                    break
        finally:
            task.cancel()
        if watch:
            # Triggers that came in while we watched must wake the worker.
            self._wake.set()
        if last_chunk:
            flush()
        text = "".join(parts)
        usage: Usage | None = state["usage"]
        used = usage.total if usage is not None else (
            reservation.tokens if not text else len(text) // 4 + 1)
        if usage is not None and self.metrics is not None:
            self.metrics.tokens.labels(character.name, "prompt").inc(usage.prompt_tokens)
            self.metrics.tokens.labels(character.name, "completion").inc(usage.completion_tokens)
        try:
            await self.quota.settle(reservation, used)
        except Exception:
            log.exception("agent %s: quota settle failed", character.name)
        return ReplyOutcome(reply_id, text, usage, state["error"], cancelled, state["message"],
                            state["stage"])

    async def interact(self, interaction_id: str, user: str, user_name: str, text: str,
                       reservation: Reservation, emit: Callable[[str], None]) -> ReplyOutcome:
        """A direct interaction (HTTP API): the same backend and quota, its
        text handed to ``emit`` (coalesced like deltas) instead of the room."""
        trigger = Trigger(INTERACTION, self.clock(), user, user_name, text,
                          {"interaction": interaction_id})
        messages = build_messages(self.character, self.window, trigger,
                                  await self._recall(trigger))
        outcome = await self._generate(trigger, messages, interaction_id, emit, reservation,
                                       watch=False)
        if not outcome.error:
            await self._remember(trigger, outcome.text)
        return outcome

    # -- memory (llm_agents.memory_service) ----------------------------------
    async def _recall(self, trigger: Trigger) -> Recall | None:
        if self.memory is None:
            return None
        return await self.memory.recall(self.room, self.character.name, trigger.user,
                                        trigger.user_name)

    async def _remember(self, trigger: Trigger, text: str) -> None:
        if self.memory is not None:
            await self.memory.remember(self.room, self.character, trigger, text,
                                       self._summarise)

    async def _summarise(self, trigger: Trigger, messages: list[dict[str, str]]) -> str:
        """A summary of the character's notes, asked of its backend like a
        reply (charged to the room's quota; "" when refused or failed)."""
        assert self.memory is not None
        limits = self.memory.limits
        try:
            reservation = await self.quota.reserve(
                self.room, "", estimate_tokens(messages, limits.summary_tokens), self.clock())
        except QuotaExceeded:
            return ""
        parts: list[str] = []
        used = reservation.tokens
        try:
            async for item in self.backend.stream(ReplyRequest(
                    self.character, trigger, messages, limits.summary_tokens)):
                if isinstance(item, Usage):
                    used = item.total
                elif isinstance(item, str):
                    parts.append(item)
        except LiveroomError:
            parts.clear()
        finally:
            await self.quota.settle(reservation, used)
        return "".join(parts)[: limits.summary_chars]

    # -- state -------------------------------------------------------------
    async def _set_stage(self, **changes: Any) -> None:
        """Write the character's own stage section with compare-and-set on
        its version: if someone else (a host) wrote it meanwhile we re-read
        and retry once, rather than overwrite blindly."""
        section = self.character.stage_section
        self.stage.update(changes)
        for _ in range(2):
            try:
                expected = await self.link.section_partial(self.room, section)
                await self.link.write_state(self.room, section, dict(self.stage), expected)
                return
            except VersionConflict:
                continue
            except LiveroomError as err:
                refused_log.warning("agent %s: stage write refused: %s",
                                    self.character.name, err)
                return


class AgentRuntime:
    """Every agent of a process; the composition root starts and stops it."""

    def __init__(self) -> None:
        self.agents: dict[tuple[str, str], RoomAgent] = {}

    def add(self, agent: RoomAgent) -> None:
        self.agents[(agent.room, agent.character.name)] = agent
        agent.staging.room_agents = lambda: self._in_room(agent)

    def _in_room(self, agent: RoomAgent) -> int:
        """This process's characters in ``agent``'s room, ``agent`` counted."""
        return len({a.character.name for a in self.agents.values() if a.room == agent.room}
                   | {agent.character.name})

    def get(self, room: str, name: str) -> RoomAgent | None:
        return self.agents.get((room, name))

    async def start(self) -> None:
        for agent in self.agents.values():
            await agent.start()
            log.info("agent %s joined room %s (backend %s)", agent.character.name, agent.room,
                     agent.backend.label)

    async def stop(self) -> None:
        agents, self.agents = list(self.agents.values()), {}
        for agent in agents:
            await agent.stop()

    async def seat(self, agent: RoomAgent) -> None:
        """Start ``agent`` and keep it (a seat, ``llm_agents.seating``); one
        that cannot join its room is stopped again and not kept."""
        try:
            await agent.start()
        except BaseException:
            await agent.stop()
            raise
        self.add(agent)

    async def unseat(self, room: str, name: str) -> bool:
        agent = self.agents.pop((room, name), None)
        if agent is None:
            return False
        await agent.stop()
        return True

    def summary(self) -> list[Mapping[str, Any]]:
        return [{"room": a.room, "name": a.character.name, "backend": a.backend.label,
                 "replies": a.replies, "dropped": a.dropped}
                for a in self.agents.values()]
