"""A real, throw-away PostgreSQL server for the tests (and the benchmark).

Debian's ``postgresql`` package puts ``initdb``/``pg_ctl`` in ``/usr/lib/postgresql/<v>/bin``.
The server refuses to run as root, so under root (CI) it runs as an unprivileged system
user (created on first use) through ``runuser``.  Data and socket live in one temporary
directory; the server listens on a free TCP port on 127.0.0.1 with ``trust`` auth, and
each test gets a database of its own (``CREATE DATABASE`` copies template1 in ~0.1 s).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_USER = "soundalike-pg"  # the OS user that runs the server when we are root
DB_USER = "soundalike"     # the database superuser initdb creates


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` holding ``initdb`` and ``pg_ctl``, or None."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            try:
                found.append((int(Path(d).parent.name.split(".")[0]), Path(d)))
            except ValueError:
                continue
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)


class PgServer:
    """``start()`` a private server, ``new_database()`` per test, ``stop()`` at the end."""

    def __init__(self, bin_dir: Path, *, settings: dict[str, str] | None = None):
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="soundalike-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.settings = {"listen_addresses": "127.0.0.1", "max_connections": "200",
                         "shared_buffers": "64MB", **(settings or {})}
        self._n = itertools.count(1)
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PgServer:
        if self._as_root:
            _ensure_user()
            pw = pwd.getpwnam(PG_USER)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o755)
        self._run("initdb", "-D", str(self.data), "-U", DB_USER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        opts = f"-p {self.port} -k {self.root} " + " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        try:
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        except subprocess.CalledProcessError as exc:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{tail}") from exc
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database; returns its URL."""
        import psycopg

        name = f"{prefix}{os.getpid()}_{next(self._n)}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)
