"""The claims of the fuzzers' tokens, pure: which grants (the ``rooms``
claim) and which quota tier (the ``tier`` claim) a connection's token holds.

Good profiles grant roles in some fuzz rooms only, by exact id and by
pattern, so a connection is host in one room and a viewer in the next (ops
against other users' rooms) and the private room (fz-4) admits some and not
others; bad profiles are refused at ``hello`` (``unauthorized``): a claim
that is no map, past its 32 entries, with a key or role that is none, a
token past its 4,096 characters, a global host, a tier that is none.

No claim a fuzzer can use ever covers the canary's room (``canary-<hex>``):
every good key starts with ``fz-``, so whatever a fuzzer's moderation can
do, it cannot do it to the canary.
"""

from __future__ import annotations

from typing import Any

# name -> (global role, rooms claim, tier claim, other claims); None: absent.
Profile = tuple[str, Any, Any, dict[str, Any] | None]

GOOD: dict[str, Profile] = {
    "viewer": ("viewer", None, None, None),
    "host": ("viewer", {"fz-*": "host"}, None, None),
    "moderator": ("viewer", {"fz-*": "moderator"}, None, None),
    # Host of one room, moderator of others, a viewer grant for the private
    # room, nothing in the rest (fz-1, fz-3, fz-6, fz-7).
    "mixed": ("viewer", {"fz-0": "host", "fz-2": "moderator", "fz-4": "viewer",
                         "fz-5*": "moderator"}, None, None),
    # The most specific grant wins: host of fz-2, a viewer in the others.
    "specific": ("viewer", {"fz-*": "viewer", "fz-2": "host", "fz-2*": "moderator"}, None, None),
    # 32 entries, the bound, each a pattern of fuzz rooms.
    "full": ("viewer", {f"fz-{i}*" if i < 8 else f"fz-x{i}*": "moderator"
                        for i in range(32)}, None, None),
    # 32 keys of 64 characters: the claim at its bounds, under 4,096.
    "long_keys": ("viewer", {f"fz-{i:02d}" + "y" * 59: "host" for i in range(32)}, None, None),
    "tier": ("viewer", None, "gold", None),
    "tier_empty": ("viewer", {"fz-3": "host"}, "", None),
    "tier_unknown": ("viewer", None, "no-such-tier_32-chars-long-xxxxx", None),
    "agent": ("agent", {"fz-6": "host"}, None, None),
}

BAD: dict[str, Profile] = {
    "rooms_not_map": ("viewer", ["fz-0"], None, None),
    "rooms_string": ("viewer", "fz-*", None, None),
    "rooms_too_many": ("viewer", {f"fz-{i}": "host" for i in range(33)}, None, None),
    "rooms_bad_role": ("viewer", {"fz-0": "owner"}, None, None),
    "rooms_role_not_str": ("viewer", {"fz-0": 1}, None, None),
    "rooms_bad_key": ("viewer", {"fz 0": "host"}, None, None),
    "rooms_long_key": ("viewer", {"fz-" + "x" * 62: "host"}, None, None),
    "rooms_empty_key": ("viewer", {"": "host"}, None, None),
    # A token past 4,096 characters.
    "oversized": ("viewer", {"fz-0": "host"}, None, {"pad": "p" * 4000}),
    "global_host": ("host", None, None, None),
    "global_moderator": ("moderator", {"fz-0": "host"}, None, None),
    "tier_upper": ("viewer", None, "GOLD", None),
    "tier_long": ("viewer", None, "t" * 33, None),
    "tier_int": ("viewer", None, 3, None),
    "tier_bad_char": ("viewer", None, "gold!", None),
}


def claims(user: str, profile: Profile, now: float, ttl: float = 86400.0) -> dict[str, Any]:
    """The claims of ``user``'s token in ``profile``."""
    role, rooms, tier, extra = profile
    out: dict[str, Any] = {**(extra or {}), "sub": user, "name": user, "role": role,
                           "exp": int(now + ttl)}
    if rooms is not None:
        out["rooms"] = rooms
    if tier is not None:
        out["tier"] = tier
    return out
