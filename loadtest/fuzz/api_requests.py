"""The backend API's routes as the HTTP attacker sends them, pure: a
``random.Random`` in, (method, path, honest body) out, the body then shaped
(mutated, replaced by bytes, oversized) by ``http_attacker.http_request``.

Moderation (bans and mutes: add, list, lift; kick, disconnect, close a
room), presence, history, retract, room info and the listing (bad
``limit``, ``cursor`` and ``prefix``), backend peer messages (one
addressee and many: good lists, empty, past 1,000, duplicates, ids that are
none), the rooms config, and seats (seat, unseat, list).

Paths name the fuzz rooms and users, now and then a part that is none;
never the canary's room or users (the backend key may do anything to a
room: an attack is what a client does). The ops that end connections
(disconnect, close a room) are drawn less often than the rest, so that
the fuzzers' connections live long enough to reach the other checks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from loadtest.fuzz.payloads import ROOMS, USERS, honest_value, nasty

CHARACTERS = ["quinn", "max", "sage"]
# Seat routes name only fuzz rooms or parts no room id matches, so that the
# end of a run can take back every seat the fuzzers took (``unseat``).
BAD_ROOM_PARTS = ["x" * 65, "a%20b", "%00", "%C3%A9", "a%2Fb", "..", "*"]

Route = tuple[str, str, Any]


def path_part(rng: random.Random, pool: list[str], odd: float = 0.2) -> str:
    """A path part: one of ``pool``, or one time in five a nasty value."""
    if rng.random() >= odd:
        return rng.choice(pool)
    return quote(str(nasty(rng))[:200], safe="", errors="surrogatepass")


def _seconds(rng: random.Random) -> Any:
    return rng.choice([1, 2, 5, 60, 31_622_400, 31_622_401, 0, -1, 1.5, "60", None, True])


def _reason(rng: random.Random) -> Any:
    return rng.choice(["spam", "", "x" * 200, "x" * 201, "é" * 60, 5, None])


def _sanction_body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"user": path_part(rng, USERS, 0.1)}
    if rng.random() < 0.7:
        body["seconds"] = _seconds(rng) if rng.random() < 0.3 else rng.choice([1, 5, 30])
    if rng.random() < 0.4:
        body["reason"] = _reason(rng)
    return body


def _query(rng: random.Random, names: list[str]) -> str:
    """A query string of some of ``names``, good values and bad."""
    values = {"limit": ["1", "5", "100", "1000", "1001", "0", "-1", "x", "1e3", "9" * 20, ""],
              "cursor": ["fz-3", "fz-", "", "a b", "x" * 65, "%00", "é"],
              "prefix": ["fz-", "fz-1", "", "*", "x" * 65, "a/b", "%25", "canary-nope"]}
    parts = [f"{n}={quote(rng.choice(values[n]), safe='%')}" for n in names
             if rng.random() < 0.6]
    return "?" + "&".join(parts) if parts else ""


def _recipients(rng: random.Random) -> Any:
    pick = rng.randrange(8)
    if pick < 3:
        return rng.sample(USERS, rng.randrange(1, 6))
    if pick == 3:
        return [rng.choice(USERS)] * rng.choice([2, 1000])  # duplicates: one each
    if pick == 4:
        return (USERS * 32)[:rng.choice([1000, 1001])]
    if pick == 5:
        return rng.choice([[], "fz-u1", None, {"fz-u1": 1}, 7])
    if pick == 6:
        return [rng.choice(USERS), nasty(rng)]
    return [rng.choice(USERS), "x" * 65, "", "a b"]


def _message(rng: random.Random) -> dict[str, Any]:
    return {"id": rng.choice([f"api-{rng.randrange(10**4)}", "x" * 64, "x" * 65, "", 5]),
            "body": honest_value(rng)}


def api_request(rng: random.Random, action_ids: Mapping[str, Sequence[str]]
                ) -> tuple[str, Route]:
    """One request of the backend API and its route's name for the report
    (``action_ids``: the ids the fuzzers saw, by room, for the retracts)."""
    room = path_part(rng, ROOMS)
    user = path_part(rng, USERS)
    kinds = rng.choice(["bans", "mutes"]) if rng.random() < 0.95 else "kicks"
    seen = action_ids.get(room)
    action_id = rng.choice(seen) if seen and rng.random() < 0.6 else \
        rng.choice(["0123456789ab-1", "x" * 64, "x" * 65, "%00", "a%2Fb"])
    seat_room = rng.choice(ROOMS) if rng.random() < 0.9 else rng.choice(BAD_ROOM_PARTS)
    character = rng.choice(CHARACTERS) if rng.random() < 0.8 else \
        rng.choice(["nobody", "", "x" * 65, "Quinn", 5, None])
    name = path_part(rng, CHARACTERS)

    def reason() -> Any:
        return {"reason": _reason(rng)} if rng.random() < 0.5 else None

    routes: list[tuple[float, str, Callable[[], Route]]] = [
        (3, "POST /v1/rooms/{room}/bans|mutes",
         lambda: ("POST", f"/v1/rooms/{room}/{kinds}", _sanction_body(rng))),
        (1, "GET /v1/rooms/{room}/bans|mutes",
         lambda: ("GET", f"/v1/rooms/{room}/{kinds}", None)),
        (2, "DELETE /v1/rooms/{room}/bans|mutes/{user}",
         lambda: ("DELETE", f"/v1/rooms/{room}/{kinds}/{user}", None)),
        (1, "POST /v1/rooms/{room}/kick",
         lambda: ("POST", f"/v1/rooms/{room}/kick",
                  {"user": path_part(rng, USERS, 0.1), "reason": "fuzz"})),
        (0.2, "POST /v1/users/{user}/disconnect",
         lambda: ("POST", f"/v1/users/{user}/disconnect", reason())),
        (0.2, "DELETE /v1/rooms/{room}", lambda: ("DELETE", f"/v1/rooms/{room}", reason())),
        (1, "GET /v1/rooms/{room}/presence",
         lambda: ("GET", f"/v1/rooms/{room}/presence", None)),
        (1, "GET /v1/rooms/{room}/history",
         lambda: ("GET", f"/v1/rooms/{room}/history" + _query(rng, ["limit"]), None)),
        (1, "DELETE /v1/rooms/{room}/actions/{id}",
         lambda: ("DELETE", f"/v1/rooms/{room}/actions/{action_id}", None)),
        (1, "GET /v1/rooms/{room}", lambda: ("GET", f"/v1/rooms/{room}", None)),
        (1, "GET /v1/rooms",
         lambda: ("GET", "/v1/rooms" + _query(rng, ["prefix", "limit", "cursor"]), None)),
        (1, "POST /v1/users/{user}/messages",
         lambda: ("POST", f"/v1/users/{user}/messages", _message(rng))),
        (1, "POST /v1/messages",
         lambda: ("POST", "/v1/messages", {**_message(rng), "to": _recipients(rng)})),
        (0.5, "GET /v1/config/rooms", lambda: ("GET", "/v1/config/rooms", None)),
        (0.5, "POST /v1/rooms/{room}/agents",
         lambda: ("POST", f"/v1/rooms/{seat_room}/agents", {"character": character})),
        (0.5, "DELETE /v1/rooms/{room}/agents/{character}",
         lambda: ("DELETE", f"/v1/rooms/{seat_room}/agents/{name}", None)),
    ]
    _, label, make = rng.choices(routes, [w for w, _, _ in routes])[0]
    return label, make()
