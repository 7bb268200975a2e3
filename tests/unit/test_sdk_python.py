"""The Python SDK's pure parts (clients/python): backoff, token expiry and
renewal time, close and hello decisions, the room state rules, the peer
cursor and acknowledgements, action de-duplication."""

from __future__ import annotations

import random
import time

from clients.python.inbox import PeerCursor, ack_upto
from clients.python.policy import (
    GIVE_UP,
    RECONNECT,
    RENEW_TOKEN,
    Backoff,
    after_close,
    after_hello_error,
    refresh_delay,
    token_expiry,
)
from clients.python.roomstate import RoomState, SeenIds
from tests.support import token


def test_backoff_grows_to_its_cap_with_full_jitter_and_resets() -> None:
    b = Backoff(base=0.1, cap=1.0, rng=random.Random(7))
    waits = [b.next() for _ in range(12)]
    ceilings = [min(1.0, 0.1 * 2 ** n) for n in range(12)]
    assert all(0.0 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    assert max(waits[6:]) > 0.2  # jitter spreads up to the cap, not stuck near 0
    b.reset()
    assert b.next() <= 0.1


def test_token_expiry_reads_exp_without_the_secret() -> None:
    before = time.time()
    exp = token_expiry(token("alice", ttl=60))
    assert exp is not None and before + 58 <= exp <= before + 61
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.!!!.c") is None


def test_refresh_before_expiry_margin_or_a_quarter_of_what_is_left() -> None:
    assert refresh_delay(None, 100.0) is None
    assert refresh_delay(1100.0, 100.0, margin=30) == 970.0
    assert refresh_delay(104.0, 100.0, margin=30) == 3.0  # a short token: a quarter early
    assert refresh_delay(90.0, 100.0) == 0.0  # already expired: now


def test_close_codes_and_hello_refusals() -> None:
    assert after_close(None) == RECONNECT  # killed server, lost network
    assert after_close(1006) == RECONNECT
    assert after_close(4100) == RECONNECT and after_close(4101) == RECONNECT
    assert after_close(4200) == RENEW_TOKEN
    assert after_close(4001) == GIVE_UP and after_close(4005) == GIVE_UP
    assert after_close(1000) == GIVE_UP
    assert after_hello_error({"code": "unauthorized", "expired": True}) == RENEW_TOKEN
    assert after_hello_error({"code": "unauthorized"}) == GIVE_UP
    assert after_hello_error({"code": "unavailable"}) == RECONNECT
    assert after_hello_error({"code": "too_many_connections"}) == GIVE_UP


def joined(epoch: str, versions: dict[str, int], sections: dict[str, object]
           ) -> dict[str, object]:
    return {"type": "joined", "epoch": epoch, "total": sum(versions.values()),
            "versions": versions,
            "sections": [{"section": s, "partial": versions[s], "value": v}
                         for s, v in sections.items()]}


def state(section: str, partial: int, total: int, value: object) -> dict[str, object]:
    return {"type": "state", "section": section, "partial": partial, "total": total,
            "value": value}


def test_room_state_follows_the_versions_rules() -> None:
    s = RoomState()
    s.snapshot(joined("e1", {"a": 1, "b": 2}, {"a": "A1", "b": "B2"}))
    assert s.values == {"a": "A1", "b": "B2"} and not s.needs_sync()
    assert s.resume_args() == ({"a": 1, "b": 2}, "e1")
    assert not s.apply(state("a", 1, 3, "old"))  # not above: ignored
    assert s.apply(state("a", 3, 5, "A3"))  # a jump within one section: latest wins
    assert s.values["a"] == "A3" and not s.needs_sync()
    assert s.apply(state("b", 4, 8, "B4"))  # total 8 but 3 + 4 = 7: a change was missed
    assert s.needs_sync()
    # A patch with the same epoch keeps what it does not mention; a section
    # gone from versions goes.
    s.snapshot({"type": "sync", "epoch": "e1", "total": 8, "versions": {"a": 4, "b": 4},
                "sections": [{"section": "a", "partial": 4, "value": "A4"}]})
    assert s.values == {"a": "A4", "b": "B4"} and not s.needs_sync()
    # Another epoch: everything held is forgotten, the reply replaces it.
    s.snapshot(joined("e2", {"c": 1}, {"c": "C1"}))
    assert s.values == {"c": "C1"} and s.versions == {"c": 1} and s.epoch == "e2"


def test_a_lower_total_means_the_store_started_over() -> None:
    s = RoomState()
    s.snapshot(joined("e1", {"a": 5}, {"a": 1}))
    assert not s.apply(state("a", 1, 1, "new store"))
    assert s.needs_sync()


def test_peer_cursor_hands_each_message_once_and_acks_what_was_shown() -> None:
    c = PeerCursor(3)
    assert not c.fresh({"seq": 3}) and c.fresh({"seq": 5})
    c.done({"seq": 5})
    assert not c.fresh({"seq": 5}) and not c.fresh({"seq": 4})
    assert ack_upto(cursor=5, shown=5, acked=0) == 5
    assert ack_upto(cursor=5, shown=2, acked=0) == 2  # the server would clamp anyway
    assert ack_upto(cursor=5, shown=5, acked=5) is None
    assert ack_upto(cursor=0, shown=9, acked=0) is None  # nothing processed yet


def test_seen_ids_drop_repeats_and_stay_bounded() -> None:
    seen = SeenIds(size=3)
    assert seen.first_time("a") and not seen.first_time("a")
    for x in "bcd":
        assert seen.first_time(x)
    assert seen.first_time("a")  # pushed out by newer ids
    assert seen.first_time(None) and seen.first_time(None)  # no id: always shown
