"""The PostgreSQL schema, as an ordered list of migrations.

Rules:
- Append only: a released migration is never edited or reordered; a change
  is a new `Migration(N + 1, ...)` at the end of `MIGRATIONS`, with its
  SQLite twin in sqlite/schema.py under the same number.
- Each statement is one SQL statement; all pending migrations run in one
  transaction, under the advisory lock of postgres/storage.py, in the schema first
  on the connection's `search_path` (names are never schema-qualified).
- Keys (ids, names, device numbers, user names) are `text COLLATE "C"`:
  byte order, like SQLite and Python, whatever the database's locale, so
  keyset paging agrees across backends and `lower()` folds ASCII only.
- Times are Unix ms in `bigint`; tags are `jsonb`. Image documents are
  `json`, not `jsonb`: `json` keeps the text as written (key order
  included), so a document reads back byte-identical to what was saved, and
  is still checked and queryable as JSON; jsonb would reorder keys.
- Request and response bodies are `bytea`.
- Telemetry, attributes and events (migration 3) are keyed by the device's
  `id` (an identity column: never reused). `points.seq` and `events.seq`
  are identity columns too, taken in arrival order by the writer's insert,
  so they order rows of equal ts by arrival; their primary keys
  (device_id, key, ts, seq) and (device_id, ts, seq) are the indexes of
  history pages and of deleting a device's rows. `num` is the value as a
  double when it is a number, NULL otherwise; `value`/`params` the JSON
  text of every value (`text`, not `json`: the writer made it with orjson,
  so it needs no parsing on the hot path; `value::jsonb` queries it).
- Those rows have no foreign key (the per-row check would cost more than
  the insert): the writer locks the devices of a batch (FOR KEY SHARE),
  and deleting a device deletes its `latest` and `attributes` rows at once
  and queues its points and events in `device_purges` (a row per deleted
  device; `purged_at` is set once they are gone), deleted afterwards in
  short chunks (postgres/series.py). `latest` and `attributes` leave room
  in their pages (fillfactor) for HOT updates.
- OTA (migration 4): the twin of SQLite's; see sqlite/schema.py and
  ota_common.py.
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
                    id          text COLLATE "C" NOT NULL,
                    name        text   NOT NULL,
                    created_at  bigint NOT NULL,
                    CONSTRAINT products_pkey PRIMARY KEY (id)
                )
                """,
                """
                CREATE TABLE devices (
                    product_id     text COLLATE "C" NOT NULL,
                    name           text COLLATE "C" NOT NULL,
                    device_number  text COLLATE "C" NOT NULL,
                    key            text   NOT NULL,
                    username       text COLLATE "C" NOT NULL,
                    password_hash  text   NOT NULL,
                    created_at     bigint NOT NULL,
                    tags           jsonb  NOT NULL DEFAULT '{}',
                    status         text   NOT NULL DEFAULT 'enabled',
                    CONSTRAINT devices_pkey PRIMARY KEY (product_id, name),
                    CONSTRAINT devices_device_number_key UNIQUE (device_number),
                    CONSTRAINT devices_username_key UNIQUE (username),
                    CONSTRAINT devices_product_fkey
                        FOREIGN KEY (product_id) REFERENCES products (id)
                )
                """,
                """
                CREATE TABLE device_presence (
                    product_id     text COLLATE "C" NOT NULL,
                    name           text COLLATE "C" NOT NULL,
                    online         boolean NOT NULL,
                    last_activity  bigint,
                    changed_at     bigint,
                    CONSTRAINT device_presence_pkey PRIMARY KEY (product_id, name),
                    CONSTRAINT device_presence_device_fkey
                        FOREIGN KEY (product_id, name) REFERENCES devices (product_id, name)
                        ON DELETE CASCADE
                )
                """,
                """
                CREATE INDEX device_presence_online
                    ON device_presence (product_id, name) WHERE online
                """,
                """
                CREATE TABLE settings (
                    key    text NOT NULL,
                    value  text NOT NULL,
                    CONSTRAINT settings_pkey PRIMARY KEY (key)
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
                    product_id  text COLLATE "C" NOT NULL,
                    name        text COLLATE "C" NOT NULL,
                    version     bigint NOT NULL,
                    document    json   NOT NULL,
                    updated_at  bigint NOT NULL,
                    CONSTRAINT images_pkey PRIMARY KEY (product_id, name),
                    CONSTRAINT images_device_fkey
                        FOREIGN KEY (product_id, name) REFERENCES devices (product_id, name)
                        ON DELETE CASCADE
                )
                """,
                """
                CREATE TABLE commands (
                    cmd_id       text COLLATE "C" NOT NULL,
                    product_id   text COLLATE "C" NOT NULL,
                    name         text COLLATE "C" NOT NULL,
                    family       text   NOT NULL,
                    kind         text   NOT NULL,
                    request      bytea  NOT NULL,
                    status       text   NOT NULL,
                    created_at   bigint NOT NULL,
                    sent_at      bigint,
                    answered_at  bigint,
                    response     bytea,
                    detail       text,
                    CONSTRAINT commands_pkey PRIMARY KEY (cmd_id),
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
                "ALTER TABLE products ADD COLUMN retention_days integer",
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
                """
                CREATE TABLE device_purges (
                    device_id   bigint NOT NULL,
                    deleted_at  bigint NOT NULL,
                    purged_at   bigint,
                    CONSTRAINT device_purges_pkey PRIMARY KEY (device_id)
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
                    id          text COLLATE "C" NOT NULL,
                    product_id  text COLLATE "C" NOT NULL,
                    name        text   NOT NULL,
                    version     text COLLATE "C" NOT NULL,
                    module      text COLLATE "C" NOT NULL,
                    size        bigint NOT NULL,
                    md5         text   NOT NULL,
                    sha256      text   NOT NULL,
                    created_at  bigint NOT NULL,
                    ext_data    text   NOT NULL DEFAULT '{}',
                    CONSTRAINT firmware_pkey PRIMARY KEY (id),
                    CONSTRAINT firmware_version_key UNIQUE (product_id, module, version),
                    CONSTRAINT firmware_product_fkey
                        FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE
                )
                """,
                "CREATE INDEX firmware_product ON firmware (product_id, id)",
                """
                CREATE TABLE ota_tasks (
                    id                  text COLLATE "C" NOT NULL,
                    product_id          text COLLATE "C" NOT NULL,
                    firmware_id         text COLLATE "C" NOT NULL,
                    module              text COLLATE "C" NOT NULL,
                    version             text   NOT NULL,
                    sign_method         text   NOT NULL,
                    rollout_per_minute  integer,
                    device_timeout_s    integer NOT NULL,
                    status              text   NOT NULL,
                    created_at          bigint NOT NULL,
                    finished_at         bigint,
                    CONSTRAINT ota_tasks_pkey PRIMARY KEY (id),
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
                    task_id      text COLLATE "C" NOT NULL,
                    name         text COLLATE "C" NOT NULL,
                    position     integer NOT NULL,
                    state        text   NOT NULL,
                    step         integer,
                    description  text   NOT NULL,
                    detail       text,
                    informed_at  bigint,
                    updated_at   bigint NOT NULL,
                    finished_at  bigint,
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
