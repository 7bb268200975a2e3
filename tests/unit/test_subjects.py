"""NATS subject names for room and node ids (room_router.bus_nats): one
token per id, reversible, and never two ids on one subject."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from room_router.bus import room_subject
from room_router.bus_nats import decode_token, encode_token, logical_subject, wire_subject
from wire.frames import ROOM_RE

ROOM_IDS = st.from_regex(ROOM_RE, fullmatch=True)
# What nats-server accepts in a token: no '.', whitespace, '*' or '>'.
TOKEN = re.compile(r"^[^.\s*>]+$")


@settings(deadline=None)
@given(ROOM_IDS)
def test_a_room_id_is_one_valid_token_and_comes_back(room: str) -> None:
    token = encode_token(room)
    assert TOKEN.match(token)
    assert decode_token(token) == room
    wire = wire_subject(room_subject(room), "lr")
    assert wire == f"lr.room.{token}"
    assert logical_subject(wire, "lr") == room_subject(room)


@settings(deadline=None)
@given(ROOM_IDS, ROOM_IDS)
def test_two_ids_never_share_a_subject(a: str, b: str) -> None:
    if a != b:
        assert encode_token(a) != encode_token(b)


@settings(deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_text_roundtrips(text: str) -> None:
    assert decode_token(encode_token(text)) == text
    assert TOKEN.match(encode_token(text))
