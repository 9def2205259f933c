"""The sub-device tree of a device page, as data: which nodes are loaded and open,
the rows the table shows, and what an event changes. Plain code: no page, no
service (device_tree.py loads and draws).

Rules:
- A node's children are loaded a page at a time (the service's keyset pages,
  in its order), when the node is opened, and more only when asked for: a
  gateway may have 1,500 children, and a page costs one indexed query.
- Rows are the open nodes depth first, each node's loaded children followed
  by a "more" row while the service has a next page.
- A node is a gateway when it has children (the loader probes that); only a
  gateway can be opened.
- A child list loaded again keeps the state of the children still in it
  (open, their own children); children gone take their subtrees with them.
- A presence change updates its node. A topology change (bound, moved,
  unbound) reloads the loaded child lists of the gateways it names, the new
  one and the previous one; a device that gets its first child becomes a
  gateway. A deleted device reloads its parent's list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from thingshub.console import fmt
from thingshub.core.events import DeviceDeleted, Event, PresenceChanged, TopologyChanged

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Child:
    """One child as a load returns it."""

    key: Key
    sub_address: str | None
    online: bool
    last_activity: int | None
    has_children: bool


@dataclass(slots=True)
class Node:
    key: Key
    parent: Key | None
    depth: int  # the root is 0, its children 1
    sub_address: str | None = None
    online: bool = False
    last_activity: int | None = None
    has_children: bool = False
    open: bool = False
    #: The loaded children, in the service's order (None: not loaded).
    children: list[Key] | None = None
    #: The cursor of the next page of children, if there is one.
    next: str | None = None


def row_id(key: Key) -> str:
    """A row's key: product ids and names never contain `/` (core/names.py)."""
    return f"{key[0]}/{key[1]}"


def key_of(row: object) -> Key:
    """The device a row id names (what the browser sends back)."""
    pid, _, name = str(row).partition("/")
    return pid, name


