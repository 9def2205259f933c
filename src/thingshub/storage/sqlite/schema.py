"""SQLite's part of the schema (sql/schema.py): its types, and its telemetry tables.

Rules:
- Pending migrations run in one `BEGIN IMMEDIATE` transaction with foreign
  keys on, so a table rebuild must follow SQLite's "12 steps" without
  `PRAGMA`s.
- The rowid of `devices` may change on VACUUM and SQLite cannot add an
  INTEGER PRIMARY KEY to a table, so a device's `id` is a column of its own
  (unique index), filled from the rowid for existing devices and given
  above every id ever used on insert (dialect.py).
- `points.seq` and `events.seq` are rowids, given in arrival order by the
  writer (writes.py); `points_series (device_id, key, ts)` carries seq as
  its last column, so it is the order of history pages. `num` (REAL) is the
  value as a double when it is a number; `value` its JSON text. `latest`
  and `attributes` are WITHOUT ROWID: their key is the row.
"""

from __future__ import annotations

from thingshub.storage.sql import schema

TYPES = {
    "key": "TEXT",
    "text": "TEXT",
    "int32": "INTEGER",
    "int64": "INTEGER",
    "bool": "INTEGER",
    "true": "1",
    "false": "0",
    "online": "online = 1",
    "json": "TEXT",
    "jsonb": "TEXT",
    "bytes": "BLOB",
}

SERIES = (
    "ALTER TABLE devices ADD COLUMN id INTEGER",
    "UPDATE devices SET id = rowid",
    "CREATE UNIQUE INDEX devices_id ON devices (id)",
    """CREATE TABLE points (
        seq        INTEGER PRIMARY KEY,
        device_id  INTEGER NOT NULL,
        key        TEXT    NOT NULL,
        ts         INTEGER NOT NULL,
        num        REAL,
        value      TEXT    NOT NULL
    )""",
    "CREATE INDEX points_series ON points (device_id, key, ts)",
    """CREATE TABLE latest (
        device_id  INTEGER NOT NULL,
        key        TEXT    NOT NULL,
        ts         INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        value      TEXT    NOT NULL,
        CONSTRAINT latest_pkey PRIMARY KEY (device_id, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE attributes (
        device_id  INTEGER NOT NULL,
        key        TEXT    NOT NULL,
        value      TEXT    NOT NULL,
        ts         INTEGER NOT NULL,
        CONSTRAINT attributes_pkey PRIMARY KEY (device_id, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE events (
        seq        INTEGER PRIMARY KEY,
        device_id  INTEGER NOT NULL,
        ts         INTEGER NOT NULL,
        method     TEXT    NOT NULL,
        params     TEXT    NOT NULL
    )""",
    "CREATE INDEX events_device_ts ON events (device_id, ts)",
)

MIGRATIONS = schema.migrations(TYPES, SERIES)
