"""When a character speaks: pure decisions, time as an argument.

Theory of operation
-------------------
Everything the room does reaches an agent as an action or a state notice.
``classify_action`` / ``classify_state`` turn the ones its character reacts to
into a ``Trigger`` (a mention of its name, a question, a gift, a change of a
watched section, a custom action kind it follows); the absence of actions for
``silence_s`` seconds becomes a ``silence`` trigger. Triggers wait in a small
bounded queue per agent:

- priority: interaction = gift > mention = question > state = event > silence; within
  a priority the oldest goes first;
- full queue: the oldest trigger of the lowest priority present is dropped
  (the newcomer included: a comment never pushes out a gift);
- stale: a trigger older than ``stale_after_s`` when its turn comes is dropped
  (the conversation has moved on);
- cooldown: after a reply ends, nothing starts for ``cooldown_s`` seconds;
- one reply at a time; a reply in flight is cancelled (``should_cancel``) when
  it became stale, or when a trigger of a higher priority is waiting (a gift
  cuts a chatty answer short).

Nothing here awaits or reads a clock: the runtime calls ``next(now)`` when it
is woken (new trigger, or the time ``wake_at`` gave), so the whole policy is
tested without an event loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from llm_agents.character import Character

MENTION: Final = "mention"
QUESTION: Final = "question"
GIFT: Final = "gift"
SILENCE: Final = "silence"
STATE: Final = "state"
EVENT: Final = "event"
INTERACTION: Final = "interaction"
# Not a reason to speak: a request to fold a character's memory into a
# summary (llm_agents.memory), sent to its backend like a reply; the lowest.
SUMMARY: Final = "summary"

PRIORITY: Final[Mapping[str, int]] = {
    SUMMARY: 0, SILENCE: 0, STATE: 1, EVENT: 1, MENTION: 2, QUESTION: 2, GIFT: 3, INTERACTION: 3,
}


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: str
    at: float
    user: str = ""
    user_name: str = ""
    text: str = ""
    # What the reply answers: {"kind", "seq", "user"} for a room action,
    # {"interaction": id} for the direct API, None for silence.
    reply_to: Mapping[str, Any] | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def priority(self) -> int:
        return PRIORITY[self.kind]


def _name_re(character: Character) -> re.Pattern[str]:
    first = character.display_name.split(" ")[0]
    names = {character.name, first}
    alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True) if n)
    return re.compile(rf"(?<![\w@])@?(?:{alt})\b", re.IGNORECASE)


def mentions(character: Character, text: str) -> bool:
    return bool(_name_re(character).search(text))


def classify_action(character: Character, action: Mapping[str, Any],
                    now: float) -> Trigger | None:
    """The trigger an action of the room is for ``character``, if any.
    Agents never react to agents (theirs or another's): two characters must
    not talk to each other forever."""
    sender = action.get("from")
    if not isinstance(sender, Mapping):
        return None
    if sender.get("role") == "agent" or sender.get("id") == character.name:
        return None
    user, user_name = str(sender.get("id", "")), str(sender.get("name", ""))
    body = action.get("body")
    kind = action.get("kind")
    reply_to = {"kind": kind, "seq": action.get("seq"), "user": user}
    reacts = character.reacts
    if kind == "gift" and reacts.gifts and isinstance(body, Mapping):
        return Trigger(GIFT, now, user, user_name, "", reply_to,
                       {"gift": str(body.get("gift", "")), "count": body.get("count", 1)})
    if isinstance(kind, str) and kind in reacts.kinds:
        return Trigger(EVENT, now, user, user_name, "", reply_to, {"kind": kind, "body": body})
    if kind != "comment" or not isinstance(body, Mapping):
        return None
    text = body.get("text")
    if not isinstance(text, str):
        return None
    is_question = "?" in text
    if reacts.mentions and mentions(character, text):
        return Trigger(QUESTION if is_question else MENTION, now, user, user_name, text,
                       reply_to)
    if reacts.questions and is_question:
        return Trigger(QUESTION, now, user, user_name, text, reply_to)
    return None


def classify_state(character: Character, frame: Mapping[str, Any],
                   now: float) -> Trigger | None:
    section = frame.get("section")
    if not isinstance(section, str) or section not in character.reacts.sections:
        return None
    return Trigger(STATE, now, "", "", "", {"section": section, "partial": frame.get("partial")},
                   {"section": section, "value": frame.get("value")})


def is_room_activity(action: Mapping[str, Any], character: Character) -> bool:
    """Whether an action resets the silence timer: anything but our own words."""
    sender = action.get("from")
    return not (isinstance(sender, Mapping) and sender.get("id") == character.name)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    queue_size: int = 8
    stale_after_s: float = 20.0


class SpeakPolicy:
    """One agent's decisions in one room (see the module's theory)."""

    __slots__ = ("_queue", "character", "config", "last_activity", "last_spoke", "ready_at",
                 "speaking")

    def __init__(self, character: Character, config: PolicyConfig, now: float) -> None:
        self.character = character
        self.config = config
        self._queue: list[Trigger] = []
        self.speaking: Trigger | None = None
        self.ready_at = now
        self.last_activity = now
        self.last_spoke = now

    def __len__(self) -> int:
        return len(self._queue)

    def queued(self) -> list[Trigger]:
        return list(self._queue)

    def observe(self, now: float) -> None:
        """Someone did something in the room: the silence starts over."""
        self.last_activity = max(self.last_activity, now)

    def offer(self, trigger: Trigger) -> list[Trigger]:
        """Queue ``trigger``; returns what was dropped to keep the bound."""
        self._queue.append(trigger)
        dropped: list[Trigger] = []
        while len(self._queue) > self.config.queue_size:
            low = min(t.priority for t in self._queue)
            # The list is in arrival order: the first of the lowest is the oldest.
            victim = next(t for t in self._queue if t.priority == low)
            self._queue.remove(victim)
            dropped.append(victim)
        return dropped

    def silence_due(self, now: float) -> bool:
        """A silence trigger is due: the room was quiet for ``silence_s``, or
        the character has not spoken for ``every_s`` (a commentator)."""
        if self.speaking is not None:
            return False
        r = self.character.reacts
        if r.every_s > 0 and now - self.last_spoke >= r.every_s:
            return True
        s = r.silence_s
        return s > 0 and now - self.last_activity >= s and now - self.last_spoke >= s

    def drop_stale(self, now: float) -> list[Trigger]:
        limit = self.config.stale_after_s
        stale = [t for t in self._queue if now - t.at > limit]
        if stale:
            self._queue = [t for t in self._queue if now - t.at <= limit]
        return stale

    def next(self, now: float) -> Trigger | None:
        """The trigger to answer now, or None (speaking, cooling down, or
        nothing to say). The caller then reports ``started``/``finished``."""
        if self.speaking is not None or now < self.ready_at:
            return None
        self.drop_stale(now)
        if self._queue:
            top = max(t.priority for t in self._queue)
            pick = next(t for t in self._queue if t.priority == top)
            self._queue.remove(pick)
            return pick
        if self.silence_due(now):
            return Trigger(SILENCE, now)
        return None

    def wake_at(self, now: float) -> float | None:
        """The earliest time ``next`` may answer something without new input."""
        if self.speaking is not None:
            return None
        if self._queue:
            return max(now, self.ready_at)
        r = self.character.reacts
        times = []
        if r.silence_s > 0:
            times.append(max(self.last_activity, self.last_spoke) + r.silence_s)
        if r.every_s > 0:
            times.append(self.last_spoke + r.every_s)
        return max(self.ready_at, min(times)) if times else None

    def started(self, trigger: Trigger, now: float) -> None:
        self.speaking = trigger
        self.last_spoke = now

    def finished(self, now: float) -> None:
        self.speaking = None
        self.last_spoke = now
        self.ready_at = now + self.character.cooldown_s

    def should_cancel(self, now: float) -> str | None:
        """Why the reply in flight should stop now ("stale" | "preempted"), or None."""
        cur = self.speaking
        if cur is None:
            return None
        if now - cur.at > self.config.stale_after_s:
            return "stale"
        if any(t.priority > cur.priority for t in self._queue):
            return "preempted"
        return None
