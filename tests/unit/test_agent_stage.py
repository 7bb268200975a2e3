"""Acting on the stage and the world, pure: the character's ``[acting]`` and
``[world]`` tables and their bounds, the reply schema, the validation of a
reply's stage part (each refusal), the streamed JSON reader at every chunk
boundary, the walker. No event loop."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.auth import Identity
from edge.session import may_write_section
from llm_agents.acting import (
    MAX_STAGE_BYTES,
    ReplyJson,
    StageChange,
    StageRefused,
    acting_hint,
    reply_schema,
    validate_stage,
)
from llm_agents.character import SHIPPED_DIR, CharacterError, load_character
from llm_agents.policy import GIFT, Trigger
from llm_agents.prompt import ContextWindow, build_messages
from llm_agents.world import IDLE, MAX_HZ, REACT, WALK, Walker, WorldConfig

BASE = 'name = "bo"\npersona = "You are Bo."\n'
ACTING = BASE + """
[acting.fields]
mood = ["calm", "excited"]
emote = ["none", "wave"]
[acting.scripted]
gift = { mood = "excited" }
"""


def load(tmp_path: Path, text: str) -> Any:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load_character(p)


def test_quinn_acts_and_stands_still() -> None:
    quinn = load_character(SHIPPED_DIR / "quiz_master.toml")
    assert quinn.acting is not None and "excited" in quinn.acting.fields["mood"]
    assert quinn.acting.scripted["gift"] == {"mood": "excited", "emote": "clap"}
    assert quinn.world is None  # the world is off unless a character declares one


def test_acting_table_parsed(tmp_path: Path) -> None:
    c = load(tmp_path, ACTING)
    assert c.acting.fields == {"mood": ("calm", "excited"), "emote": ("none", "wave")}
    schema = reply_schema(c.acting)
    assert schema["required"] == ["stage", "say"]
    stage = schema["properties"]["stage"]
    assert stage["properties"]["mood"] == {"type": "string", "enum": ["calm", "excited"]}
    assert stage["additionalProperties"] is False
    assert "mood: one of calm, excited" in acting_hint(c.acting)


@pytest.mark.parametrize(("extra", "field"), [
    ("[acting]\nfields = {}\n", "acting.fields"),
    ("[acting]\nlines = 1\n", "acting.lines"),
    ('[acting.fields]\nname = ["x"]\n', "acting.fields.name"),
    ('[acting.fields]\nspeaking = ["x"]\n', "acting.fields.speaking"),
    ('[acting.fields]\nMood = ["x"]\n', "acting.fields.Mood"),
    ("[acting.fields]\nmood = []\n", "acting.fields.mood"),
    ('[acting.fields]\nmood = ["' + "x" * 33 + '"]\n', "acting.fields.mood"),
    ('[acting.fields]\nmood = ["<b>"]\n', "acting.fields.mood"),
    ("[acting.fields]\nmood = [" + ",".join(f'"m{i}"' for i in range(17)) + "]\n",
     "acting.fields.mood"),
    ("[acting.fields]\n" + "".join(f'f{i} = ["x"]\n' for i in range(7)), "acting.fields"),
    ('[acting.fields]\nmood = ["x"]\n[acting.scripted]\nlunch = { mood = "x" }\n',
     "acting.scripted.lunch"),
    ("[world]\nhz = 31\n", "world.hz"),
    ("[world]\nhz = 0\n", "world.hz"),
    ("[world]\nspeed = true\n", "world.speed"),
    ("[world]\nteleport = 1\n", "world.teleport"),
    ('[world]\ngifts = "yes"\n', "world.gifts"),
])
def test_bad_acting_or_world_names_the_field(tmp_path: Path, extra: str, field: str) -> None:
    with pytest.raises(CharacterError) as exc:
        load(tmp_path, BASE + extra)
    assert exc.value.field == field


def test_world_table_parsed(tmp_path: Path) -> None:
    c = load(tmp_path, BASE + "[world]\nhz = 30\nidle_s = 0\ngifts = false\n")
    assert c.world == WorldConfig(hz=30.0, idle_s=0.0, gifts=False)
    assert MAX_HZ == 30


# -- validation of a reply's stage part ------------------------------------------
@pytest.mark.parametrize(("value", "reason"), [
    (["calm"], "not_a_table"),
    ("calm", "not_a_table"),
    ({"colour": "red"}, "unknown_field"),
    ({"name": "Evil"}, "unknown_field"),
    ({"speaking": True}, "unknown_field"),
    ({"mood": "furious"}, "bad_value"),
    ({"mood": 3}, "bad_value"),
    ({"mood": ["calm"]}, "bad_value"),
    ({"mood": "x" * (MAX_STAGE_BYTES + 1)}, "too_big"),
])
def test_bad_stage_parts_are_refused(tmp_path: Path, value: Any, reason: str) -> None:
    acting = load(tmp_path, ACTING).acting
    with pytest.raises(StageRefused) as exc:
        validate_stage(acting, StageChange(value))
    assert exc.value.reason == reason


def test_undecodable_stage_is_refused(tmp_path: Path) -> None:
    acting = load(tmp_path, ACTING).acting
    with pytest.raises(StageRefused) as exc:
        validate_stage(acting, StageChange(None, "not JSON"))
    assert exc.value.reason == "undecodable"


def test_good_stage_part_may_be_a_subset(tmp_path: Path) -> None:
    acting = load(tmp_path, ACTING).acting
    assert validate_stage(acting, StageChange({"mood": "excited"})) == {"mood": "excited"}
    assert validate_stage(acting, StageChange({})) == {}


# -- the streamed JSON reader -------------------------------------------------------
def read(chunks: list[str]) -> tuple[str, StageChange]:
    r = ReplyJson()
    text = "".join(r.feed(c) for c in chunks)
    return text, r.stage()


REPLY = ('{"stage": {"mood": "excited", "emote": "wave"}, '
         '"say": "Thanks \\"Ann\\"!\\nA caf\\u00e9 \\ud83c\\udf39, {not} [json]"}')


def test_reader_reads_whole_reply() -> None:
    text, stage = read([REPLY])
    assert text == json.loads(REPLY)["say"]
    assert stage == StageChange({"mood": "excited", "emote": "wave"})


@given(st.lists(st.integers(min_value=0, max_value=len(REPLY)), max_size=8))
def test_reader_any_chunking(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [REPLY[a:b] for a, b in zip([0, *points], [*points, len(REPLY)], strict=True)]
    text, stage = read(chunks)
    assert text == json.loads(REPLY)["say"]
    assert stage.value == {"mood": "excited", "emote": "wave"}


def test_reader_say_first_and_nested_keys_ignored() -> None:
    reply = '{"say":"hi","stage":{"say":"no","mood":"calm"}}'
    text, stage = read(list(reply))
    assert text == "hi"
    assert stage.value == {"say": "no", "mood": "calm"}


def test_reader_cut_reply_keeps_words_and_stage() -> None:
    text, stage = read(['{"stage":{"mood":"calm"},"say":"Hello the', "re and"])
    assert text == "Hello there and"
    assert stage.value == {"mood": "calm"}


def test_reader_without_a_stage_reports_it() -> None:
    assert read(['{"say":"hi"}'])[1].error is not None
    assert read(['{"stage":{"mood":'])[1].error is not None
    assert read(["not json at all"]) == ("", read(["x"])[1])


def test_reader_bounds_a_huge_stage() -> None:
    r = ReplyJson()
    r.feed('{"stage":{"mood":"' + "x" * 10 * MAX_STAGE_BYTES + '"}}')
    assert r.stage().error is not None


# -- the prompt ---------------------------------------------------------------------
def test_prompt_names_the_shape_only_when_acting(tmp_path: Path) -> None:
    c = load(tmp_path, ACTING)
    t = Trigger(GIFT, 0.0, "ann", "Ann", "", {"gift": "rose"})
    acting = build_messages(c, ContextWindow(), t, acting=True)[1]["content"]
    plain = build_messages(c, ContextWindow(), t)[1]["content"]
    assert '"say"' in acting and "mood: one of calm, excited" in acting
    assert '"say"' not in plain


# -- the world ----------------------------------------------------------------------
def test_walker_idles_walks_and_stops_at_its_target() -> None:
    w = Walker(WorldConfig(hz=10, speed=0.5, idle_s=1.0), "room/bo", now=0.0, start_x=0.2)
    assert w.step(0.5)["state"] == IDLE
    assert w.step(1.0)["state"] == WALK
    target = w._target
    xs = []
    for i in range(1, 40):
        xs.append(w.step(1.0 + i / 10)["x"])
        if w.state == IDLE:
            break
    assert xs[-1] == target and w.state == IDLE
    steps = [abs(b - a) for a, b in pairwise(xs)]
    assert max(steps) <= 0.5 / 10 + 1e-9  # speed x period


def test_walker_is_deterministic_per_seed() -> None:
    def run(seed: str) -> list[dict[str, Any]]:
        w = Walker(WorldConfig(idle_s=0.0), seed, 0.0)
        return [w.step(i / 10) for i in range(50)]
    assert run("a/bo") == run("a/bo")
    assert run("a/bo") != run("b/bo")


def test_walker_hops_on_a_gift_then_idles() -> None:
    w = Walker(WorldConfig(react_s=1.0, idle_s=5.0), "r/bo", 0.0)
    w.react(0.0)
    ys = [w.step(i / 10)["y"] for i in range(1, 10)]
    assert w.state == REACT and max(ys) > 0.1
    assert w.step(1.2) == {"x": 0.5, "y": 0.0, "state": IDLE, "facing": 1}
    off = Walker(WorldConfig(gifts=False), "r/bo", 0.0)
    off.react(0.0)
    assert off.state == IDLE


def test_agent_writes_only_its_own_stage_and_positions() -> None:
    bo = Identity(user="bo", name="Bo", role="agent", exp=0.0)
    assert may_write_section(bo, "r", "stage.bo")
    assert may_write_section(bo, "r", "positions.bo")
    assert not may_write_section(bo, "r", "positions")
    assert not may_write_section(bo, "r", "positions.quinn")
    assert not may_write_section(bo, "r", "stage.quinn")
