"""The data dir: where the platform keeps its database, secrets and files.

Rules:
- Everything in it is private to the user the server runs as: the dir is
  mode 0700 and every file in it 0600 (docs/operations.md, "Limits against
  hostile input"). The database holds every device key (they cannot be
  hashed: OneNET tokens are HMACs keyed by them), the password pepper, the
  console's session secret and the OTA download secret, so a copy readable
  by another local user would let it impersonate any device.
- A data dir made by an older version, or by hand, is tightened on start:
  the dir and every dir below it to 0700, every file to 0600. Nothing is
  loosened, and nothing outside the data dir is touched.
- Files written here are created with their final mode (`os.open` with
  0600), never written first and tightened afterwards, so there is no
  moment at which they are readable by others.
- A problem the operator must fix is a `DataDirError` with one sentence.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

API_KEY_FILE = "api-key"
PORTS_FILE = "ports.json"

DIR_MODE = 0o700
FILE_MODE = 0o600


class DataDirError(Exception):
    """The data dir cannot be used; the message says why."""


def prepare(path: Path) -> Path:
    """Create the data dir (0700) or tighten an existing one, and check it is writable."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        tighten(path)
        probe = path / f".write-test-{os.getpid()}"
        write_private(probe, "")
        probe.unlink()
    except OSError as exc:
        raise DataDirError(f"the data dir {path} is not writable: {exc.strerror or exc}") from exc
    return path


def tighten(root: Path) -> None:
    """Take group and other permissions away from `root` and everything below it.

    Symbolic links are not followed: a link in the data dir must not make us
    change the mode of a file elsewhere.
    """
    _restrict(root, DIR_MODE)
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            _restrict(base / name, DIR_MODE)
        for name in filenames:
            _restrict(base / name, FILE_MODE)


def _restrict(path: Path, mode: int) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:  # removed meanwhile (a WAL checkpoint, a temp file)
        return
    if stat.S_ISLNK(st.st_mode):
        return
    if stat.S_IMODE(st.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, mode 0600 from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, FILE_MODE)  # the file may have existed with a wider mode


def api_key(data_dir: Path, configured: str | None) -> tuple[str, bool]:
    """The API key, and whether it was generated now (then it is printed once).

    A key given by the operator wins; else the one saved in the data dir;
    else a new one, saved there.
    """
    if configured:
        return configured, False
    path = data_dir / API_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key, False
    key = secrets.token_urlsafe(32)
    write_private(path, key + "\n")
    return key, True


def write_ports(data_dir: Path, ports: dict[str, int]) -> None:
    """`ports.json`: the ports chosen, for clients that started us with port 0."""
    write_private(data_dir / PORTS_FILE, json.dumps(ports))
