"""The model gateway on a real ``liveroom serve`` with the scripted backend
at a fixed pace: a call that waits past the queue-time limit is refused
(``model_busy``, ``queue_timeout``), one more than the queue holds is refused
at once (``queue_full``), and under contention a mention in the room goes
before a direct interaction that queued earlier (gift > mention >
interaction > ambient)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.integration.test_agents_interactions import read_sse
from tests.support import JWT_SECRET, LiveServer, metric, next_reply, token, until

pytestmark = pytest.mark.timeout(120)

# Ten words at --agent-word-delay 0.3: a reply holds its slot for about 3 s.
SLOW = '''
name = "slow"
display_name = "Slow"
persona = "You are slow."
cooldown_s = 0
max_reply_tokens = 48
[reacts]
mentions = true
questions = false
gifts = true
[scripted]
mention = ["one two three four five six seven eight nine ten"]
gift = ["thanks one two three four five six seven eight nine"]
interaction = ["alpha beta gamma delta epsilon zeta eta theta iota kappa"]
'''


def slow_server(make_server: Any, tmp_path: Path, *flags: str) -> LiveServer:
    chars = tmp_path / "chars"
    chars.mkdir(exist_ok=True)
    (chars / "slow.toml").write_text(SLOW)
    srv: LiveServer = make_server(
        "--agent-backend", "scripted", "--characters", str(chars), "--agent-characters", "slow",
        "--agent-word-delay", "0.3", "--agent-stale-after", "60", "--model-concurrency", "1",
        *flags)
    return srv


def auth(srv: LiveServer, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.token(user)}"}


async def interact(http: aiohttp.ClientSession, srv: LiveServer, user: str,
                   text: str = "hello") -> str:
    async with http.post(f"{srv.url}/v1/rooms/demo/agents/slow/interactions",
                         json={"text": text}, headers=auth(srv, user)) as r:
        assert r.status == 202, await r.text()
        return str((await r.json())["id"])


async def done_of(http: aiohttp.ClientSession, srv: LiveServer, user: str,
                  iid: str) -> dict[str, Any]:
    async with http.get(f"{srv.url}/v1/interactions/{iid}/events", headers=auth(srv, user),
                        timeout=aiohttp.ClientTimeout(total=30)) as r:
        events = await read_sse(r)
    assert events[-1][1] == "done"
    done: dict[str, Any] = events[-1][2]
    return done


async def gauge(srv: LiveServer, name: str) -> float:
    async with aiohttp.ClientSession() as s:
        return await metric(s, srv.url, name, model="scripted")


async def status(http: aiohttp.ClientSession, srv: LiveServer, user: str, iid: str) -> str:
    async with http.get(f"{srv.url}/v1/interactions/{iid}", headers=auth(srv, user)) as r:
        return str((await r.json())["status"])


async def test_queue_time_limit_refuses(make_server, tmp_path: Path, http) -> None:
    srv = slow_server(make_server, tmp_path, "--model-queue-wait", "0.5", "--model-queue", "1")
    first = await interact(http, srv, "ann")
    await until(lambda: gauge(srv, "liveroom_model_in_flight"), 5, "the first call runs")
    waiting = await interact(http, srv, "bob")
    await until(lambda: gauge(srv, "liveroom_model_waiting"), 5, "the second call waits")
    full = await interact(http, srv, "cy")  # one waits already: the queue holds one
    refused_full = await done_of(http, srv, "cy", full)
    assert refused_full["status"] == "failed" and refused_full["error"] == "model_busy"
    refused = await done_of(http, srv, "bob", waiting)
    assert refused["status"] == "failed" and refused["error"] == "model_busy", refused
    assert refused["text"] == ""
    # The call that held the slot is not affected.
    ok = await done_of(http, srv, "ann", first)
    assert ok["status"] == "done" and ok["text"].startswith("alpha")
    async with aiohttp.ClientSession() as s:
        assert await metric(s, srv.url, "liveroom_model_refused_total", model="scripted",
                            reason="queue_timeout") == 1
        assert await metric(s, srv.url, "liveroom_model_refused_total", model="scripted",
                            reason="queue_full") == 1
    # Later, with the slot free, a call goes through.
    again = await interact(http, srv, "bob")
    assert (await done_of(http, srv, "bob", again))["status"] == "done"


async def test_mention_goes_before_an_earlier_interaction(make_server, tmp_path: Path,
                                                          connect, http) -> None:
    srv = slow_server(make_server, tmp_path, "--model-queue-wait", "30")
    viewer = await connect(srv, "vic")
    await viewer.join("demo")
    holder = await interact(http, srv, "ann")  # holds the one slot for ~3 s
    await until(lambda: gauge(srv, "liveroom_model_in_flight"), 5, "the holder runs")
    earlier = await interact(http, srv, "bob")  # waits: priority 1
    await until(lambda: gauge(srv, "liveroom_model_waiting"), 5, "the interaction waits")
    await viewer.action("demo", "comment", {"text": "slow, are you there"})  # priority 2
    _, say = await next_reply(viewer, "slow", timeout=20)
    assert "error" not in say["body"], say["body"]
    assert say["body"]["text"].startswith("one two")
    # The mention was answered while the earlier interaction still waited or ran.
    assert await status(http, srv, "bob", earlier) == "running"
    assert (await done_of(http, srv, "ann", holder))["status"] == "done"
    assert (await done_of(http, srv, "bob", earlier))["status"] == "done"


TIERS = '''
default = "free"
[tiers.free]
requests_per_day = 2
[tiers.pro]
requests_per_day = 100
tokens_per_month = 1000000
'''


def tier_token(user: str, tier: object) -> str:
    return str(jwt.encode({"sub": user, "name": user, "role": "viewer",
                           "exp": int(time.time()) + 600, "tier": tier}, JWT_SECRET,
                          algorithm="HS256"))


async def test_quota_tiers_from_the_token_claim(make_server, tmp_path: Path, http) -> None:
    (tmp_path / "tiers.toml").write_text(TIERS)
    srv = slow_server(make_server, tmp_path, "--quota-tiers", str(tmp_path / "tiers.toml"),
                      "--model-concurrency", "8")
    url = f"{srv.url}/v1/rooms/demo/agents/slow/interactions"

    async def post(tok: str) -> tuple[int, dict[str, Any]]:
        async with http.post(url, json={"text": "hi"},
                             headers={"Authorization": f"Bearer {tok}"}) as r:
            return r.status, await r.json()

    free, pro, nameless = tier_token("fay", "free"), tier_token("pat", "pro"), token("nia")
    for tok in (free, free, pro, pro, pro, nameless, nameless):
        assert (await post(tok))[0] == 202
    code, body = await post(free)
    assert code == 429 and body["code"] == "quota_exceeded", body
    assert body["tier"] == "free" and body["unit"] == "requests" and body["period"] == "day"
    # No claim: the default tier (free), two a day.
    code, body = await post(nameless)
    assert code == 429 and body["tier"] == "free"
    assert (await post(pro))[0] == 202
    # A claim that is not a tier name is refused like any bad token.
    for bad in ("Gold!", "x" * 33, 7):
        code, body = await post(tier_token("eve", bad))
        assert code == 401 and body["code"] == "unauthorized", body
