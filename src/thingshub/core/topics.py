"""Topic filters compared with the topic patterns a device owns.

Rules:
- A pattern is a topic filter (`+`, `#`) describing a set of topics.
- `filter_within(f, p)` is True only if every topic `f` can match is matched
  by `p`; a wildcard in `f` where `p` has a fixed level makes it False, since
  `+` and `#` match infinitely many names.
- A filter whose first level is a wildcard never matches `$` topics, so it
  is never within a `$sys/...` pattern by accident of that rule: it is
  judged level by level like any other.
- A topic name never contains `+` or `#`: a string that does is a filter,
  and `topic_matches` answers False for it (an ACL must not read a wildcard
  publish topic as one of the names the wildcard stands for).
"""

from __future__ import annotations


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether a topic name matches a pattern (MQTT filter semantics, no `$` rule)."""
    if "+" in topic or "#" in topic:
        return False
    p_levels = pattern.split("/")
    t_levels = topic.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(t_levels):
            return False
        if p != "+" and p != t_levels[i]:
            return False
    return len(p_levels) == len(t_levels)


def filter_within(topic_filter: str, pattern: str) -> bool:
    """Whether every topic matched by `topic_filter` is matched by `pattern`."""
    f_levels = topic_filter.split("/")
    p_levels = pattern.split("/")
    for i, f in enumerate(f_levels):
        if i >= len(p_levels):
            return False
        p = p_levels[i]
        if p == "#":
            return True
        if f == "#":
            return False  # f reaches any depth; p stops or fixes a level here
        if p == "+":
            continue
        if f != p:  # includes f == "+" against a fixed level
            return False
    if len(f_levels) == len(p_levels):
        return True
    # f is shorter: it matches only topics of its own length, which p can
    # match only through a trailing "#" (that matches the parent level too).
    return len(p_levels) == len(f_levels) + 1 and p_levels[-1] == "#"


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic name is matched by both filters."""
    a_levels = a.split("/")
    b_levels = b.split("/")
    for i in range(max(len(a_levels), len(b_levels))):
        x = a_levels[i] if i < len(a_levels) else None
        y = b_levels[i] if i < len(b_levels) else None
        if x == "#" or y == "#":
            return True  # "#" matches any rest, including none
        if x is None or y is None:
            return False  # one filter stops; the other needs one more level
        if "+" not in (x, y) and x != y:
            return False
    return True
