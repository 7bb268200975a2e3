"""Moderation's pure pieces: the memory store's semantics (expiry, bounds,
lifting), the immunity rule, the control message and the frames."""

from __future__ import annotations

import asyncio

import pytest

from room_router.moderation import (
    BAN,
    MUTE,
    SYSTEM_BY,
    MemorySanctions,
    Sanction,
    control_message,
    immune,
    parse_control,
)
from wire.errors import TooManySanctions
from wire.outgoing import left_frame, moderated_frame

MOD = {"id": "m", "role": "moderator"}


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def ban(user: str, until: float | None = None, room: str = "r", at: float = 0.0) -> Sanction:
    return Sanction(room, user, BAN, until, "spam", MOD, at)


@pytest.mark.parametrize(("target", "by", "spared"), [
    ("host", "moderator", True),
    ("host", "host", True),
    ("moderator", "moderator", True),
    ("moderator", "host", False),
    ("viewer", "moderator", False),
    ("agent", "host", False),
    ("host", "system", False),
    ("moderator", "system", False),
])
def test_immunity_spares_hosts_and_a_moderator_from_another(target: str, by: str,
                                                            spared: bool) -> None:
    assert immune(target, by) is spared


def test_a_ban_is_read_back_until_it_expires_then_pruned() -> None:
    store = MemorySanctions()
    run(store.put(ban("u", until=100.0), now=0.0))
    found = run(store.get("r", BAN, "u", now=99.0))
    assert found is not None and found.until == 100.0 and found.reason == "spam"
    assert run(store.get("r", MUTE, "u", now=99.0)) is None  # kinds are apart
    assert run(store.get("r2", BAN, "u", now=99.0)) is None  # rooms are apart
    assert run(store.get("r", BAN, "u", now=100.0)) is None
    assert len(store) == 0  # the expired entry was pruned on read


def test_a_permanent_ban_lasts_until_lifted() -> None:
    store = MemorySanctions()
    run(store.put(ban("u"), now=0.0))
    assert run(store.get("r", BAN, "u", now=1e12)) is not None
    assert run(store.remove("r", BAN, "u", now=1.0)) is True
    assert run(store.remove("r", BAN, "u", now=1.0)) is False
    assert run(store.get("r", BAN, "u", now=1.0)) is None


def test_list_is_the_active_ones_oldest_first() -> None:
    store = MemorySanctions()
    run(store.put(ban("b", at=2.0), now=2.0))
    run(store.put(ban("a", at=1.0), now=2.0))
    run(store.put(ban("old", until=5.0, at=0.5), now=2.0))
    assert [s.user for s in run(store.list("r", BAN, now=3.0))] == ["old", "a", "b"]
    assert [s.user for s in run(store.list("r", BAN, now=6.0))] == ["a", "b"]


def test_the_bound_per_room_refuses_a_new_entry_and_prunes_the_expired_first() -> None:
    store = MemorySanctions(max_per_room=2)
    run(store.put(ban("a", until=10.0), now=0.0))
    run(store.put(ban("b"), now=0.0))
    with pytest.raises(TooManySanctions) as err:
        run(store.put(ban("c"), now=5.0))
    assert err.value.extra == {"room": "r", "limit": 2}
    run(store.put(ban("b", until=50.0), now=5.0))  # replacing one is not a new one
    run(store.put(Sanction("r", "c", MUTE, None, "", MOD, 0.0), now=5.0))  # another kind
    run(store.put(ban("other", room="r2"), now=5.0))  # another room
    run(store.put(ban("c"), now=10.0))  # a's ban has expired: room for c
    assert {s.user for s in run(store.list("r", BAN, now=10.0))} == {"b", "c"}


def test_drop_room_forgets_its_bans_and_mutes_only() -> None:
    store = MemorySanctions()
    run(store.put(ban("u"), now=0.0))
    run(store.put(Sanction("r", "u", MUTE, None, "", MOD, 0.0), now=0.0))
    run(store.put(ban("u", room="keep"), now=0.0))
    run(store.drop_room("r"))
    assert run(store.list("r", BAN, 0.0)) == [] and run(store.list("r", MUTE, 0.0)) == []
    assert run(store.get("keep", BAN, "u", 0.0)) is not None


def test_a_sanction_packs_and_unpacks_and_garbage_is_none() -> None:
    s = ban("u", until=12.5)
    assert Sanction.unpack("r", "u", BAN, s.pack()) == s
    assert Sanction.unpack("r", "u", BAN, b"\xc1not msgpack") is None
    assert Sanction.unpack("r", "u", BAN, b"\x80") is None  # {} : fields missing


def test_control_messages_round_trip_and_unknown_ops_are_ignored() -> None:
    msg = parse_control(control_message("ban", "r", "u", 5.0, "why", MOD))
    assert msg is not None and (msg.op, msg.room, msg.user, msg.until, msg.reason) == \
        ("ban", "r", "u", 5.0, "why")
    assert dict(msg.by) == MOD
    close = parse_control(control_message("close", "r", "", None, "", SYSTEM_BY))
    assert close is not None and close.op == "close" and close.by["role"] == "system"
    assert parse_control(control_message("explode", "r", "u", None, "", MOD)) is None
    assert parse_control(b"\x00garbage") is None


def test_left_keeps_its_plain_key_order_and_adds_the_reason_after() -> None:
    assert list(left_frame("r", 3)) == ["type", "room", "ref"]
    assert left_frame("r", None, "banned", until=9.0, message="spam") == \
        {"type": "left", "room": "r", "reason": "banned", "until": 9.0, "message": "spam"}
    assert list(left_frame("r", None, "kicked")) == ["type", "room", "reason"]


def test_moderated_echoes_ref_and_until_only_when_given() -> None:
    assert moderated_frame("r", "kick", None, user="u") == \
        {"type": "moderated", "room": "r", "op": "kick", "user": "u"}
    assert list(moderated_frame("r", "ban", 7, user="u", until=99.0)) == \
        ["type", "room", "op", "user", "until", "ref"]
