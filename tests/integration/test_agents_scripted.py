"""A scripted character in a real ``liveroom serve``: it sits in the demo room
as a member with role ``agent`` (counted online), answers a mention with
``agent.delta`` chunks and a final ``agent.say`` that points at the comment,
thanks a gift, and keeps its own stage section with compare-and-set."""

from __future__ import annotations

import pytest

from tests.support import LiveServer, metric, next_reply


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory):
    # Words at the default pace (0.04 s): a reply takes longer than the 0.2 s
    # between deltas, so it streams (a reply quicker than that is one say).
    with LiveServer(tmp_path_factory.mktemp("agents"), "--agent-backend", "scripted",
                    "--agent-characters", "quinn,max", "--agent-word-delay", "0.04",
                    "--agent-cooldown", "0.2",
                    "--online-interval", "0.2") as srv:
        yield srv


async def test_agent_is_a_member_counted_online(agent_server: LiveServer, connect) -> None:
    viewer = await connect(agent_server, "olga")
    joined = await viewer.join("demo")
    # Two agents and this viewer.
    assert joined["members"] == 3
    assert joined["state_mode"] == "push"
    stage = {s["section"]: s["value"] for s in joined["sections"]}
    assert stage["stage.quinn"]["speaking"] is False
    assert stage["stage.quinn"]["mood"] == "cheerful"
    assert stage["stage.max"]["position"] == "right"


async def test_mention_streams_deltas_then_say_with_reply_to(agent_server: LiveServer,
                                                             connect) -> None:
    viewer = await connect(agent_server, "pavel", codec="json")
    await viewer.join("demo")
    await viewer.action("demo", "comment", {"text": "hello @quinn"})
    mine = await viewer.expect("action", kind="comment")
    deltas, say = await next_reply(viewer, "quinn")
    assert say["from"] == {"id": "quinn", "name": "Quinn (quiz master)", "role": "agent"}
    body = say["body"]
    assert body["reply_to"] == {"kind": "comment", "seq": mine["seq"], "user": "pavel"}
    assert body["backend"] == "scripted"
    assert "error" not in body
    assert body["text"].startswith("Hi Pavel") or "pavel" in body["text"].lower()
    assert deltas, "the reply streamed as agent.delta actions"
    assert all(d["body"]["reply_id"] == body["reply_id"] for d in deltas)
    assert [d["body"]["i"] for d in deltas] == list(range(len(deltas)))
    # The deltas stream the beginning; the say has the whole text (its last
    # chunk travels only there).
    streamed = "".join(d["body"]["text"] for d in deltas)
    assert body["text"].startswith(streamed)


async def test_replies_are_counted_in_metrics(agent_server: LiveServer, connect,
                                              http) -> None:
    viewer = await connect(agent_server, "mia")
    await viewer.join("demo")
    before = await metric(http, agent_server.url, "liveroom_agent_replies_total",
                          agent="quinn", outcome="ok")
    await viewer.action("demo", "comment", {"text": "quinn?"})
    await next_reply(viewer, "quinn")
    after = await metric(http, agent_server.url, "liveroom_agent_replies_total",
                         agent="quinn", outcome="ok")
    assert after == before + 1
    assert await metric(http, agent_server.url, "liveroom_agent_tokens_total",
                        agent="quinn", kind="completion") > 0


async def test_gift_is_thanked(agent_server: LiveServer, connect) -> None:
    viewer = await connect(agent_server, "gina")
    await viewer.join("demo")
    await viewer.action("demo", "gift", {"gift": "rose", "count": 2})
    gift = await viewer.expect("action", kind="gift")
    _, say = await next_reply(viewer, "quinn")
    assert say["body"]["reply_to"]["seq"] == gift["seq"]
    assert "rose" in say["body"]["text"]


async def test_stage_section_changes_while_speaking(agent_server: LiveServer, connect) -> None:
    viewer = await connect(agent_server, "sam")
    await viewer.join("demo")
    await viewer.action("demo", "comment", {"text": "max are you there"})
    speaking = []
    while True:
        frame = await viewer.expect("state", timeout=10.0, section="stage.max")
        speaking.append(frame["value"]["speaking"])
        if speaking[-1] is False and True in speaking:
            break
    assert speaking[-2:] == [True, False]


async def test_host_title_change_makes_co_host_comment(agent_server: LiveServer,
                                                       connect) -> None:
    host = await connect(agent_server, "hana", role="host")
    await host.join("demo")
    await host.set_state("demo", "meta", {"title": "Quiz night", "host": "hana"})
    _, say = await next_reply(host, "max", timeout=15.0)
    assert say["body"]["reply_to"]["section"] == "meta"


async def test_a_gift_preempts_a_reply_in_flight(tmp_path, connect) -> None:
    """A slow reply to a mention is cancelled when a gift (higher priority)
    comes in; the gift is then thanked."""
    with LiveServer(tmp_path / "slow", "--agent-backend", "scripted",
                    "--agent-characters", "quinn", "--agent-word-delay", "0.3",
                    "--agent-cooldown", "0") as srv:
        viewer = await connect(srv, "pia")
        await viewer.join("demo")
        await viewer.action("demo", "comment", {"text": "quinn, how are you?"})
        first = await viewer.expect("action", timeout=10.0, kind="agent.delta")
        await viewer.action("demo", "gift", {"gift": "star", "count": 1})
        gift = await viewer.expect("action", kind="gift")
        _, cut = await next_reply(viewer, "quinn")
        assert cut["body"]["reply_id"] == first["body"]["reply_id"]
        assert cut["body"]["cancelled"] == "preempted"
        _, thanks = await next_reply(viewer, "quinn")
        assert thanks["body"]["reply_to"]["seq"] == gift["seq"]
        assert "cancelled" not in thanks["body"] and "star" in thanks["body"]["text"]
