"""The one interface every model backend implements.

``stream(request)`` is an async iterator of text chunks (``str``) that ends
with exactly one ``Usage``; a failure raises ``ModelUnavailable`` (from the
one error hierarchy, ``wire.errors``). Cancelling the consumer closes the
stream (the backend frees what it holds in ``finally``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from llm_agents.character import Character
from llm_agents.policy import Trigger


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # False when the server sent no usage and the counts are our estimate.
    reported: bool = True

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ReplyRequest:
    character: Character
    trigger: Trigger
    messages: list[dict[str, str]]
    max_tokens: int
    # Which reply of this character this is (scripted lines rotate by it).
    turn: int = 0


class ModelBackend(Protocol):
    # "openai", "embedded" or "scripted": shown with every reply, so that a
    # viewer knows a scripted character is not a model.
    label: str

    def stream(self, request: ReplyRequest) -> AsyncIterator[str | Usage]: ...

    async def close(self) -> None: ...
