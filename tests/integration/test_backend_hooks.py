"""The backend hooks against a real backend process (examples/backend.py) and
a real ``liveroom serve``: the publish proxy under faults (every gift shown
is charged exactly once, balances exact), a backend that is down, slow,
failing or answering wrongly (refused with ``unavailable``, never let
through), the breaker and the concurrency cap, the connect and join
proxies, and kinds that are not proxied (no call at all)."""

from __future__ import annotations

import asyncio
import random
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.client import ClosedError, LiveroomClient
from tests.support import API_KEY, LiveServer, LoggedProcess, free_port, token, until

CODECS = ["msgpack", "json"]
PRICES = {"rose": 1, "heart": 5, "star": 10, "rocket": 50}
ROOMS = """
[default]
publish_proxy = ["gift"]

[rooms."club-*"]
join_proxy = true
private = true
"""
_LISTENING = re.compile(r"backend listening on http://[\d.]+:(\d+)")


WEBHOOK_SECRET = "whsec_hooks_test_secret_0123"

class Backend:
    """examples/backend.py in a child process."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self.port = 0
        self.child = LoggedProcess("backend", self._on_line)

    def _on_line(self, line: str) -> bool:
        m = _LISTENING.search(line)
        if m:
            self.port = int(m.group(1))
        return m is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Backend:
        import os

        env = {**os.environ, "LIVEROOM_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1",
               "LIVEROOM_WEBHOOK_SECRET": WEBHOOK_SECRET}
        self.child.start([sys.executable, "-m", "examples.backend", "--port", "0",
                          "--control", *self.args], env, 15.0)
        return self

    def stop(self) -> None:
        self.child.stop()


@pytest.fixture
def make_backend() -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(*args: str) -> Backend:
        b = Backend(*args).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def rooms_file(tmp_path: Path) -> Path:
    path = tmp_path / "rooms.toml"
    path.write_text(ROOMS)
    return path


@pytest.fixture
def hooked(make_server: Callable[..., LiveServer], rooms_file: Path
           ) -> Callable[..., LiveServer]:
    """A server with the rooms config above, pointed at ``backend``."""
    def make(backend_url: str, *args: str) -> LiveServer:
        return make_server("--rooms-config", str(rooms_file), "--no-agents", "--no-demo-room",
                           "--backend-url", backend_url, "--action-rate", "500",
                           "--action-burst", "500", *args)
    return make


@pytest.fixture
async def clients(http: aiohttp.ClientSession) -> AsyncIterator[list[LiveroomClient]]:
    made: list[LiveroomClient] = []
    yield made
    for c in made:
        if not c.ws.closed:
            await c.close()


async def member(srv: LiveServer, http: aiohttp.ClientSession, made: list[LiveroomClient],
                 user: str, room: str | None = "gifts", codec: str = "msgpack") -> LiveroomClient:
    c = await LiveroomClient.connect(srv.ws_url, token(user, rooms={}), codec=codec,
                                     session=http)
    made.append(c)
    if room is not None:
        assert (await c.join(room))["type"] == "joined"
    return c


async def control(http: aiohttp.ClientSession, backend: Backend, **faults: Any) -> None:
    async with http.post(f"{backend.url}/control", json=faults) as r:
        assert r.status == 200


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200
        return await r.json()


def gift(room: str, cid: str, name: str = "rose", count: int = 1) -> dict[str, Any]:
    return {"type": "action", "room": room, "kind": "gift", "id": cid,
            "body": {"gift": name, "count": count}}


async def send_gift(c: LiveroomClient, cid: str, name: str = "rose", count: int = 1,
                    room: str = "gifts", timeout: float = 10.0) -> dict[str, Any]:
    """The sender's own gift coming back (matched by ``client_id``) or the
    error with the frame's ref."""
    ref = c.next_ref()
    await c.send({**gift(room, cid, name, count), "ref": ref})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await c.recv(max(0.01, deadline - loop.time()))
        if frame.get("type") == "error" and frame.get("ref") == ref:
            return frame
        if frame.get("type") == "action" and frame.get("client_id") == cid:
            return frame


