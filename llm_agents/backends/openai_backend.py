"""Any OpenAI-compatible streaming chat-completions server (vLLM in
production), through the official ``openai`` client.

Usage comes from the stream itself: with ``stream_options.include_usage``
vLLM (and llama.cpp's ``llama-server``) send it in a last chunk whose
``choices`` is empty; servers that send none (``llama_cpp.server``) get an
estimate, marked ``reported=False``. Servers differ in their first chunk
(``content`` is ``""``, ``null`` or absent): all three mean "no text yet".

Structured replies (a character that acts on the stage): the request's JSON
schema goes as ``response_format`` ``{"type": "json_schema", ...}`` (the
OpenAI API's, which vLLM and llama.cpp's ``llama-server`` take); a server
that refuses that form (a 400 or 422; llama-cpp-python's ``llama_cpp.server``
knows only ``{"type": "json_object", "schema": ...}`` and answers a 500
naming ``response_format``)
is asked again at once in that form, and this backend keeps to it. The
reply's ``say`` streams as text (``llm_agents.acting.ReplyJson``); its
``stage`` comes out once at the end as a ``StageChange``.

Failures: a connect error, a server error, or no chunk for ``idle_timeout``
seconds before the first text is retried ``retries`` times with exponential
backoff (nothing reached the room yet); after text has streamed it is not
retried (the room has seen half a reply: it ends marked as an error). Every
failed call counts against the circuit breaker; while it is open calls fail
at once with ``model_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import openai
from openai import AsyncOpenAI

from llm_agents.acting import ReplyJson
from llm_agents.backends.base import Chunk, ReplyRequest, Usage
from llm_agents.prompt import CHARS_PER_TOKEN
from plumbing.breaker import CircuitBreaker
from wire.errors import ModelUnavailable

log = logging.getLogger("liveroom.agents.openai")


def parse_chunk(chunk: Mapping[str, Any]) -> tuple[str, Usage | None]:
    """(text, usage) of one ``chat.completion.chunk`` as a plain dict. The
    text is "" when the chunk has none (role-only first chunk, ``content``
    null or absent, the usage-only last chunk with ``choices: []``)."""
    text = ""
    choices = chunk.get("choices") or []
    if choices:
        delta = choices[0].get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str):
            text = content
    usage = None
    u = chunk.get("usage")
    if isinstance(u, Mapping) and u.get("completion_tokens") is not None:
        usage = Usage(int(u.get("prompt_tokens") or 0), int(u["completion_tokens"]))
    return text, usage


_RETRYABLE = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError,
              openai.RateLimitError, asyncio.TimeoutError)


def _refused_format(exc: Exception) -> bool:
    """Whether the server refused the request's ``json_schema`` form: a 400
    or 422, or any error naming ``response_format`` (llama_cpp.server
    answers its validation error with a 500)."""
    return isinstance(exc, openai.APIStatusError) and (
        exc.status_code in (400, 422) or "response_format" in str(exc))


class OpenAIBackend:
    label = "openai"

    def __init__(self, base_url: str, model: str, *, api_key: str = "not-needed",
                 timeout: float = 30.0, idle_timeout: float = 10.0, retries: int = 2,
                 backoff: float = 0.5, breaker: CircuitBreaker | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # The client's own retries are off: ours know whether text has
        # already reached the room.
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout,
                                   max_retries=0)
        self.model = model
        self.idle_timeout = idle_timeout
        self.retries = retries
        self.backoff = backoff
        self.breaker = breaker or CircuitBreaker()
        self._clock = clock
        # How a JSON schema is asked for: "json_schema" (the OpenAI API's)
        # until a server refuses it, then "json_object" with a "schema".
        self.schema_style = "json_schema"

    def _response_format(self, schema: Any) -> dict[str, Any]:
        if self.schema_style == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": "reply", "schema": schema, "strict": True}}
        return {"type": "json_object", "schema": schema}

    async def stream(self, request: ReplyRequest) -> AsyncIterator[Chunk]:
        if not self.breaker.allow(self._clock()):
            raise ModelUnavailable("the model backend's circuit breaker is open",
                                   retry_after=round(self.breaker.retry_after(self._clock()), 3))
        attempt = 0
        while True:
            produced = False
            try:
                async for item in self._once(request):
                    if isinstance(item, str):
                        produced = True
                    yield item
                self.breaker.success(self._clock())
                return
            except Exception as exc:
                # Anything: the client's errors, and the transport's own
                # (a stream cut mid-body surfaces as the HTTP library's error).
                if not produced and request.schema is not None \
                        and self.schema_style == "json_schema" and _refused_format(exc):
                    log.info("the model server refused a json_schema response_format: "
                             "asking with json_object and a schema from now on")
                    self.schema_style = "json_object"
                    continue
                retry = not produced and attempt < self.retries and isinstance(exc, _RETRYABLE)
                log.warning("model call failed (%s: %s)%s", type(exc).__name__, exc,
                            "; retrying" if retry else "")
                if not retry:
                    self.breaker.failure(self._clock())
                    raise ModelUnavailable(f"the model server failed: {type(exc).__name__}") \
                        from None
                await asyncio.sleep(self.backoff * 2 ** attempt)
                attempt += 1

    async def _once(self, request: ReplyRequest) -> AsyncIterator[Chunk]:
        structured = ReplyJson() if request.schema is not None else None
        extra: dict[str, Any] = {}
        if request.schema is not None:
            extra["response_format"] = self._response_format(request.schema)
        stream = await asyncio.wait_for(self._client.chat.completions.create(
            model=self.model or request.character.model or "default",
            messages=cast(Any, request.messages),
            max_tokens=request.max_tokens, stream=True,
            stream_options={"include_usage": True}, **extra), self.idle_timeout)
        usage: Usage | None = None
        chars = 0
        pieces = 0
        try:
            it = stream.__aiter__()
            while True:
                try:
                    chunk = await asyncio.wait_for(it.__anext__(), self.idle_timeout)
                except StopAsyncIteration:
                    break
                text, u = parse_chunk(chunk.model_dump())
                if u is not None:
                    usage = u
                if structured is not None:
                    pieces += 1 if text else 0
                    text = structured.feed(text)
                    if text:
                        chars += len(text)
                        yield text
                    continue
                if text:
                    chars += len(text)
                    pieces += 1
                    yield text
        finally:
            await stream.close()
        if structured is not None:
            yield structured.stage()
        if usage is None:
            prompt = sum(len(m["content"]) for m in request.messages) // CHARS_PER_TOKEN
            usage = Usage(prompt, max(pieces, chars // CHARS_PER_TOKEN), reported=False)
        yield usage

    async def probe(self) -> bool:
        """Whether the server answers ``GET /models`` (the gateway's health
        check; ``llm_agents.gateway``)."""
        try:
            await self._client.models.list(timeout=min(2.0, self.idle_timeout))
            return True
        except Exception:
            return False

    async def close(self) -> None:
        await self._client.close()
