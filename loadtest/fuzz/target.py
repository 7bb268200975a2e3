"""The server under attack: our own ``liveroom serve --dev`` (``Server.start``:
QUIC on, a throw-away data directory, scripted characters, its TCP and QUIC
ports read from its log, its ERROR lines and tracebacks counted) or someone
else's (``--url``); whether it is still up (``alive``), what it reports
(``metric``), and whether it leaks (``leaks``: RSS and open descriptors at
the end against the warm-up, loadtest/procstat.py)."""

from __future__ import annotations

import os
import re
import secrets
import sys
import tempfile
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from loadtest.procstat import Usage, usage
from loadtest.servers import ServerProcess

# The fuzz server's rooms config: every feature of a room policy on in some
# fuzz rooms (presence, a small presence cap, history, slow mode, kinds, a
# private room, a section bound, a room action rate; exact ids and a
# pattern), none in others (fz-0, fz-1, fz-7: the hot path without them).
# The canary's room (canary-<hex>) matches no entry: the defaults.
ROOMS_CONFIG = """\
[default]

[rooms."demo"]
presence = true

[rooms."fz-2"]
presence = true
history = 50

[rooms."fz-3"]
history = 20
history_kinds = ["comment", "gift", "like", "x"]
slow_mode = 1.0
kinds = ["comment", "gift", "like", "poll.vote"]

[rooms."fz-4"]
private = true
presence = true
presence_cap = 3
history = 10

[rooms."fz-5*"]
presence = true
presence_cap = 2
history = 5
history_ttl = 5.0
slow_mode = 0.5

[rooms."fz-6"]
kinds = ["comment", "x"]
max_sections = 3
action_rate = 2.0
action_burst = 4
"""

_QUIC = re.compile(r"quic listening on udp://([\d.]+):(\d+)/wt \(certificate sha256 ([0-9a-f]+)")


class Server:
    """Our own ``liveroom serve --dev`` (``start``) or someone else's (``--url``)."""

    def __init__(self) -> None:
        self.process: ServerProcess | None = None
        self.pid: int | None = None
        self.url = ""
        self.quic_port = 0
        self.cert_sha256 = ""
        self.secret: str | None = None
        self.api_key: str | None = None
        self.tracebacks = 0
        self.error_lines = 0
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None
        self._log_file: Any = None

    def start(self, timeout: float = 30.0, log_path: str | None = None) -> Server:
        self._data_dir = tempfile.TemporaryDirectory(prefix="liveroom-fuzz-")
        self.secret, self.api_key = secrets.token_hex(32), secrets.token_hex(16)
        env = {**os.environ, "LIVEROOM_JWT_SECRET": self.secret,
               "LIVEROOM_API_KEY": self.api_key, "PYTHONUNBUFFERED": "1",
               "LIVEROOM_AGENT_BACKEND": "scripted",
               # The canary sends 10 actions a second; the default is 5.
               "LIVEROOM_ACTION_RATE": "20", "LIVEROOM_ACTION_BURST": "40"}
        rooms_config = os.path.join(self._data_dir.name, "rooms.toml")
        with open(rooms_config, "w") as f:
            f.write(ROOMS_CONFIG)
        cmd = [sys.executable, "-m", "liveroom.cli", "serve", "--dev", "--host", "127.0.0.1",
               "--port", "0", "--quic-port", "0", "--data-dir", self._data_dir.name,
               "--rooms-config", rooms_config]
        self._log_file = open(log_path, "w") if log_path else None
        self.process = ServerProcess(cmd, env, None, on_line=self._line)
        try:
            self.process.start(timeout)
        except RuntimeError:
            self.stop()
            raise
        self.pid = self.process.pid
        self.url = f"http://127.0.0.1:{self.process.port}"
        return self

    def _line(self, line: str) -> None:
        """One line of our server's log (called on the process's reading thread)."""
        if self._log_file is not None:
            self._log_file.write(line)
        if "Traceback" in line:
            self.tracebacks += 1
        if " ERROR " in line or " CRITICAL " in line:
            self.error_lines += 1
        q = _QUIC.search(line)
        if q:
            self.quic_port, self.cert_sha256 = int(q.group(2)), q.group(3)

    @property
    def log(self) -> list[str]:
        """The last lines of our server's log (none for someone else's)."""
        return self.process.log if self.process is not None else []

    def exited(self) -> int | None:
        return self.process.exited() if self.process is not None else None

    def usage(self) -> Usage | None:
        if self.pid is None:
            return None
        try:
            return usage(self.pid)
        except OSError:
            return None

    def stop(self) -> int | None:
        code = self.process.stop() if self.process is not None else None
        if self._log_file is not None:
            self._log_file.close()
        if self._data_dir is not None:
            self._data_dir.cleanup()
        return code

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    @property
    def wt_url(self) -> str | None:
        if not self.quic_port:
            return None
        host = urlsplit(self.url).hostname
        return f"https://{host}:{self.quic_port}/wt"


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float | None:
    """The metric ``name`` from ``url``'s ``/metrics`` (None when it cannot be read)."""
    try:
        async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def alive(server: Server, http: aiohttp.ClientSession) -> str | None:
    """None when the server is up, else why not."""
    code = server.exited()
    if code is not None:
        return f"the server exited with status {code}"
    try:
        async with http.get(f"{server.url}/healthz",
                            timeout=aiohttp.ClientTimeout(total=10)) as r:
            if r.status != 200:
                return f"/healthz answered {r.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"/healthz failed: {exc!r}"
    return None


def leaks(warm: Usage, end: Usage, rss_bound_mb: int, fd_bound: int) -> list[str]:
    """What the server holds at the end beyond the bounds above the warm-up."""
    found = []
    if end.rss - warm.rss > rss_bound_mb << 20:
        found.append(f"RSS grew {(end.rss - warm.rss) >> 20} MB after the warm-up "
                     f"(bound {rss_bound_mb} MB)")
    if end.fds - warm.fds > fd_bound:
        found.append(f"open descriptors grew by {end.fds - warm.fds} after the warm-up "
                     f"(bound {fd_bound})")
    return found
