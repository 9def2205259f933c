"""A cluster's nodes in SQL (the `nodes` table of migration 10).

Rules:
- Each node writes its own row only (its heartbeat, a few times a lease), as
  a statement of its own: rows are few and written rarely, so not through the
  group-commit writer.
- A row stays after its node died: readers judge liveness by `last_seen`
  against the lease (services/nodes.py); a node stopping cleanly removes it.
"""

from __future__ import annotations

import builtins
from typing import Any

from thingshub.core.model import NodeInfo
from thingshub.storage.sql.connection import Database, sql

_COLUMNS = "id, started_at, last_seen, connections, messages_in_per_s"
BEAT = sql(
    f"INSERT INTO nodes ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at,"
    " last_seen = excluded.last_seen, connections = excluded.connections,"
    " messages_in_per_s = excluded.messages_in_per_s"
)
LIST_NODES = sql(f"SELECT {_COLUMNS} FROM nodes ORDER BY id")
REMOVE_NODE = sql("DELETE FROM nodes WHERE id = $1")


def _node(row: Any) -> NodeInfo:
    return NodeInfo(row[0], int(row[1]), int(row[2]), int(row[3]), int(row[4]))


class SqlNodes:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def beat(self, node: NodeInfo) -> None:
        await self._db.execute(
            BEAT,
            node.id,
            node.started_at,
            node.last_seen,
            node.connections,
            node.messages_in_per_s,
        )

    async def list(self) -> builtins.list[NodeInfo]:
        return [_node(r) for r in await self._db.fetch(LIST_NODES)]

    async def remove(self, node_id: str) -> None:
        await self._db.execute(REMOVE_NODE, node_id)
