"""Storage backends implementing the ports of core/ports.py, and the factory choosing one.

Rules:
- `open_storage` only parses the URL and constructs; it does no I/O. The
  caller awaits `storage.open()` (connect, migrate) and `storage.close()`.
- URLs: none (or empty) is the SQLite file `<data_dir>/thingshub.db`;
  `sqlite:///name.db` and a bare path are SQLite files, a relative path
  being relative to the data dir (`sqlite:////abs/path.db` or `/abs/path.db`
  for absolute ones); `postgresql://` or `postgres://` is PostgreSQL (the URL
  goes to asyncpg as is); `memory://` keeps everything in this process.
- Any other scheme is a ValueError naming the scheme, never echoing the URL
  (it may hold a password).
- This package imports only `thingshub.core` (import-linter checks it).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from thingshub.core.ports import Storage

DEFAULT_SQLITE_FILE = "thingshub.db"

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")

_HINT = (
    "use postgresql://user@host/db, sqlite:///file.db (relative to the data dir), "
    "sqlite:////absolute/file.db, a file path, or memory://"
)


def open_storage(url: str | None, data_dir: Path) -> Storage:
    """The storage `url` names (see the module rules); not yet opened."""
    spec = (url or "").strip()
    if not spec:
        return _sqlite(data_dir / DEFAULT_SQLITE_FILE)
    scheme, sep, rest = spec.partition("://")
    if not sep:
        return _sqlite(data_dir / Path(spec).expanduser())
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres"):
        from thingshub.storage.postgres import PostgresStorage

        return PostgresStorage(spec)
    if scheme == "sqlite":
        if rest and not rest.startswith("/"):
            raise ValueError(f"a sqlite:// database URL has no host; {_HINT}")
        path = unquote(rest[1:].split("?", 1)[0])
        return _sqlite(data_dir / (path or DEFAULT_SQLITE_FILE))
    if scheme == "memory":
        from thingshub.storage.memory import MemoryStorage

        return MemoryStorage()
    if not _SCHEME.fullmatch(scheme):  # not a scheme: do not echo what may be a secret
        raise ValueError(f"the database URL is not a URL or a path ThingsHub understands; {_HINT}")
    raise ValueError(f"unknown database URL scheme {scheme!r}; {_HINT}")


def _sqlite(path: Path) -> Storage:
    from thingshub.storage.sqlite import SqliteStorage

    return SqliteStorage(path)
