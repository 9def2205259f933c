"""Retained messages, found by topic filter.

Rules:
- One message per topic; an empty payload deletes it ([MQTT-3.3.1-10]).
- Kept in a trie of topic levels, so a wildcard subscription visits only the
  branches its filter can match, not every retained message.
- A message past its expiry time is never returned and is dropped when seen.
- `$` topics are not returned for a filter starting with a wildcard.
- Time is passed in by the caller (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

from thingshub.mqtt.codec.properties import EMPTY, Properties


@dataclass(slots=True)
class RetainedMessage:
    topic: str
    payload: bytes
    qos: int
    properties: Properties = EMPTY
    expires_at: float | None = None


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: RetainedMessage | None = None


class RetainedStore:
    __slots__ = ("_count", "_root")

    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def set(self, message: RetainedMessage) -> None:
        node = self._root
        for level in message.topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if node.message is None:
            self._count += 1
        node.message = message

    def delete(self, topic: str) -> None:
        path = [self._root]
        levels = topic.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        if path[-1].message is None:
            return
        path[-1].message = None
        self._count -= 1
        for i in range(len(levels) - 1, -1, -1):
            node = path[i + 1]
            if node.children or node.message is not None:
                break
            del path[i].children[levels[i]]

    def get(self, topic: str) -> RetainedMessage | None:
        node: _Node | None = self._root
        for level in topic.split("/"):
            assert node is not None
            node = node.children.get(level)
            if node is None:
                return None
        return node.message if node is not None else None

    def match(self, topic_filter: str, now: float) -> list[RetainedMessage]:
        found: list[RetainedMessage] = []
        _collect(self._root, topic_filter.split("/"), 0, found)
        live = []
        for msg in found:
            if msg.expires_at is not None and msg.expires_at <= now:
                self.delete(msg.topic)
            else:
                live.append(msg)
        return live


def _collect(node: _Node, levels: list[str], i: int, out: list[RetainedMessage]) -> None:
    if i == len(levels):
        if node.message is not None:
            out.append(node.message)
        return
    level = levels[i]
    if level == "#":
        # `a/#` matches `a` itself as well as everything below it.
        if i and node.message is not None:
            out.append(node.message)
        _subtree(node, out, skip_dollar=i == 0)
        return
    if level == "+":
        for name, child in node.children.items():
            if i == 0 and name.startswith("$"):
                continue
            _collect(child, levels, i + 1, out)
        return
    nxt = node.children.get(level)
    if nxt is not None:
        _collect(nxt, levels, i + 1, out)


def _subtree(node: _Node, out: list[RetainedMessage], skip_dollar: bool) -> None:
    stack = [
        child for name, child in node.children.items() if not (skip_dollar and name.startswith("$"))
    ]
    while stack:
        n = stack.pop()
        if n.message is not None:
            out.append(n.message)
        stack.extend(n.children.values())
