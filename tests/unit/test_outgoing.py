"""Each builder of ``wire.outgoing`` makes the bytes the dict literal it
replaced made: the same keys, values and key order (msgpack and JSON write a
map's keys in insertion order, so the order is part of the bytes).

The literals below are the ones the call sites wrote before the builders
(``edge/node.py``, ``state_versions.versions.Change.to_frame``,
``room_router.inbox.PeerMessage.to_frame``, ``wire.errors``); a reply
without ``ref`` had its ``ref`` key deleted (``_without_null_ref``)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import wire.outgoing as outgoing
from wire.codecs import JSON, MSGPACK, WT_JSON, Variant, codec_of, encode_json, encode_msgpack
from wire.errors import InvalidField, RateLimited
from wire.outgoing import (
    RoomVersions,
    action_frame,
    error_frame,
    inbox_frame,
    joined_frame,
    left_frame,
    moderated_frame,
    online_frame,
    peer_ack_frame,
    peer_frame,
    pong_frame,
    redirect_frame,
    retract_frame,
    state_frame,
    state_mode_frame,
    sync_frame,
    welcome_frame,
    welcome_limits,
)
from wire.requests import (
    action_request,
    hello_request,
    join_request,
    peer_request,
    state_request,
)


def _without_null_ref(obj: dict[str, Any]) -> dict[str, Any]:
    if "ref" in obj and obj["ref"] is None:
        del obj["ref"]
    return obj


def same(built: dict[str, Any], literal: dict[str, Any]) -> None:
    assert list(built.items()) == list(literal.items())
    assert encode_msgpack(built) == encode_msgpack(literal)
    assert encode_json(built) == encode_json(literal)


LIMITS = {"max_frame_bytes": 65536, "max_value_bytes": 65536, "max_value_depth": 32,
          "max_rooms": 32, "actions_per_second": 5.0, "actions_burst": 10.0,
          "frames_per_second": 40.0, "frames_burst": 80.0, "max_sections": 64}
USER = {"id": "alice", "name": "Alice", "role": "viewer"}


@pytest.mark.parametrize("ref", [None, 1, "r-1"])
def test_welcome(ref: Any) -> None:
    limits = welcome_limits(max_frame_bytes=65536, max_value_bytes=65536, max_value_depth=32,
                            max_rooms=32, actions_per_second=5.0, actions_burst=10.0,
                            frames_per_second=40.0, frames_burst=80.0, max_sections=64)
    same(limits, LIMITS)
    same(welcome_frame(ref, USER, "n1", 7, 1.5, "json", limits), _without_null_ref({
        "type": "welcome", "v": 1, "ref": ref, "user": USER, "node": "n1", "session": 7,
        "ts": 1.5, "codec": "json", "limits": LIMITS}))


def _state_reply(recovered: bool | None, reason: str | None) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "room": "demo", "epoch": "e1", "total": 3, "versions": {"meta": 1, "stage": 2},
        "sections": [{"section": "stage", "partial": 2, "value": {"x": 1}}],
    }
    if recovered is not None:
        reply["recovered"] = recovered
        if reason is not None:
            reply["reason"] = reason
    return reply


RECOVERY = [(None, None), (True, None), (False, "epoch_changed")]


@pytest.mark.parametrize("ref", [None, 2])
@pytest.mark.parametrize(("recovered", "reason"), RECOVERY)
@pytest.mark.parametrize("poll", [None, ("/v1/rooms/demo/state", 1.0)])
def test_joined(ref: Any, recovered: bool | None, reason: str | None,
                poll: tuple[str, float] | None) -> None:
    body = RoomVersions("demo", "e1", 3, {"meta": 1, "stage": 2}, [("stage", 2, {"x": 1})],
                        recovered, reason)
    mode: dict[str, Any] = {"state_mode": "push"} if poll is None else {
        "state_mode": "poll", "poll": {"head": poll[0], "interval": poll[1]}}
    literal = _state_reply(recovered, reason)
    literal.update(type="joined", ref=ref, members=2, **mode)
    same(joined_frame(body, ref, 2, poll), _without_null_ref(literal))


def test_joined_with_history_adds_it_last() -> None:
    body = RoomVersions("demo", "e1", 0, {}, [])
    kept = [{"type": "action", "room": "demo", "kind": "comment", "id": "a-1"}]
    literal = {"room": "demo", "epoch": "e1", "total": 0, "versions": {}, "sections": [],
               "type": "joined", "ref": 1, "members": 1, "state_mode": "push",
               "history": kept}
    same(joined_frame(body, 1, 1, None, history=kept), literal)
    same(joined_frame(body, 1, 1, None, history=[]), {**literal, "history": []})


@pytest.mark.parametrize("ref", [None, 4])
def test_retract_and_moderated(ref: Any) -> None:
    same(retract_frame("r", "a-1"), {"type": "retract", "room": "r", "id": "a-1"})
    same(moderated_frame("r", "retract", ref, action_id="a-1"), _without_null_ref(
        {"type": "moderated", "room": "r", "op": "retract", "id": "a-1", "ref": ref}))
    same(moderated_frame("r", "ban", ref, user="u", until=5.0), _without_null_ref(
        {"type": "moderated", "room": "r", "op": "ban", "user": "u", "until": 5.0, "ref": ref}))


@pytest.mark.parametrize("ref", [None, 3])
@pytest.mark.parametrize(("recovered", "reason"), RECOVERY)
def test_sync(ref: Any, recovered: bool | None, reason: str | None) -> None:
    body = RoomVersions("demo", "e1", 3, {"meta": 1, "stage": 2}, [("stage", 2, {"x": 1})],
                        recovered, reason)
    literal = _state_reply(recovered, reason)
    literal.update(type="sync", ref=ref)
    same(sync_frame(body, ref), _without_null_ref(literal))


def test_state_mode() -> None:
    same(state_mode_frame("big", None),
         {"type": "state_mode", "room": "big", "state_mode": "push"})
    same(state_mode_frame("big", ("/v1/rooms/big/state", 1.0)),
         {"type": "state_mode", "room": "big", "state_mode": "poll",
          "poll": {"head": "/v1/rooms/big/state", "interval": 1.0}})


@pytest.mark.parametrize("ref", [None, 4])
def test_left_pong_peer_ack(ref: Any) -> None:
    same(left_frame("demo", ref), _without_null_ref({"type": "left", "room": "demo", "ref": ref}))
    same(pong_frame(12345, 1.5, ref),
         _without_null_ref({"type": "pong", "t": 12345, "ts": 1.5, "ref": ref}))
    same(peer_ack_frame("m-1", 9, ref, False), _without_null_ref(
        {"type": "peer_ack", "id": "m-1", "seq": 9, "ref": ref, "duplicate": False}))


def test_action_state_peer_online() -> None:
    same(action_frame("demo", "comment", {"text": "hi"}, USER, 7, 1.5, "a1b2-7"),
         {"type": "action", "room": "demo", "kind": "comment", "body": {"text": "hi"},
          "from": USER, "seq": 7, "ts": 1.5, "id": "a1b2-7"})
    same(state_frame("demo", "stage", 9, 21, {"x": 3}),
         {"type": "state", "room": "demo", "section": "stage", "partial": 9, "total": 21,
          "value": {"x": 3}})
    same(peer_frame(5, 3, "bob", "alice", "Alice", "m-1", {"text": "psst"}, 1.5),
         {"type": "peer", "seq": 5, "prev": 3, "to": "bob",
          "from": {"id": "alice", "name": "Alice"}, "id": "m-1", "body": {"text": "psst"},
          "ts": 1.5})
    same(online_frame("demo", 2), {"type": "online", "room": "demo", "count": 2})


def test_inbox() -> None:
    same(inbox_frame(True, None, 19, 17),
         {"type": "inbox", "recovered": True, "upto": 19, "cursor": 17})
    literal: dict[str, Any] = {"type": "inbox", "recovered": True}
    literal.update(recovered=False, reason="not_draining")
    literal.update(upto=19, cursor=17)
    same(inbox_frame(False, "not_draining", 19, 17), literal)


@pytest.mark.parametrize("ref", [None, 5])
def test_redirect(ref: Any) -> None:
    literal: dict[str, Any] = {"type": "redirect", "room": "q", "url": "ws://a/ws",
                               "urls": ["ws://a/ws", "ws://b/ws"], "reason": "not_owner"}
    if ref is not None:
        literal["ref"] = ref
    same(redirect_frame("q", ("ws://a/ws", "ws://b/ws"), "not_owner", ref), literal)


@pytest.mark.parametrize("ref", [None, 6])
def test_error(ref: Any) -> None:
    err = RateLimited("slow down", ref=ref, retry_after=0.5)
    literal: dict[str, Any] = {"type": "error", "code": "rate_limited", "message": "slow down",
                               "advice": err.spec.advice}
    if ref is not None:
        literal["ref"] = ref
    literal.update({"retry_after": 0.5})
    same(err.to_frame(), literal)
    same(error_frame("rate_limited", "slow down", err.spec.advice, ref, {"retry_after": 0.5}),
         literal)
    http = InvalidField("x", field="f").to_http()
    assert list(http) == ["code", "message", "advice", "field"]


def test_variant_members_are_the_wire_strings() -> None:
    """``Variant`` replaced bare strings: the values, and the bytes of a frame
    that carries one (``welcome.codec``), are what they were."""
    assert [v.value for v in Variant] == ["msgpack", "json", "wt-msgpack", "wt-json"]
    assert Variant("json") is JSON and codec_of(Variant.WT_MSGPACK) is MSGPACK
    limits = {"max_sections": 1}
    for variant, codec in ((WT_JSON, "json"), (MSGPACK, "msgpack")):
        same(welcome_frame(1, USER, "n1", 7, 1.5, codec_of(variant), limits),
             {"type": "welcome", "v": 1, "ref": 1, "user": USER, "node": "n1", "session": 7,
              "ts": 1.5, "codec": codec, "limits": limits})


# --------------------------------------------------------------------------
# client frames (wire.requests), against the literals of edge/client.py and
# llm_agents/ they replace (the agents' in-process hello wrote ``v`` before
# ``token``; it never leaves the process, and the server reads it by key)
# --------------------------------------------------------------------------
def test_requests() -> None:
    same(hello_request("tok"), {"type": "hello", "token": "tok", "v": 1})
    same(hello_request("tok", 17), {"type": "hello", "token": "tok", "v": 1, "inbox_cursor": 17})
    same(join_request("demo"), {"type": "join", "room": "demo"})
    same(join_request("demo", {}, None), {"type": "join", "room": "demo"})
    same(join_request("demo", {"meta": 1}, "e1"),
         {"type": "join", "room": "demo", "known": {"meta": 1}, "epoch": "e1"})
    same(action_request("demo", "like", {"count": 1}),
         {"type": "action", "room": "demo", "kind": "like", "body": {"count": 1}})
    same(state_request("demo", "stage", {"x": 1}),
         {"type": "state", "room": "demo", "section": "stage", "value": {"x": 1}})
    same(state_request("demo", "stage", {"x": 1}, 3),
         {"type": "state", "room": "demo", "section": "stage", "value": {"x": 1}, "expect": 3})
    same(peer_request("bob", {"text": "psst"}, "m-1"),
         {"type": "peer", "to": "bob", "body": {"text": "psst"}, "id": "m-1"})


# --------------------------------------------------------------------------
# docs/PROTOCOL.md's frame table and wire/outgoing.py name the same frames
# --------------------------------------------------------------------------
def test_protocol_table_maps_one_to_one_onto_the_builders() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()
    table = doc[doc.index("| frame | direction |"):]
    table = table[:table.index("\n\n")]
    documented: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = re.match(r"\[`(\w+)`\]", cells[0])
        assert name is not None, row
        if cells[1] == "server → client":
            documented[name.group(1)] = cells[4]
    batch = documented.pop("batch")
    assert "batch_frame" in batch and "wire/encoded.py" in batch
    builders = {n for n, f in vars(outgoing).items() if n.endswith("_frame")
                and inspect.isfunction(f) and f.__module__ == outgoing.__name__}
    assert {f"{name}_frame" for name in documented} == builders
    assert all(cell == f"`{name}_frame`" for name, cell in documented.items()), documented
