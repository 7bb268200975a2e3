"""What a ``liveroom`` process is told: ``ServeOptions`` for ``liveroom serve``
(every role in one process), ``RoleOptions`` for one distributed role
(``edge``, ``router``, ``cdn``). Plain data: ``liveroom.flags`` makes them
from the command line, tests make them by hand."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cdn.origin import CdnConfig
from edge.config import EdgeConfig
from llm_agents.service import AgentOptions
from room_router.hooks import HookConfig


@dataclass(frozen=True)
class EventOptions:
    """Events to the backend (docs/BACKEND.md, "Events"). Embedded: a SQLite
    outbox POSTed to ``webhook_url`` (no URL: events off). Cluster: with
    ``jetstream``, the edges publish to the stream ``stream``; the
    ``liveroom webhooks`` process POSTs it to ``webhook_url``."""

    webhook_url: str | None = None
    webhook_secret: str = ""
    batch_events: int = 100
    batch_bytes: int = 256 * 1024
    timeout: float = 10.0
    outbox_max_events: int = 1_000_000
    jetstream: bool = False
    stream: str = "LIVEROOM_EVENTS"
    buffer: int = 100_000
    stream_max_age: float = 7 * 24 * 3600.0
    stream_max_bytes: int = 10 * 1024**3
    stream_replicas: int = 1
    # The dispatcher's consumer: seconds before an unacknowledged batch is redelivered.
    ack_wait: float = 60.0


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    dev: bool = False
    data_dir: Path = Path("data")
    jwt_secret: str | None = None
    api_key: str | None = None
    demo_room: bool = True
    node_id: str = field(default_factory=lambda: f"edge-{uuid.uuid4().hex[:8]}")
    config: EdgeConfig = field(default_factory=EdgeConfig)
    cdn: CdnConfig = field(default_factory=CdnConfig)
    agents: AgentOptions = field(default_factory=AgentOptions)
    # Settings per room pattern (room_router/roomconfig.py), reloaded on SIGHUP.
    rooms_config: Path | None = None
    # The backend hooks (--backend-url...; docs/BACKEND.md).
    hooks: HookConfig = field(default_factory=HookConfig)
    events: EventOptions = field(default_factory=EventOptions)
    # QUIC (WebTransport on /wt): "auto" = the TCP port + 1 (0 with --port 0)
    # when a certificate is at hand (--quic-cert/--quic-key, or --dev, which
    # keeps a development one in the data dir); "off"; or a UDP port number.
    quic_port: str = "auto"
    quic_cert: Path | None = None
    quic_key: Path | None = None
    quic_idle_timeout: float = 30.0


@dataclass
class RoleOptions:
    role: str = "edge"
    host: str = "127.0.0.1"
    port: int = 8080
    node_id: str = field(default_factory=lambda: f"node-{secrets.token_hex(4)}")
    group: str = "g0"
    # What clients are told to connect to; default ws://<host>:<bound port>/ws.
    public_url: str | None = None
    nats: list[str] = field(default_factory=list)
    redis: str | None = None
    postgres: str | None = None
    subject_prefix: str = "liveroom"
    heartbeat: float = 2.0
    big_threshold: int = 5_000
    dev: bool = False
    data_dir: Path = Path("data")
    jwt_secret: str | None = None
    api_key: str | None = None
    config: EdgeConfig = field(default_factory=EdgeConfig)
    cdn: CdnConfig = field(default_factory=CdnConfig)
    rooms_config: Path | None = None
    hooks: HookConfig = field(default_factory=HookConfig)
    events: EventOptions = field(default_factory=EventOptions)
    # QUIC (WebTransport) next to an edge's WebSocket, as for liveroom serve
    # (liveroom.wiring.start_quic_edge); "off" for the other roles.
    quic_port: str = "off"
    quic_cert: Path | None = None
    quic_key: Path | None = None
    quic_idle_timeout: float = 30.0
