"""Authentication: HS256 JWTs with claims ``sub``, ``name``, ``role``,
``rooms``, ``exp`` and the optional ``tier`` (the user's quota tier for the
characters, docs/AGENTS.md).

Roles (docs/PROTOCOL.md, "Roles"): the ``role`` claim is the user's role
everywhere, ``viewer`` (the default) or ``agent``; ``host`` and ``moderator``
are never global: a token whose ``role`` asks for one is refused at
``hello`` (``unauthorized``), so that no token minted the old way stays host
of every room. Elevated roles are granted per room by the ``rooms`` claim, a
map of room ids or patterns (``quiz-*``; ``*`` is every room) to ``viewer``,
``moderator`` or ``host``; in a room it does not name, the token is a
viewer. A grant of any role also admits the user to a private room
(``room_router.roomconfig``). Which grant holds when several match: the
exact room id, else the longest matching pattern (the most specific), else
the first of equal length in the claim's order.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

import jwt

from wire.decode import value_fault
from wire.errors import Unauthorized
from wire.frames import GLOBAL_ROLES, ROOM_PATTERN_RE, ROOM_ROLES, USER_RE, room_pattern

_ALGORITHMS = ["HS256"]
# The value rule's size bound for a name of at most 64 characters: 4 bytes of
# UTF-8 each and a msgpack str16 header. The length check is the real bound;
# value_fault is here for the types (a lone surrogate), never the size.
_NAME_MAX_BYTES = 64 * 4 + 3
# Entries of the ``rooms`` claim: a platform grants a user the rooms it
# hosts or moderates, not a catalogue (a pattern covers a family of rooms).
MAX_ROOM_GRANTS = 32
TIER_RE = re.compile(r"[a-z0-9_-]{0,32}\Z")


@dataclass(frozen=True, slots=True)
class Grant:
    """One entry of the ``rooms`` claim."""

    pattern: str
    role: str
    regex: re.Pattern[str] | None  # None: an exact room id
    # Granted by the join proxy for this connection, not by the token.
    proxied: bool = False


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    name: str
    role: str
    exp: float
    # The ``rooms`` claim, most specific first (see the module docstring).
    grants: tuple[Grant, ...] = field(default=())
    # What the connect proxy attached to the user (docs/BACKEND.md): a map
    # obeying the value rule, shown with the user as ``info``; None: nothing.
    info: dict[str, Any] | None = None
    # The ``tier`` claim: the user's quota tier for the characters
    # (docs/AGENTS.md, "Quota tiers"); "" when the token has none.
    tier: str = ""

    def public(self) -> dict[str, Any]:
        """How the wire shows this user outside any room (the ``welcome``'s
        ``user``)."""
        return self.public_in(self.role)

    def public_in(self, role: str) -> dict[str, Any]:
        """How the wire shows this user in a room where its role is
        ``role`` (an action's ``from``, a presence entry)."""
        if self.info is None:
            return {"id": self.user, "name": self.name, "role": role}
        return {"id": self.user, "name": self.name, "role": role, "info": self.info}

    def with_room_role(self, room: str, role: str, keep: Collection[str]) -> Identity:
        """This identity with ``role`` granted in ``room`` (the join proxy's
        answer; it also admits to a private room), before every grant of the
        token. Earlier such grants hold only for the rooms in ``keep`` (the
        connection's rooms), so they are bounded by the room limit."""
        proxied = tuple(g for g in self.grants
                        if g.proxied and g.pattern != room and g.pattern in keep)
        token = tuple(g for g in self.grants if not g.proxied)
        return replace(self, grants=(Grant(room, role, None, True), *proxied, *token))

    def grant_for(self, room: str) -> Grant | None:
        """The grant of the ``rooms`` claim that holds in ``room``, if any."""
        for grant in self.grants:
            if grant.regex is None:
                if grant.pattern == room:
                    return grant
            elif grant.regex.match(room):
                return grant
        return None

    def role_in(self, room: str) -> str:
        """The user's role in ``room``: an elevated grant's, else its global
        role (a ``viewer`` grant admits to a private room, it lowers no one:
        an agent with one is still an agent)."""
        grant = self.grant_for(room)
        return grant.role if grant is not None and grant.role != "viewer" else self.role


def parse_grants(claim: object) -> tuple[Grant, ...]:
    """The ``rooms`` claim as grants, most specific first; ValueError saying
    what is wrong with it."""
    if claim is None:
        return ()
    if not isinstance(claim, dict):
        raise ValueError("the rooms claim must map room ids or patterns to roles")
    if len(claim) > MAX_ROOM_GRANTS:
        raise ValueError(f"the rooms claim names at most {MAX_ROOM_GRANTS} rooms or patterns")
    grants = []
    for i, (pattern, role) in enumerate(claim.items()):
        if not isinstance(pattern, str) or not ROOM_PATTERN_RE.match(pattern):
            raise ValueError("a rooms claim key is a room id or pattern of 1..64 of "
                             "[A-Za-z0-9_.:-*]")
        if role not in ROOM_ROLES:
            raise ValueError(f"a rooms claim role is one of {', '.join(ROOM_ROLES)}")
        exact = "*" not in pattern
        grants.append((0 if exact else 1, -len(pattern), i,
                       Grant(pattern, role, None if exact else room_pattern(pattern))))
    return tuple(g for *_, g in sorted(grants, key=lambda t: t[:3]))


def verify_token(token: object, secret: str, now: float) -> Identity:
    """The identity in ``token``, or Unauthorized saying why not. ``now`` is
    wall-clock seconds (the expiry is checked against it, not PyJWT's clock)."""
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise Unauthorized("a token string is required")
    try:
        claims = jwt.decode(token, secret, algorithms=_ALGORITHMS,
                            options={"verify_exp": False, "require": ["sub", "exp"]})
    except jwt.InvalidSignatureError:
        raise Unauthorized("the token's signature is not valid") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"the token is not valid: {exc}") from None
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise Unauthorized("the token's exp claim must be a number")
    if exp <= now:
        raise Unauthorized("the token has expired", expired=True)
    user = claims.get("sub")
    if not isinstance(user, str) or not USER_RE.match(user):
        raise Unauthorized("the token's sub claim is not a valid user id")
    role = claims.get("role", "viewer")
    if role not in GLOBAL_ROLES:
        if role in ROOM_ROLES:
            raise Unauthorized(f"role {role!r} is granted per room: put it in the token's "
                               "rooms claim ({\"<room or pattern>\": \"" + role + "\"})")
        raise Unauthorized(f"the token's role must be one of {', '.join(GLOBAL_ROLES)}")
    try:
        grants = parse_grants(claims.get("rooms"))
    except ValueError as exc:
        raise Unauthorized(str(exc)) from None
    name = claims.get("name", user)
    # The name goes out in every action of the user: it obeys the value rule
    # (wire/decode.py) like any value a client sends, else it could not
    # be encoded (a lone surrogate, which JSON's escapes allow).
    if (not isinstance(name, str) or not 0 < len(name) <= 64
            or value_fault(name, _NAME_MAX_BYTES) is not None):
        raise Unauthorized("the token's name claim must be a string of 1..64 chars")
    tier = claims.get("tier", "")
    if not isinstance(tier, str) or not TIER_RE.match(tier):
        raise Unauthorized("the token's tier claim must be 0..32 of [a-z0-9_-]")
    return Identity(user, name, role, float(exp), grants, tier=tier)


def role_everywhere(role: str) -> tuple[str, dict[str, str] | None]:
    """The (``role``, ``rooms``) claims that make a user ``role`` in every
    room: for tools that play a host (load tests, fuzzers, tests), never
    for the platform's users, which get grants of the rooms they run."""
    if role in ROOM_ROLES and role != "viewer":
        return "viewer", {"*": role}
    return role, None


def mint_token(secret: str, user: str, name: str, role: str, now: float,
               ttl: float = 3600.0, rooms: dict[str, str] | None = None) -> str:
    """A token as the backend mints it (``role``: global, ``rooms``: the
    per-room grants; see the module docstring)."""
    claims: dict[str, object] = {"sub": user, "name": name, "role": role,
                                 "exp": int(now + ttl)}
    if rooms:
        claims["rooms"] = rooms
    return jwt.encode(claims, secret, algorithm="HS256")
