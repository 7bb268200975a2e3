"""The fuzzer's inputs that its canary check depends on (loadtest/fuzz):
no token a fuzzer can use holds a grant for the canary's room, every token
of a bad profile is refused at hello, and the backend API requests never
name the canary's room or users."""

from __future__ import annotations

import random
import time

import jwt
import pytest

from edge.auth import verify_token
from loadtest.fuzz.api_requests import api_request
from loadtest.fuzz.payloads import MODERATE_OPS, ROOMS, moderate_frame, valid_frame
from loadtest.fuzz.tokens import BAD, GOOD, claims
from wire.errors import Unauthorized

SECRET = "s" * 32
CANARY_ROOM = "canary-0123456789ab"


def _token(user: str, profile: str) -> str:
    spec = GOOD.get(profile) or BAD[profile]
    return jwt.encode(claims(user, spec, time.time()), SECRET, algorithm="HS256")


@pytest.mark.parametrize("profile", sorted(GOOD))
def test_good_profiles_are_accepted_and_never_elevated_in_the_canary_room(profile: str
                                                                            ) -> None:
    identity = verify_token(_token("fz-u1", profile), SECRET, time.time())
    assert identity.grant_for(CANARY_ROOM) is None
    assert identity.role_in(CANARY_ROOM) in ("viewer", "agent")


def test_some_good_profiles_moderate_some_fuzz_rooms_and_not_others() -> None:
    mixed = verify_token(_token("fz-u1", "mixed"), SECRET, time.time())
    assert [mixed.role_in(r) for r in ROOMS] == [
        "host", "viewer", "moderator", "viewer", "viewer", "moderator", "viewer", "viewer"]


@pytest.mark.parametrize("profile", sorted(BAD))
def test_bad_profiles_are_refused(profile: str) -> None:
    with pytest.raises(Unauthorized):
        verify_token(_token("fz-u1", profile), SECRET, time.time())


def test_api_requests_never_name_the_canary() -> None:
    rng = random.Random(1)
    routes = set()
    for _ in range(5000):
        route, (_method, path, body) = api_request(rng, {"fz-0": ["abc-1"]})
        routes.add(route)
        assert "canary-sender" not in repr(body) and "canary-receiver" not in repr(body)
        assert not path.startswith("/v1/rooms/canary-0")
    assert len(routes) == 16


def test_moderate_frames_cover_every_op_and_retract_names_an_id() -> None:
    rng = random.Random(2)
    frames = [moderate_frame(rng, "fz-0", action_ids=["abc-1"]) for _ in range(500)]
    assert {f["op"] for f in frames} >= set(MODERATE_OPS)
    assert all("id" in f for f in frames if f["op"] == "retract")
    actions = [valid_frame(rng, ftype="action") for _ in range(200)]
    assert any("id" in f for f in actions)
