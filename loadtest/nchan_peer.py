"""The nchan peer of the fan-out benchmark (``--peer nchan``): nginx with
nchan, Debian's ``nginx`` and ``libnginx-mod-nchan`` (optional, see
.ci/system-deps.sh), one worker pinned to the server's core.

``NchanServer`` writes a config into a temporary directory and starts
``nginx -p <dir> -c <dir>/nginx.conf`` in the foreground (``daemon off``,
one master and one worker; the worker is the server whose CPU and RSS the
benchmark reads). Two locations on one free loopback port:

- ``/sub``: ``nchan_subscriber websocket`` on channel ``bench``; a viewer is
  subscribed once nginx answers its upgrade with 101, and every published
  message reaches it as one text frame holding the POST body unchanged;
- ``/pub``: ``nchan_publisher http``; the publisher POSTs each message
  (HTTP/1.1 keep-alive, the messages due in a 1 ms tick pipelined in one
  write, ``HttpPublisher``); nchan answers each with 201/202.

The body is the action object liveroom would deliver (``type``, ``room``,
``kind``, ``body`` with the publisher's ``t``, ``from``, ``seq``), so the
viewers count and sample it exactly as they do liveroom's frames.

Messages are kept in nchan's shared memory only as long as needed: a buffer
of ``BUFFER_SECONDS`` worth of messages (at least 16), each expiring after
``MESSAGE_TIMEOUT_S``. A websocket subscriber is sent a message when it is
published, so the buffer only matters to a subscriber that reconnects; it is
sized so that no message is dropped from it while it is still being written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cdn.proxy import find_nginx
from loadtest.procstat import free_port, terminate

log = logging.getLogger("liveroom.bench")

MODULE_PATHS = ("/usr/lib/nginx/modules/ngx_nchan_module.so",
                "/usr/lib64/nginx/modules/ngx_nchan_module.so",
                "/usr/local/nginx/modules/ngx_nchan_module.so")
SUB_PATH = "/sub"
PUB_PATH = "/pub"
CHANNEL = "bench"
BUFFER_SECONDS = 10.0
MESSAGE_TIMEOUT_S = 30
# Bounds of the buffer (messages) and of the connections one worker takes.
MAX_BUFFER = 100_000
MAX_CONNECTIONS = 65_536


def find_nchan() -> tuple[str, str] | None:
    """(nginx binary, nchan module) when both are installed, else None."""
    try:
        nginx = find_nginx()
    except FileNotFoundError:
        return None
    module = next((p for p in MODULE_PATHS if os.path.exists(p)), None)
    return (nginx, module) if module else None


MISSING = ("nginx with the nchan module is not installed (Debian: apt-get install nginx "
           "libnginx-mod-nchan, or `bash .ci/system-deps.sh nchan`)")


def nginx_config(prefix: str, module: str, port: int, connections: int,
                 buffer_length: int) -> str:
    """The whole nginx.conf (pure but for the user): one worker, no logs but
    errors (to stderr), temp paths inside ``prefix``, the two nchan
    locations. Run as root, the worker stays root: ``prefix`` is private."""
    temps = "\n".join(f"  {name}_temp_path {prefix}/{name};"
                      for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""load_module {module};
{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{
  worker_connections {connections};
  multi_accept on;
}}
http {{
  access_log off;
{temps}
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = {SUB_PATH} {{
      nchan_subscriber websocket;
      nchan_channel_id {CHANNEL};
    }}
    location = {PUB_PATH} {{
      nchan_publisher http;
      nchan_channel_id {CHANNEL};
      nchan_message_buffer_length {buffer_length};
      nchan_message_timeout {MESSAGE_TIMEOUT_S}s;
    }}
  }}
}}
"""


def buffer_length(msg_rate: float) -> int:
    """Messages nchan keeps per channel: BUFFER_SECONDS of the publish rate."""
    return max(16, min(MAX_BUFFER, int(msg_rate * BUFFER_SECONDS)))


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(entry))
    return out


