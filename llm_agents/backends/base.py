"""The one interface every model backend implements.

``stream(request)`` is an async iterator of text chunks (``str``) that ends
with exactly one ``Usage``; when the request carries a ``schema`` (a
character that acts on the stage, ``llm_agents.acting``) the backend asks for
structured output, streams the reply's words as text all the same and
yields the stage part once, as a ``StageChange`` (unvalidated: the runtime
checks it), before the ``Usage``; a failure raises ``ModelUnavailable`` (from the
one error hierarchy, ``wire.errors``). Cancelling the consumer closes the
stream (the backend frees what it holds in ``finally``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from llm_agents.acting import StageChange
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
    # The JSON schema of a structured reply (llm_agents.acting.reply_schema),
    # None for plain text.
    schema: Mapping[str, Any] | None = None


# What a backend's stream yields.
Chunk = str | Usage | StageChange


class ModelBackend(Protocol):
    # "openai", "embedded" or "scripted": shown with every reply, so that a
    # viewer knows a scripted character is not a model.
    label: str

    def stream(self, request: ReplyRequest) -> AsyncIterator[Chunk]: ...

    async def close(self) -> None: ...
