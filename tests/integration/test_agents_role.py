"""``liveroom agents`` as a process of its own: the characters connect to a
real edge over WebSocket, count in its online count, answer in the room, and
the process serves the interaction API on its own port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import JWT_SECRET, REPO, LiveServer

_LISTENING = re.compile(r"agents listening on http://[\d.]+:(\d+)")


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "edge", "--no-agents", "--online-interval", "0.2") as srv:
        yield srv


@pytest.fixture
def agents_port(edge: LiveServer, tmp_path: Path) -> Iterator[int]:
    cmd = [sys.executable, "-m", "liveroom.cli", "agents", "--edge-url", edge.ws_url,
           "--port", "0", "--data-dir", str(tmp_path / "agents"), "--agent-backend",
           "scripted", "--agent-characters", "quinn", "--agent-cooldown", "0.2",
           "--agent-word-delay", "0.01"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LIVEROOM_JWT_SECRET": JWT_SECRET,
                                 "PYTHONUNBUFFERED": "1"})
    port: list[int] = []
    ready = threading.Event()
    log: list[str] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            m = _LISTENING.search(line)
            if m:
                port.append(int(m.group(1)))
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not ready.wait(30):
            raise RuntimeError("liveroom agents did not start:\n" + "".join(log))
        yield port[0]
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0, "".join(log)


async def test_agents_process_joins_an_edge_and_answers(edge: LiveServer, agents_port: int,
                                                        connect, http) -> None:
    viewer = await connect(edge, "uma")
    joined = await viewer.join("demo")
    assert joined["members"] == 2  # the character is a member of the edge's room
    await viewer.action("demo", "comment", {"text": "hi quinn"})
    while True:
        frame = await viewer.expect("action", timeout=10.0, kind="agent.say")
        if frame["from"]["id"] == "quinn":
            break
    assert frame["from"]["role"] == "agent"
    assert frame["body"]["text"].startswith("Hi uma")
    headers = {"Authorization": f"Bearer {edge.token('uma')}"}
    async with http.post(f"http://127.0.0.1:{agents_port}/v1/rooms/demo/agents/quinn/"
                         "interactions", json={"text": "hello"}, headers=headers) as r:
        assert r.status == 202
        iid = (await r.json())["id"]
    async with http.get(f"http://127.0.0.1:{agents_port}/v1/interactions/{iid}/events",
                        headers=headers) as r:
        body = await r.text()
    assert "event: done" in body


@pytest.mark.parametrize(("method", "path", "body", "auth", "status", "code"), [
    ("post", "/v1/rooms/demo/agents/quinn/interactions", {"text": "hi"}, False, 401,
     "unauthorized"),
    ("post", "/v1/rooms/demo/agents/nobody/interactions", {"text": "hi"}, True, 404,
     "not_found"),
    ("post", "/v1/rooms/demo/agents/quinn/interactions", {"text": ""}, True, 400,
     "invalid_field"),
    ("get", "/v1/interactions/unknown", None, True, 404, "not_found"),
])
async def test_agents_process_answers_bad_requests_with_documented_errors(
        edge: LiveServer, agents_port: int, http, method: str, path: str, body: Any,
        auth: bool, status: int, code: str) -> None:
    headers = {"Authorization": f"Bearer {edge.token('uma')}"} if auth else {}
    async with http.request(method, f"http://127.0.0.1:{agents_port}{path}", json=body,
                            headers=headers) as r:
        assert r.status == status
        assert (await r.json())["code"] == code
