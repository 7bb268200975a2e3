"""The embedded backend: SmolLM2 through llama-cpp-python on a worker thread.
The event loop keeps ticking while the model generates (it never runs on the
loop), and ``liveroom serve --agent-backend embedded`` seats a character that
answers with the real model."""

from __future__ import annotations

import asyncio

import pytest

from edge.client import LiveroomClient
from llm_agents.backends.base import ReplyRequest, Usage
from llm_agents.backends.embedded import EmbeddedBackend, embedded_unavailable, find_smollm2
from llm_agents.character import SHIPPED_DIR, load_characters
from llm_agents.policy import MENTION, Trigger
from tests.support import LiveServer

pytestmark = pytest.mark.timeout(240)


def require_embedded() -> None:
    why = embedded_unavailable()
    if why is not None:
        pytest.fail(f"the embedded model is not installed: {why}", pytrace=False)


async def test_generation_runs_off_the_event_loop() -> None:
    require_embedded()
    path = find_smollm2()
    assert path is not None
    backend = EmbeddedBackend(path, threads=1)
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        req = ReplyRequest(quinn, Trigger(MENTION, 0.0, "bob", "Bob", "hi"),
                           [{"role": "user", "content": "Say hello."}], 12)
        items = [i async for i in backend.stream(req)]
    finally:
        stop.set()
        await tick
        await backend.close()
    assert any(isinstance(i, str) and i for i in items)
    assert isinstance(items[-1], Usage) and items[-1].completion_tokens > 0
    # The model's seconds of work never stopped the loop: its ticks kept
    # coming (the bound is loose for a busy 2-core machine, not 0.01 s).
    assert len(gaps) > 10 and max(gaps) < 1.0, max(gaps)


async def test_serve_with_the_embedded_model(make_server, connect) -> None:
    require_embedded()
    srv: LiveServer = make_server("--agent-backend", "embedded", "--agent-characters", "quinn",
                                  "--agent-cooldown", "0.2", "--agent-stale-after", "120")
    viewer: LiveroomClient = await connect(srv, "nina")
    await viewer.join("demo")
    await viewer.action("demo", "comment", {"text": "quinn, ready?"})
    while True:
        frame = await viewer.expect("action", timeout=120.0, kind="agent.say")
        if frame["from"]["id"] == "quinn":
            break
    body = frame["body"]
    assert body["backend"] == "embedded" and "error" not in body, body
    assert body["text"].strip()
