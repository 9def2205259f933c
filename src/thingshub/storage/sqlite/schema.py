"""SQLite's part of the schema (sql/schema.py): its types, and the tables of
migration 3 that it lays out its own way.

Rules:
- All pending migrations run in one `BEGIN IMMEDIATE` transaction with
  foreign keys on, so a table rebuild must follow SQLite's "12 steps"
  without `PRAGMA`s.
- Keys compare with the BINARY collation (UTF-8 byte order = code point
  order, as Python compares strings); times are Unix ms in INTEGER columns;
  tags and image documents are JSON text, bodies BLOBs, presence 0 or 1.
- SQLite cannot add an INTEGER PRIMARY KEY to a table, and the implicit
  rowid of `devices` may change on VACUUM, so a device's `id` is a column
  of its own (unique index), filled from the rowid for existing devices and
  given max(id, ids in device_purges) + 1 on insert (dialect.py), so an id
  is never given twice.
- `points.seq` and `events.seq` are rowids (INTEGER PRIMARY KEY), assigned
  by the writer in arrival order (writes.py), so they order rows of equal
  ts by arrival; `points_series (device_id, key, ts)` carries seq
  implicitly as its last column, so it is the (device_id, key, ts, seq)
  order of history pages. `num` (REAL) is the value as a double when it is
  a number, NULL otherwise; `value` the JSON text of every value.
  `latest` and `attributes` are WITHOUT ROWID tables (their key is the row).
"""

from __future__ import annotations

from thingshub.storage.sql import schema

TYPES = {
    "key": "TEXT",
    "text": "TEXT",
    "int32": "INTEGER",
    "int64": "INTEGER",
    "bool": "INTEGER",
    "online": "online = 1",
    "json": "TEXT",
    "jsonb": "TEXT",
    "bytes": "BLOB",
}

SERIES = (
    "ALTER TABLE devices ADD COLUMN id INTEGER",
    "UPDATE devices SET id = rowid",
    "CREATE UNIQUE INDEX devices_id ON devices (id)",
    """
    CREATE TABLE points (
        seq        INTEGER PRIMARY KEY,
        device_id  INTEGER NOT NULL,
        key        TEXT    NOT NULL,
        ts         INTEGER NOT NULL,
        num        REAL,
        value      TEXT    NOT NULL
    )
    """,
    "CREATE INDEX points_series ON points (device_id, key, ts)",
    """
    CREATE TABLE latest (
        device_id  INTEGER NOT NULL,
        key        TEXT    NOT NULL,
        ts         INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        value      TEXT    NOT NULL,
        CONSTRAINT latest_pkey PRIMARY KEY (device_id, key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE attributes (
        device_id  INTEGER NOT NULL,
        key        TEXT    NOT NULL,
        value      TEXT    NOT NULL,
        ts         INTEGER NOT NULL,
        CONSTRAINT attributes_pkey PRIMARY KEY (device_id, key)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE events (
        seq        INTEGER PRIMARY KEY,
        device_id  INTEGER NOT NULL,
        ts         INTEGER NOT NULL,
        method     TEXT    NOT NULL,
        params     TEXT    NOT NULL
    )
    """,
    "CREATE INDEX events_device_ts ON events (device_id, ts)",
)

MIGRATIONS = schema.migrations(TYPES, SERIES)
