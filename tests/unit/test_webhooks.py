"""The webhook signature (with the documented test vector), the batch cut,
the backoff, and the event builders: pure."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from room_router.events import (
    MAX_MEMBERS_PER_EVENT,
    EventIds,
    MemorySink,
    members_changed,
    moderation,
)
from room_router.webhooks import Backoff, batch_body, cut_batch, signature, verify

# The test vector of docs/BACKEND.md ("Verifying the signature"); checked
# independently with: printf '%s' '<t>.<body>' | openssl dgst -sha256 -hmac <secret>
SECRET = "whsec_liveroom_test_vector"
T = 1733320000
BODY = (b'{"events":[{"id":"a1-1","type":"room.opened","room":"demo",'
        b'"ts":1733320000.0,"data":{"node":"edge-1"}}]}')
HEADER = "t=1733320000,v1=b0246b0fc736ac3a0e17b31b06c04d0c3d9baa4b24066e3473e4aca167fd6779"


def test_signature_matches_the_documented_vector() -> None:
    assert signature(SECRET, T, BODY) == HEADER


def test_verify_accepts_the_vector_within_the_tolerance() -> None:
    assert verify(SECRET, HEADER, BODY, now=T + 299)
    assert verify(SECRET, HEADER, BODY, now=T - 299)


def test_verify_refuses_tampering_replays_and_garbage() -> None:
    assert not verify(SECRET, HEADER, BODY + b" ", now=T)
    assert not verify("another-secret-entirely", HEADER, BODY, now=T)
    assert not verify(SECRET, HEADER, BODY, now=T + 301)  # a replay, too late
    assert not verify(SECRET, HEADER.replace("t=1733320000", "t=1733320001"), BODY, now=T)
    assert not verify(SECRET, "", BODY, now=T)
    assert not verify(SECRET, "v1=abc", BODY, now=T)
    assert not verify(SECRET, "t=x,v1=" + "0" * 64, BODY, now=T)


def test_verify_takes_any_of_several_v1_signatures() -> None:
    """A secret being rotated: the header may carry two v1 signatures."""
    other = signature("old-secret-0123456789", T, BODY).rpartition("v1=")[2]
    assert verify(SECRET, f"{HEADER},v1={other}", BODY, now=T)


def test_batch_body_is_the_events_array() -> None:
    assert json.loads(batch_body([b'{"id":"1"}', b'{"id":"2"}'])) == {
        "events": [{"id": "1"}, {"id": "2"}]}
    assert json.loads(batch_body([])) == {"events": []}


def test_cut_batch_bounds_count_and_bytes() -> None:
    assert cut_batch([10] * 500, 100, 1 << 20) == 100
    assert cut_batch([100] * 10, 100, 350) == 3
    assert cut_batch([1000, 10], 100, 500) == 1  # too big alone: goes alone
    assert cut_batch([], 100, 500) == 0


@given(st.lists(st.integers(1, 5000), max_size=300), st.integers(1, 200),
       st.integers(64, 100_000))
def test_cut_batch_takes_a_nonempty_prefix_within_bounds(sizes: list[int], n: int,
                                                        limit: int) -> None:
    k = cut_batch(sizes, n, limit)
    assert (k == 0) == (not sizes)
    assert k <= n
    if k > 1:
        assert sum(s + 1 for s in sizes[:k]) <= limit


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    b = Backoff(base=0.5, cap=30.0)
    assert b.delay(1, 0.999) < 0.5
    assert b.delay(3, 0.999) < 2.0 <= b.delay(4, 0.999)
    assert b.delay(50, 0.999) <= 30.0
    assert b.delay(50, 0.0) == 0.25  # never a busy loop


def test_event_ids_are_unique_and_prefixed() -> None:
    a, b = EventIds(), EventIds()
    ids = [a.next() for _ in range(100)] + [b.next() for _ in range(100)]
    assert len(set(ids)) == 200


def test_memory_sink_stamps_the_schema() -> None:
    sink = MemorySink(clock=lambda: 12.5)
    sink.emit("r", "moderation", moderation("ban", "u2", "u1", duration=60.0))
    (ev,) = sink.events
    assert set(ev) == {"id", "type", "room", "ts", "data"}
    assert ev["room"] == "r" and ev["ts"] == 12.5
    assert ev["data"] == {"op": "ban", "target": "u2", "by": "u1", "duration": 60.0}


def test_members_changed_splits_big_ticks_in_order() -> None:
    joined = {f"u{i:04d}" for i in range(MAX_MEMBERS_PER_EVENT + 10)}
    parts = members_changed("n", joined, {"gone"})
    assert len(parts) == 2
    assert [u for p in parts for u in p["joined"]] == sorted(joined)
    assert parts[-1]["left"] == ["gone"]
    assert members_changed("n", set(), set()) == []
