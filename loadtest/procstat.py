"""What a server process holds, read from /proc: resident memory and open
file descriptors. The leak checks of the stress ring (tests/stress/) and of
the fuzzer (``python -m loadtest.fuzz``) compare these before and after."""

from __future__ import annotations

import os
from typing import NamedTuple


class Usage(NamedTuple):
    rss: int  # bytes (VmRSS)
    fds: int  # entries of /proc/<pid>/fd

    @property
    def rss_mb(self) -> float:
        return round(self.rss / (1 << 20), 1)


def usage(pid: int) -> Usage:
    """RSS and open descriptors of ``pid`` now (OSError once it has exited)."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
    return Usage(rss, len(os.listdir(f"/proc/{pid}/fd")))
