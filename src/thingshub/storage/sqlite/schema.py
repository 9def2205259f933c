"""The SQLite schema, as an ordered list of migrations.

Rules:
- Append only: a released migration is never edited or reordered; a change
  is a new `Migration(N + 1, ...)` at the end of `MIGRATIONS`, and its
  PostgreSQL twin goes into postgres/schema.py with the same number.
- Each statement is one SQL statement (no script splitting); all pending
  migrations run in one `BEGIN IMMEDIATE` transaction with foreign keys on,
  so a table rebuild must follow SQLite's "12 steps" without `PRAGMA`s.
- Keys compare with the BINARY collation (UTF-8 byte order = code point
  order, as Python compares strings); times are Unix ms in INTEGER columns;
  tags and image documents are JSON text, request and response bodies BLOBs.
- Telemetry, attributes and events (migration 3) are keyed by the device's
  integer `id`, not by (product_id, name). SQLite cannot add an INTEGER
  PRIMARY KEY to a table, and the implicit rowid of `devices` may change on
  VACUUM, so `id` is a column of its own (unique index), filled from the
  rowid for existing devices and given max(id, ids in device_purges) + 1
  on insert; `device_purges` keeps a row per deleted device (`purged_at`
  set once its rows are gone), so an id is never given twice.
- `points.seq` is the rowid (INTEGER PRIMARY KEY), assigned by the writer
  as max(seq) + 1, ... in arrival order, so it orders points of equal ts by
  arrival; `points_series (device_id, key, ts)` carries it implicitly as
  its last column, so it is the (device_id, key, ts, seq) order of history
  pages. `num` (REAL) is the value as a double when it is a number, NULL
  otherwise; `value` is the JSON text of every value (common.py).
- Those rows have no foreign key (a check on every point would cost more
  than the insert): the writer checks the device inside its transaction,
  and deleting a device deletes its `latest` and `attributes` rows at once
  and queues its points and events in `device_purges`, deleted afterwards
  in short chunks (sqlite/series.py).
- OTA (migration 4): firmware packages and tasks belong to their product
  (ON DELETE CASCADE; a product is deleted only without devices), the
  devices of a task to the task. Task devices name their device without a
  foreign key, so a task keeps its history when a device is deleted (the
  OTA service cancels its part first). See ota_common.py.
"""

from __future__ import annotations

from thingshub.storage.common import Migration, check_migrations

