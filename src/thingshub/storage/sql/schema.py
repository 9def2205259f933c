"""The SQL schema, written once: the migrations of both databases, each with its types.

Rules:
- Append only: a released migration is never edited or reordered; a change
  is a new `Migration(N + 1, ...)` at the end of `migrations()`.
- One SQL statement per string; names are never schema-qualified (on
  PostgreSQL the tables go to the first schema of the `search_path`).
- Types are each database's (its schema.py): {key} for ids and names,
  which compare byte by byte on both (SQLite's BINARY collation,
  PostgreSQL's "C" whatever the locale), so keyset pages agree and
  `lower()` folds ASCII only; {int64} for Unix ms; {jsonb} for tags; {json}
  for image documents (PostgreSQL's `json` keeps the text as written, key
  order included, so a document reads back byte-identical); {bytes} for
  bodies; {bool} for presence and flags ({online}: the test of it its
  index names, {true} its literal).
- Telemetry, attributes and events (migration 3) are keyed by the device's
  integer `id` and have no foreign key (a check on every point would cost
  more than the insert): the writer checks or locks the device in its
  transaction, and deleting a device deletes its `latest` and `attributes`
  rows at once and queues its points and events in `device_purges` (a row
  per deleted device, `purged_at` set once they are gone). How a device
  gets its id and how those tables are laid out is each database's own.
- OTA (migration 4): packages and tasks go with their product, the devices
  of a task with the task; they name their device without a foreign key,
  so a task keeps its history when a device is deleted (ota_common.py).
- The thing model (migration 5): a product's model goes with the product,
  desired values with their device; events gain their `type` and command
  records their `target` (a service's identifier), both nullable.
- Gateways (migration 7): a device names its gateway by (product id, name)
  without a foreign key (SQLite cannot add a composite one to a table);
  deleting a gateway unbinds its children in the same transaction. NULLs
  are distinct in a unique index on both databases, so only bound devices
  with an address compete for (gateway, sub_address).
- A product's `gateway_auto_register` (migration 8) is true unless set
  false: products made before it keep letting gateways register.
- API keys (migration 9): the hash of the secret, never the secret;
  `products` is the JSON text of the sorted product ids the key is limited
  to, NULL for every product (no foreign key: a key may outlive a product,
  and sees nothing of it then).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from thingshub.storage.sql.migrations import Migration, check_migrations

_PRODUCTS_DEVICES = (
    """CREATE TABLE products (
        id          {key}   NOT NULL,
        name        {text}  NOT NULL,
        created_at  {int64} NOT NULL,
        CONSTRAINT products_pkey PRIMARY KEY (id)
    )""",
    """CREATE TABLE devices (
        product_id     {key}   NOT NULL,
        name           {key}   NOT NULL,
        device_number  {key}   NOT NULL,
        key            {text}  NOT NULL,
        username       {key}   NOT NULL,
        password_hash  {text}  NOT NULL,
        created_at     {int64} NOT NULL,
        tags           {jsonb} NOT NULL DEFAULT '{{}}',
        status         {text}  NOT NULL DEFAULT 'enabled',
        CONSTRAINT devices_pkey PRIMARY KEY (product_id, name),
        CONSTRAINT devices_device_number_key UNIQUE (device_number),
        CONSTRAINT devices_username_key UNIQUE (username),
        CONSTRAINT devices_product_fkey FOREIGN KEY (product_id) REFERENCES products (id)
    )""",
    """CREATE TABLE device_presence (
        product_id     {key}   NOT NULL,
        name           {key}   NOT NULL,
        online         {bool}  NOT NULL,
        last_activity  {int64},
        changed_at     {int64},
        CONSTRAINT device_presence_pkey PRIMARY KEY (product_id, name),
        CONSTRAINT device_presence_device_fkey
            FOREIGN KEY (product_id, name) REFERENCES devices (product_id, name)
            ON DELETE CASCADE
    )""",
    "CREATE INDEX device_presence_online ON device_presence (product_id, name) WHERE {online}",
    """CREATE TABLE settings (
        key    {text} NOT NULL,
        value  {text} NOT NULL,
        CONSTRAINT settings_pkey PRIMARY KEY (key)
    )""",
)

_IMAGES_COMMANDS = (
    """CREATE TABLE images (
        product_id  {key}   NOT NULL,
        name        {key}   NOT NULL,
        version     {int64} NOT NULL,
        document    {json}  NOT NULL,
        updated_at  {int64} NOT NULL,
        CONSTRAINT images_pkey PRIMARY KEY (product_id, name),
        CONSTRAINT images_device_fkey
            FOREIGN KEY (product_id, name) REFERENCES devices (product_id, name)
            ON DELETE CASCADE
    )""",
    """CREATE TABLE commands (
        cmd_id       {key}   NOT NULL,
        product_id   {key}   NOT NULL,
        name         {key}   NOT NULL,
        family       {text}  NOT NULL,
        kind         {text}  NOT NULL,
        request      {bytes} NOT NULL,
        status       {text}  NOT NULL,
        created_at   {int64} NOT NULL,
        sent_at      {int64},
        answered_at  {int64},
        response     {bytes},
        detail       {text},
        CONSTRAINT commands_pkey PRIMARY KEY (cmd_id),
        CONSTRAINT commands_device_fkey
            FOREIGN KEY (product_id, name) REFERENCES devices (product_id, name)
            ON DELETE CASCADE
    )""",
    "CREATE INDEX commands_device_newest"
    " ON commands (product_id, name, created_at DESC, cmd_id DESC)",
    "CREATE INDEX commands_sent ON commands (cmd_id) WHERE status = 'sent'",
)

_PURGES = (
    """CREATE TABLE device_purges (
        device_id   {int64} NOT NULL,
        deleted_at  {int64} NOT NULL,
        purged_at   {int64},
        CONSTRAINT device_purges_pkey PRIMARY KEY (device_id)
    )""",
    "CREATE INDEX device_purges_pending ON device_purges (device_id) WHERE purged_at IS NULL",
)

_OTA = (
    """CREATE TABLE firmware (
        id          {key}   NOT NULL,
        product_id  {key}   NOT NULL,
        name        {text}  NOT NULL,
        version     {key}   NOT NULL,
        module      {key}   NOT NULL,
        size        {int64} NOT NULL,
        md5         {text}  NOT NULL,
        sha256      {text}  NOT NULL,
        created_at  {int64} NOT NULL,
        ext_data    {text}  NOT NULL DEFAULT '{{}}',
        CONSTRAINT firmware_pkey PRIMARY KEY (id),
        CONSTRAINT firmware_version_key UNIQUE (product_id, module, version),
        CONSTRAINT firmware_product_fkey
            FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE
    )""",
    "CREATE INDEX firmware_product ON firmware (product_id, id)",
    """CREATE TABLE ota_tasks (
        id                  {key}   NOT NULL,
        product_id          {key}   NOT NULL,
        firmware_id         {key}   NOT NULL,
        module              {key}   NOT NULL,
        version             {text}  NOT NULL,
        sign_method         {text}  NOT NULL,
        rollout_per_minute  {int32},
        device_timeout_s    {int32} NOT NULL,
        status              {text}  NOT NULL,
        created_at          {int64} NOT NULL,
        finished_at         {int64},
        CONSTRAINT ota_tasks_pkey PRIMARY KEY (id),
        CONSTRAINT ota_tasks_product_fkey
            FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE
    )""",
    "CREATE INDEX ota_tasks_product ON ota_tasks (product_id, id)",
    "CREATE INDEX ota_tasks_running ON ota_tasks (firmware_id) WHERE status = 'RUNNING'",
    """CREATE TABLE ota_task_devices (
        task_id      {key}   NOT NULL,
        name         {key}   NOT NULL,
        position     {int32} NOT NULL,
        state        {text}  NOT NULL,
        step         {int32},
        description  {text}  NOT NULL,
        detail       {text},
        informed_at  {int64},
        updated_at   {int64} NOT NULL,
        finished_at  {int64},
        CONSTRAINT ota_task_devices_pkey PRIMARY KEY (task_id, name),
        CONSTRAINT ota_task_devices_task_fkey
            FOREIGN KEY (task_id) REFERENCES ota_tasks (id) ON DELETE CASCADE
    )""",
    "CREATE INDEX ota_task_devices_order ON ota_task_devices (task_id, position)",
)


_THING_MODEL = (
    "ALTER TABLE events ADD COLUMN type {text}",
    "ALTER TABLE commands ADD COLUMN target {text}",
    """CREATE TABLE thing_models (
        product_id  {key}   NOT NULL,
        document    {json}  NOT NULL,
        revision    {int64} NOT NULL,
        updated_at  {int64} NOT NULL,
        CONSTRAINT thing_models_pkey PRIMARY KEY (product_id),
        CONSTRAINT thing_models_product_fkey
            FOREIGN KEY (product_id) REFERENCES products (id) ON DELETE CASCADE
    )""",
    """CREATE TABLE desired_values (
        product_id  {key}   NOT NULL,
        name        {key}   NOT NULL,
        identifier  {key}   NOT NULL,
        value       {text}  NOT NULL,
        version     {int64} NOT NULL,
        ts          {int64} NOT NULL,
        CONSTRAINT desired_values_pkey PRIMARY KEY (product_id, name, identifier),
        CONSTRAINT desired_values_device_fkey
            FOREIGN KEY (product_id, name) REFERENCES devices (product_id, name)
            ON DELETE CASCADE
    )""",
)


_ACCESS_TOKENS = (
    "ALTER TABLE devices ADD COLUMN access_token {key}",
    "CREATE UNIQUE INDEX devices_access_token_key ON devices (access_token)",
)


_TOPOLOGY = (
    "ALTER TABLE devices ADD COLUMN gateway_product_id {key}",
    "ALTER TABLE devices ADD COLUMN gateway_name {key}",
    "ALTER TABLE devices ADD COLUMN sub_address {key}",
    "CREATE UNIQUE INDEX devices_sub_address_key"
    " ON devices (gateway_product_id, gateway_name, sub_address)",
    "CREATE INDEX devices_children ON devices (gateway_product_id, gateway_name, product_id, name)",
)


_AUTO_REGISTER = (
    "ALTER TABLE products ADD COLUMN gateway_auto_register {bool} NOT NULL DEFAULT {true}",
)


_API_KEYS = (
    """CREATE TABLE api_keys (
        id            {key}   NOT NULL,
        name          {text}  NOT NULL,
        role          {text}  NOT NULL,
        products      {text},
        secret_hash   {text}  NOT NULL,
        created_at    {int64} NOT NULL,
        last_used_at  {int64},
        CONSTRAINT api_keys_pkey PRIMARY KEY (id)
    )""",
)

#: A cluster's nodes (their heartbeats), the node holding each online device's
#: connection, and the node that sent each call (its restart fails only its own).
_CLUSTER = (
    """CREATE TABLE nodes (
        id                 {key}   NOT NULL,
        started_at         {int64} NOT NULL,
        last_seen          {int64} NOT NULL,
        connections        {int64} NOT NULL,
        messages_in_per_s  {int64} NOT NULL,
        CONSTRAINT nodes_pkey PRIMARY KEY (id)
    )""",
    "ALTER TABLE device_presence ADD COLUMN node {key}",
    "ALTER TABLE commands ADD COLUMN node {key}",
)


_ONENET_LIFECYCLE = (
    "ALTER TABLE products ADD COLUMN access_key {text}",
    "ALTER TABLE products ADD COLUMN dynamic_registration {bool} NOT NULL DEFAULT {false}",
    "ALTER TABLE devices ADD COLUMN f_version {text}",
    "ALTER TABLE devices ADD COLUMN s_version {text}",
    "ALTER TABLE ota_task_devices ADD COLUMN tid {int64}",
    "ALTER TABLE ota_task_devices ADD COLUMN protocol {text}",
    "CREATE UNIQUE INDEX ota_task_devices_tid_key ON ota_task_devices (tid)",
    # The last tid given: one row, updated in each task's transaction.
    """CREATE TABLE ota_tids (
        id    {int32} NOT NULL,
        last  {int64} NOT NULL,
        CONSTRAINT ota_tids_pkey PRIMARY KEY (id)
    )""",
    "INSERT INTO ota_tids (id, last) VALUES (1, 0)",
)


def migrations(types: Mapping[str, str], series: Sequence[str]) -> Sequence[Migration]:
    """A database's migrations, given its `types` (see the module rules) and the
    statements of migration 3 that are its own: device ids, points, latest values,
    attributes and events."""

    def ddl(*statements: str) -> tuple[str, ...]:
        return tuple(s.format_map(types) for s in statements)

    return check_migrations(
        [
            Migration(1, "products, devices, presence, settings", ddl(*_PRODUCTS_DEVICES)),
            Migration(2, "device images, command records", ddl(*_IMAGES_COMMANDS)),
            Migration(
                3,
                "device ids, telemetry, latest values, attributes, events, retention",
                (
                    *ddl("ALTER TABLE products ADD COLUMN retention_days {int32}"),
                    *series,
                    *ddl(*_PURGES),
                ),
            ),
            Migration(4, "OTA: firmware packages, tasks, their devices", ddl(*_OTA)),
            Migration(
                5,
                "thing models, desired values, event types, call targets",
                ddl(*_THING_MODEL),
            ),
            Migration(6, "ThingsPanel access tokens", ddl(*_ACCESS_TOKENS)),
            Migration(7, "gateways and sub-devices", ddl(*_TOPOLOGY)),
            Migration(8, "products: gateway auto-registration", ddl(*_AUTO_REGISTER)),
            Migration(9, "API keys with roles and products", ddl(*_API_KEYS)),
            Migration(10, "cluster: nodes, the node holding a device or a call", ddl(*_CLUSTER)),
            Migration(
                11,
                "OneNET: product access keys, dynamic registration, OTA tids and versions",
                ddl(*_ONENET_LIFECYCLE),
            ),
        ]
    )
