"""The ``openai`` backend against a real OpenAI-compatible server running a
real model on loopback (``llama_cpp.server`` with SmolLM2-135M-Instruct),
through the official ``openai`` client: a character answers a comment, the
tokens stream as ``agent.delta``, the usage is charged to the quota; the
model server killed mid-reply ends the reply with a marked error while the
room keeps flowing, the breaker opens, and it recovers once the server is
back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llm_agents.backends.base import ReplyRequest, Usage
from llm_agents.backends.openai_backend import OpenAIBackend
from llm_agents.character import SHIPPED_DIR, load_characters
from llm_agents.policy import MENTION, Trigger
from tests.llm_server import MODEL_ALIAS, LlamaServer
from tests.support import LiveServer, next_reply

# A real model on 2 CPU threads: a reply's wait is bounded far above its time.
REPLY_TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(240)


async def test_backend_streams_text_then_one_usage(llama: LlamaServer) -> None:
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    backend = OpenAIBackend(llama.base_url, MODEL_ALIAS, timeout=60, idle_timeout=30)
    try:
        req = ReplyRequest(quinn, Trigger(MENTION, 0.0, "bob", "Bob", "hi"),
                           [{"role": "user", "content": "Say hello in five words."}], 16)
        items = [item async for item in backend.stream(req)]
    finally:
        await backend.close()
    texts = [i for i in items if isinstance(i, str)]
    assert texts and all(texts)  # empty/null/absent first-chunk content gives no ""
    assert isinstance(items[-1], Usage) and sum(isinstance(i, Usage) for i in items) == 1
    # llama_cpp.server sends no usage in streams: estimated, and marked so.
    assert items[-1].completion_tokens > 0
    assert backend.breaker.state == "closed"


async def test_character_answers_through_the_model_and_usage_is_charged(
        llama: LlamaServer, make_server, connect, http) -> None:
    srv: LiveServer = make_server(
        "--agent-backend", "openai", "--openai-base-url", llama.base_url,
        "--openai-model", MODEL_ALIAS, "--agent-characters", "quinn",
        "--agent-cooldown", "0.2", "--openai-idle-timeout", "30", "--agent-stale-after", "120")
    viewer = await connect(srv, "olive")
    await viewer.join("demo")
    await viewer.action("demo", "comment", {"text": "quinn, what colour is the sky?"})
    mine = await viewer.expect("action", kind="comment")
    deltas, say = await next_reply(viewer, "quinn", timeout=REPLY_TIMEOUT)
    body = say["body"]
    assert body["backend"] == "openai" and "error" not in body, body
    assert body["reply_to"] == {"kind": "comment", "seq": mine["seq"], "user": "olive"}
    assert body["text"].strip()
    # The say has the whole text; the deltas streamed its beginning.
    assert deltas and body["text"].startswith("".join(d["body"]["text"] for d in deltas))
    assert {d["body"]["reply_id"] for d in deltas} == {body["reply_id"]}
    usage = body["usage"]
    assert usage["completion_tokens"] > 0
    async with http.get(f"{srv.url}/v1/rooms/demo/agents",
                        headers={"Authorization": f"Bearer {srv.token('olive')}"}) as r:
        listing = await r.json()
    total = usage["prompt_tokens"] + usage["completion_tokens"]
    assert listing["quota"]["user_used"] == total
    assert listing["quota"]["room_used"] >= total
    assert listing["agents"][0]["breaker"] == "closed"


TELLER = '''
name = "teller"
display_name = "Teller"
persona = "You are a storyteller. Whatever you are asked, tell a very long story."
max_reply_tokens = 200
max_reply_chars = 4000
cooldown_s = 0
[reacts]
mentions = true
'''


async def breaker_state(http, srv: LiveServer) -> str:
    async with http.get(f"{srv.url}/v1/rooms/demo/agents",
                        headers={"Authorization": f"Bearer {srv.token('kim')}"}) as r:
        return str((await r.json())["agents"][0]["breaker"])


async def test_model_server_killed_mid_reply(tmp_path: Path, make_server, connect,
                                             http) -> None:
    chars = tmp_path / "chars"
    chars.mkdir()
    (chars / "teller.toml").write_text(TELLER)
    llama = LlamaServer().start()
    try:
        srv: LiveServer = make_server(
            "--agent-backend", "openai", "--openai-base-url", llama.base_url,
            "--openai-model", MODEL_ALIAS, "--characters", str(chars),
            "--agent-characters", "teller", "--openai-retries", "0",
            "--breaker-threshold", "2", "--breaker-reset", "2",
            "--openai-idle-timeout", "20", "--agent-stale-after", "120")
        viewer = await connect(srv, "kim")
        await viewer.join("demo")

        # 1. Killed mid-reply: the reply ends, marked, with what had streamed.
        await viewer.action("demo", "comment", {"text": "teller, tell me a story"})
        first = await viewer.expect("action", timeout=60.0, kind="agent.delta")
        llama.kill()
        deltas, say = await next_reply(viewer, "teller", timeout=REPLY_TIMEOUT)
        body = say["body"]
        assert body["error"] == "model_unavailable", body
        assert body["reply_id"] == first["body"]["reply_id"]
        streamed = first["body"]["text"] + "".join(d["body"]["text"] for d in deltas)
        assert streamed and body["text"].startswith(streamed)

        # 2. The room keeps flowing.
        await viewer.action("demo", "comment", {"text": "still here"})
        echo = await viewer.expect("action", timeout=5.0, kind="comment")
        assert echo["body"]["text"] == "still here"

        # 3. A second failure (connection refused) opens the breaker...
        await viewer.action("demo", "comment", {"text": "teller, again?"})
        _, say = await next_reply(viewer, "teller", timeout=REPLY_TIMEOUT)
        assert say["body"]["error"] == "model_unavailable"
        assert await breaker_state(http, srv) == "open"
        # ... and while it is open the character fails at once, quietly.
        await viewer.action("demo", "comment", {"text": "teller, are you there?"})
        _, say = await next_reply(viewer, "teller", timeout=5.0)
        assert "circuit breaker is open" in say["body"]["error_message"]

        # 4. The server comes back: after the reset time a probe succeeds.
        llama.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while True:
            assert loop.time() < deadline, "the breaker never closed again"
            await viewer.action("demo", "comment", {"text": "teller, back?"})
            _, say = await next_reply(viewer, "teller", timeout=90.0)
            if "error" not in say["body"]:
                break
            await asyncio.sleep(0.5)  # pacing the probes, bounded by the deadline
        assert say["body"]["text"].strip()
        assert await breaker_state(http, srv) == "closed"
    finally:
        llama.stop()