# -- the acceptance test ------------------------------------------------------------
async def test_a_thousand_gifts_under_faults_are_charged_exactly_once(
        make_backend: Callable[..., Backend], hooked: Callable[..., LiveServer],
        http: aiohttp.ClientSession, clients: list[LiveroomClient]) -> None:
    initial = 200
    backend = make_backend("--fail-rate", "0.10", "--timeout-rate", "0.05",
                           "--timeout-seconds", "0.8", "--seed", "7",
                           "--initial-balance", str(initial))
    srv = hooked(backend.url, "--hook-timeout", "0.4", "--hook-breaker-reset", "0.3")
    watcher = await member(srv, http, clients, "watcher")
    users = [f"u{i:02d}" for i in range(50)]
    senders = [await member(srv, http, clients, u, codec=CODECS[i % 2])
               for i, u in enumerate(users)]
    shown: list[dict[str, Any]] = []
    retries = 0
    refused: dict[str, list[int]] = {u: [] for u in users}  # totals refused for funds

    async def watch() -> None:
        while True:
            frame = await watcher.recv(30)
            if frame.get("type") == "action" and frame.get("kind") == "gift":
                shown.append(frame)

    async def send_all(user: str, c: LiveroomClient) -> int:
        nonlocal retries
        rng = random.Random(user)
        allowed = 0
        for i in range(20):
            name = rng.choice(["rose", "rose", "heart", "star", "rocket"])
            count = rng.randint(1, 2)
            while True:
                got = await send_gift(c, f"{user}-g{i}", name, count)
                if got["type"] == "action":
                    allowed += 1
                    break
                if got["code"] == "unavailable":
                    assert got["advice"] == "retry" and got["retry_after"] > 0, got
                    retries += 1
                    await asyncio.sleep(got["retry_after"])
                    continue
                assert got["code"] == "rejected" and got["reason"] == "insufficient_funds", got
                refused[user].append(PRICES[name] * count)
                break
        return allowed

    watching = asyncio.create_task(watch())
    try:
        allowed = sum(await asyncio.wait_for(
            asyncio.gather(*(send_all(u, c) for u, c in zip(users, senders, strict=True))),
            50))
        await until(lambda: len(shown) >= allowed, 10, "the watcher sees every gift")
    finally:
        watching.cancel()
    ledger = await get(http, f"{backend.url}/charges")
    balances = await get(http, f"{backend.url}/balances")
    keys = [(f["from"]["id"], f["client_id"]) for f in shown]
    assert len(keys) == len(set(keys)) == allowed, "a gift was shown twice"
    charged = [(c["user"], c["id"]) for c in ledger["charges"]]
    assert len(charged) == len(set(charged)), "a gift was charged twice"
    assert set(charged) == set(keys), "charged and shown differ"
    by_key = {(c["user"], c["id"]): c for c in ledger["charges"]}
    for f in shown:
        charge = by_key[(f["from"]["id"], f["client_id"])]
        assert f["body"] == {"gift": charge["gift"], "count": charge["count"],
                             "price": PRICES[charge["gift"]], "total": charge["total"]}
    for user in users:
        spent = sum(f["body"]["total"] for f in shown if f["from"]["id"] == user)
        assert balances[user] == initial - spent, user
        for total in refused[user]:
            assert balances[user] < total, (user, total, balances[user])
    assert sum(map(len, refused.values())) > 0, "no balance ran out: raise the prices"
    assert retries > 0, "the faults were not exercised"
    assert allowed + sum(map(len, refused.values())) == 1000


