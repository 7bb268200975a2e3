"""Acting on the stage in a real ``liveroom serve`` (docs/AGENTS.md, "Acting
on the stage"): a gift makes the scripted Quinn excited and clapping in her
``stage.quinn`` section (seen by a client in both codecs and at
``GET /v1/rooms/{room}/state/stage.quinn``); a character whose stage part is
bad still replies, its stage is unchanged and the refusal is counted; a
character with a ``[world]`` writes its lossy ``positions.<name>`` at its
configured rate while a viewer is in the room, and stops when the room
empties. The same with a real model server is in
test_agent_stage_llama.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llm_agents.character import SHIPPED_DIR, load_characters
from tests.support import LiveServer, metric, next_reply, until

JESTER = '''
name = "jester"
display_name = "Jester"
persona = "You are a jester."
cooldown_s = 0
[reacts]
mentions = true
gifts = true
[stage]
mood = "calm"
[acting.fields]
mood = ["calm", "silly"]
# The scripted backend plays a model that answers a value not in the list.
[acting.scripted]
gift = { mood = "furious" }
mention = { mood = "silly", hat = "tall" }
[scripted]
gift = ["Thank you {user}, a jester bows."]
mention = ["Hello {user}!"]
'''

WALKER = '''
name = "walker"
display_name = "Walker"
persona = "You walk."
[reacts]
mentions = false
[stage]
position = "left"
[world]
hz = {hz}
idle_s = 0
speed = 0.3
'''

HZ = 10


@pytest.fixture(scope="module")
def stage_server(tmp_path_factory: pytest.TempPathFactory):
    chars = tmp_path_factory.mktemp("chars")
    (chars / "jester.toml").write_text(JESTER)
    with LiveServer(tmp_path_factory.mktemp("stage"), "--agent-backend", "scripted",
                    "--characters", str(chars), "--agent-characters", "quinn,jester",
                    "--agent-word-delay", "0", "--agent-cooldown", "0.1",
                    "--online-interval", "0.2") as srv:
        yield srv


async def stage_value(c: Any, name: str, want: dict[str, Any],
                      timeout: float = 10.0) -> dict[str, Any]:
    """The first ``stage.<name>`` state frame ``c`` sees that has ``want``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await c.expect("state", timeout=max(0.01, deadline - loop.time()),
                               section=f"stage.{name}")
        value = frame["value"]
        if all(value.get(k) == v for k, v in want.items()):
            return value


async def gift_changes_quinn_stage(viewer: Any, backend: str, count: int,
                                   reply_timeout: float) -> dict[str, Any]:
    """A gift to Quinn in ``demo`` (joined by ``viewer``) from a model
    ``backend``: her reply is clean text (the stage part is not in it), and her
    ``stage.quinn`` gains an emote with every acting field in its allowed
    values. The stage value, for the caller's further checks."""
    joined = await viewer.join("demo")
    start = {s["section"]: s["value"] for s in joined["sections"]}["stage.quinn"]
    assert "emote" not in start  # the TOML sets none: any stage part changes it
    await viewer.action("demo", "gift", {"gift": "rose", "count": count})
    _, say = await next_reply(viewer, "quinn", timeout=reply_timeout)
    body = say["body"]
    assert body["backend"] == backend and "error" not in body, body
    assert body["text"].strip() and '"stage"' not in body["text"], body
    value = await stage_value(viewer, "quinn", {}, timeout=10)
    while "emote" not in value:
        value = await stage_value(viewer, "quinn", {}, timeout=10)
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    assert quinn.acting is not None
    assert set(quinn.acting.fields) >= {"emote", "mood", "position"}
    for name, allowed in quinn.acting.fields.items():
        assert value[name] in allowed, (name, value)
    # The runtime's own fields are kept beside the model's.
    assert value["name"] == "Quinn (quiz master)"
    return value


