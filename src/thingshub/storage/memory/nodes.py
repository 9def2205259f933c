"""A cluster's nodes in memory: the rows of storage/sql/nodes.py in a dict."""

from __future__ import annotations

import builtins

from thingshub.core.model import NodeInfo


class MemoryNodes:
    def __init__(self) -> None:
        self._rows: dict[str, NodeInfo] = {}

    async def beat(self, node: NodeInfo) -> None:
        self._rows[node.id] = node

    async def list(self) -> builtins.list[NodeInfo]:
        return [self._rows[k] for k in sorted(self._rows)]

    async def remove(self, node_id: str) -> None:
        self._rows.pop(node_id, None)
