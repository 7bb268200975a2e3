"""Run nginx with ``cdn/nginx.conf`` in front of a liveroom origin."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

CONF_TEMPLATE = Path(__file__).with_name("nginx.conf")
_TEMP_DIRS = ("client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp", "cache")


def find_nginx() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx-light)")


def render_config(*, listen: str, origin: str, prefix: Path, workers: int = 1) -> str:
    """The config for nginx listening on ``listen`` (host:port) and caching
    ``origin`` (http://host:port); runtime files under ``prefix``."""
    parts = urlsplit(origin if "://" in origin else f"http://{origin}")
    if not parts.hostname or not parts.port:
        raise ValueError(f"origin must be http://host:port, not {origin!r}")
    user_directive = ""
    if os.geteuid() == 0:
        # Run as root, nginx starts its workers as an unprivileged user, who
        # must reach the cache and temp directories. Under a private parent
        # (a 0700 temp dir, say) nobody cannot: keep the workers root then.
        user_directive = ("user nobody nogroup;" if _reachable_by_others(prefix)
                          else "user root root;")
    text = CONF_TEMPLATE.read_text()
    for key, value in {
        "workers": str(workers), "prefix": str(prefix), "cache_dir": str(prefix / "cache"),
        "origin": f"{parts.hostname}:{parts.port}", "listen": listen,
        "user_directive": user_directive,
    }.items():
        text = text.replace("{" + key + "}", value)
    return text


def _reachable_by_others(path: Path) -> bool:
    """True when every existing ancestor of ``path`` is searchable by others."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return False
    return True


def prepare(prefix: Path, conf: str) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    for d in _TEMP_DIRS:
        (prefix / d).mkdir(exist_ok=True)
        if os.geteuid() == 0 and "user nobody" in conf:
            nobody = pwd.getpwnam("nobody")
            os.chown(prefix / d, nobody.pw_uid, nobody.pw_gid)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return path


def nginx_command(conf_path: Path, prefix: Path) -> list[str]:
    return [find_nginx(), "-p", str(prefix), "-c", str(conf_path), "-g", "daemon off;"]


def start(*, listen: str, origin: str, prefix: Path,
          workers: int = 1) -> subprocess.Popen[bytes]:
    """Start nginx in the foreground of a child process (the caller stops it)."""
    conf = prepare(prefix, render_config(listen=listen, origin=origin, prefix=prefix,
                                         workers=workers))
    check = subprocess.run([*nginx_command(conf, prefix)[:-2], "-t", "-q"],
                           capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"nginx rejected its config: {check.stderr.strip()}")
    return subprocess.Popen(nginx_command(conf, prefix))
