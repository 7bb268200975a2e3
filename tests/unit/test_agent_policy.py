"""The speak policy: when to speak, cooldowns, priority, bounded queue, stale
cancellation, silence. Pure: time is an argument, no event loop."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_agents.character import Character, Reacts
from llm_agents.policy import (
    GIFT,
    MENTION,
    PRIORITY,
    QUESTION,
    SILENCE,
    STATE,
    PolicyConfig,
    SpeakPolicy,
    Trigger,
    classify_action,
    classify_state,
)

QUINN = Character(name="quinn", display_name="Quinn (quiz master)", persona="p",
                  cooldown_s=5.0,
                  reacts=Reacts(mentions=True, questions=True, gifts=True, silence_s=30.0,
                                sections=("meta",)))


def comment(text: str, user: str = "bob", role: str = "viewer", seq: int = 1) -> dict:
    return {"type": "action", "room": "r", "kind": "comment", "body": {"text": text},
            "from": {"id": user, "name": user.title(), "role": role}, "seq": seq}


def gift(user: str = "bob", seq: int = 2) -> dict:
    return {"type": "action", "room": "r", "kind": "gift", "body": {"gift": "rose", "count": 3},
            "from": {"id": user, "name": user.title(), "role": "viewer"}, "seq": seq}


def test_mentions_questions_and_gifts_are_triggers() -> None:
    t = classify_action(QUINN, comment("hey @quinn"), 1.0)
    assert t is not None and t.kind == MENTION and t.reply_to == {
        "kind": "comment", "seq": 1, "user": "bob"}
    # The display name's first word counts too, case-insensitively.
    assert classify_action(QUINN, comment("QUINN!"), 1.0).kind == MENTION  # type: ignore[union-attr]
    assert classify_action(QUINN, comment("what time is it?"), 1.0).kind == QUESTION  # type: ignore[union-attr]
    g = classify_action(QUINN, gift(), 1.0)
    assert g is not None and g.kind == GIFT and g.detail == {"gift": "rose", "count": 3}
    # Not a word of its name, and not a question: nothing.
    assert classify_action(QUINN, comment("quinnoa salad"), 1.0) is None


def test_agents_never_react_to_agents_or_themselves() -> None:
    assert classify_action(QUINN, comment("quinn?", user="max", role="agent"), 1.0) is None
    assert classify_action(QUINN, comment("quinn?", user="quinn", role="agent"), 1.0) is None


def test_what_a_character_does_not_react_to() -> None:
    quiet = replace(QUINN, reacts=Reacts(mentions=False, questions=False, gifts=False))
    assert classify_action(quiet, comment("quinn?"), 1.0) is None
    assert classify_action(quiet, gift(), 1.0) is None
    assert classify_state(QUINN, {"section": "pinned", "value": {}}, 1.0) is None
    assert classify_state(QUINN, {"section": "meta", "value": {"title": "x"}},
                          1.0).kind == STATE  # type: ignore[union-attr]


def trig(kind: str, at: float, user: str = "u") -> Trigger:
    return Trigger(kind, at, user)


def test_gift_outranks_comment_and_oldest_goes_first_within_a_priority() -> None:
    p = SpeakPolicy(QUINN, PolicyConfig(), 0.0)
    p.offer(trig(MENTION, 1.0, "a"))
    p.offer(trig(MENTION, 2.0, "b"))
    p.offer(trig(GIFT, 3.0, "c"))
    assert p.next(3.0).user == "c"  # type: ignore[union-attr]


def test_cooldown_after_a_reply() -> None:
    p = SpeakPolicy(QUINN, PolicyConfig(), 0.0)
    p.offer(trig(MENTION, 1.0, "a"))
    first = p.next(1.0)
    assert first is not None
    p.started(first, 1.0)
    p.offer(trig(MENTION, 1.5, "b"))
    assert p.next(2.0) is None  # one reply at a time
    p.finished(3.0)
    assert p.next(7.9) is None  # cooling down until 3.0 + 5.0
    assert p.wake_at(7.9) == 8.0
    assert p.next(8.0).user == "b"  # type: ignore[union-attr]


def test_full_queue_drops_the_oldest_lowest_priority() -> None:
    p = SpeakPolicy(QUINN, PolicyConfig(queue_size=3), 0.0)
    p.offer(trig(MENTION, 1.0, "m1"))
    p.offer(trig(GIFT, 2.0, "g1"))
    p.offer(trig(MENTION, 3.0, "m2"))
    dropped = p.offer(trig(GIFT, 4.0, "g2"))
    assert [t.user for t in dropped] == ["m1"]
    # A comment cannot push a gift out: it is itself the oldest lowest left.
    p.offer(trig(STATE, 5.0, "s1"))
    assert sorted(t.user for t in p.queued()) == ["g1", "g2", "m2"]


def test_stale_triggers_are_dropped_and_a_reply_in_flight_is_cancelled() -> None:
    p = SpeakPolicy(QUINN, PolicyConfig(stale_after_s=10.0), 0.0)
    p.offer(trig(MENTION, 1.0, "old"))
    p.offer(trig(MENTION, 20.0, "new"))
    assert p.next(20.0).user == "new"  # type: ignore[union-attr]
    cur = trig(MENTION, 30.0, "x")
    p2 = SpeakPolicy(QUINN, PolicyConfig(stale_after_s=10.0), 0.0)
    p2.started(cur, 30.0)
    assert p2.should_cancel(35.0) is None
    assert p2.should_cancel(40.5) == "stale"
    p2.offer(trig(GIFT, 36.0))
    assert p2.should_cancel(36.0) == "preempted"


def test_equal_priority_does_not_preempt() -> None:
    p = SpeakPolicy(QUINN, PolicyConfig(), 0.0)
    p.started(trig(MENTION, 1.0), 1.0)
    p.offer(trig(QUESTION, 2.0))
    assert p.should_cancel(2.0) is None


def test_silence_timer() -> None:
    p = SpeakPolicy(QUINN, PolicyConfig(), 0.0)
    assert p.next(29.0) is None
    assert p.wake_at(29.0) == 30.0
    t = p.next(30.0)
    assert t is not None and t.kind == SILENCE
    p.started(t, 30.0)
    p.finished(31.0)
    p.observe(40.0)  # someone spoke: the silence starts over
    assert p.next(69.0) is None
    assert p.next(70.0).kind == SILENCE  # type: ignore[union-attr]
    never = SpeakPolicy(replace(QUINN, reacts=Reacts()), PolicyConfig(), 0.0)
    assert never.next(1e6) is None and never.wake_at(1e6) is None


kinds = st.sampled_from(sorted(PRIORITY))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(kinds, st.floats(0, 1000)), max_size=40), st.integers(1, 8))
def test_queue_stays_bounded_and_keeps_the_highest(offers, size) -> None:
    p = SpeakPolicy(QUINN, PolicyConfig(queue_size=size, stale_after_s=1e9), 0.0)
    offered = []
    for kind, at in offers:
        t = trig(kind, at)
        offered.append(t)
        dropped = p.offer(t)
        assert len(p) <= size
        # Nothing dropped outranks anything kept.
        for d in dropped:
            assert all(d.priority <= k.priority for k in p.queued())
    # What comes out comes out by priority, never increasing.
    out = []
    while (t := p.next(0.0)) is not None:  # silence is not due at 0
        out.append(t.priority)
    assert out == sorted(out, reverse=True)
    assert len(out) == min(size, len(offered))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=1, max_size=20), st.floats(0.5, 30))
def test_replies_never_start_within_the_cooldown(times, cooldown) -> None:
    c = replace(QUINN, cooldown_s=cooldown, reacts=Reacts(mentions=True))
    p = SpeakPolicy(c, PolicyConfig(stale_after_s=1e9), 0.0)
    ends: list[float] = []
    now = 0.0
    for t in sorted(times):
        now = max(now, t)
        p.offer(trig(MENTION, t))
        got = p.next(now)
        if got is not None:
            if ends:
                assert now >= ends[-1] + cooldown
            p.started(got, now)
            now += 0.1
            p.finished(now)
            ends.append(now)


def test_a_commentator_speaks_every_n_seconds_whatever_happens() -> None:
    c = replace(QUINN, cooldown_s=0.0, reacts=Reacts(every_s=2.0))
    p = SpeakPolicy(c, PolicyConfig(), 0.0)
    p.observe(1.9)  # activity does not delay it
    assert p.wake_at(1.0) == 2.0 and p.next(1.9) is None
    t = p.next(2.0)
    assert t is not None and t.kind == SILENCE
    p.started(t, 2.0)
    p.finished(2.5)
    assert p.wake_at(2.5) == 4.5


def test_custom_action_kinds_a_character_follows() -> None:
    c = replace(QUINN, reacts=Reacts(mentions=False, kinds=("game.score",)))
    action = {"type": "action", "kind": "game.score", "body": {"home": 2}, "seq": 7,
              "from": {"id": "host", "name": "Host", "role": "host"}}
    t = classify_action(c, action, 1.0)
    assert t is not None and t.kind == "event" and t.detail["body"] == {"home": 2}
    assert t.priority == PRIORITY[STATE]
    assert classify_action(c, {**action, "kind": "poll.vote"}, 1.0) is None
