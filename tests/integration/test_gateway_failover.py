"""Failover across two real OpenAI-compatible model servers
(``tests/llm_server.py``: ``llama_cpp.server`` with SmolLM2 on loopback):
with one of them killed, a character still answers without an error, the
call that found the dead server moved to the live one, and the health
probe marks the dead one down (then up again when it is back)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.llm_server import MODEL_ALIAS, LlamaServer
from tests.support import LiveServer, metric, next_reply, until

pytestmark = pytest.mark.timeout(300)
REPLY_TIMEOUT = 90.0


async def up(srv: LiveServer, server: LlamaServer) -> float:
    async with aiohttp.ClientSession() as s:
        return await metric(s, srv.url, "liveroom_model_server_up", model=MODEL_ALIAS,
                            server=server.base_url)


async def test_failover_when_one_of_two_model_servers_dies(make_server, connect) -> None:
    a, b = LlamaServer(), LlamaServer()
    a.start()
    b.start()
    try:
        srv: LiveServer = make_server(
            "--agent-backend", "openai", "--openai-base-url", f"{a.base_url},{b.base_url}",
            "--openai-model", MODEL_ALIAS, "--agent-characters", "quinn",
            "--agent-cooldown", "0", "--openai-idle-timeout", "30", "--agent-stale-after",
            "120", "--model-health-interval", "2")
        viewer = await connect(srv, "olive")
        await viewer.join("demo")
        # Both up: the first call goes to the first server (the least loaded).
        await viewer.action("demo", "comment", {"text": "quinn, say hi"})
        _, say = await next_reply(viewer, "quinn", timeout=REPLY_TIMEOUT)
        assert "error" not in say["body"], say["body"]

        # The first server dies. The next call either finds it dead (connection
        # refused, before any text) and moves to the second, or the probe has
        # marked it down already: either way the viewer gets a whole reply.
        a.kill()
        for question in ("quinn, what is two plus two?", "quinn, name a colour"):
            await viewer.action("demo", "comment", {"text": question})
            _, say = await next_reply(viewer, "quinn", timeout=REPLY_TIMEOUT)
            assert "error" not in say["body"], say["body"]
            assert say["body"]["text"].strip()
        await until(lambda: _is(up(srv, a), 0.0), 10, "the dead server is marked down")
        assert await up(srv, b) == 1.0

        # Back: the probe marks it up again.
        a.start()
        await until(lambda: _is(up(srv, a), 1.0), 15, "the server is marked up again")
    finally:
        a.stop()
        b.stop()


async def _is(value: object, want: float) -> bool:
    return await value == want  # type: ignore[misc]
