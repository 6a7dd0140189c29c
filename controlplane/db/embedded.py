"""An embedded PostgreSQL for the local dev stack, used when DATABASE_URL is unset.

It runs pgserver 0.1.4's bundled PostgreSQL 16 binaries (no download, no system package). The
server listens only on a Unix socket in the data directory (or, when that path is too long for
a socket, under the runtime directory), never on TCP, so it cannot clash with a PostgreSQL on
port 5432. A server already running on the data directory is reused. It keeps running until
``stop()``: pgserver's own at-exit clean-up is disabled (``cleanup_mode=None``) so an
``os._exit`` or a crash never leaves half-done bookkeeping behind.

Running as root (CI, containers) -- what we found in pgserver 0.1.4's source and verified here:
PostgreSQL itself refuses to run as root, and pgserver does not refuse but works around it.
When the effective uid is 0 it

* creates a system user named ``pgserver`` with ``useradd`` the first time (a lasting change
  to /etc/passwd; later starts reuse it),
* chowns the data directory to that user and runs initdb and pg_ctl as it (``subprocess``
  with ``user=``),
* adds group/other read+execute to every parent directory of the data directory and to its
  own binary directory, so that user can reach them.

So as root it works provided ``useradd`` exists (checked below, with a clear error) and the
data directory sits where making its parents world-traversable is acceptable: keep it in the
checkout (e.g. ``.cache/pgdata``) or under /var/lib, not under a private home such as /root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

ROOT_SYSTEM_USER = "pgserver"  # the account pgserver 0.1.4 creates when run as root
SUPERUSER = "postgres"


@dataclass
class EmbeddedPostgres:
    """A running embedded server: its asyncpg URL, and ``stop()``."""

    data_dir: Path
    socket_dir: Path
    url: str
    system_user: str | None
    _server: Any = field(repr=False)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and forget pgserver's handle on it."""
        _forget(self._server, self.data_dir)
        pg_ctl = _bin_dir() / "pg_ctl"
        result = subprocess.run(
            [str(pg_ctl), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            user=self.system_user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
            raise RuntimeError(
                f"could not stop the embedded PostgreSQL in {self.data_dir}: "
                f"{result.stderr.strip() or 'pg_ctl exited ' + str(result.returncode)}"
            )
        log.info("embedded PostgreSQL in %s stopped", self.data_dir)


def start_embedded_postgres(data_dir: Path, *, database: str = SUPERUSER) -> EmbeddedPostgres:
    """Start (or attach to) a PostgreSQL server whose data lives in ``data_dir``."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    system_user = _root_system_user()
    pgserver = _import_pgserver()
    try:
        server = pgserver.get_server(data_dir, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(
            f"the embedded PostgreSQL in {data_dir} did not start ({exc}); "
            f"its log is {data_dir / 'log'}"
        ) from None
    info = server.get_postmaster_info()
    if info.socket_dir is None:  # pragma: no cover - pgserver always uses a socket on POSIX
        raise RuntimeError("the embedded PostgreSQL reports no socket directory")
    url = URL.create(
        "postgresql+asyncpg",
        username=SUPERUSER,
        database=database,
        query={"host": str(info.socket_dir)},
    )
    log.info("embedded PostgreSQL running in %s (socket in %s)", data_dir, info.socket_dir)
    return EmbeddedPostgres(
        data_dir=data_dir,
        socket_dir=Path(info.socket_dir),
        url=url.render_as_string(hide_password=False),
        system_user=system_user,
        _server=server,
    )


def _root_system_user() -> str | None:
    """The account pgserver will run PostgreSQL as, checking what it needs when we are root."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        pwd.getpwnam(ROOT_SYSTEM_USER)
        return ROOT_SYSTEM_USER
    if shutil.which("useradd") is None:
        raise RuntimeError(
            "running as root, the embedded PostgreSQL needs a non-root account and pgserver "
            f"creates one ({ROOT_SYSTEM_USER!r}) with useradd, which is not installed; install "
            f"the passwd package, create the user yourself, run as a non-root user, or set "
            "DATABASE_URL to an external PostgreSQL"
        )
    return ROOT_SYSTEM_USER


def _import_pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; its /tmp fallback is fine here.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise RuntimeError(
            "the embedded PostgreSQL needs pgserver: pip install 'gpu-node-controlplane[local]', "
            "or set DATABASE_URL to an external PostgreSQL"
        ) from None
    return pgserver


def _bin_dir() -> Path:
    _import_pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _forget(server: Any, data_dir: Path) -> None:
    """Drop pgserver's per-process handle, so a later start in this process starts afresh."""
    server.cleanup()  # with cleanup_mode=None: bookkeeping only, the server keeps running
    type(server)._instances.pop(data_dir, None)
