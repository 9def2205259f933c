"""Topic names, topic filters and matching (spec section 4.7), without a server.

`topics.matches` is the reference the router and the retained store are
checked against (see test_router.py and test_retained.py), so its cases here
are spelled out one by one.
"""

from __future__ import annotations

import pytest

from thingshub.mqtt.topics import (
    has_wildcard,
    matches,
    split_shared,
    valid_topic_filter,
    valid_topic_name,
)


@pytest.mark.parametrize(
    ("topic", "ok"),
    [
        ("a", True),
        ("a/b/c", True),
        ("/", True),
        ("a//b", True),
        ("$sys/x", True),
        (" ", True),
        ("", False),
        ("a/+", False),
        ("a/#", False),
        ("a+b", False),
        ("#", False),
    ],
)
def test_valid_topic_name(topic: str, ok: bool) -> None:
    assert valid_topic_name(topic) is ok


@pytest.mark.parametrize(
    ("topic_filter", "ok"),
    [
        ("a", True),
        ("#", True),
        ("+", True),
        ("a/#", True),
        ("+/+/#", True),
        ("a/+/c", True),
        ("/+", True),
        ("+/", True),
        ("$sys/#", True),
        ("", False),
        ("a/#/b", False),
        ("a#", False),
        ("a/b#", False),
        ("a+", False),
        ("a/+b/c", False),
        ("##", False),
    ],
)
def test_valid_topic_filter(topic_filter: str, ok: bool) -> None:
    assert valid_topic_filter(topic_filter) is ok


def test_has_wildcard() -> None:
    assert has_wildcard("a/+")
    assert has_wildcard("#")
    assert not has_wildcard("a/b")


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/+", "a/", True),
        ("a/+", "a/b/c", False),
        ("a/+/c", "a//c", True),
        ("+/+", "/b", True),
        ("+", "/b", False),
        ("/+", "/b", True),
        ("a/#", "a", True),  # [MQTT-4.7.1-2]: the parent level matches too
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("a/b/#", "a", False),
        ("#", "a/b", True),
        ("#", "/", True),
        ("+/#", "a", True),
        # [MQTT-4.7.2-1]: a leading wildcard never matches a `$` topic...
        ("#", "$sys/x", False),
        ("+/x", "$sys/x", False),
        ("+/#", "$sys", False),
        ("+", "$sys", False),
        # ...but naming the `$` level does, and `$` elsewhere is ordinary.
        ("$sys/#", "$sys/x", True),
        ("$sys/+", "$sys/x", True),
        ("$sys", "$sys", True),
        ("a/+", "a/$x", True),
        ("a/#", "a/$x/y", True),
    ],
)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("a/b", (None, "a/b")),
        ("$share/g/a/b", ("g", "a/b")),
        ("$share/g/#", ("g", "#")),
        ("$share/g/+/x", ("g", "+/x")),
        ("$shared/g/a", (None, "$shared/g/a")),
    ],
)
def test_split_shared(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert split_shared(topic_filter) == expected


@pytest.mark.parametrize(
    "topic_filter",
    [
        "$share/g",
        "$share//a",
        "$share/+/a",
        "$share/#/a",
        "$share/g/a/#/b",
        "$share/g/",
        "$share/g+/a",
    ],
)
def test_split_shared_rejects(topic_filter: str) -> None:
    with pytest.raises(ValueError):
        split_shared(topic_filter)