# -- failures of the backend ------------------------------------------------------------
@pytest.mark.parametrize("codec", CODECS)
async def test_backend_down_refuses_with_retry_advice_and_lets_nothing_through(
        hooked: Callable[..., LiveServer], http: aiohttp.ClientSession,
        clients: list[LiveroomClient], codec: str) -> None:
    srv = hooked(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    watcher = await member(srv, http, clients, "w", codec=codec)
    sender = await member(srv, http, clients, "s", codec=codec)
    got = await send_gift(sender, "g1")
    assert got["type"] == "error" and got["code"] == "unavailable", got
    assert got["advice"] == "retry" and got["retry_after"] > 0
    assert got["reason"] == "backend_error"
    # Unproxied kinds go on; the watcher sees the comment and never the gift.
    await sender.action("gifts", "comment", {"text": "still here"})
    frame = await watcher.expect("action", kind="comment")
    assert frame["body"] == {"text": "still here"}
    with pytest.raises(TimeoutError):
        await watcher.expect("action", timeout=0.5, kind="gift")


async def test_the_breaker_opens_after_failures_and_closes_after_a_good_probe(
        make_backend: Callable[..., Backend], hooked: Callable[..., LiveServer],
        http: aiohttp.ClientSession, clients: list[LiveroomClient]) -> None:
    backend = make_backend()
    srv = hooked(backend.url, "--hook-breaker-threshold", "3", "--hook-breaker-reset", "1")
    sender = await member(srv, http, clients, "s")
    await control(http, backend, fail_rate=1.0)
    reasons = [(await send_gift(sender, f"g{i}")).get("reason") for i in range(3)]
    assert reasons == ["backend_error"] * 3
    calls = (await get(http, f"{backend.url}/calls"))["publish"]
    got = await send_gift(sender, "g3")
    assert got["code"] == "unavailable" and got["reason"] == "backend_open", got
    assert 0 < got["retry_after"] <= 1
    assert (await get(http, f"{backend.url}/calls"))["publish"] == calls, "open: no call"
    await control(http, backend, fail_rate=0.0)
    await asyncio.sleep(got["retry_after"])  # the breaker's own clock: the probe is due

    async def probe() -> bool:
        return (await send_gift(sender, f"p{random.random()}"))["type"] == "action"

    await until(probe, 3, "the probe closes the breaker")
    assert (await send_gift(sender, "after"))["type"] == "action"


async def test_the_concurrency_cap_refuses_at_once(
        make_backend: Callable[..., Backend], hooked: Callable[..., LiveServer],
        http: aiohttp.ClientSession, clients: list[LiveroomClient]) -> None:
    backend = make_backend()
    srv = hooked(backend.url, "--hook-concurrency", "1", "--hook-timeout", "3")
    slow, other = (await member(srv, http, clients, "a"), await member(srv, http, clients, "b"))
    await control(http, backend, timeout_rate=1.0, timeout_seconds=1.0)
    first = asyncio.create_task(send_gift(slow, "slow-1"))
    await until(lambda: get(http, f"{backend.url}/calls"), 2, "the first call is in")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    got = await send_gift(other, "fast-1")
    assert got["code"] == "unavailable" and got["reason"] == "backend_busy", got
    assert loop.time() - t0 < 0.5, "refused at once, not queued"
    assert (await first)["type"] == "action"


@pytest.mark.parametrize("answer", ["not_json", "no_allow", "bad_body"])
async def test_malformed_answers_are_refused_and_the_room_is_unharmed(
        make_backend: Callable[..., Backend], hooked: Callable[..., LiveServer],
        http: aiohttp.ClientSession, clients: list[LiveroomClient], answer: str) -> None:
    backend = make_backend()
    srv = hooked(backend.url)
    watcher = await member(srv, http, clients, "w")
    sender = await member(srv, http, clients, "s", codec="json")
    await control(http, backend, answer=answer)
    got = await send_gift(sender, "bad-1")
    assert got["code"] == "unavailable" and got["reason"] == "backend_malformed", got
    await control(http, backend, answer="")
    # bad_body charged the gift and answered wrongly: the retry gets the
    # stored (good) decision and the gift is shown once, as charged.
    good = await send_gift(sender, "bad-1")
    assert good["type"] == "action" and good["body"]["total"] == 1
    seen = await watcher.expect("action", kind="gift")
    assert seen["client_id"] == "bad-1" and seen["body"]["count"] == 1
    ledger = await get(http, f"{backend.url}/charges")
    assert [c["id"] for c in ledger["charges"]] == ["bad-1"]


async def test_unproxied_kinds_make_no_call(
        make_backend: Callable[..., Backend], hooked: Callable[..., LiveServer],
        http: aiohttp.ClientSession, clients: list[LiveroomClient]) -> None:
    backend = make_backend()
    srv = hooked(backend.url)
    watcher = await member(srv, http, clients, "w")
    sender = await member(srv, http, clients, "s")
    for i in range(5):
        await sender.send({"type": "action", "room": "gifts", "kind": "comment",
                           "body": {"text": f"c{i}"}, "id": f"c{i}"})
        await sender.action("gifts", "like", None)
    frame = await watcher.expect("action", kind="comment")
    assert frame["client_id"] == "c0"
    assert await get(http, f"{backend.url}/calls") == {}
    err = await sender.request({"type": "action", "room": "gifts", "kind": "comment",
                                "body": {"text": "x"}, "id": "bad id!"}, "none")
    assert err["code"] == "invalid_field" and err["field"] == "id"


# -- connect and join proxies --------------------------------------------------------
async def hello(srv: LiveServer, user: str, codec: str) -> tuple[dict[str, Any], int | None]:
    """The first frame after a hello, and the close code that follows an
    error (None after a welcome)."""
    c = await LiveroomClient.open(srv.ws_url, codec=codec)
    try:
        await c.send({"type": "hello", "v": 1, "token": token(user, rooms={}), "ref": 1})
        first = await c.recv(5)
        if first["type"] == "welcome":
            return first, None
        with pytest.raises(ClosedError) as closed:
            await c.recv(5)
        return first, closed.value.code
    finally:
        await c.close()


@pytest.mark.parametrize("codec", CODECS)
async def test_the_connect_proxy_allows_refuses_and_attaches_info(
        make_backend: Callable[..., Backend], hooked: Callable[..., LiveServer],
        http: aiohttp.ClientSession, clients: list[LiveroomClient], codec: str) -> None:
    backend = make_backend("--blocked", "bad1", "--vips", "v1")
    srv = hooked(backend.url, "--connect-proxy")
    first, code = await hello(srv, "bad1", codec)
    assert first["code"] == "rejected" and first["reason"] == "blocked" and first["ref"] == 1
    assert code == 4010
    first, code = await hello(srv, "v1", codec)
    assert code is None and first["user"]["info"] == {"tier": "vip"}
    vip = await member(srv, http, clients, "v1", codec=codec)
    await vip.action("gifts", "comment", {"text": "hi"})
    said = await vip.expect("action", kind="comment")
    assert said["from"] == {"id": "v1", "name": "v1", "role": "viewer", "info": {"tier": "vip"}}
    await control(http, backend, answer="huge_info")
    first, code = await hello(srv, "v2", codec)
    assert first["code"] == "unavailable" and first["reason"] == "backend_malformed"
    assert code == 4110


async def test_the_join_proxy_admits_refuses_and_grants_roles(
        make_backend: Callable[..., Backend], hooked: Callable[..., LiveServer],
        http: aiohttp.ClientSession, clients: list[LiveroomClient]) -> None:
    backend = make_backend()
    srv = hooked(backend.url)
    async with http.post(f"{backend.url}/memberships",
                         json={"room": "club-a", "user": "m1", "role": "moderator"}) as r:
        assert r.status == 200
    mod = await member(srv, http, clients, "m1", room=None)
    outsider = await member(srv, http, clients, "o1", room=None)
    # club-a is private, and no token grants it: the backend admits.
    assert (await mod.join("club-a"))["type"] == "joined"
    await mod.set_state("club-a", "meta", {"title": "by the moderator"})
    assert (await mod.expect("state", section="meta"))["value"] == {"title": "by the moderator"}
    err = await outsider.join("club-a")
    assert err["type"] == "error" and err["code"] == "rejected"
    assert err["reason"] == "not_a_member"
    # A club with no list is open; the backend grants no role: a viewer.
    assert (await outsider.join("club-open"))["type"] == "joined"
    err = await outsider.request({"type": "state", "room": "club-open", "section": "meta",
                                  "value": {}}, "none")
    assert err["code"] == "forbidden"
    await control(http, backend, answer="bad_role")
    err = await outsider.join("club-b")
    assert err["code"] == "unavailable" and err["reason"] == "backend_malformed"
    calls = await get(http, f"{backend.url}/calls")
    assert calls["join"] == 4 and "publish" not in calls



async def test_settled_actions_reach_the_backend_as_signed_events(
        make_backend: Callable[..., Backend], make_server: Callable[..., LiveServer],
        rooms_file: Path, http: aiohttp.ClientSession, clients: list[LiveroomClient]) -> None:
    """Each proxied action's end is an ``action.settled`` event (published,
    refused), delivered to the example backend's webhook, which checks the
    signature (a bad one would be 401 and retried, never recorded)."""
    backend = make_backend("--initial-balance", "10")
    srv = make_server("--rooms-config", str(rooms_file), "--no-agents", "--no-demo-room",
                      "--backend-url", backend.url,
                      "--webhook-url", f"{backend.url}/liveroom/events",
                      env={"LIVEROOM_WEBHOOK_SECRET": WEBHOOK_SECRET})
    ann = await member(srv, http, clients, "settle-ann")
    shown = await send_gift(ann, "g-ok", "rose", 1)
    assert shown["type"] == "action"
    refused = await send_gift(ann, "g-no", "rocket", 1)
    assert refused["type"] == "error" and refused["code"] == "rejected"

    async def settled() -> list[dict[str, Any]] | None:
        events = [e for e in await get(http, f"{backend.url}/events")
                  if e.get("type") == "action.settled"]
        return events if len(events) >= 2 else None

    got = await until(settled, 10, "two action.settled events")
    outcome = {e["data"]["detail"]["client_id"]: e["data"] for e in got}
    assert outcome["g-ok"]["outcome"] == "published" and outcome["g-ok"]["from"] == "settle-ann"
    assert outcome["g-ok"]["action_id"] == shown["id"]
    assert outcome["g-no"]["outcome"] == "refused"
    assert outcome["g-no"]["detail"]["code"] == "rejected"
