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


def test_agents_is_the_llm_agents_role(monkeypatch: pytest.MonkeyPatch) -> None:
    """``liveroom agents`` is llm_agents.role (not a role of roles_cli): it
    needs the edge's JWT secret and says so."""
    monkeypatch.delenv("LIVEROOM_JWT_SECRET", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["agents", "--edge-url", "ws://127.0.0.1:9/ws"])
    assert "LIVEROOM_JWT_SECRET" in str(exc.value)
