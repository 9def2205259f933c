"""PostgreSQL's part of the schema (sql/schema.py): its types, and its telemetry tables.

Rules:
- Pending migrations run in one transaction under the advisory lock of
  storage.py, so processes starting together apply each exactly once.
- A device's `id`, `points.seq` and `events.seq` are identity columns:
  never reused, and taken in arrival order by the writer's insert
  (writes.py). The primary keys (device_id, key, ts, seq) and (device_id,
  ts, seq) are the order of history pages and the index of deleting a
  device's rows. `num` is the value as a double when it is a number;
  `value` and `params` the JSON text (`text`: the writer made it with
  orjson, nothing parses it on the hot path; `value::jsonb` queries it).
  `latest` and `attributes` leave room in their pages (fillfactor) for HOT
  updates.
"""

from __future__ import annotations

from thingshub.storage.sql import schema

TYPES = {
    "key": 'text COLLATE "C"',
    "text": "text",
    "int32": "integer",
    "int64": "bigint",
    "bool": "boolean",
    "true": "TRUE",
    "false": "FALSE",
    "online": "online",
    "json": "json",
    "jsonb": "jsonb",
    "bytes": "bytea",
}

SERIES = (
    "ALTER TABLE devices ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE devices ADD CONSTRAINT devices_id_key UNIQUE (id)",
    """CREATE TABLE points (
        device_id  bigint NOT NULL,
        ts         bigint NOT NULL,
        seq        bigint GENERATED ALWAYS AS IDENTITY,
        num        double precision,
        key        text COLLATE "C" NOT NULL,
        value      text   NOT NULL,
        CONSTRAINT points_pkey PRIMARY KEY (device_id, key, ts, seq)
    )""",
    """CREATE TABLE latest (
        device_id  bigint NOT NULL,
        ts         bigint NOT NULL,
        seq        bigint NOT NULL,
        key        text COLLATE "C" NOT NULL,
        value      text   NOT NULL,
        CONSTRAINT latest_pkey PRIMARY KEY (device_id, key)
    ) WITH (fillfactor = 50)""",
    """CREATE TABLE attributes (
        device_id  bigint NOT NULL,
        ts         bigint NOT NULL,
        key        text COLLATE "C" NOT NULL,
        value      text   NOT NULL,
        CONSTRAINT attributes_pkey PRIMARY KEY (device_id, key)
    ) WITH (fillfactor = 70)""",
    """CREATE TABLE events (
        device_id  bigint NOT NULL,
        ts         bigint NOT NULL,
        seq        bigint GENERATED ALWAYS AS IDENTITY,
        method     text   NOT NULL,
        params     text   NOT NULL,
        CONSTRAINT events_pkey PRIMARY KEY (device_id, ts, seq)
    )""",
)

MIGRATIONS = schema.migrations(TYPES, SERIES)
