"""Prometheus metrics of one edge node, in a registry of its own (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("liveroom_connections", "Open client connections", registry=r)
        self.rooms = Gauge("liveroom_rooms", "Rooms with local members", registry=r)
        self.frames_in = Counter("liveroom_frames_in_total", "Client frames received",
                                 ["type"], registry=r)
        self.frames_out = Counter("liveroom_frames_out_total",
                                  "Frames written to clients (one per recipient)", registry=r)
        self.errors = Counter("liveroom_errors_total", "Error frames sent, by code",
                              ["code"], registry=r)
        self.actions = Counter("liveroom_actions_total", "Actions published, by kind class",
                               ["kind"], registry=r)
        self.dropped = Counter("liveroom_actions_dropped_total",
                               "Deliveries not made, by reason", ["reason"], registry=r)
        self.closes = Counter("liveroom_closes_total", "Connections closed by the server, by code",
                              ["code"], registry=r)
        self.ws_upgrades = Counter(
            "liveroom_ws_upgrades_total", "WebSocket upgrades accepted, by the path that "
            "serves them: 'own' (edge/ws_conn.py) or 'aiohttp' (a keep-alive connection)",
            ["path"], registry=r)
        self.http_timeouts = Counter(
            "liveroom_http_timeouts_total", "HTTP connections closed because a request 'head' "
            "or 'body' was not complete in time (edge/http_site.py; slowloris)",
            ["phase"], registry=r)
        self.moderation = Counter(
            "liveroom_moderation_total", "Moderation ops issued at this edge (API or moderate "
            "frame), by op: ban, unban, mute, unmute, kick, disconnect, close",
            ["op"], registry=r)
        self.state_changes = Counter("liveroom_state_changes_total", "State changes applied",
                                     registry=r)
        self.presence_frames = Counter(
            "liveroom_presence_frames_total", "presence frames written to clients (one per "
            "recipient; rooms that keep presence, edge/presence.py)", registry=r)
        self.peer_messages = Counter("liveroom_peer_messages_total",
                                     "Peer messages accepted", registry=r)
        self.peer_fills = Counter(
            "liveroom_peer_fills_total", "Peer deliveries read from the inbox because a live "
            "copy did not continue what its connection was shown (a gap, or a backlog)",
            registry=r)
        self.fanout_errors = Counter(
            "liveroom_fanout_errors_total", "Failures while writing to clients, by reason: "
            "'encode' (a room's frame could not be built; its remaining members miss it), "
            "'sink' (a connection's write raised; that connection is closed 1011), "
            "'reply' (a reply to one connection could not be built; it gets 'internal')",
            ["reason"], registry=r)
        self.fanout_seconds = Histogram(
            "liveroom_fanout_seconds", "Time to write one message to a room's local members",
            buckets=(5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25),
            registry=r)
