"""State versions: total/partial bookkeeping, compare-and-set, diffs, snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from state_versions.versions import RoomState
from wire.errors import VersionConflict

sections = st.sampled_from(["meta", "pinned", "scoreboard", "stage", "stage.bot"])
changes = st.lists(st.tuples(sections, st.integers()), max_size=60)


@given(changes)
def test_total_is_sum_of_partials_and_grows_by_one_per_change(seq) -> None:
    state = RoomState("r")
    for i, (section, value) in enumerate(seq, start=1):
        change = state.apply(section, value)
        assert change.total == i
        assert state.total == sum(state.versions().values())


@given(changes, changes)
def test_replaying_changed_sections_onto_total_n_gives_total_n_plus_k(first, then) -> None:
    """A client at total N that applies the sections changed since its
    versions ends with exactly the server's sections and total N+k."""
    server = RoomState("r")
    for section, value in first:
        server.apply(section, value)
    client_versions = server.versions()
    client_values = {s.name: s.value for s in server.changed_since({})}
    n = server.total
    for section, value in then:
        server.apply(section, value)
    outdated = server.changed_since(client_versions)
    for s in outdated:
        client_versions[s.name] = s.partial
        client_values[s.name] = s.value
    assert sum(client_versions.values()) == n + len(then) == server.total
    assert client_versions == server.versions()
    assert client_values == {s.name: s.value for s in server.changed_since({})}
    # Only sections that actually moved are sent.
    assert {s.name for s in outdated} == {section for section, _ in then}


@given(changes)
def test_nothing_is_outdated_for_a_client_that_is_up_to_date(seq) -> None:
    state = RoomState("r")
    for section, value in seq:
        state.apply(section, value)
    assert state.changed_since(state.versions()) == []


@given(changes, sections, st.integers(min_value=0, max_value=100))
def test_compare_and_set_applies_only_at_the_expected_version(seq, section, expected) -> None:
    state = RoomState("r")
    for s, value in seq:
        state.apply(s, value)
    current = state.versions().get(section, 0)
    before = state.total
    if expected == current:
        change = state.apply(section, "new", expected)
        assert change.partial == current + 1 and change.total == before + 1
    else:
        with pytest.raises(VersionConflict) as info:
            state.apply(section, "new", expected)
        assert info.value.extra["current"] == current
        assert state.total == before  # a refused write changes nothing


def test_snapshot_is_immutable_after_later_changes() -> None:
    state = RoomState("r")
    state.apply("meta", {"title": "a"})
    snap = state.snapshot()
    assert state.snapshot() is snap  # cached while nothing changes
    state.apply("meta", {"title": "b"})
    assert snap.total == 1 and snap.sections["meta"].value == {"title": "a"}
    assert state.snapshot().total == 2


def test_expected_zero_means_create_only() -> None:
    state = RoomState("r")
    state.apply("pinned", "x", expected=0)
    with pytest.raises(VersionConflict):
        state.apply("pinned", "y", expected=0)
