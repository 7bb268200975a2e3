"""The memory history store (room_router/history.py): at most ``size``
entries per room, entries past the TTL not answered, rooms idle past their
TTL forgotten, at most ``max_rooms`` rooms, retract by id; and one page of
a room listing (room_router/nodes.py ``room_page``)."""

from __future__ import annotations

from room_router.history import Entry, MemoryHistoryStore
from room_router.nodes import room_page


def entry(n: int, ts: float) -> Entry:
    return Entry(f"id-{n}", ts, f"frame-{n}".encode())


def ids(entries: list[Entry]) -> list[str]:
    return [e.id for e in entries]


def test_keeps_the_newest_size_entries_oldest_first() -> None:
    store = MemoryHistoryStore()
    for n in range(1, 8):
        store.add("r", entry(n, 100.0 + n), size=3, ttl=60, now=100.0 + n)
    assert ids(store.read("r", 10, 60, 108.0)) == ["id-5", "id-6", "id-7"]
    assert ids(store.read("r", 2, 60, 108.0)) == ["id-6", "id-7"]
    assert store.read("other", 10, 60, 108.0) == []


def test_entries_past_the_ttl_are_not_answered_and_an_idle_room_goes() -> None:
    store = MemoryHistoryStore()
    store.add("r", entry(1, 100.0), size=10, ttl=30, now=100.0)
    store.add("r", entry(2, 120.0), size=10, ttl=30, now=120.0)
    assert ids(store.read("r", 10, 30, 135.0)) == ["id-2"]
    assert len(store) == 1
    assert store.read("r", 10, 30, 150.0) == []  # nothing written for 30 s
    assert len(store) == 0


def test_a_smaller_size_after_a_reload_trims_the_room() -> None:
    store = MemoryHistoryStore()
    for n in range(1, 6):
        store.add("r", entry(n, 100.0), size=5, ttl=60, now=100.0)
    store.add("r", entry(6, 101.0), size=2, ttl=60, now=101.0)
    assert ids(store.read("r", 10, 60, 101.0)) == ["id-5", "id-6"]
    assert store.drop("r", "id-5")
    assert not store.drop("r", "id-1")  # trimmed away


def test_retract_drops_the_entry_and_only_it() -> None:
    store = MemoryHistoryStore()
    for n in range(1, 4):
        store.add("r", entry(n, 100.0), size=3, ttl=60, now=100.0)
    assert store.drop("r", "id-2")
    assert not store.drop("r", "id-2")
    assert not store.drop("nowhere", "id-1")
    assert ids(store.read("r", 10, 60, 100.0)) == ["id-1", "id-3"]
    # The freed place takes the next entry without losing an old one.
    store.add("r", entry(4, 101.0), size=3, ttl=60, now=101.0)
    assert ids(store.read("r", 10, 60, 101.0)) == ["id-1", "id-3", "id-4"]


def test_the_number_of_rooms_is_bounded_expired_rooms_go_first() -> None:
    store = MemoryHistoryStore(max_rooms=3)
    store.add("old", entry(1, 100.0), size=5, ttl=10, now=100.0)  # expires at 110
    store.add("a", entry(2, 105.0), size=5, ttl=100, now=105.0)
    store.add("b", entry(3, 106.0), size=5, ttl=100, now=106.0)
    store.add("c", entry(4, 120.0), size=5, ttl=100, now=120.0)
    assert len(store) == 3
    assert store.read("old", 5, 10, 120.0) == []
    # None expired: the room whose last write is oldest makes room.
    store.add("d", entry(5, 121.0), size=5, ttl=100, now=121.0)
    assert len(store) == 3
    assert store.read("a", 5, 100, 121.0) == []
    assert ids(store.read("b", 5, 100, 121.0)) == ["id-3"]


def test_room_page_filters_sorts_and_pages() -> None:
    counts = {"quiz-2": 3, "quiz-1": 1, "talk-1": 5, "quiz-3": 0, "quiz-4": 2}
    def count(room: str) -> int:
        return counts[room]

    assert room_page(counts, "quiz-", "", 2, count) == [("quiz-1", 1), ("quiz-2", 3)]
    assert room_page(counts, "quiz-", "quiz-2", 2, count) == [("quiz-4", 2)]
    assert room_page(counts, "", "", 10, count)[-1] == ("talk-1", 5)
    assert room_page(counts, "none", "", 10, count) == []
