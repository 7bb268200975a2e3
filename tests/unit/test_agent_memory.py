"""The characters' memory, pure: the hard bounds (lines, bytes, line and
summary length), when a summary is wanted and what it folds (also when lines
were dropped or added while it was made), the scripted summary, the
retention and flag-derived limits, and the memory in the prompt."""

from __future__ import annotations

import pytest

from llm_agents.character import SHIPPED_DIR, load_characters
from llm_agents.memory import (
    SUMMARY_PREFIX,
    MemoryLimits,
    Notes,
    Recall,
    add_lines,
    fold,
    scripted_summary,
    summary_job,
    summary_messages,
)
from llm_agents.memory_service import exchange_lines
from llm_agents.policy import GIFT, MENTION, STATE, Trigger
from llm_agents.prompt import ContextWindow, build_messages

LIMITS = MemoryLimits(max_entries=6, max_bytes=200, summarise_entries=4,
                      summarise_bytes=150, keep_recent=1, line_chars=40, summary_chars=60)


def notes(*lines: str) -> Notes:
    return add_lines(Notes("room", "quinn", "alice"), lines, 1.0, LIMITS)


def test_lines_are_kept_in_order_and_stamped() -> None:
    n = notes("alice: hi", "Quinn: hello")
    assert n.entries == ("alice: hi", "Quinn: hello") and n.updated == 1.0 and n.base == 0


def test_entry_bound_drops_the_oldest_and_counts_them() -> None:
    n = notes(*[f"line {i}" for i in range(10)])
    assert n.entries == tuple(f"line {i}" for i in range(4, 10))
    assert n.base == 4


def test_byte_bound_drops_the_oldest() -> None:
    n = notes(*["é" * 19 for _ in range(6)])  # 38 bytes a line (é is two)
    assert n.size <= LIMITS.max_bytes and len(n.entries) == 5 and n.base == 1


def test_a_line_is_cut_and_its_whitespace_folded() -> None:
    n = notes("a  \n b" + "x" * 100, "   ")
    assert n.entries == (("a b" + "x" * 100)[:39] + "…",)  # blank lines are not kept


def test_summary_wanted_from_the_threshold_keeping_the_newest() -> None:
    assert summary_job(notes("1", "2", "3"), LIMITS) is None
    job = summary_job(notes("1", "2", "3", "4"), LIMITS)
    assert job is not None and job.lines == ("1", "2", "3") and job.start == 0


def test_summary_wanted_past_the_byte_threshold() -> None:
    job = summary_job(notes("x" * 39, "y" * 39, "z" * 39, "w" * 39), MemoryLimits(
        max_entries=10, max_bytes=200, summarise_entries=10, summarise_bytes=150,
        keep_recent=1))
    assert job is not None and len(job.lines) == 3


def test_fold_replaces_the_summarised_lines_only() -> None:
    n = notes("1", "2", "3", "4")
    job = summary_job(n, LIMITS)
    assert job is not None
    n = add_lines(n, ["5"], 2.0, LIMITS)  # said while the summary was made
    out = fold(n, job, "S", 3.0, LIMITS)
    assert out.summary == "S" and out.entries == ("4", "5") and out.base == 3


def test_fold_after_lines_were_dropped_meanwhile() -> None:
    n = notes("1", "2", "3", "4")
    job = summary_job(n, LIMITS)
    assert job is not None
    n = add_lines(n, ["5", "6", "7", "8"], 2.0, LIMITS)  # 1 and 2 fell out
    assert n.base == 2
    out = fold(n, job, "S", 3.0, LIMITS)
    assert out.entries == ("4", "5", "6", "7", "8") and out.base == 3


def test_summary_is_cut_to_its_bound() -> None:
    n = notes("1", "2", "3", "4")
    job = summary_job(n, LIMITS)
    assert job is not None
    assert len(fold(n, job, "s" * 500, 2.0, LIMITS).summary) == LIMITS.summary_chars


