"""Authentication: HS256 JWTs with claims ``sub``, ``name``, ``role``, ``exp``."""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from wire.decode import value_fault
from wire.errors import Unauthorized
from wire.frames import ROLES, USER_RE

_ALGORITHMS = ["HS256"]
# The value rule's size bound for a name of at most 64 characters: 4 bytes of
# UTF-8 each and a msgpack str16 header. The length check is the real bound;
# value_fault is here for the types (a lone surrogate), never the size.
_NAME_MAX_BYTES = 64 * 4 + 3


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    name: str
    role: str
    exp: float

    def public(self) -> dict[str, str]:
        """How the wire shows this user: an action's ``from``, the
        ``welcome``'s ``user`` (docs/PROTOCOL.md)."""
        return {"id": self.user, "name": self.name, "role": self.role}


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
    if role not in ROLES:
        raise Unauthorized(f"the token's role must be one of {', '.join(ROLES)}")
    name = claims.get("name", user)
    # The name goes out in every action of the user: it obeys the value rule
    # (wire/decode.py) like any value a client sends, else it could not
    # be encoded (a lone surrogate, which JSON's escapes allow).
    if (not isinstance(name, str) or not 0 < len(name) <= 64
            or value_fault(name, _NAME_MAX_BYTES) is not None):
        raise Unauthorized("the token's name claim must be a string of 1..64 chars")
    return Identity(user, name, role, float(exp))


def mint_token(secret: str, user: str, name: str, role: str, now: float,
               ttl: float = 3600.0) -> str:
    return jwt.encode({"sub": user, "name": name, "role": role, "exp": int(now + ttl)},
                      secret, algorithm="HS256")
