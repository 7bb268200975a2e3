"""State over real WebSockets and HTTP: push, join/sync diffs, compare-and-set."""

from __future__ import annotations

from edge.client import LiveroomClient
from tests.support import API_KEY, LiveServer

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def test_state_push_reaches_members_with_versions(server: LiveServer, connect) -> None:
    host = await connect(server, "st-host", "host")
    viewer = await connect(server, "st-viewer", codec="json")
    j = await host.join("st-1")
    assert j["total"] == 0 and j["sections"] == [] and j["versions"] == {}
    await viewer.join("st-1")
    await host.set_state("st-1", "meta", {"title": "One"})
    await host.set_state("st-1", "pinned", {"text": "pin"})
    await host.set_state("st-1", "meta", {"title": "Two"})
    pushes = [await viewer.expect("state") for _ in range(3)]
    assert [(p["section"], p["partial"], p["total"]) for p in pushes] == [
        ("meta", 1, 1), ("pinned", 1, 2), ("meta", 2, 3)]
    assert pushes[-1]["value"] == {"title": "Two"}


async def test_join_and_sync_send_only_outdated_sections(server: LiveServer, connect,
                                                         http) -> None:
    host = await connect(server, "sy-host", "host")
    await host.join("sy")
    for section, value in (("meta", {"title": "t"}), ("pinned", "p"), ("scoreboard", {"a": 1})):
        await host.set_state("sy", section, value)
        await host.expect("state", section=section)
    late = await connect(server, "sy-late")
    joined = await late.join("sy", known={"meta": 1, "pinned": 0})
    assert joined["total"] == 3
    assert joined["versions"] == {"meta": 1, "pinned": 1, "scoreboard": 1}
    assert sorted(s["section"] for s in joined["sections"]) == ["pinned", "scoreboard"]
    # The client missed a change (it saw a total it did not expect): it syncs.
    await host.set_state("sy", "scoreboard", {"a": 2})
    reply = await late.request({"type": "sync", "room": "sy",
                                "known": {"meta": 1, "pinned": 1, "scoreboard": 1}}, "sync")
    assert reply["total"] == 4
    assert reply["sections"] == [{"section": "scoreboard", "partial": 2, "value": {"a": 2}}]
    assert reply["versions"] == {"meta": 1, "pinned": 1, "scoreboard": 2}
    up_to_date = await late.request({"type": "sync", "room": "sy",
                                     "known": {"meta": 1, "pinned": 1, "scoreboard": 2}}, "sync")
    assert up_to_date["sections"] == []
    # HTTP reads for polling clients see the same versions.
    async with http.get(f"{server.url}/v1/rooms/sy/state") as r:
        head = await r.json()
    e = joined["epoch"]
    assert head == {
        "room": "sy", "epoch": e, "total": 4,
        "versions": {"meta": 1, "pinned": 1, "scoreboard": 2},
        "sections": {"meta": f"/v1/rooms/sy/sections/meta/v/1?e={e}",
                     "pinned": f"/v1/rooms/sy/sections/pinned/v/1?e={e}",
                     "scoreboard": f"/v1/rooms/sy/sections/scoreboard/v/2?e={e}"},
        "snapshot": f"/v1/rooms/sy/snapshots/4?e={e}"}
    async with http.get(f"{server.url}/v1/rooms/sy/state/scoreboard") as r:
        assert (await r.json())["value"] == {"a": 2}


async def test_compare_and_set(server: LiveServer, connect) -> None:
    host = await connect(server, "cas-host", "host")
    await host.join("cas")
    await host.set_state("cas", "scoreboard", {"n": 1}, expect=0)
    assert (await host.expect("state"))["partial"] == 1
    err = await host.request({"type": "state", "room": "cas", "section": "scoreboard",
                              "value": {"n": 99}, "expect": 0}, "x")
    assert err["code"] == "version_conflict" and err["current"] == 1
    assert err["advice"] == "resync"
    await host.set_state("cas", "scoreboard", {"n": 2}, expect=1)
    assert (await host.expect("state"))["value"] == {"n": 2}


