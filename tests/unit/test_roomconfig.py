"""The rooms config (room_router/roomconfig.py): matching, inheritance,
validation with a message naming the place, reload keeping the config in
force when the new file is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from room_router.roomconfig import RoomPolicies, RoomPolicy, RoomsConfig

TEXT = """
[default]
presence = true
history = 20

[rooms."quiz-7"]
private = true

[rooms."quiz-*"]
slow_mode = 5
history = 0

[rooms."*-vip"]
private = true
presence_cap = 10
"""


def test_exact_then_first_pattern_then_default() -> None:
    cfg = RoomsConfig.parse(TEXT)
    exact = cfg.policy("quiz-7")
    assert exact.private and exact.presence and exact.history == 20 and exact.slow_mode == 0
    pattern = cfg.policy("quiz-vip")  # quiz-* comes first in the file
    assert pattern.slow_mode == 5 and pattern.history == 0 and not pattern.private
    assert cfg.policy("a-vip").presence_cap == 10
    other = cfg.policy("lobby")
    assert other == RoomPolicy(presence=True, history=20)


def test_no_file_is_the_built_in_defaults() -> None:
    policy = RoomPolicies().policy("anything")
    assert policy == RoomPolicy() and not policy.private and policy.allows_kind("x")


@pytest.mark.parametrize("text, says", [
    ("[default]\nprivate = 1", "private must be true or false"),
    ("[default]\nhistory = 5000", "history must be an integer in 0..1000"),
    ("[default]\npresence_cap = 0", "presence_cap"),
    ("[default]\nslow_mode = -1", "slow_mode"),
    ("[default]\nkinds = [\"Bad Kind\"]", "kinds"),
    ("[default]\ncolour = \"red\"", "unknown setting 'colour'"),
    ("[default]\naction_rate = 3", "action_rate and action_burst go together"),
    ("[rooms.\"a b\"]\nprivate = true", "room id or pattern"),
    ("[other]\nx = 1", "unknown table"),
    ("[default\n", "not TOML"),
])
def test_bad_files_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RoomsConfig.parse(text, "rooms.toml")


def test_reload_keeps_the_config_in_force_when_the_file_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "rooms.toml"
    path.write_text('[rooms."a"]\nprivate = true\n')
    policies = RoomPolicies.from_file(path)
    assert policies.policy("a").private
    path.write_text('[rooms."a"]\nprivate = false\n[rooms."b"]\nslow_mode = 3\n')
    assert policies.reload() is None
    assert not policies.policy("a").private and policies.policy("b").slow_mode == 3
    path.write_text("[rooms.\"a\"]\nprivate = maybe\n")
    assert policies.reload() is not None
    assert policies.policy("b").slow_mode == 3 and not policies.public()["last_reload_ok"]
    assert policies.public()["reloads"] == 1


def test_public_lists_entries_in_matching_order() -> None:
    out = RoomsConfig.parse(TEXT, "f.toml").public()
    assert [e["match"] for e in out["rooms"]] == ["quiz-7", "quiz-*", "*-vip"]
    assert out["default"]["history"] == 20 and out["source"] == "f.toml"
