"""A throwaway PostgreSQL cluster for the local runtime when DATABASE_URL is not set.

initdb and pg_ctl refuse to run as root, so as root they run as the unprivileged
`postgres` user through runuser (as scripts/ensure-postgres.sh does). The cluster lives
in a fresh temporary directory, listens on 127.0.0.1 on a free port with trust auth, and
stop() shuts it down (and removes its data unless asked to keep it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess  # nosec B404
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from proactive_delivery.core.errors import ConfigError
from proactive_delivery_tools.local.sqs import free_port


def url_from_params(info: dict[str, Any], *, mask: bool = False) -> str:
    """A postgresql:// URL (what Settings accepts) from libpq connection parameters."""
    user = quote(str(info.get("user") or "postgres"), safe="")
    password = info.get("password")
    auth = f"{user}:{'***' if mask else quote(str(password), safe='')}@" if password else f"{user}@"
    host = str(info.get("host") or "127.0.0.1")
    port = str(info.get("port") or "5432")
    dbname = quote(str(info.get("dbname") or "postgres"), safe="")
    if host.startswith("/"):
        return f"postgresql://{auth}/{dbname}?host={quote(host, safe='/')}&port={port}"
    return f"postgresql://{auth}{host}:{port}/{dbname}"


def url_from_environment(dbname: str) -> str:
    """The URL of database `dbname` on the server the standard PG* variables name
    (default 127.0.0.1:5432, user postgres), as the tests and the benchmark reach it."""
    return url_from_params(
        {
            "host": os.environ.get("PGHOST"),
            "port": os.environ.get("PGPORT"),
            "user": os.environ.get("PGUSER"),
            "password": os.environ.get("PGPASSWORD"),
            "dbname": dbname,
        }
    )


def server_bindir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in Path(p).parent.name.split(".")]
    )
    for directory in reversed(candidates):
        if os.access(Path(directory) / "initdb", os.X_OK) and os.access(Path(directory) / "pg_ctl", os.X_OK):
            return Path(directory)
    initdb = shutil.which("initdb")
    if initdb:
        found = Path(os.path.realpath(initdb)).parent
        if (found / "pg_ctl").exists():
            return found
    raise ConfigError(
        "DATABASE_URL is not set and PostgreSQL's server programs (initdb, pg_ctl) were not found: "
        "install PostgreSQL or set DATABASE_URL"
    )


class ThrowawayPostgres:
    def __init__(self, *, keep_data: bool = False) -> None:
        self.bindir = server_bindir()
        self.keep_data = keep_data
        self.port = free_port()
        self.data_dir: Path | None = None
        self._running = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise ConfigError(
                    "running as root, but there is no unprivileged 'postgres' user to own a throwaway "
                    "cluster: create one or set DATABASE_URL"
                ) from None
            if not shutil.which("runuser"):
                raise ConfigError("running as root, but runuser is not available: set DATABASE_URL")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(  # noqa: S603 - fixed programs, our own arguments  # nosec B603
            command, capture_output=True, text=True, cwd="/", check=False, timeout=120
        )

    def start(self) -> ThrowawayPostgres:
        self.data_dir = Path(tempfile.mkdtemp(prefix="proactive-delivery-pg-"))
        if self._as_root:
            shutil.chown(self.data_dir, "postgres", "postgres")
        self.data_dir.chmod(0o700)
        init = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        )
        if init.returncode != 0:
            self._remove()
            raise ConfigError(f"initdb failed: {init.stderr.strip()[-500:]}")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        started = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
        if started.returncode != 0:
            log = (self.data_dir / "server.log").read_text(errors="replace")[-800:]
            self._remove()
            raise ConfigError(f"the throwaway PostgreSQL did not start: {log.strip()}")
        self._running = True
        return self

    def stop(self) -> None:
        if self._running and self.data_dir is not None:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")
            self._running = False
        if not self.keep_data:
            self._remove()

    def _remove(self) -> None:
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
