"""Issue 12, item 2: others flood a user's peer inbox. The user still
connects every time and reads every message in order (the replay is paced
by its outbound budget, never closed 4100 for its own backlog), and past the
inbox's cap the senders are refused with ``inbox_full``."""

from __future__ import annotations

import asyncio

from edge.client import LiveroomClient
from tests.support import metric

BODY = "x" * 30_000  # ~30 KB a message: 540 of them are ~16 MB
FLOOD = 540
CAP_BYTES = 17_301_504  # 16.5 MiB: the flood fits, a few dozen more do not
SENDERS = 3


async def test_a_flooded_user_reconnects_six_times_and_reads_everything_in_order(
        make_server, http) -> None:
    server = make_server("--peer-rate", "2000", "--peer-burst", "2000",
                         env={"LIVEROOM_INBOX_MAX_BYTES": str(CAP_BYTES),
                              "LIVEROOM_INBOX_MAX_MESSAGES": "100000"})
    senders = [await LiveroomClient.connect(server.ws_url, server.token(f"fl-s{i}"),
                                            session=http) for i in range(SENDERS)]

    async def flood(i: int) -> list[int]:
        return [(await senders[i].peer("fl-victim", {"i": k, "pad": BODY}, f"f-{k}"))["seq"]
                for k in range(i, FLOOD, SENDERS)]

    seqs = sorted(s for part in await asyncio.gather(*(flood(i) for i in range(SENDERS)))
                  for s in part)
    assert len(seqs) == FLOOD
    for attempt in range(6):
        victim = await LiveroomClient.connect(server.ws_url, server.token("fl-victim"),
                                              session=http, timeout=10)
        got = [await victim.expect("peer", timeout=20) for _ in range(FLOOD)]
        assert [g["seq"] for g in got] == seqs, f"reconnect {attempt}: all, in order"
        await victim.close()
    assert await metric(http, server.url, "liveroom_closes_total", code="4100") == 0
    # The inbox still holds them all (nothing acknowledged): the next ones
    # pass the cap and are refused to their sender, with the documented error.
    refused = None
    for k in range(200):
        reply = await senders[0].peer("fl-victim", {"i": FLOOD + k, "pad": BODY}, f"g-{k}")
        if reply["type"] == "error":
            refused = reply
            break
        assert reply["type"] == "peer_ack"
    assert refused is not None, "the cap refused a message"
    assert refused["code"] == "inbox_full" and refused["advice"] == "retry"
    assert refused["to"] == "fl-victim" and refused["limit"] == "bytes"
    assert await metric(http, server.url, "liveroom_errors_total", code="inbox_full") == 1
    for s in senders:
        await s.close()


async def test_the_message_cap_refuses_the_sender_until_the_user_acknowledges(
        make_server, http) -> None:
    server = make_server("--inbox-max-messages", "5")
    alice = await LiveroomClient.connect(server.ws_url, server.token("cap-a"), session=http)
    seqs = [(await alice.peer("cap-b", {"n": i}, f"c-{i}"))["seq"] for i in range(5)]
    refused = await alice.peer("cap-b", {"n": 5}, "c-5")
    assert refused["type"] == "error" and refused["code"] == "inbox_full"
    assert refused["limit"] == "messages" and refused["max"] == 5 and "ref" in refused
    # A retry of a stored one is still a duplicate, not a refusal.
    again = await alice.peer("cap-b", {"n": 4}, "c-4")
    assert again["type"] == "peer_ack" and again["duplicate"] is True
    bob = await LiveroomClient.connect(server.ws_url, server.token("cap-b"), session=http)
    got = [await bob.expect("peer") for _ in range(5)]
    assert [g["seq"] for g in got] == seqs
    await bob.send({"type": "peer_ack", "upto": seqs[1]})
    await bob.request({"type": "ping"}, "pong")  # the ack is processed before the pong
    ok = await alice.peer("cap-b", {"n": 5}, "c-5")
    assert ok["type"] == "peer_ack" and ok["duplicate"] is False
    assert (await bob.expect("peer"))["seq"] == ok["seq"]
    await alice.close()
    await bob.close()
