"""The default storage: one SQLite file, on a thread of its own (rules in storage.py)."""

from thingshub.storage.sqlite.storage import SqliteStorage

__all__ = ["SqliteStorage"]
