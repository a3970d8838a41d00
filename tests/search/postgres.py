"""A real PostgreSQL server for the store tests: a throwaway cluster (initdb) in a temp folder, on a free local port,
trust authentication on 127.0.0.1 only, stopped and deleted at the end (as tests/devices/conftest.py starts sshd).
Run as the `postgres` user when the tests run as root (the server refuses root)."""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.devices.conftest import free_port


def pg_bin() -> Path | None:
    """The folder of initdb / pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return Path(cands[-1]).parent if cands else None


def postgres_unavailable() -> str | None:
    if pg_bin() is None:
        return ("PostgreSQL server not installed (initdb not found); `make test` installs it with apt-get "
                "(postgresql) when it can run as root or with sudo")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'edgedet[postgres]'"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


class Postgres:
    """initdb + pg_ctl start in a fresh folder; url(db) for a database of it; stop() removes everything."""

    def __init__(self):
        self.bin = pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="edgedet-pg-", dir="/tmp"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        r = subprocess.run([*self.as_user, *argv], capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{argv[0]} failed: {(r.stdout + r.stderr)[-2000:]}")

    def start(self) -> "Postgres":
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "edgedet", "--no-sync", "-E", "UTF8",
                  "--locale=C")
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.root / "log"), "-w", "-t",
                  "60", "start")
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://edgedet@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh empty database; -> its URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=edgedet dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
