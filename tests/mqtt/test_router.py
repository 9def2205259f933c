"""The subscription index (`server/router.py`), without sockets.

The router is checked against `topics.matches` (the reference) on generated
filters and topics, and its trie must give back every node it created once the
last subscription under it goes: a broker with churning wildcard subscriptions
must not grow without bound.
"""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from thingshub.mqtt.server.router import CACHE_SIZE, SEEN_BITS, Router, Subscription
from thingshub.mqtt.server.session import Session
from thingshub.mqtt.topics import matches, split_shared

ONLINE = cast(Any, object())  # stands for a Connection: the router only tests `is not None`


def session(client_id: str, online: bool = True) -> Session:
    s = Session(client_id, 5, 10, 10, 1000)
    s.connection = ONLINE if online else None
    return s


def add(router: Router, sess: Session, topic_filter: str, qos: int = 0) -> Subscription:
    group, plain = split_shared(topic_filter)
    sub = Subscription(sess, topic_filter, qos, group=group)
    router.add(plain, sub)
    return sub


def remove(router: Router, sess: Session, topic_filter: str) -> None:
    group, plain = split_shared(topic_filter)
    router.remove(plain, sess.client_id, group)


def matched(router: Router, topic: str) -> list[tuple[str, str]]:
    return sorted((s.session.client_id, s.topic_filter) for s in router.match(topic))


def is_empty(router: Router) -> bool:
    return len(router) == 0 and not router._exact and not router._root.children


def test_exact_and_wildcard_filters() -> None:
    r = Router()
    a, b = session("a"), session("b")
    add(r, a, "x/y")
    add(r, a, "x/+")
    add(r, b, "x/#")
    add(r, b, "#")
    assert matched(r, "x/y") == [("a", "x/+"), ("a", "x/y"), ("b", "#"), ("b", "x/#")]
    assert matched(r, "x") == [("b", "#"), ("b", "x/#")]
    assert matched(r, "x/y/z") == [("b", "#"), ("b", "x/#")]
    assert matched(r, "$x/y") == []


def test_one_subscription_per_session_and_filter() -> None:
    """Subscribing again to the same filter replaces the subscription ([MQTT-3.8.4-3])."""
    r = Router()
    a = session("a")
    add(r, a, "t", qos=0)
    add(r, a, "t", qos=2)
    [sub] = r.match("t")
    assert sub.qos == 2


def test_dollar_topics() -> None:
    r = Router()
    s = session("s")
    for f in ["#", "+/x", "+/+", "$sys/#", "$sys/+", "$sys/x"]:
        add(r, s, f)
    assert matched(r, "$sys/x") == [("s", "$sys/#"), ("s", "$sys/+"), ("s", "$sys/x")]


def test_remove_prunes_the_trie() -> None:
    r = Router()
    a, b = session("a"), session("b")
    filters = ["a/+/c", "a/+/d", "a/#", "+/+/+", "x", "x/y", "$share/g/a/+/c"]
    for f in filters:
        add(r, a, f)
        add(r, b, f)
    assert len(r) == 6  # the shared subscription lives in the leaf of `a/+/c`
    for f in filters:
        remove(r, a, f)
    assert matched(r, "a/b/c") == [
        ("b", "$share/g/a/+/c"),
        ("b", "+/+/+"),
        ("b", "a/#"),
        ("b", "a/+/c"),
    ]
    remove(r, b, "a/+/c")
    # `a/+/c` still has the shared group, so its branch stays.
    assert "c" in r._root.children["a"].children["+"].children
    remove(r, b, "$share/g/a/+/c")
    assert "c" not in r._root.children["a"].children["+"].children
    assert "d" in r._root.children["a"].children["+"].children
    for f in filters:
        remove(r, b, f)
    assert is_empty(r)


def test_remove_unknown_is_harmless() -> None:
    r = Router()
    a = session("a")
    add(r, a, "a/+/c")
    remove(r, a, "a/+")  # an inner node, not a leaf
    remove(r, a, "a/+/c/d")
    remove(r, a, "zz/#")
    remove(r, session("other"), "a/+/c")
    remove(r, a, "$share/nogroup/a/+/c")
    assert matched(r, "a/b/c") == [("a", "a/+/c")]
    remove(r, a, "a/+/c")
    remove(r, a, "a/+/c")
    assert is_empty(r)


def test_shared_group_round_robin() -> None:
    """Each message goes to one member of a group, taking turns; a plain
    subscription on the same filter still gets every message."""
    r = Router()
    m1, m2, m3, plain = session("m1"), session("m2"), session("m3"), session("plain")
    for m in (m1, m2, m3):
        add(r, m, "$share/g/t/+")
    add(r, plain, "t/+")
    picks = []
    for _ in range(6):
        subs = r.match("t/x")
        assert sorted(s.session.client_id for s in subs if s.group is None) == ["plain"]
        [member] = [s.session.client_id for s in subs if s.group is not None]
        picks.append(member)
    assert picks == ["m1", "m2", "m3", "m1", "m2", "m3"]


