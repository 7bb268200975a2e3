"""Prompts from a bounded window of recent room context.

The window keeps the last ``max_lines`` lines (and at most ``max_chars``
characters) of what happened in the room, newest last; older lines fall out.
A prompt is the persona as the system message, then the window and the
trigger as one user message: small models follow one clear instruction
better than a long fake dialogue. Token counts are estimated (about four
characters a token) for the quota reservation; the backend's reported usage
settles it afterwards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from llm_agents.acting import acting_hint
from llm_agents.character import Character
from llm_agents.memory import Recall, render
from llm_agents.policy import (
    EVENT,
    GIFT,
    INTERACTION,
    MENTION,
    QUESTION,
    SILENCE,
    STATE,
    Trigger,
)

CHARS_PER_TOKEN = 4


class ContextWindow:
    __slots__ = ("_chars", "_lines", "max_chars", "max_lines")

    def __init__(self, max_lines: int = 12, max_chars: int = 1500) -> None:
        self.max_lines = max_lines
        self.max_chars = max_chars
        self._lines: deque[str] = deque()
        self._chars = 0

    def add(self, line: str) -> None:
        line = line[: self.max_chars]
        self._lines.append(line)
        self._chars += len(line)
        while len(self._lines) > self.max_lines or self._chars > self.max_chars:
            self._chars -= len(self._lines.popleft())

    def lines(self) -> list[str]:
        return list(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


def action_line(action: Mapping[str, Any]) -> str | None:
    """One line of context for an action, or None for what is not worth it."""
    sender = action.get("from")
    who = str(sender.get("name", "?")) if isinstance(sender, Mapping) else "?"
    body = action.get("body")
    kind = action.get("kind")
    if kind == "comment" and isinstance(body, Mapping):
        return f"{who}: {str(body.get('text', ''))[:300]}"
    if kind == "gift" and isinstance(body, Mapping):
        return f"{who} sent {body.get('count', 1)} x {body.get('gift', '?')}"
    if kind == "agent.say" and isinstance(body, Mapping) and not body.get("error"):
        return f"{who}: {str(body.get('text', ''))[:300]}"
    return None


def instruction(character: Character, trigger: Trigger) -> str:
    user = trigger.user_name or trigger.user or "someone"
    if trigger.kind == GIFT:
        return (f"{user} just sent you {trigger.detail.get('count', 1)} "
                f"{trigger.detail.get('gift', 'gift')}. Thank them in one short sentence.")
    if trigger.kind in (MENTION, QUESTION, INTERACTION):
        return f'{user} says to you: "{trigger.text}". Reply in one or two short sentences.'
    if trigger.kind == STATE:
        return (f"The room's {trigger.detail.get('section')} just changed to "
                f"{trigger.detail.get('value')!r}. React in one short sentence.")
    if trigger.kind == EVENT:
        return (f"{user} just did {trigger.detail.get('kind')!r} "
                f"({str(trigger.detail.get('body'))[:200]}). Comment in one short sentence.")
    if trigger.kind == SILENCE:
        return "The room has been quiet for a while. Say one short line to liven it up."
    return "Say one short line."


def build_messages(character: Character, window: ContextWindow, trigger: Trigger,
                   recall: Recall | None = None, *, acting: bool = False
                   ) -> list[dict[str, str]]:
    """The prompt: the persona, then what the character remembers of the
    viewer and the room (``llm_agents.memory``, bounded), the recent chat
    and the instruction."""
    context = "\n".join(window.lines())
    user = instruction(character, trigger)
    if context:
        user = f"Recent chat in the room:\n{context}\n\n{user}"
    if acting and character.acting is not None:
        # The structured reply's shape (llm_agents.acting): the schema binds
        # the output, this line helps a small model fill it sensibly.
        user = f"{user}\n{acting_hint(character.acting)}"
    remembered = render(recall)
    if remembered:
        user = f"{remembered}\n\n{user}"
    return [{"role": "system", "content": character.persona},
            {"role": "user", "content": user}]


def estimate_tokens(messages: list[dict[str, str]], max_reply_tokens: int) -> int:
    """What to reserve before a call: the prompt's estimate plus the most the
    reply may use (a few tokens per message for the chat template)."""
    chars = sum(len(m["content"]) for m in messages)
    return chars // CHARS_PER_TOKEN + 4 * len(messages) + max_reply_tokens


def scripted_reply(character: Character, trigger: Trigger, turn: int) -> str:
    """The deterministic line of a scripted character for ``trigger``
    (``turn`` picks among several lines in order)."""
    lines = character.scripted.get(trigger.kind) or character.scripted.get(MENTION) or (
        f"Hello from {character.display_name}!",)
    line = lines[turn % len(lines)]
    values = {"user": trigger.user_name or trigger.user or "friend", "text": trigger.text,
              "gift": trigger.detail.get("gift", "gift"),
              "section": trigger.detail.get("section", "stage"),
              "kind": trigger.detail.get("kind", "something"),
              "name": character.display_name}
    try:
        return line.format(**values)[: character.max_reply_chars]
    except (KeyError, IndexError, ValueError):
        return line[: character.max_reply_chars]
