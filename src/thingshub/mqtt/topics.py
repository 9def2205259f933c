"""Topic names and topic filters (spec section 4.7).

Rules:
- A topic name (and a 5.0 Response Topic) is 1 to 65,535 bytes of UTF-8 with
  no `+` or `#`.
- A topic filter is at least one character; `#` only as the whole last level;
  `+` only as a whole level.
- A filter whose first level is a wildcard never matches a topic that starts
  with `$` ([MQTT-4.7.2-1]), so `#` does not see `$sys/...` traffic.
- `$share/{group}/{filter}` is a shared subscription: the group is one
  non-empty level without wildcards, the filter after it a valid filter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thingshub.mqtt.codec.packets import Will


def valid_topic_name(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic


def valid_response_topic(topic: str | None) -> bool:
    """A 5.0 Response Topic, where there is one, is a topic name [MQTT-3.3.2-14]."""
    return topic is None or valid_topic_name(topic)


def valid_will(will: Will) -> bool:
    """A will's topic, and its Response Topic where it has one, are topic names."""
    return valid_topic_name(will.topic) and valid_response_topic(will.properties.response_topic)


def valid_topic_filter(topic_filter: str) -> bool:
    if not topic_filter:
        return False
    if "+" not in topic_filter and "#" not in topic_filter:
        return True
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            return False
        if "+" in level and level != "+":
            return False
    return True


def has_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """`(group, filter)` of a `$share/group/filter`, or `(None, filter)`.

    Raises ValueError for a `$share/` filter that is not well formed.
    """
    if not topic_filter.startswith("$share/"):
        return None, topic_filter
    parts = topic_filter.split("/", 2)
    if len(parts) < 3 or not parts[1] or "+" in parts[1] or "#" in parts[1]:
        raise ValueError("a shared subscription is $share/{group}/{filter}")
    if not valid_topic_filter(parts[2]):
        raise ValueError("invalid topic filter after the share group")
    return parts[1], parts[2]


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a (non-shared) filter matches a topic name."""
    if topic_filter == topic:
        return True
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
