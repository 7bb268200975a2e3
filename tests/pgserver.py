"""Test support: a throwaway PostgreSQL cluster on an ephemeral loopback port.

``PgServer`` runs ``initdb`` in a fresh temp directory, then ``postgres``
itself (not ``pg_ctl``) as a child process, so the child's pid is the
postmaster's and stopping it is one signal. PostgreSQL refuses to run as
root: when the tests run as root, both commands run as the ``postgres`` user
(or ``nobody``) through ``subprocess``'s ``user=``, and the temp directory is
made in ``/tmp`` (pytest's own temp dirs are private to root) and handed to
that user.

``stop()`` keeps the data directory, so ``start()`` again brings the same
cluster back on the same port (a restart); ``close()`` stops and deletes it.
Durability settings are relaxed (``fsync=off``): the data survives a killed
server (the WAL is in the OS page cache), not a killed machine.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support import free_port

USER = "liveroom"
_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_bindir() -> Path:
    """The newest PostgreSQL server binaries: $PG_BINDIR, then
    /usr/lib/postgresql/*/bin, then the PATH."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    candidates += sorted((Path(p) for p in glob.glob(_BIN_GLOB)),
                         key=lambda p: _major(p.parent.name), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for d in candidates:
        if all((d / exe).is_file() for exe in ("initdb", "postgres", "pg_isready")):
            return d
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, postgres, pg_isready) not found in $PG_BINDIR, "
        f"{_BIN_GLOB} or the PATH; install the postgresql package")


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as; None: ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PgServer:
    """A throwaway PostgreSQL cluster. ``dsn`` names the ``postgres``
    database; ``dsn_for(name)`` another one (see ``create_database``)."""

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        self.bindir = find_bindir()
        self.port = 0
        self.settings = {"fsync": "off", "full_page_writes": "off", "max_connections": "200",
                         "shared_buffers": "32MB", **(settings or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._account = _run_as()
        self._root: Path | None = None
        self._dbs = 0

    # -- paths and names -------------------------------------------------
    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError("the server was never started")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    # -- life cycle --------------------------------------------------------
    def start(self, timeout: float = 20.0) -> PgServer:
        """initdb (the first time), then start the server and wait until it
        accepts connections."""
        if self.proc is not None:
            return self
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="liveroom-pg-"))
            (self._root / "sock").mkdir()
            self._chown(self._root, self._root / "sock")
            self._initdb()
        if self.port:
            self._launch(timeout)  # a restart: the same port, so DSNs stay valid
            return self
        for attempt in range(3):
            self.port = free_port()
            try:
                self._launch(timeout)
                return self
            except RuntimeError:
                if attempt == 2 or "could not bind" not in self.log():
                    raise
        return self

    def _initdb(self) -> None:
        cmd = [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", USER,
               "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              cwd=self.root, **self._as_user())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _launch(self, timeout: float) -> None:
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
               "-k", str(self.root / "sock"), "-c", "listen_addresses=127.0.0.1"]
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.root,
                                         **self._as_user())
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"postgres exited at start-up:\n{self.log()}")
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1",
                 "-p", str(self.port), "-U", USER, "-d", "postgres", "-t", "1"],
                capture_output=True, timeout=10)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop(immediate=True)
                raise RuntimeError(f"postgres not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, *, immediate: bool = False, timeout: float = 20.0) -> None:
        """Stop the server and keep its data. ``immediate`` is a crash as far
        as PostgreSQL is concerned (no shutdown checkpoint: the next start
        replays the WAL); otherwise a fast shutdown."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self, *, immediate: bool = False) -> None:
        self.stop(immediate=immediate)
        self.start()

    def close(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop()
        root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------
    async def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; returns its DSN."""
        import asyncpg  # type: ignore[import-untyped]

        self._dbs += 1
        name = f"{prefix}_{os.getpid()}_{self._dbs}"
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn_for(name)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def _as_user(self) -> dict[str, Any]:
        if self._account is None:
            return {}
        return {"user": self._account.pw_uid, "group": self._account.pw_gid,
                "extra_groups": [], "env": {**os.environ, "HOME": str(self.root),
                                            "USER": self._account.pw_name}}

    def _chown(self, *paths: Path) -> None:
        if self._account is None:
            return
        for p in paths:
            os.chown(p, self._account.pw_uid, self._account.pw_gid)
