"""SQLite's heap, read from the library this process uses (storage/sqlite/memory.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from thingshub.storage.sqlite.memory import memory_used

ROW = b"x" * 1000


def _fill(path: Path, cache_kib: int, rows: int) -> int:
    """Memory SQLite holds while a connection with a `cache_kib` cache has written
    and re-read `rows` rows of 1 kB (about rows kB of pages)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA cache_size = -{cache_kib}")
        conn.execute("CREATE TABLE t (v BLOB)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?)", ((ROW,) for _ in range(rows)))
        conn.execute("COMMIT")
        assert conn.execute("SELECT count(*), sum(length(v)) FROM t").fetchone() == (
            rows,
            rows * len(ROW),
        )
        used = memory_used()
        assert used is not None
        return used
    finally:
        conn.close()


def test_the_page_cache_shows_and_stays_within_its_size(tmp_path: Path) -> None:
    before = memory_used()
    assert before is not None and before >= 0
    small = _fill(tmp_path / "small.db", 1024, 20_000)  # 1 MiB cache, ~20 MB of rows
    large = _fill(tmp_path / "large.db", 64 * 1024, 20_000)  # room for every page
    # The large cache holds the ~20 MB it touched; the small one stays near its MiB.
    assert large - before > 15 * 1024 * 1024
    assert small - before < 4 * 1024 * 1024
    # Closing the connections gave their caches back.
    after = memory_used()
    assert after is not None and after - before < 2 * 1024 * 1024
