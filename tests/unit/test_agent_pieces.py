"""Character files, the context window, quotas, the breaker, the stream
parsing of OpenAI-compatible servers (vLLM's exact format included) and the
in-memory sink's frame parsing. Pure: no event loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_agents.backends.base import Usage
from llm_agents.backends.openai_backend import parse_chunk
from llm_agents.character import SHIPPED_DIR, CharacterError, load_character, load_characters
from llm_agents.link import QueueSink
from llm_agents.policy import GIFT, Trigger
from llm_agents.prompt import ContextWindow, build_messages, estimate_tokens, scripted_reply
from llm_agents.quota import DAY, QuotaBook, QuotaLimits
from plumbing.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from wire.codecs import MSGPACK, encode_msgpack
from wire.encoded import batch_frame
from wire.errors import QuotaExceeded
from wire.websocket import OP_BINARY, ws_frame


# -- characters ---------------------------------------------------------------
def test_shipped_characters_load() -> None:
    chars = load_characters([SHIPPED_DIR])
    assert {"quinn", "max", "sage"} <= set(chars)
    quinn = chars["quinn"]
    assert quinn.reacts.gifts and quinn.reacts.silence_s == 45
    assert quinn.owns == ("stage.quinn",)
    assert quinn.stage["position"] == "left"


GOOD = 'name = "bo"\npersona = "You are Bo."\n'


@pytest.mark.parametrize(("extra", "field"), [
    ('cooldown_s = "soon"\n', "cooldown_s"),
    ('cooldown_s = true\n', "cooldown_s"),
    ('max_reply_tokens = 0\n', "max_reply_tokens"),
    ('backend = "gpt"\n', "backend"),
    ('owns = ["meta"]\n', "owns[0]"),
    ('colour = "red"\n', "colour"),
    ('[reacts]\nsilence_s = -1\n', "reacts.silence_s"),
    ('[reacts]\nsections = ["Bad Name"]\n', "reacts.sections[0]"),
    ('[reacts]\nwhispers = true\n', "reacts.whispers"),
    ('[reacts]\nkinds = ["agent.say"]\n', "reacts.kinds[0]"),
    ('[scripted]\nmention = []\n', "scripted.mention"),
    ('[scripted]\ndance = ["x"]\n', "scripted.dance"),
])
def test_a_bad_field_is_named_with_its_file(tmp_path: Path, extra: str, field: str) -> None:
    path = tmp_path / "bo.toml"
    path.write_text(GOOD + extra)
    with pytest.raises(CharacterError) as info:
        load_character(path)
    assert info.value.field == field
    assert str(path) in str(info.value)


def test_missing_required_fields_and_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text('name = "bo"\n')
    with pytest.raises(CharacterError, match="'persona'"):
        load_character(path)
    path.write_text('persona = "p"\n')
    with pytest.raises(CharacterError, match="'name'"):
        load_character(path)
    path.write_text('name = "no spaces allowed"\npersona = "p"\n')
    with pytest.raises(CharacterError, match="'name'"):
        load_character(path)
    path.write_text("name = \n")
    with pytest.raises(CharacterError, match="not valid TOML"):
        load_character(path)


def test_a_user_directory_replaces_a_shipped_character(tmp_path: Path) -> None:
    (tmp_path / "q.toml").write_text('name = "quinn"\npersona = "Another Quinn."\n')
    chars = load_characters([SHIPPED_DIR, tmp_path])
    assert chars["quinn"].persona == "Another Quinn."


# -- prompt ---------------------------------------------------------------------
@given(st.lists(st.text(max_size=300), max_size=60), st.integers(1, 20),
       st.integers(50, 2000))
def test_context_window_stays_bounded_and_keeps_the_newest(lines, max_lines, max_chars) -> None:
    w = ContextWindow(max_lines, max_chars)
    for line in lines:
        w.add(line)
        kept = w.lines()
        assert len(kept) <= max_lines
        assert sum(len(x) for x in kept) <= max_chars
        assert kept[-1] == line[:max_chars]


def test_prompt_has_persona_context_and_instruction() -> None:
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    w = ContextWindow()
    w.add("Bob: hi all")
    msgs = build_messages(quinn, w, Trigger(GIFT, 0.0, "bob", "Bob", "",
                                            detail={"gift": "rose", "count": 2}))
    assert msgs[0] == {"role": "system", "content": quinn.persona}
    assert "Bob: hi all" in msgs[1]["content"] and "2 rose" in msgs[1]["content"]
    assert estimate_tokens(msgs, 48) > 48
    line = scripted_reply(quinn, Trigger(GIFT, 0.0, "bob", "Bob", "", detail={"gift": "rose"}), 0)
    assert line.startswith("Wow, thank you Bob")


# -- quotas ---------------------------------------------------------------------
def test_reserve_then_settle_gives_back_the_unused_part() -> None:
    book = QuotaBook(QuotaLimits(room_per_day=100, user_per_day=50))
    r = book.reserve("room", "bob", 40, 10.0)
    book.settle(r, 15)
    assert book.used("room", "bob", 10.0) == (15, 15)
    with pytest.raises(QuotaExceeded) as info:
        book.reserve("room", "bob", 40, 11.0)
    assert info.value.extra["scope"] == "user"
    assert info.value.spec.http_status == 429
    assert info.value.extra["retry_after"] == round(DAY - 11.0)
    book.reserve("room", "ann", 40, 12.0)
    with pytest.raises(QuotaExceeded) as info:
        book.reserve("room", "cid", 50, 13.0)
    assert info.value.extra["scope"] == "room"
    # A new day starts from zero.
    book.reserve("room", "bob", 50, DAY + 1.0)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 60),
                          st.integers(0, 80)), max_size=50))
def test_charged_never_exceeds_the_limit_when_usage_stays_within_reservations(ops) -> None:
    book = QuotaBook(QuotaLimits(room_per_day=300, user_per_day=120))
    for user, want, used in ops:
        try:
            r = book.reserve("room", user, want, 5.0)
        except QuotaExceeded:
            continue
        book.settle(r, min(used, want))
        room, mine = book.used("room", user, 5.0)
        assert room <= 300 and mine <= 120


# -- breaker --------------------------------------------------------------------
def test_breaker_opens_after_failures_and_recovers_through_one_probe() -> None:
    b = CircuitBreaker(threshold=2, reset_after_s=10.0)
    assert b.allow(0.0)
    b.failure(0.0)
    assert b.state == CLOSED
    b.failure(1.0)
    assert b.state == OPEN and not b.allow(5.0)
    assert b.retry_after(5.0) == 6.0
    assert b.allow(11.0) and b.state == HALF_OPEN
    assert not b.allow(11.5)  # one probe at a time
    b.failure(12.0)
    assert b.state == OPEN and not b.allow(21.0)
    assert b.allow(22.0)
    b.success(22.5)
    assert b.state == CLOSED and b.allow(22.6)


# -- OpenAI-compatible stream chunks ----------------------------------------------
VLLM_STREAM = [
    # vLLM's exact chunks with stream_options.include_usage: the first carries
    # the role and content "", the last has "choices": [] and the usage.
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
    '"finish_reason":null}],"usage":null}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}],'
    '"usage":null}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"choices":[{"index":0,"delta":{"content":"lo"},"logprobs":null,"finish_reason":"stop",'
    '"stop_reason":null}],"usage":null}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    '"choices":[],"usage":{"prompt_tokens":21,"total_tokens":23,"completion_tokens":2}}',
]


def test_vllm_stream_text_and_final_usage_chunk() -> None:
    parsed = [parse_chunk(json.loads(c)) for c in VLLM_STREAM]
    assert "".join(t for t, _ in parsed) == "Hello"
    assert [u for _, u in parsed] == [None, None, None, Usage(21, 2)]


@pytest.mark.parametrize("delta", [{"role": "assistant", "content": ""},
                                   {"role": "assistant", "content": None},
                                   {"role": "assistant"}, {}])
def test_first_chunk_content_empty_null_or_absent(delta) -> None:
    assert parse_chunk({"choices": [{"index": 0, "delta": delta}]}) == ("", None)


# -- the in-memory sink -------------------------------------------------------------
def test_queue_sink_decodes_single_and_batch_frames_and_counts_bytes() -> None:
    woken = []
    sink = QueueSink(lambda: woken.append(1))
    a = encode_msgpack({"type": "action", "kind": "comment", "seq": 1})
    b = encode_msgpack({"type": "state", "section": "meta"})
    sink.write(ws_frame(a, OP_BINARY))
    sink.write(batch_frame([a, b], MSGPACK))
    big = encode_msgpack({"type": "action", "body": "x" * 70000})
    sink.write(ws_frame(big, OP_BINARY))
    assert sink.buffered() > 70000 and len(woken) == 3
    frames = list(sink.drain())
    assert [f["type"] for f in frames] == ["action", "action", "state", "action"]
    assert len(frames[-1]["body"]) == 70000 and sink.buffered() == 0
    assert msgpack.unpackb(a)["seq"] == 1


def test_deltas_slow_down_in_a_big_room() -> None:
    """Every delta is a message to every member: from big_room_members on
    (learned from joined/online frames of the agent's room), a reply's tokens
    are merged into one delta per big_room_delta_interval."""
    from llm_agents.backends.scripted import ScriptedBackend
    from llm_agents.quota import MemoryQuotaStore
    from llm_agents.runtime import AgentConfig, RoomAgent

    frames: list[Any] = []

    def make_link(on_frame: Any) -> Any:
        frames.append(on_frame)
        return None  # _on_frame alone is exercised here

    config = AgentConfig(delta_interval=0.2, big_room_members=500, big_room_delta_interval=1.0)
    agent = RoomAgent(load_character(SHIPPED_DIR / "quiz_master.toml"), "r", ScriptedBackend(0),
                      MemoryQuotaStore(QuotaLimits()), config, make_link, clock=lambda: 0.0)
    on_frame = frames[0]
    assert agent.delta_interval() == 0.2
    on_frame({"type": "joined", "room": "r", "members": 499})
    assert agent.delta_interval() == 0.2
    on_frame({"type": "online", "room": "other", "count": 5000})  # another room: ignored
    assert agent.delta_interval() == 0.2
    on_frame({"type": "online", "room": "r", "count": 500})
    assert agent.delta_interval() == 1.0
    on_frame({"type": "online", "room": "r", "count": "many"})  # not an int: ignored
    assert agent.delta_interval() == 1.0
    on_frame({"type": "online", "room": "r", "count": 20})
    assert agent.delta_interval() == 0.2


def test_bus_words_are_stamped_actions_on_the_rooms_subject() -> None:
    """What ``liveroom agents --nats`` puts on the bus is what an edge puts
    there for an action: the same frame, on the room's subject, numbered
    per room by this publisher."""
    from llm_agents.role import BusWords
    from room_router.bus import MemoryBus, room_subject

    bus = MemoryBus()
    heard: list[tuple[str, dict[str, Any]]] = []
    for room in ("a", "b"):
        bus.subscribe(room_subject(room),
                      lambda s, p: heard.append((s, msgpack.unpackb(p, raw=False))))
    words = BusWords(bus, clock=lambda: 1234.5)
    sender = {"id": "quinn", "name": "Quinn", "role": "agent"}
    words.publish("a", "agent.delta", {"reply_id": "r1", "i": 0, "text": "Hel"}, sender)
    words.publish("b", "agent.say", {"reply_id": "r2", "text": "Yo"}, sender)
    words.publish("a", "agent.say", {"reply_id": "r1", "text": "Hello"}, sender)
    assert [(s, f["room"], f["seq"], f["kind"]) for s, f in heard] == [
        ("room.a", "a", 1, "agent.delta"), ("room.b", "b", 1, "agent.say"),
        ("room.a", "a", 2, "agent.say")]
    assert heard[0][1] == {"type": "action", "room": "a", "kind": "agent.delta",
                           "body": {"reply_id": "r1", "i": 0, "text": "Hel"},
                           "from": sender, "seq": 1, "ts": 1234.5,
                           "id": heard[0][1]["id"]}
    assert len({f["id"] for _, f in heard}) == len(heard)  # one id per action
