"""The role sub-commands' argument handling (no servers started)."""

from __future__ import annotations

import argparse

import pytest

from cdn.origin import CdnConfig
from edge.config import EdgeConfig
from liveroom.cli import _parser, main
from liveroom.flags import LIMITS, edge_config, role_options, serve_options


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
    from liveroom.flags import http_timeouts

    for name in ("HEAD", "BODY", "IDLE"):
        monkeypatch.delenv(f"LIVEROOM_HTTP_{name}_TIMEOUT", raising=False)
    assert http_timeouts(_parser().parse_args([command])) == HttpTimeouts()
    monkeypatch.setenv("LIVEROOM_HTTP_IDLE_TIMEOUT", "20")
    args = _parser().parse_args([command, "--http-head-timeout", "3", "--http-body-timeout",
                                 "4"])
    assert http_timeouts(args) == HttpTimeouts(head=3.0, body=4.0, idle=20.0)


def _subparser(command: str) -> argparse.ArgumentParser:
    for action in _parser()._subparsers._group_actions:  # type: ignore[union-attr]
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]  # type: ignore[no-any-return]
    raise AssertionError("no sub-commands")


def _flags(command: str) -> dict[str, argparse.Action]:
    return {o: a for a in _subparser(command)._actions for o in a.option_strings}


def _clear_limit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for lim in LIMITS:
        monkeypatch.delenv(f"LIVEROOM_{lim.env}", raising=False)
    for name in ("HEAD_MAX_AGE", "HEAD_SWR"):
        monkeypatch.delenv(f"LIVEROOM_{name}", raising=False)


def test_every_limit_flag_is_on_serve_and_edge_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """One table (liveroom.flags.LIMITS): every limit exists on ``serve`` and
    on ``edge``, with the same destination, type, default and variable."""
    _clear_limit_env(monkeypatch)
    serve, edge = _flags("serve"), _flags("edge")
    for flag in [lim.flag for lim in LIMITS] + ["--head-max-age",
                                                 "--head-stale-while-revalidate"]:
        assert flag in serve and flag in edge, flag
        s, e = serve[flag], edge[flag]
        assert (s.dest, s.type, s.default) == (e.dest, e.type, e.default), flag
    # The defaults are EdgeConfig's: nothing set gives the default config.
    assert edge_config(_parser().parse_args(["serve"])) == EdgeConfig()
    assert edge_config(_parser().parse_args(["edge"])) == EdgeConfig()
    # Each variable moves the flag of both commands.
    # A value other than the default, of each kind.
    sample = {"SEND_LOOP": "python"}
    for lim in LIMITS:
        monkeypatch.setenv(f"LIVEROOM_{lim.env}",
                           sample.get(lim.env, "7" if lim.kind in (int, float) else "x,y"))
    monkeypatch.setenv("LIVEROOM_HEAD_MAX_AGE", "3")
    serve_args, edge_args = (_parser().parse_args([c]) for c in ("serve", "edge"))
    for lim in LIMITS:
        assert getattr(serve_args, lim.dest) == getattr(edge_args, lim.dest) != \
            lim.kind(lim.default()), lim.flag
    assert serve_options(serve_args).config == role_options(edge_args, "edge").config
    assert serve_options(serve_args).cdn == role_options(edge_args, "edge").cdn


def test_the_edge_role_takes_the_lossy_sections_and_the_head_lifetime(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the edge role had neither flag and a default CdnConfig always."""
    _clear_limit_env(monkeypatch)
    argv = ["--lossy-sections", "positions, cursors", "--head-max-age", "4",
            "--head-stale-while-revalidate", "9", "--action-rate", "3"]
    edge = role_options(_parser().parse_args(["edge", *argv]), "edge")
    serve = serve_options(_parser().parse_args(["serve", *argv]))
    assert edge.config.lossy_sections == frozenset({"positions", "cursors"})
    assert edge.config.poll_interval == 4.0 and edge.config.action_rate.per_second == 3.0
    assert edge.cdn == CdnConfig(head_max_age=4, head_stale_while_revalidate=9)
    assert (edge.config, edge.cdn) == (serve.config, serve.cdn)
    cdn = role_options(_parser().parse_args(["cdn", "--head-max-age", "5"]), "cdn")
    assert cdn.cdn.head_max_age == 5 and cdn.quic_port == "off"
