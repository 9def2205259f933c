"""How much memory SQLite holds in this process: its page caches, above all.

Why it is read at all: SQLite's page caches fill as the database grows, up to
their configured sizes (storage.CACHE_KIB for the writer, READER_CACHE_KIB for
the reader), so a young server's RSS climbs for as long as the file is smaller
than its caches. `/metrics` reports SQLite's own heap beside the process's, so
that an operator (and `bench/soak.py`) can tell that bounded growth from a leak.

Rules:
- Python's `sqlite3` module does not expose `sqlite3_memory_used()`. It is
  read through ctypes from the `_sqlite3` extension's own handle: the symbol
  lookup covers the extension and the libraries it was linked with, so the
  figure is that of the SQLite library instance this process really uses,
  whether linked or built in.
- Where that lookup fails (another build of Python), the figure is absent
  (None), never a guess.
"""

from __future__ import annotations

import _sqlite3
import ctypes
from collections.abc import Callable


def _load() -> Callable[[], int] | None:
    try:
        fn = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int64
    fn.argtypes = []
    return fn


_memory_used = _load()


def memory_used() -> int | None:
    """Bytes SQLite has allocated in this process now (all connections), or None."""
    return None if _memory_used is None else int(_memory_used())