async def test_backend_state_write_is_pushed(server: LiveServer, connect, http) -> None:
    viewer = await connect(server, "bs-viewer")
    await viewer.join("bs")
    async with http.post(f"{server.url}/v1/rooms/bs/state/pinned", headers=AUTH,
                         json={"value": {"text": "from moderation"}}) as r:
        assert r.status == 200
        assert await r.json() == {"room": "bs", "section": "pinned", "partial": 1, "total": 1}
    got = await viewer.expect("state", section="pinned")
    assert got["value"] == {"text": "from moderation"}
    async with http.post(f"{server.url}/v1/rooms/bs/state/pinned", headers=AUTH,
                         json={"value": "x", "expect": 0}) as r:
        assert r.status == 409 and (await r.json())["code"] == "version_conflict"


async def test_agent_writes_only_its_own_stage_section(server: LiveServer, connect) -> None:
    bot = await connect(server, "quizbot", "agent")
    await bot.join("ag")
    await bot.set_state("ag", "stage.quizbot", {"mood": "happy", "x": 3})
    assert (await bot.expect("state"))["section"] == "stage.quizbot"
    err = await bot.request({"type": "state", "room": "ag", "section": "stage.other",
                             "value": {}}, "x")
    assert err["code"] == "forbidden"


async def test_versions_from_another_epoch_resend_everything(server: LiveServer,
                                                            connect) -> None:
    """After the store starts over (a new epoch), a client's kept versions
    could match different values: naming the old epoch gets every section."""
    host = await connect(server, "ep-host", "host")
    first = await host.join("ep")
    await host.set_state("ep", "meta", {"title": "t"})
    await host.expect("state")
    current = await host.request({"type": "sync", "room": "ep", "known": {"meta": 1},
                                  "epoch": first["epoch"]}, "sync")
    assert current["sections"] == []
    stale = await host.request({"type": "sync", "room": "ep", "known": {"meta": 1},
                                "epoch": "an-older-epoch"}, "sync")
    assert [s["section"] for s in stale["sections"]] == ["meta"]
    assert stale["epoch"] == first["epoch"]


async def test_a_big_room_is_told_to_poll_and_gets_no_state_push(make_server, http) -> None:
    srv = make_server("--poll-threshold", "4", "--online-interval", "0.2")
    a = await LiveroomClient.connect(srv.ws_url, srv.token("big-a", "host"), session=http)
    assert (await a.join("big"))["state_mode"] == "push"
    others = [await LiveroomClient.connect(srv.ws_url, srv.token(f"big-{i}"), session=http)
              for i in range(3)]
    for c in others[:2]:
        assert (await c.join("big"))["state_mode"] == "push"
    joined = await others[2].join("big")  # the fourth member: poll from now on
    assert joined["state_mode"] == "poll"
    assert joined["poll"] == {"head": "/v1/rooms/big/state", "interval": 1.0}
    mode = await a.expect("state_mode", timeout=3)  # earlier members are told too
    assert mode["state_mode"] == "poll" and mode["poll"]["head"] == "/v1/rooms/big/state"
    # State changes are no longer pushed; the head has them.
    b = others[0]
    await a.set_state("big", "meta", {"title": "polled"})
    await a.action("big", "comment", {"text": "marker"})
    assert (await b.expect("action", timeout=3))["body"]["text"] == "marker"
    assert all(f.get("type") != "state" for f in b._pending)
    async with http.get(f"{srv.url}/v1/rooms/big/state") as r:
        assert (await r.json())["versions"] == {"meta": 1}
    # Below half the threshold (under 2 members) the room goes back to push.
    for c in others:
        await c.close()
    back = await a.expect("state_mode", timeout=3)
    assert back["state_mode"] == "push" and "poll" not in back
    await a.close()
