"""The scripted backend: deterministic lines from the character file.

For tests and for machines without the embedded model. Words come out one by
one, ``word_delay`` seconds apart, so that the room shows the same streaming
as with a model (0 in tests that want it instant). A character that acts on
the stage gets the stage change its file declares for the trigger's kind
(``[acting.scripted]``), first, as a model's structured reply has it: not
checked here, the runtime validates it as it would a model's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from llm_agents.acting import StageChange
from llm_agents.backends.base import Chunk, ReplyRequest, Usage
from llm_agents.memory import scripted_summary
from llm_agents.policy import SUMMARY
from llm_agents.prompt import CHARS_PER_TOKEN, scripted_reply


class ScriptedBackend:
    label = "scripted"

    def __init__(self, word_delay: float = 0.04) -> None:
        self.word_delay = word_delay

    async def stream(self, request: ReplyRequest) -> AsyncIterator[Chunk]:
        trigger = request.trigger
        acting = request.character.acting
        if request.schema is not None and acting is not None \
                and trigger.kind in acting.scripted:
            yield StageChange(dict(acting.scripted[trigger.kind]))
        if trigger.kind == SUMMARY:
            # A memory summary (llm_agents.memory): deterministic, from the job.
            text = scripted_summary(trigger.detail["job"], int(trigger.detail["limit"]))
        else:
            text = scripted_reply(request.character, trigger, request.turn)
        words = text.split(" ")
        for i, word in enumerate(words[: request.max_tokens]):
            if self.word_delay:
                await asyncio.sleep(self.word_delay)
            yield word if i == 0 else " " + word
        prompt = sum(len(m["content"]) for m in request.messages) // CHARS_PER_TOKEN
        yield Usage(prompt, min(len(words), request.max_tokens), reported=False)

    async def close(self) -> None:
        return None