def test_shared_group_prefers_online_members() -> None:
    r = Router()
    online, offline = session("on"), session("off", online=False)
    add(r, offline, "$share/g/t")
    add(r, online, "$share/g/t")
    assert [s.session.client_id for s in (r.match("t")[0] for _ in range(4))] == ["on"] * 4
    online.connection = None
    # Nobody online: still one member per message (QoS 1/2 wait in its session).
    assert len(r.match("t")) == 1


def test_two_groups_each_get_the_message() -> None:
    r = Router()
    add(r, session("a"), "$share/g1/t")
    add(r, session("b"), "$share/g2/t")
    assert matched(r, "t") == [("a", "$share/g1/t"), ("b", "$share/g2/t")]


# Generated filters and topics over a small alphabet, so that they often match.
_level = st.sampled_from(["a", "b", "", "$s"])
_topic = st.lists(_level, min_size=1, max_size=4).map("/".join).filter(bool)
_filter_level = st.sampled_from(["a", "b", "", "$s", "+"])
_filter = st.builds(
    lambda levels, tail: "/".join(levels + (["#"] if tail else [])) or "#",
    st.lists(_filter_level, min_size=0, max_size=3),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_filter, min_size=1, max_size=8, unique=True), st.lists(_topic, max_size=6))
def test_router_agrees_with_matches(filters: list[str], topics: list[str]) -> None:
    r = Router()
    s = session("s")
    for f in filters:
        add(r, s, f)
    for t in topics:
        assert sorted(sub.topic_filter for sub in r.match(t)) == sorted(
            f for f in filters if matches(f, t)
        ), t
    for f in filters:
        remove(r, s, f)
    assert is_empty(r)


_op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from("xy"), _filter),
    st.tuples(st.just("remove"), st.sampled_from("xy"), _filter),
    st.tuples(st.just("match"), st.just(""), _topic),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=30))
def test_remembered_matches_follow_every_change(ops: list[tuple[str, str, str]]) -> None:
    """Matches are remembered between publishes: whatever subscribes and
    unsubscribes in between, each match is the one the filters give now."""
    r = Router()
    sessions = {"x": session("x"), "y": session("y")}
    current: set[tuple[str, str]] = set()
    for op, who, arg in ops:
        if op == "add":
            add(r, sessions[who], arg)
            current.add((who, arg))
        elif op == "remove":
            remove(r, sessions[who], arg)
            current.discard((who, arg))
        else:
            expected = sorted((w, f) for w, f in current if matches(f, arg))
            assert matched(r, arg) == expected
            assert matched(r, arg) == expected  # the second time, from memory


def test_remembered_matches_are_bounded() -> None:
    r = Router()
    add(r, session("s"), "#")
    for i in range(CACHE_SIZE + 10):
        assert len(r.match(f"t/{i}")) == 1
        assert len(r.match(f"t/{i}")) == 1  # the second time: remembered
    assert len(r.cache) <= CACHE_SIZE


def test_a_topic_routed_once_is_not_remembered() -> None:
    r = Router()
    add(r, session("s"), "cmd/request/+")
    for i in range(5000):  # one-shot topics (a command's id in each)
        assert len(r.match(f"cmd/request/{i}")) == 1
    # Only those whose bit another topic set first (about 2 %, 5000 bits of 131,072).
    assert len(r.cache) < 500
    assert "cmd/request/x" not in r.cache
    assert len(r.match("cmd/request/x")) == 1
    assert matched(r, "cmd/request/x") == [("s", "cmd/request/+")]
    assert "cmd/request/x" in r.cache  # routed twice: remembered


def test_the_table_of_topics_routed_once_is_wiped_before_it_fills() -> None:
    r = Router()
    add(r, session("s"), "#")
    for i in range(3 * CACHE_SIZE):
        r.match(f"t/{i}")
    assert r._seen_count < CACHE_SIZE
    assert sum(bin(b).count("1") for b in r._seen) <= r._seen_count  # wiped, not kept
    assert SEEN_BITS > 10 * CACHE_SIZE  # so a bit is rarely another topic's


def test_a_miss_is_remembered_only_when_wildcards_could_have_matched() -> None:
    r = Router()
    add(r, session("s"), "a/b")
    for i in range(100):  # per-device topics nobody subscribes to take no memory
        assert r.match(f"devices/status/{i}") == []
    assert len(r.cache) == 0
    assert matched(r, "a/b") == [("s", "a/b")]
    assert matched(r, "a/b") == [("s", "a/b")]  # a hit, the second time, is remembered
    assert len(r.cache) == 1
    add(r, session("w"), "x/+")
    assert r.match("devices/status/1") == []
    assert r.match("devices/status/1") == []
    assert "devices/status/1" in r.cache  # a miss that took a walk of the trie