def test_scripted_summary_is_deterministic_and_bounded() -> None:
    job = summary_job(notes("alice: my cat is Biscuit", "Quinn: nice", "alice: bye", "x"),
                      LIMITS)
    assert job is not None
    text = scripted_summary(job, 400)
    assert text == SUMMARY_PREFIX + "alice: my cat is Biscuit / Quinn: nice / alice: bye"
    assert text == scripted_summary(job, 400)
    short = scripted_summary(job, 30)
    assert len(short) <= 30 and short.endswith("alice: bye")
    # A second summary carries the first one on, without stacking prefixes.
    again = scripted_summary(summary_job(fold(notes("1", "2", "3", "4"), job, text, 2.0,
                                              MemoryLimits()), LIMITS) or job, 400)
    assert again.count(SUMMARY_PREFIX) == 1


def test_summary_request_names_the_lines_and_the_bound() -> None:
    job = summary_job(notes("alice: my cat is Biscuit", "2", "3", "4"), LIMITS)
    assert job is not None
    msgs = summary_messages("Quinn", job, "with alice", LIMITS)
    assert "alice: my cat is Biscuit" in msgs[1]["content"]
    assert "with alice" in msgs[1]["content"] and "at most 10 words" in msgs[1]["content"]


def test_limits_from_flags_and_their_refusals() -> None:
    lim = MemoryLimits.from_bounds(max_entries=16, max_bytes=2048, retention_days=2)
    assert (lim.summarise_entries, lim.summarise_bytes, lim.keep_recent) == (12, 1536, 4)
    assert lim.retention_s == 2 * 86400
    assert MemoryLimits.from_bounds(max_entries=2).keep_recent == 1
    for bad in ({"max_entries": 1}, {"max_bytes": 100}, {"users_per_room": 0},
                {"retention_days": -1}):
        with pytest.raises(ValueError):
            MemoryLimits.from_bounds(**bad)  # type: ignore[arg-type]


def test_json_round_trip() -> None:
    n = fold(notes("1", "2", "3", "4"), summary_job(notes("1", "2", "3", "4"), LIMITS)
             or pytest.fail("no job"), "S", 5.0, LIMITS)
    assert Notes.from_json("room", "quinn", "alice", n.to_json()) == n


def test_exchange_lines() -> None:
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    said = Trigger(MENTION, 0.0, "alice", "Alice", "quinn, hi")
    assert exchange_lines(quinn, said, "Hello!") == ["Alice: quinn, hi",
                                                      f"{quinn.display_name}: Hello!"]
    gift = Trigger(GIFT, 0.0, "bob", "Bob", "", detail={"gift": "rose", "count": 2})
    assert exchange_lines(quinn, gift, "Thanks")[0] == "Bob sent 2 x rose"
    assert exchange_lines(quinn, Trigger(STATE, 0.0), "Ooh") == [f"{quinn.display_name}: Ooh"]


def test_memory_goes_into_the_prompt_before_the_chat() -> None:
    quinn = load_characters([SHIPPED_DIR])["quinn"]
    window = ContextWindow()
    window.add("bob: hello all")
    trigger = Trigger(MENTION, 0.0, "alice", "Alice", "quinn, remember me?")
    room = add_lines(Notes("demo", "quinn", ""), ["bob: quiz tonight"], 1.0, LIMITS)
    user = fold(notes("alice: my cat is Biscuit", "2", "3", "4"),
                summary_job(notes("alice: my cat is Biscuit", "2", "3", "4"), LIMITS)
                or pytest.fail("no job"), "Alice has a cat, Biscuit", 2.0, LIMITS)
    text = build_messages(quinn, window, trigger, Recall(room, user, "Alice"))[1]["content"]
    assert text.index("What you remember about Alice") < text.index("Alice has a cat")
    assert text.index("Alice has a cat") < text.index("What you remember of this room")
    assert text.index("bob: quiz tonight") < text.index("Recent chat") < text.index(
        "remember me?")
    # Without memory the prompt is what it was.
    assert "remember" not in build_messages(quinn, window, trigger)[1]["content"].replace(
        "remember me", "")
    assert build_messages(quinn, window, trigger, Recall()) == build_messages(
        quinn, window, trigger)
