"""Private services that fault tests stop and start: never the machine's shared ones.

- `PrivatePostgres`: a PostgreSQL cluster initdb'd into a temporary dir and run
  by the `postgres` user (PostgreSQL refuses to run as root) on a free port,
  its socket in the same dir. `stop()` is a fast shutdown
  (`pg_ctl stop -m fast`); `start()` brings it back on the same port.
- `SmallDisk`: a size-limited tmpfs mounted by the test (root only), for a
  database that runs out of space; unmounted at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def postgres_unavailable_reason() -> str | None:
    """Why a private PostgreSQL cannot run here, or None."""
    if _pg_bin() is None:
        return "PostgreSQL's server binaries are not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser"
    return None


class PrivatePostgres:
    def __init__(self) -> None:
        bin_dir = _pg_bin()
        assert bin_dir is not None
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="thingshub-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.running = False
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"],
            check=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def _run(self, args: list[str], check: bool) -> None:
        subprocess.run(self._command(args), check=check, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        log = self.dir / "log"
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
        )
        self.running = True

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, nothing committed is lost."""
        if self.running:
            self.running = False
            self._run(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                check=True,
            )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def mount_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small file system needs root"
    return None


class SmallDisk:
    """A tmpfs of `size` bytes at a new temporary dir."""

    def __init__(self, size: int) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="thingshub-disk-"))
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )

    def fill(self) -> Path:
        """Take every free byte with one file; returns it (delete it to free the space)."""
        filler = self.path / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        return filler

    def destroy(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
        shutil.rmtree(self.path, ignore_errors=True)
