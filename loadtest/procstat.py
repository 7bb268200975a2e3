"""What a process holds and where it runs, read from /proc: resident memory
and open file descriptors (the leak checks of the stress ring, tests/stress/,
and of the fuzzer, ``python -m loadtest.fuzz``, compare these before and
after), CPU time per process and busy time per core (the benchmarks'
readings); and the settings a benchmark process starts with: its CPUs, its
file-descriptor limit, its event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import subprocess
from typing import Any, NamedTuple

log = logging.getLogger("liveroom.bench")


class Usage(NamedTuple):
    rss: int  # bytes (VmRSS)
    fds: int  # entries of /proc/<pid>/fd

    @property
    def rss_mb(self) -> float:
        return round(self.rss / (1 << 20), 1)


def usage(pid: int) -> Usage:
    """RSS and open descriptors of ``pid`` now (OSError once it has exited)."""
    return Usage(_vmrss(pid), len(os.listdir(f"/proc/{pid}/fd")))


def _vmrss(pid: int) -> int:
    """Resident bytes of ``pid`` (OSError once it has exited)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all threads), in seconds; zeros if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def run_delay(pid: int) -> float:
    """Seconds the main thread of ``pid`` (an event loop's) was ready to run
    but waited for its core (/proc/<pid>/schedstat, field 2); 0 if gone.
    A fan-out batch that waits there is late by as much, whatever took the
    core (another process, a kernel thread)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def core_ticks(cpus: set[int] | None) -> tuple[int, int, int]:
    """(busy, softirq, total) jiffies of ``cpus`` (all CPUs when None), from
    /proc/stat. Busy counts every process on the cores, ours or not, and the
    kernel's softirq work (loopback TCP input is partly done there)."""
    busy = soft = total = 0
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            if cpus is not None and int(name[3:]) not in cpus:
                continue
            v = [int(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(v)
            busy += sum(v) - v[3] - v[4]
            soft += v[6]
    return busy, soft, total


def write_calls(pid: int) -> int:
    """Write-class syscalls (write, writev) ``pid`` made so far (syscw of
    /proc/<pid>/io; socket sends through sendmsg are not in it); 0 if gone
    or unreadable."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("syscw:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """Resident bytes of ``pid``; 0 once it has exited."""
    try:
        return _vmrss(pid)
    except OSError:
        return 0


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def pin(cpus: set[int] | None) -> None:
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:
            log.warning("cannot pin to CPUs %s: %s", sorted(cpus), exc)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def parse_cpus(text: str) -> set[int]:
    """'1', '1,3' or '1-3' -> a CPU set."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return cpus


def terminate(proc: subprocess.Popen[Any], grace: float = 15.0) -> int:
    """SIGTERM (SIGKILL after ``grace`` s) to a server process; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def free_port() -> int:
    """A loopback TCP port free now (for a child server that takes its port
    from its command line)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