async def http_section(http: aiohttp.ClientSession, srv: LiveServer, room: str,
                       section: str) -> Any:
    async with http.get(f"{srv.url}/v1/rooms/{room}/state/{section}",
                        headers={"Cache-Control": "no-cache"}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["value"]


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_gift_changes_quinns_stage(stage_server: LiveServer, connect, http,
                                         codec: str) -> None:
    viewer = await connect(stage_server, f"gift-{codec}", codec=codec)
    await viewer.join("demo")
    # A question first: thoughtful, whatever an earlier test left.
    await viewer.action("demo", "comment", {"text": "quinn, how many moons has Mars?"})
    await next_reply(viewer, "quinn")
    await stage_value(viewer, "quinn", {"mood": "thoughtful", "emote": "none"})
    before = await metric(http, stage_server.url, "liveroom_agent_stage_changes_total",
                          agent="quinn", outcome="applied")
    await viewer.action("demo", "gift", {"gift": "rose", "count": 1})
    _, say = await next_reply(viewer, "quinn")
    assert "rose" in say["body"]["text"]
    value = await stage_value(viewer, "quinn", {"mood": "excited", "emote": "clap"})
    # The runtime's own fields are kept.
    assert value["name"] == "Quinn (quiz master)" and value["position"] == "left"
    got = await until(lambda: http_section(http, stage_server, "demo", "stage.quinn"), 5,
                      "stage.quinn over HTTP")
    assert got["mood"] == "excited" and got["emote"] == "clap"
    assert await metric(http, stage_server.url, "liveroom_agent_stage_changes_total",
                        agent="quinn", outcome="applied") == before + 1


async def test_bad_stage_is_refused_and_the_reply_still_goes(stage_server: LiveServer,
                                                             connect, http) -> None:
    viewer = await connect(stage_server, "bad-stage")
    await viewer.join("demo")
    url = stage_server.url
    bad_value = await metric(http, url, "liveroom_agent_stage_changes_total",
                             agent="jester", outcome="bad_value")
    unknown = await metric(http, url, "liveroom_agent_stage_changes_total",
                           agent="jester", outcome="unknown_field")
    await viewer.action("demo", "gift", {"gift": "pie", "count": 1})
    _, say = await next_reply(viewer, "jester")
    assert say["body"]["text"] == "Thank you Bad-stage, a jester bows." or \
        say["body"]["text"].startswith("Thank you")
    assert "error" not in say["body"]
    await until(lambda: metric(http, url, "liveroom_agent_stage_changes_total",
                               agent="jester", outcome="bad_value"), 5, "the refusal counted")
    # A field the character does not declare: refused whole, not in part.
    await viewer.action("demo", "comment", {"text": "@jester hi"})
    _, say = await next_reply(viewer, "jester")
    assert say["body"]["text"].startswith("Hello")
    await until(lambda: metric(http, url, "liveroom_agent_stage_changes_total",
                               agent="jester", outcome="unknown_field"), 5,
                "the second refusal counted")
    assert await metric(http, url, "liveroom_agent_stage_changes_total",
                        agent="jester", outcome="bad_value") == bad_value + 1
    assert await metric(http, url, "liveroom_agent_stage_changes_total",
                        agent="jester", outcome="unknown_field") == unknown + 1
    value = await http_section(http, stage_server, "demo", "stage.jester")
    assert value["mood"] == "calm" and "hat" not in value


# -- the world ------------------------------------------------------------------------
async def partial(http: aiohttp.ClientSession, srv: LiveServer, room: str,
                  section: str) -> int:
    async with http.get(f"{srv.url}/v1/rooms/{room}/state/{section}",
                        headers={"Cache-Control": "no-cache"}) as r:
        if r.status == 404:
            return 0
        return int((await r.json())["partial"])


async def test_world_writes_positions_at_its_rate_and_stops_when_empty(
        tmp_path: Path, make_server, connect, http) -> None:
    chars = tmp_path / "chars"
    chars.mkdir()
    (chars / "walker.toml").write_text(WALKER.replace("{hz}", str(HZ)))
    srv: LiveServer = make_server("--agent-backend", "scripted", "--characters", str(chars),
                                  "--agent-characters", "walker", "--agent-room", "yard",
                                  "--online-interval", "0.2")
    viewer = await connect(srv, "watcher", codec="json")
    joined = await viewer.join("yard")
    assert "positions.walker" not in joined.get("versions", {}), \
        "nobody watched before: nothing was written"
    # The positions come to the viewer as ordinary state frames on a WebSocket.
    first = await viewer.expect("state", timeout=5, section="positions.walker")
    assert set(first["value"]) == {"x", "y", "state", "facing"}
    t0, p0 = time.monotonic(), first["partial"]
    frames = [first]
    while time.monotonic() - t0 < 2.0:
        frames.append(await viewer.expect("state", timeout=2, section="positions.walker"))
    elapsed = time.monotonic() - t0
    writes = frames[-1]["partial"] - p0
    # Never faster than configured (one write of slack for the window's edges),
    # and not much slower either (it walks all the time: idle_s = 0).
    assert writes <= HZ * elapsed + 1, (writes, elapsed)
    assert writes >= HZ * elapsed * 0.5, (writes, elapsed)
    xs = [f["value"]["x"] for f in frames]
    assert len(set(xs)) > 5 and all(0.0 <= x <= 1.0 for x in xs)
    await viewer.close()

    # The room empties: the tick stops (within the online count's interval).
    async def settled() -> bool:
        a = await partial(http, srv, "yard", "positions.walker")
        await asyncio.sleep(0.5)  # a window to see a write in, bounded
        return a == await partial(http, srv, "yard", "positions.walker")
    await until(settled, 10, "the world tick stopped")
    stopped = await partial(http, srv, "yard", "positions.walker")
    assert stopped > p0
    await asyncio.sleep(1.0)  # the tick would have written ~10 times in this
    assert await partial(http, srv, "yard", "positions.walker") == stopped

    # Someone comes back: it walks again.
    back = await connect(srv, "back")
    await back.join("yard")
    again = await back.expect("state", timeout=5, section="positions.walker")
    assert again["partial"] > stopped
