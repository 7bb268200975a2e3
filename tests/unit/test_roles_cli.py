"""The role sub-commands' argument handling (no servers started)."""

from __future__ import annotations

import pytest

from liveroom.cli import _parser, main


def test_cluster_refuses_to_start_without_the_shared_services(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NATS", "REDIS", "POSTGRES"):
        monkeypatch.delenv(f"LIVEROOM_{name}", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["cluster", "--edges", "3", "--nats", "nats://127.0.0.1:1"])
    assert "--redis, --postgres" in str(exc.value)


def test_role_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEROOM_NATS", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("LIVEROOM_REDIS", "redis+cluster://r:7000")
    args = _parser().parse_args(["edge", "--group", "g7", "--node-id", "e7",
                                 "--action-rate", "9"])
    assert args.nats == ["nats://a:4222", "nats://b:4222"]
    assert args.redis == "redis+cluster://r:7000" and args.postgres is None
    assert (args.group, args.node_id, args.action_rate) == ("g7", "e7", 9.0)
    args = _parser().parse_args(["router", "--nats", "nats://c:4222"])
    assert args.nats == ["nats://c:4222"] and args.port == 8070


def test_agents_needs_the_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """``liveroom agents`` mints its characters' tokens with the edges'
    secret: without it, it says so."""
    monkeypatch.delenv("LIVEROOM_JWT_SECRET", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["agents", "--edge-url", "ws://127.0.0.1:9/ws"])
    assert "LIVEROOM_JWT_SECRET" in str(exc.value)


def test_agents_takes_the_service_flags_and_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEROOM_NATS", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("LIVEROOM_REDIS", "redis://r:6379/2")
    monkeypatch.setenv("LIVEROOM_POSTGRES", "postgresql://u@pg/db")
    monkeypatch.setenv("LIVEROOM_NODE_ID", "agents-9")
    args = _parser().parse_args(["agents", "--agent-room", "show:1"])
    assert args.nats == ["nats://a:4222", "nats://b:4222"]
    assert (args.redis, args.postgres, args.node_id) == \
        ("redis://r:6379/2", "postgresql://u@pg/db", "agents-9")
    assert args.edge_url is None and args.agent_delta_interval is None
    args = _parser().parse_args(["agents", "--redis", "redis://x:1/0", "--nats", "nats://n:1",
                                 "--postgres", "postgresql://p/q", "--node-id", "a1"])
    assert (args.redis, args.nats, args.postgres, args.node_id) == \
        ("redis://x:1/0", ["nats://n:1"], "postgresql://p/q", "a1")


def test_agents_refuses_two_redis_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEROOM_JWT_SECRET", "s" * 32)
    with pytest.raises(SystemExit) as exc:
        main(["agents", "--redis", "redis://a:1/0", "--quota-redis", "redis://b:1/0"])
    assert "--redis and --quota-redis" in str(exc.value)


def test_a_negative_interaction_retention_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEROOM_JWT_SECRET", "s" * 32)
    with pytest.raises(SystemExit) as exc:
        main(["agents", "--interaction-retention-days", "-1"])
    assert "--interaction-retention-days" in str(exc.value)


@pytest.mark.parametrize("command", ["serve", "edge", "router", "cdn", "agents"])
def test_every_http_role_takes_the_http_timeouts(monkeypatch: pytest.MonkeyPatch,
                                                command: str) -> None:
    """One set of flags (and variables) for the HTTP timeouts of every role."""
    from edge.config import HttpTimeouts
    from liveroom.roles_cli import http_timeouts

    for name in ("HEAD", "BODY", "IDLE"):
        monkeypatch.delenv(f"LIVEROOM_HTTP_{name}_TIMEOUT", raising=False)
    assert http_timeouts(_parser().parse_args([command])) == HttpTimeouts()
    monkeypatch.setenv("LIVEROOM_HTTP_IDLE_TIMEOUT", "20")
    args = _parser().parse_args([command, "--http-head-timeout", "3", "--http-body-timeout",
                                 "4"])
    assert http_timeouts(args) == HttpTimeouts(head=3.0, body=4.0, idle=20.0)
