"""The subscription index: which sessions receive a message published on a topic.

Rules:
- Filters without wildcards live in a dict keyed by the filter, so routing a
  topic that only exact filters match costs one lookup, whatever the number of
  subscribers (a fleet subscribes one exact filter per device).
- Filters with wildcards live in a trie of levels, walked once per message.
- A filter starting with a wildcard never matches a `$` topic.
- Shared subscriptions (`$share/{group}/{filter}`) are indexed under their
  filter; each group delivers a message to one member, round-robin, preferring
  members that are online.
- The router stores `Subscription` values (session.py) and knows nothing of sockets.
- What a topic matched is remembered (up to `CACHE_SIZE` topics) until the
  next subscribe or unsubscribe, so a topic published again costs one lookup
  instead of a walk of the trie. Matches that involve a share group are not
  remembered: each one picks its next member. Nor is a topic that matched
  nothing while no filter has a wildcard: finding that out again costs the
  one lookup that remembering it would, and a fleet's per-device topics that
  nobody subscribes to (presence notices, one a device) would otherwise fill
  the memory with empty entries. And a topic is remembered only the second
  time it is routed (a bit set by its first time, in a fixed table of
  `SEEN_BITS` bits wiped every `CACHE_SIZE` first times): a topic used once
  (a command's `cmd/request/{id}`, its `.../accepted` answer) would hold an
  entry until the memory starts afresh, and push out the topics that repeat.
  A bit shared by two topics only remembers a topic early.
"""

from __future__ import annotations

from thingshub.mqtt.server.session import Subscription

__all__ = ["CACHE_SIZE", "SEEN_BITS", "Router", "Subscription"]


class _Leaf:
    __slots__ = ("shared", "subs")

    def __init__(self) -> None:
        self.subs: dict[str, Subscription] = {}
        self.shared: dict[str, _Group] = {}

    def empty(self) -> bool:
        return not self.subs and not self.shared


class _Group:
    __slots__ = ("members", "next")

    def __init__(self) -> None:
        self.members: dict[str, Subscription] = {}
        self.next = 0

    def pick(self) -> Subscription | None:
        members = list(self.members.values())
        n = len(members)
        for i in range(n):
            sub = members[(self.next + i) % n]
            if sub.session.connection is not None:
                self.next = (self.next + i + 1) % n
                return sub
        if n:
            sub = members[self.next % n]
            self.next = (self.next + 1) % n
            return sub
        return None


class _Node:
    __slots__ = ("children", "leaf")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.leaf: _Leaf | None = None


#: Topics whose matches are remembered at most; beyond it the memory starts afresh.
CACHE_SIZE = 10_000

#: Bits of the table of topics routed once (a power of two; 16 KiB).
SEEN_BITS = 1 << 17

#: What a topic nothing matches gets (shared: `match`'s lists are read, never changed).
_NOTHING: list[Subscription] = []


class Router:
    __slots__ = ("_exact", "_root", "_seen", "_seen_count", "_wild_count", "cache")

    def __init__(self) -> None:
        #: What `match` remembered, by topic: read in place by delivery (a call
        #: less per message); changed only here.
        self.cache: dict[str, list[Subscription]] = {}
        self._seen = bytearray(SEEN_BITS // 8)
        self._seen_count = 0  # topics marked in `_seen` since it was wiped
        self._exact: dict[str, _Leaf] = {}
        self._root = _Node()
        self._wild_count = 0

    def add(self, topic_filter: str, sub: Subscription) -> None:
        """Index `sub` under a non-shared `topic_filter` (the group is in `sub`)."""
        self.cache.clear()
        leaf = self._leaf(topic_filter, create=True)
        assert leaf is not None
        client_id = sub.session.client_id
        if sub.group is None:
            leaf.subs[client_id] = sub
        else:
            group = leaf.shared.get(sub.group)
            if group is None:
                group = leaf.shared[sub.group] = _Group()
            group.members[client_id] = sub

    def remove(self, topic_filter: str, client_id: str, group: str | None) -> None:
        self.cache.clear()
        leaf = self._leaf(topic_filter, create=False)
        if leaf is None:
            return
        if group is None:
            leaf.subs.pop(client_id, None)
        else:
            g = leaf.shared.get(group)
            if g is not None:
                g.members.pop(client_id, None)
                if not g.members:
                    del leaf.shared[group]
        if leaf.empty():
            self._prune(topic_filter)

    def _leaf(self, topic_filter: str, create: bool) -> _Leaf | None:
        if "+" not in topic_filter and "#" not in topic_filter:
            leaf = self._exact.get(topic_filter)
            if leaf is None and create:
                leaf = self._exact[topic_filter] = _Leaf()
            return leaf
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                if not create:
                    return None
                child = node.children[level] = _Node()
            node = child
        if node.leaf is None and create:
            node.leaf = _Leaf()
            self._wild_count += 1
        return node.leaf

    def _prune(self, topic_filter: str) -> None:
        if "+" not in topic_filter and "#" not in topic_filter:
            self._exact.pop(topic_filter, None)
            return
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            path.append(path[-1].children[level])
        path[-1].leaf = None
        self._wild_count -= 1
        for i in range(len(levels) - 1, -1, -1):
            node = path[i + 1]
            if node.children or node.leaf is not None:
                break
            del path[i].children[levels[i]]

    def match(self, topic: str) -> list[Subscription]:
        """Every subscription a message on `topic` goes to: all plain matches,
        and one member per matching share group. The list is shared: read it,
        never change it."""
        cached = self.cache.get(topic)
        if cached is not None:
            return cached
        leaf = self._exact.get(topic)
        if not self._wild_count:
            if leaf is None:
                return _NOTHING  # one lookup, as remembering it would cost: not remembered
            leaves = [leaf]
        else:
            leaves = [] if leaf is None else [leaf]
            _walk(self._root, topic.split("/"), 0, topic.startswith("$"), leaves)
        out: list[Subscription] = []
        shared = False
        for lf in leaves:
            out.extend(lf.subs.values())
            for group in lf.shared.values():
                shared = True
                picked = group.pick()
                if picked is not None:
                    out.append(picked)
        if not shared:
            h = hash(topic) & (SEEN_BITS - 1)
            seen, bit = self._seen, 1 << (h & 7)
            if seen[h >> 3] & bit:
                if len(self.cache) >= CACHE_SIZE:
                    self.cache.clear()
                self.cache[topic] = out
            else:
                seen[h >> 3] |= bit
                self._seen_count += 1
                if self._seen_count >= CACHE_SIZE:
                    self._seen = bytearray(SEEN_BITS // 8)
                    self._seen_count = 0
        return out

    def __len__(self) -> int:
        return len(self._exact) + self._wild_count


def _walk(node: _Node, levels: list[str], i: int, dollar: bool, out: list[_Leaf]) -> None:
    children = node.children
    wild_ok = not (i == 0 and dollar)
    if wild_ok:
        hash_node = children.get("#")
        if hash_node is not None and hash_node.leaf is not None:
            out.append(hash_node.leaf)
    if i == len(levels):
        if node.leaf is not None and i:
            out.append(node.leaf)
        return
    child = children.get(levels[i])
    if child is not None:
        _walk(child, levels, i + 1, dollar, out)
    if wild_ok:
        plus = children.get("+")
        if plus is not None:
            _walk(plus, levels, i + 1, dollar, out)