class NchanServer:
    """nginx + nchan as a child process; ``pid`` is its one worker's."""

    def __init__(self, cpus: set[int] | None, msg_rate: float) -> None:
        found = find_nchan()
        if found is None:
            raise RuntimeError(MISSING)
        self.nginx, self.module = found
        self.cpus = cpus
        self.msg_rate = msg_rate
        self.port = 0
        self.worker = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        return self.worker

    def start(self, timeout: float = 20.0) -> NchanServer:
        self._dir = tempfile.TemporaryDirectory(prefix="bench-nchan-")
        prefix = self._dir.name
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        conns = max(1024, min(MAX_CONNECTIONS, soft - 64))
        cpus = self.cpus
        preexec: Callable[[], None] | None = None
        if cpus:
            def preexec() -> None:
                os.sched_setaffinity(0, cpus)  # the worker inherits it
        for attempt in range(3):  # the free port may be taken before nginx binds it
            self.port = free_port()
            conf = Path(prefix, "nginx.conf")
            conf.write_text(nginx_config(prefix, self.module, self.port, conns,
                                         buffer_length(self.msg_rate)))
            with open(Path(prefix, "stderr.log"), "wb") as errlog:
                self.proc = subprocess.Popen(
                    [self.nginx, "-e", "stderr", "-p", prefix, "-c", str(conf)],
                    stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog,
                    preexec_fn=preexec)
            if self._wait_ready(timeout):
                log.info("nchan: nginx worker %d on port %d", self.worker, self.port)
                return self
            self.stop(keep_dir=True)
            text = Path(prefix, "stderr.log").read_text(errors="replace")
            if "Address already in use" not in text or attempt == 2:
                self._cleanup()
                raise RuntimeError(f"nginx did not start:\n{text[-3000:]}")
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            workers = _children(self.proc.pid)
            if workers:
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                except OSError:
                    pass
                else:
                    self.worker = workers[0]
                    return True
            time.sleep(0.05)
        return False

    def exited(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def stop(self, keep_dir: bool = False) -> int | None:
        """SIGTERM to the master (SIGKILL after 15 s); its exit status."""
        proc, self.proc = self.proc, None
        code = None if proc is None else terminate(proc)
        if not keep_dir:
            self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._dir is not None:
            # nginx's own complaints during the run (it logs to a file of the dir).
            text = Path(self._dir.name, "stderr.log").read_text(errors="replace") \
                if Path(self._dir.name, "stderr.log").exists() else ""
            bad = [ln for ln in text.splitlines()
                   if any(f"[{lvl}]" in ln for lvl in ("error", "crit", "alert", "emerg"))]
            if bad:
                log.warning("nchan: nginx logged %d error line(s), the last: %s", len(bad),
                            bad[-1])
            self._dir.cleanup()
            self._dir = None


# --------------------------------------------------------------------------
# The publisher's side (in the publisher process)
# --------------------------------------------------------------------------
def publish_request(host: str, port: int, path: str, body: bytes) -> bytes:
    """One keep-alive HTTP/1.1 POST of ``body`` (a message to the channel)."""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


class HttpPublisher(asyncio.Protocol):
    """The publisher's keep-alive connection to ``/pub``: ``send`` writes
    pipelined POSTs; the answers are only counted (``ok``) and a non-2xx
    status logged (the first few), since a refused message shows as loss."""

    def __init__(self, joined: asyncio.Future[None]) -> None:
        self.joined = joined
        self.transport: asyncio.Transport | None = None
        self.ok = 0
        self.refused = 0
        self.rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.joined.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:  # not our own close at the end
            log.warning("nchan publisher: connection lost after %d answers (%s)",
                        self.ok + self.refused, exc)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        # Only the status lines are read: each answer starts with one, and
        # nchan's bodies are short text that never holds "HTTP/1.1 ".
        data = self.rest + data
        cut = data.rfind(b"\r\n") + 2  # complete lines only; 1 when there is none
        if cut < 2:
            self.rest = data[-4096:]
            return
        self.rest, data = data[cut:], data[:cut]
        ok = data.count(b"HTTP/1.1 20")
        self.ok += ok
        refused = data.count(b"HTTP/1.1 ") - ok
        if refused:
            self.refused += refused
            if self.refused <= refused + 3:
                log.warning("nchan publisher: refused: %r", data[:300])