class SubTree:
    def __init__(self, root: Key) -> None:
        self.root = root
        self.nodes: dict[Key, Node] = {root: Node(root, None, 0, open=True)}

    # ------------------------------------------------------------ loading

    def fill(
        self, parent: Key, children: Sequence[Child], next_cursor: str | None, *, more: bool = False
    ) -> None:
        """The children of `parent`: its first pages (replacing what was loaded) or, with
        `more`, the page after those loaded."""
        node = self.nodes.get(parent)
        if node is None:
            return
        before = [] if node.children is None else node.children
        keys = [c.key for c in children]
        if more:
            keys = before + [k for k in keys if k not in before]
        else:
            for gone in set(before) - set(keys):
                self._forget(gone)
        for child in children:
            held = self.nodes.get(child.key)
            if held is None or held.parent != parent:
                if held is not None:  # moved here from elsewhere in the tree
                    self._unlink(held)
                held = self.nodes[child.key] = Node(child.key, parent, node.depth + 1)
            held.sub_address = child.sub_address
            held.online = child.online
            held.last_activity = child.last_activity
            held.has_children = child.has_children
            if not child.has_children:
                self._close(held)
        node.children = keys
        node.next = next_cursor
        node.has_children = bool(keys)

    def loaded(self, key: Key) -> int:
        """How many children of `key` are loaded (0 when none are)."""
        node = self.nodes.get(key)
        return len(node.children or []) if node is not None else 0

    def close(self, key: Key) -> None:
        node = self.nodes.get(key)
        if node is not None and node.parent is not None:
            self._close(node)

    def opened(self, key: Key) -> None:
        """Mark `key` open (its children are loaded by the caller)."""
        node = self.nodes.get(key)
        if node is not None:
            node.open = True

    def _close(self, node: Node) -> None:
        """Closed and unloaded: opened again, it loads its first page afresh."""
        for child in node.children or []:
            self._forget(child)
        node.open = False
        node.children = None
        node.next = None

    def _unlink(self, node: Node) -> None:
        """Take `node` and its subtree out of the tree, and out of its parent's list."""
        parent = self.nodes.get(node.parent) if node.parent is not None else None
        if parent is not None and parent.children is not None and node.key in parent.children:
            parent.children.remove(node.key)
        self._forget(node.key)

    def _forget(self, key: Key) -> None:
        node = self.nodes.pop(key, None)
        if node is not None:
            for child in node.children or []:
                self._forget(child)

    def to_open(self, budget: int) -> list[Key]:
        """Gateways to open at first sight, shallowest first, while fewer than `budget`
        rows are shown: a small tree opens whole, a large one stays folded. Ask again
        once they are loaded: their own children are the next level."""
        shown = len(self.nodes) - 1
        wanted: list[Key] = []
        level = list(self.nodes[self.root].children or [])
        while level and shown < budget:
            below: list[Key] = []
            for key in level:
                node = self.nodes[key]
                if node.has_children and not node.open and shown < budget:
                    wanted.append(key)
                    shown += 1  # at least one child each
                below += node.children or []
            level = below
        return wanted

    # ------------------------------------------------------------ events

    def wants(self, event: Event) -> bool:
        """Whether `event` may change what the tree shows."""
        if isinstance(event, TopologyChanged):
            named = ((event.product_id, event.name), event.gateway, event.previous)
            return any(k in self.nodes for k in named if k is not None)
        return (event.product_id, event.name) in self.nodes

    def apply(self, events: Iterable[Event]) -> tuple[bool, list[Key]]:
        """(whether rows changed, the parents whose child lists must be loaded again)."""
        changed, reload = False, []
        for event in events:
            key = (event.product_id, event.name)
            if isinstance(event, PresenceChanged):
                node = self.nodes.get(key)
                if node is not None and node.parent is not None:
                    node.online = event.online
                    if event.online:
                        node.last_activity = max(node.last_activity or 0, event.ts)
                    changed = True
            elif isinstance(event, TopologyChanged):
                for gateway in (event.gateway, event.previous):
                    node = self.nodes.get(gateway) if gateway is not None else None
                    if node is None:
                        continue
                    if node.children is not None:
                        reload.append(node.key)
                    elif gateway == event.gateway and not node.has_children:
                        node.has_children = changed = True
            elif isinstance(event, DeviceDeleted):
                node = self.nodes.get(key)
                if node is not None and node.parent is not None:
                    reload.append(node.parent)
        return changed, list(dict.fromkeys(reload))

    # ------------------------------------------------------------ rows

    def keys(self) -> list[Key]:
        """Every device shown (the root excluded)."""
        return [k for k in self.nodes if k != self.root]

    def set_presence(self, key: Key, online: bool, last_activity: int | None) -> None:
        node = self.nodes.get(key)
        if node is not None:
            node.online = online
            node.last_activity = last_activity

    def rows(self, now: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        self._rows(self.nodes[self.root], now, rows)
        return rows

    def _rows(self, parent: Node, now: int, rows: list[dict[str, Any]]) -> None:
        for key in parent.children or []:
            node = self.nodes.get(key)
            if node is None:
                continue
            rows.append(
                {
                    "id": row_id(key),
                    "product_id": key[0],
                    "name": key[1],
                    "depth": node.depth,
                    "sub_address": node.sub_address or "—",
                    "status": "online" if node.online else "offline",
                    "activity": fmt.ago(node.last_activity, now),
                    "activity_at": fmt.when(node.last_activity),
                    "gateway": node.has_children,
                    "open": node.open,
                    "more": False,
                }
            )
            if node.open:
                self._rows(node, now, rows)
        if parent.next is not None:
            rows.append(
                {
                    "id": "more:" + row_id(parent.key),
                    "parent": row_id(parent.key),
                    "depth": parent.depth + 1,
                    "label": f"more sub-devices of {parent.key[1]}",
                    "more": True,
                }
            )