MIGRATIONS = check_migrations(
    [
        Migration(
            1,
            "products, devices, presence, settings",
            (
                """
                CREATE TABLE products (
                    id          TEXT    NOT NULL PRIMARY KEY,
                    name        TEXT    NOT NULL,
                    created_at  INTEGER NOT NULL
                )
                """,
                """
                CREATE TABLE devices (
                    product_id     TEXT    NOT NULL,
                    name           TEXT    NOT NULL,
                    device_number  TEXT    NOT NULL,
                    key            TEXT    NOT NULL,
                    username       TEXT    NOT NULL,
                    password_hash  TEXT    NOT NULL,
                    created_at     INTEGER NOT NULL,
                    tags           TEXT    NOT NULL DEFAULT '{}',
                    status         TEXT    NOT NULL DEFAULT 'enabled',
                    CONSTRAINT devices_pkey PRIMARY KEY (product_id, name),
                    CONSTRAINT devices_device_number_key UNIQUE (device_number),
                    CONSTRAINT devices_username_key UNIQUE (username),
                    CONSTRAINT devices_product_fkey
                        FOREIGN KEY (product_id) REFERENCES products (id)
                )
                """,
                """
                CREATE TABLE device_presence (
                    product_id     TEXT    NOT NULL,
                    name           TEXT    NOT NULL,
                    online         INTEGER NOT NULL,
                    last_activity  INTEGER,
                    changed_at     INTEGER,
                    CONSTRAINT device_presence_pkey PRIMARY KEY (product_id, name),
                    CONSTRAINT device_presence_device_fkey
                        FOREIGN KEY (product_id, name) REFERENCES devices (product_id, name)
                        ON DELETE CASCADE
                )
                """,
                """
                CREATE INDEX device_presence_online
                    ON device_presence (product_id, name) WHERE online = 1
                """,
                """
                CREATE TABLE settings (
                    key    TEXT NOT NULL PRIMARY KEY,
                    value  TEXT NOT NULL
                )
                """,
            ),
        ),
        Migration(
            2,
            "device images, command records",
            (
                """
                CREATE TABLE images (
                    product_id  TEXT    NOT NULL,
                    name        TEXT    NOT NULL,
                    version     INTEGER NOT NULL,
                    document    TEXT    NOT NULL,
                    updated_at  INTEGER NOT NULL,
                    CONSTRAINT images_pkey PRIMARY KEY (product_id, name),
                    CONSTRAINT images_device_fkey
                        FOREIGN KEY (product_id, name) REFERENCES devices (product_id, name)
                        ON DELETE CASCADE
                )
                """,
                """
                CREATE TABLE commands (
                    cmd_id       TEXT    NOT NULL PRIMARY KEY,
                    product_id   TEXT    NOT NULL,
                    name         TEXT    NOT NULL,
                    family       TEXT    NOT NULL,
                    kind         TEXT    NOT NULL,
                    request      BLOB    NOT NULL,
                    status       TEXT    NOT NULL,
                    created_at   INTEGER NOT NULL,
                    sent_at      INTEGER,
                    answered_at  INTEGER,
                    response     BLOB,
                    detail       TEXT,
                    CONSTRAINT commands_device_fkey
                        FOREIGN KEY (product_id, name) REFERENCES devices (product_id, name)
                        ON DELETE CASCADE
                )
                """,
                """
                CREATE INDEX commands_device_newest
                    ON commands (product_id, name, created_at DESC, cmd_id DESC)
                """,
                """
                CREATE INDEX commands_sent ON commands (cmd_id) WHERE status = 'sent'
                """,
            ),
        ),
        Migration(
            3,
            "device ids, telemetry, latest values, attributes, events, retention",
            (
                "ALTER TABLE products ADD COLUMN retention_days INTEGER",
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
                """
                CREATE TABLE device_purges (
                    device_id   INTEGER NOT NULL PRIMARY KEY,
                    deleted_at  INTEGER NOT NULL,
                    purged_at   INTEGER
                )
                """,
                """
                CREATE INDEX device_purges_pending ON device_purges (device_id)
                    WHERE purged_at IS NULL
                """,
            ),
        ),
        Migration(
            4,
            "OTA: firmware packages, tasks, their devices",
            (
                """
                CREATE TABLE firmware (
                    id          TEXT    NOT NULL PRIMARY KEY,
                    product_id  TEXT    NOT NULL,
                    name        TEXT    NOT NULL,
                    version     TEXT    NOT NULL,
                    module      TEXT    NOT NULL,
                    size        INTEGER NOT NULL,
                    md5         TEXT    NOT NULL,
                    sha256      TEXT    NOT NULL,
                    created_at  INTEGER NOT NULL,
                    ext_data    TEXT    NOT NULL DEFAULT '{}',
                    CONSTRAINT firmware_version_key UNIQUE (product_id, module, version),
                    CONSTRAINT firmware_product_fkey
                        FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE
                )
                """,
                "CREATE INDEX firmware_product ON firmware (product_id, id)",
                """
                CREATE TABLE ota_tasks (
                    id                  TEXT    NOT NULL PRIMARY KEY,
                    product_id          TEXT    NOT NULL,
                    firmware_id         TEXT    NOT NULL,
                    module              TEXT    NOT NULL,
                    version             TEXT    NOT NULL,
                    sign_method         TEXT    NOT NULL,
                    rollout_per_minute  INTEGER,
                    device_timeout_s    INTEGER NOT NULL,
                    status              TEXT    NOT NULL,
                    created_at          INTEGER NOT NULL,
                    finished_at         INTEGER,
                    CONSTRAINT ota_tasks_product_fkey
                        FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE
                )
                """,
                "CREATE INDEX ota_tasks_product ON ota_tasks (product_id, id)",
                """
                CREATE INDEX ota_tasks_running ON ota_tasks (firmware_id)
                    WHERE status = 'RUNNING'
                """,
                """
                CREATE TABLE ota_task_devices (
                    task_id      TEXT    NOT NULL,
                    name         TEXT    NOT NULL,
                    position     INTEGER NOT NULL,
                    state        TEXT    NOT NULL,
                    step         INTEGER,
                    description  TEXT    NOT NULL,
                    detail       TEXT,
                    informed_at  INTEGER,
                    updated_at   INTEGER NOT NULL,
                    finished_at  INTEGER,
                    CONSTRAINT ota_task_devices_pkey PRIMARY KEY (task_id, name),
                    CONSTRAINT ota_task_devices_task_fkey
                        FOREIGN KEY (task_id) REFERENCES ota_tasks (id) ON DELETE CASCADE
                )
                """,
                "CREATE INDEX ota_task_devices_order ON ota_task_devices (task_id, position)",
            ),
        ),
    ]
)
