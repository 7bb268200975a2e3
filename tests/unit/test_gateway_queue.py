"""The gateway's queue (pure): priorities, the cap, the queue-time limit,
shorter replies under load, failover and health."""

from __future__ import annotations

from llm_agents.gateway_queue import (
    GATEWAY_PRIORITY,
    NO_SERVER,
    QUEUE_TIMEOUT,
    GatewayConfig,
    ModelQueue,
)
from llm_agents.policy import EVENT, GIFT, INTERACTION, MENTION, QUESTION, SILENCE, STATE


def test_priorities_gift_mention_interaction_ambient() -> None:
    p = GATEWAY_PRIORITY
    assert p[GIFT] > p[MENTION] == p[QUESTION] > p[INTERACTION] > p[SILENCE]
    assert p[SILENCE] == p[STATE] == p[EVENT]


def test_cap_then_priority_order_then_age() -> None:
    q = ModelQueue(1, GatewayConfig(concurrency=1, queue_size=10, max_wait_s=100))
    first = q.submit(0, 0.0)
    assert first is not None
    assert q.dispatch(0.0) == [(first, 0)]
    ambient = q.submit(0, 1.0)
    inter = q.submit(1, 2.0)
    mention_old = q.submit(2, 3.0)
    mention_new = q.submit(2, 4.0)
    gift = q.submit(3, 5.0)
    assert q.dispatch(5.0) == []  # the one slot is taken
    order = []
    for t in (first, gift, mention_old, mention_new, inter):
        assert t is not None
        q.release(t)
        granted = q.dispatch(6.0)
        assert len(granted) == 1 and granted[0][1] == 0
        order.append(granted[0][0])
    assert order == [gift, mention_old, mention_new, inter, ambient]


def test_full_queue_refuses_and_timeout_refuses() -> None:
    q = ModelQueue(1, GatewayConfig(concurrency=1, queue_size=2, max_wait_s=3))
    busy = q.submit(1, 0.0)
    assert busy is not None and q.dispatch(0.0) == [(busy, 0)]
    a, b = q.submit(1, 1.0), q.submit(2, 2.0)
    assert a is not None and b is not None
    assert q.submit(3, 2.0) is None  # two wait: a third is refused at once
    assert q.next_expiry() == 4.0
    assert q.dispatch(3.9) == []
    assert q.dispatch(4.0) == [(a, QUEUE_TIMEOUT)]
    assert q.dispatch(5.0) == [(b, QUEUE_TIMEOUT)]
    assert len(q) == 0 and q.next_expiry() is None


def test_cancel_waiting_and_holding() -> None:
    q = ModelQueue(1, GatewayConfig(concurrency=1))
    held, waiting = q.submit(0, 0.0), q.submit(0, 0.0)
    assert held is not None and waiting is not None
    q.dispatch(0.0)
    q.cancel(waiting)
    assert len(q) == 0
    q.cancel(held)
    assert q.in_flight == [0]


def test_least_loaded_server_and_failover() -> None:
    q = ModelQueue(2, GatewayConfig(concurrency=2, max_wait_s=100))
    t1, t2 = q.submit(2, 0.0), q.submit(2, 0.0)
    assert t1 is not None and t2 is not None
    assert [s for _, s in q.dispatch(0.0)] == [0, 1]
    # t1 fails on server 0 before any text: 0 is down, t1 goes to 1.
    q.requeue(t1)
    assert q.healthy == [False, True]
    assert q.dispatch(0.1) == [(t1, 1)]
    assert q.in_flight == [0, 2]
    # No server up: waiting calls fail at once, not at the time limit.
    q.mark(1, False)
    t3 = q.submit(1, 0.2)
    assert t3 is not None
    assert q.dispatch(0.3) == [(t3, NO_SERVER)]
    q.mark(0, True)
    t4 = q.submit(1, 0.4)
    assert q.dispatch(0.4) == [(t4, 0)]


def test_requeued_call_goes_first_of_its_priority() -> None:
    q = ModelQueue(2, GatewayConfig(concurrency=1, max_wait_s=100))
    t1 = q.submit(2, 0.0)
    q.dispatch(0.0)
    q.mark(1, False)
    later = q.submit(2, 1.0)
    assert t1 is not None and later is not None
    q.requeue(t1)  # server 0 is down now too
    q.mark(1, True)
    assert q.dispatch(1.0) == [(t1, 1)]


def test_shorter_replies_under_load() -> None:
    q = ModelQueue(1, GatewayConfig(concurrency=2, max_wait_s=100, short_at=1.0,
                                    short_factor=0.5))
    for _ in range(2):
        q.submit(0, 0.0)
    q.dispatch(0.0)
    assert q.max_tokens(48) == 48
    q.submit(0, 0.0)
    assert q.max_tokens(48) == 48  # 1 waiting < 1.0 * 2 slots
    q.submit(0, 0.0)
    assert q.loaded() and q.max_tokens(48) == 24
    assert ModelQueue(1, GatewayConfig(short_at=0)).max_tokens(48) == 48
