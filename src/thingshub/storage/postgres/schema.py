"""PostgreSQL's part of the schema (sql/schema.py): its types, and the tables of
migration 3 that it lays out its own way.

Rules:
- All pending migrations run in one transaction, under the advisory lock of
  storage.py, so processes starting together apply each exactly once.
- Keys are `text COLLATE "C"` (byte order whatever the database's locale);
  times are Unix ms in `bigint`; tags are `jsonb`, image documents `json`
  (kept as written), bodies `bytea`, presence `boolean`.
- A device's `id` is an identity column: never reused. `points.seq` and
  `events.seq` are identity columns too, taken in arrival order by the
  writer's insert (writes.py), so they order rows of equal ts by arrival;
  their primary keys (device_id, key, ts, seq) and (device_id, ts, seq) are
  the indexes of history pages and of deleting a device's rows. `num` is
  the value as a double when it is a number, NULL otherwise; `value` and
  `params` the JSON text of every value (`text`, not `json`: the writer
  made it with orjson, so it needs no parsing on the hot path;
  `value::jsonb` queries it). Fixed-width columns come first; `latest` and
  `attributes` leave room in their pages (fillfactor) for HOT updates.
"""

from __future__ import annotations

from thingshub.storage.sql import schema

TYPES = {
    "key": 'text COLLATE "C"',
    "text": "text",
    "int32": "integer",
    "int64": "bigint",
    "bool": "boolean",
    "online": "online",
    "json": "json",
    "jsonb": "jsonb",
    "bytes": "bytea",
}

SERIES = (
    "ALTER TABLE devices ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE devices ADD CONSTRAINT devices_id_key UNIQUE (id)",
    """
    CREATE TABLE points (
        device_id  bigint NOT NULL,
        ts         bigint NOT NULL,
        seq        bigint GENERATED ALWAYS AS IDENTITY,
        num        double precision,
        key        text COLLATE "C" NOT NULL,
        value      text   NOT NULL,
        CONSTRAINT points_pkey PRIMARY KEY (device_id, key, ts, seq)
    )
    """,
    """
    CREATE TABLE latest (
        device_id  bigint NOT NULL,
        ts         bigint NOT NULL,
        seq        bigint NOT NULL,
        key        text COLLATE "C" NOT NULL,
        value      text   NOT NULL,
        CONSTRAINT latest_pkey PRIMARY KEY (device_id, key)
    ) WITH (fillfactor = 50)
    """,
    """
    CREATE TABLE attributes (
        device_id  bigint NOT NULL,
        ts         bigint NOT NULL,
        key        text COLLATE "C" NOT NULL,
        value      text   NOT NULL,
        CONSTRAINT attributes_pkey PRIMARY KEY (device_id, key)
    ) WITH (fillfactor = 70)
    """,
    """
    CREATE TABLE events (
        device_id  bigint NOT NULL,
        ts         bigint NOT NULL,
        seq        bigint GENERATED ALWAYS AS IDENTITY,
        method     text   NOT NULL,
        params     text   NOT NULL,
        CONSTRAINT events_pkey PRIMARY KEY (device_id, ts, seq)
    )
    """,
)

MIGRATIONS = schema.migrations(TYPES, SERIES)
