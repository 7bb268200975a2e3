"""The servers a benchmark measures, as child processes: ``liveroom serve``
on port 0 with the benchmark's limits lifted, or the python-socketio peer
(``loadtest.socketio_peer``, started through ``bench_fanout``'s hidden
``--serve-socketio`` flag), each pinned to the server's CPUs; the port is
read from the server's "listening on" log line. The nchan peer (nginx, on a
free port of its config) is ``loadtest.nchan_peer.NchanServer``;
``start_server`` starts any of the three."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from loadtest.nchan_peer import PUB_PATH, SUB_PATH, NchanServer
from loadtest.procstat import terminate
from loadtest.wsclient import LIVEROOM, NCHAN, ROOM, SOCKETIO

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on http://([\d.]+):(\d+)")


class ServerProcess:
    """A server child process, pinned, whose log line gives its port.
    ``on_line`` sees every line of its log (stderr) as it comes."""

    def __init__(self, cmd: list[str], env: dict[str, str], cpus: set[int] | None,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.cmd = cmd
        self.env = env
        self.cpus = cpus
        self.on_line = on_line
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 20.0) -> ServerProcess:
        cpus = self.cpus
        preexec: Callable[[], None] | None = None
        if cpus:
            def preexec() -> None:
                os.sched_setaffinity(0, cpus)
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=preexec)
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log[-30:]))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if len(self.log) > 500:
                del self.log[:100]
            if self.on_line is not None:
                self.on_line(line)
            m = _LISTENING.search(line)
            if m and not self._ready.is_set():
                self.port = int(m.group(2))
                self._ready.set()

    def exited(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return self.proc.poll() if self.proc is not None else None

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 15 s); the exit status, None if not running."""
        proc, self.proc = self.proc, None
        return None if proc is None else terminate(proc)


def start_liveroom(args: argparse.Namespace, data_dir: str, secret: str,
                   cpus: set[int] | None) -> ServerProcess:
    env = {**os.environ, "LIVEROOM_JWT_SECRET": secret,
           "LIVEROOM_API_KEY": "bench-api-key", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "liveroom.cli", "serve", "--host", "127.0.0.1",
           "--port", "0", "--no-demo-room", "--data-dir", data_dir,
           "--coalesce-window", str(args.coalesce_window),
           "--action-rate", "1e9", "--action-burst", "1000000000",
           # One publisher connection offers the whole rate: no frame budget.
           "--frame-rate", "1e9", "--frame-burst", "1000000000",
           "--outbound-budget", str(args.outbound_budget)]
    cmd += agent_args(args)
    if getattr(args, "compare_agent_rooms", 0):
        # Each seat of loadtest.seated_agents is one connection of the
        # character's user: past the per-user cap (32) its rooms would stay empty.
        cmd += ["--max-conns-per-user", str(args.compare_agent_rooms + 32)]
    return ServerProcess(cmd, env, cpus).start()


AGENT_CHARACTERS = REPO / "loadtest" / "characters"


def agent_args(args: argparse.Namespace) -> list[str]:
    """``--agents N``: N commentators (loadtest/characters/) sit in the bench
    room and talk without pause, their replies streaming as agent.delta
    actions to every viewer. The model is ``--agent-backend``: scripted at
    ``--agent-word-delay`` (0.012 s, the embedded model's ~85 tokens/s) keeps
    the edge's side of the work (a member reading every action, deltas,
    stage writes) without a model on the server's core; in production the
    model runs on its own host (vLLM), never in the edge."""
    if not args.agents:
        return ["--no-agents"]
    names = sorted(p.stem for p in AGENT_CHARACTERS.glob("*.toml"))[: args.agents]
    return ["--agent-room", ROOM, "--characters", str(AGENT_CHARACTERS),
            "--agent-characters", ",".join(names), "--agent-backend", args.agent_backend,
            "--agent-word-delay", str(args.agent_word_delay), "--agent-cooldown", "0",
            "--quota-room-per-day", "0", "--quota-user-per-day", "0",
            *(["--openai-base-url", args.agent_openai_url] if args.agent_openai_url else [])]


def start_socketio(cpus: set[int] | None) -> ServerProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "loadtest.bench_fanout", "--serve-socketio", "0"]
    return ServerProcess(cmd, env, cpus).start()


class Server(Protocol):
    """What a benchmark needs of a started server."""

    @property
    def port(self) -> int: ...

    @property
    def pid(self) -> int: ...

    def stop(self) -> int | None: ...


def writes_counted(srv: Server) -> bool:
    """Whether /proc/<pid>/io counts the server's frame writes: its ``syscw``
    counts write(2) and writev(2), not send(2), which a liveroom edge's send
    loop in C uses (its start-up line says ``fan-out send loop: c``)."""
    return not any("fan-out send loop: c" in line for line in getattr(srv, "log", ()))


# Per server: the viewers' path, and the publisher's when it differs.
SERVER_PATHS: dict[str, tuple[str, str | None]] = {
    LIVEROOM: ("/ws", None),
    SOCKETIO: ("/socket.io/?EIO=4&transport=websocket", None),
    NCHAN: (SUB_PATH, PUB_PATH),
}


def start_server(mode: str, args: argparse.Namespace, data_dir: str, secret: str,
                 cpus: set[int] | None) -> Server:
    """A fresh server of ``mode`` for one run of ``bench_fanout``."""
    if mode == LIVEROOM:
        return start_liveroom(args, data_dir, secret, cpus)
    if mode == SOCKETIO:
        return start_socketio(cpus)
    return NchanServer(cpus, args.rate / args.viewers).start()
