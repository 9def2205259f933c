"""Retained messages: the store on its own, then through the server.

The store must agree with `topics.matches` (including `a/#` matching `a` and
the `$` rule), drop expired messages, and prune its trie on delete. Through the
server: set, replace, delete with an empty payload, delivery on subscribe with
the retain flag, retain handling 0/1/2, retain-as-published, and the 3.1.1
rule that a live (not on-subscribe) delivery carries retain 0.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import RunningBroker
from tests.mqtt.clients import PahoClient, brief
from tests.mqtt.test_router import _filter, _topic
from thingshub.mqtt.server import BrokerConfig
from thingshub.mqtt.server.retained import RetainedMessage, RetainedStore
from thingshub.mqtt.topics import matches

# ------------------------------------------------------------ the store


def store_with(*topics: str) -> RetainedStore:
    store = RetainedStore()
    for t in topics:
        store.set(RetainedMessage(t, t.encode(), 0))
    return store


def found(store: RetainedStore, topic_filter: str, now: float = 0.0) -> list[str]:
    return sorted(m.topic for m in store.match(topic_filter, now))


def test_store_set_replace_get_delete() -> None:
    store = RetainedStore()
    store.set(RetainedMessage("a/b", b"1", 0))
    store.set(RetainedMessage("a/b", b"2", 1))
    assert len(store) == 1
    msg = store.get("a/b")
    assert msg is not None and (msg.payload, msg.qos) == (b"2", 1)
    assert store.get("a") is None
    assert store.get("a/b/c") is None
    store.delete("a/b")
    assert store.get("a/b") is None
    assert len(store) == 0


def test_store_wildcards_and_dollar_rule() -> None:
    store = store_with("a", "a/b", "a/b/c", "a/c", "b", "/x", "$sys/up", "$sys")
    assert found(store, "a/#") == ["a", "a/b", "a/b/c", "a/c"]
    assert found(store, "a/+") == ["a/b", "a/c"]
    assert found(store, "+") == ["a", "b"]
    assert found(store, "+/x") == ["/x"]
    assert found(store, "#") == ["/x", "a", "a/b", "a/b/c", "a/c", "b"]
    assert found(store, "+/up") == []
    assert found(store, "$sys/#") == ["$sys", "$sys/up"]
    assert found(store, "$sys/+") == ["$sys/up"]
    assert found(store, "a/b") == ["a/b"]
    assert found(store, "nothing/#") == []


def test_store_delete_prunes_and_keeps_children() -> None:
    store = store_with("a/b/c", "a/b")
    store.delete("a/b")  # an inner node with a child: the child stays
    assert found(store, "#") == ["a/b/c"]
    store.delete("a/b/c")
    assert len(store) == 0
    assert store._root.children == {}


def test_store_delete_unknown_is_harmless() -> None:
    store = store_with("a/b/c")
    store.delete("a/b")  # exists as a node, holds no message
    store.delete("x/y")
    store.delete("a/b/c/d")
    assert len(store) == 1
    assert found(store, "#") == ["a/b/c"]


def test_store_drops_expired_messages_when_seen() -> None:
    store = RetainedStore()
    store.set(RetainedMessage("t/old", b"1", 0, expires_at=10.0))
    store.set(RetainedMessage("t/new", b"2", 0, expires_at=30.0))
    store.set(RetainedMessage("t/forever", b"3", 0))
    assert found(store, "t/+", now=20.0) == ["t/forever", "t/new"]
    assert store.get("t/old") is None
    assert len(store) == 2


@settings(max_examples=300, deadline=None)
@given(st.lists(_topic, max_size=8, unique=True), st.lists(_filter, min_size=1, max_size=4))
def test_store_agrees_with_matches(topics: list[str], filters: list[str]) -> None:
    store = store_with(*topics)
    for f in filters:
        assert found(store, f) == sorted(t for t in topics if matches(f, t)), f
    for t in topics:
        store.delete(t)
    assert len(store) == 0
    assert store._root.children == {}


# ------------------------------------------------------------ through the server

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_set_replace_delete(broker: RunningBroker, version: int) -> None:
    pub = PahoClient(broker.port, "pub", version=version)
    pub.publish("r/t", b"first", qos=1, retain=True)
    pub.publish("r/t", b"second", qos=1, retain=True)

    late = PahoClient(broker.port, "late", version=version)
    late.subscribe("r/t", qos=1)
    assert [brief(m) for m in late.wait_messages(1)] == [("r/t", b"second", 1, True)]

    pub.publish("r/t", b"", qos=1, retain=True)  # deletes it; still forwarded live
    [_, live] = late.wait_messages(2)
    assert (live.topic, live.payload) == ("r/t", b"")
    later = PahoClient(broker.port, "later", version=version)
    later.subscribe("r/t", qos=1)
    later.fence()
    assert later.messages == []
    assert broker.call(lambda: len(broker.broker.delivery.retained)) == 0


def test_retained_wildcard_lookup_and_qos(broker: RunningBroker) -> None:
    """On subscribe, every retained message the filter matches is sent, at the
    lower of its QoS and the subscription's, with the retain flag set."""
    pub = PahoClient(broker.port, "pub")
    pub.publish("home/kitchen/temp", b"21", qos=2, retain=True)
    pub.publish("home/hall/temp", b"19", qos=0, retain=True)
    pub.publish("home", b"root", qos=1, retain=True)
    pub.publish("office/temp", b"18", qos=1, retain=True)
    pub.publish("$sys/load", b"1", qos=1, retain=True)

    sub = PahoClient(broker.port, "sub")
    sub.subscribe("home/#", qos=1)
    sub.fence()
    assert sorted(brief(m) for m in sub.messages) == [
        ("home", b"root", 1, True),
        ("home/hall/temp", b"19", 0, True),
        ("home/kitchen/temp", b"21", 1, True),
    ]
    every = PahoClient(broker.port, "every")
    every.subscribe("#", qos=1)
    every.fence()
    assert sorted(m.topic for m in every.messages) == [
        "home",
        "home/hall/temp",
        "home/kitchen/temp",
        "office/temp",
    ]


def test_retained_not_sent_to_shared_subscriptions(broker: RunningBroker) -> None:
    """5.0 section 4.8.2: retained messages are not sent to the session when a
    shared subscription is made (a group has no single receiver for them)."""
    PahoClient(broker.port, "pub").publish("s/t", b"kept", qos=1, retain=True)
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("$share/g/s/t", qos=1)
    sub.fence()
    assert sub.messages == []


@pytest.mark.parametrize(
    ("handling", "on_first", "on_again"),
    [(0, 1, 1), (1, 1, 0), (2, 0, 0)],
    ids=["send-always", "send-if-new", "never"],
)
def test_retain_handling(
    broker: RunningBroker, handling: int, on_first: int, on_again: int
) -> None:
    """5.0 Retain Handling: 0 sends retained messages at every subscribe, 1 only
    when the subscription did not exist yet, 2 never."""
    PahoClient(broker.port, "pub").publish("rh/t", b"r", qos=1, retain=True)
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("rh/t", qos=1, retain_handling=handling)
    sub.fence()
    assert len(sub.messages) == on_first
    sub.subscribe("rh/t", qos=1, retain_handling=handling)
    sub.fence()
    assert len(sub.messages) == on_first + on_again


@pytest.mark.parametrize("rap", [False, True], ids=["rap0", "rap1"])
def test_retain_as_published(broker: RunningBroker, rap: bool) -> None:
    """Live delivery keeps the publisher's retain flag only with
    retain-as-published; on-subscribe delivery always has it."""
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("rap/t", qos=1, retain_as_published=rap)
    pub = PahoClient(broker.port, "pub")
    pub.publish("rap/t", b"live", qos=1, retain=True)
    pub.publish("rap/t", b"plain", qos=1, retain=False)
    msgs = sub.wait_messages(2)
    assert [(m.payload, bool(m.retain)) for m in msgs] == [(b"live", rap), (b"plain", False)]


def test_v311_live_delivery_has_retain_0(broker: RunningBroker) -> None:
    """[MQTT-3.3.1-9]: to a 3.1.1 subscriber that already had the subscription,
    a retained publish is forwarded with retain 0; at subscribe it is 1."""
    sub = PahoClient(broker.port, "sub", version=4)
    sub.subscribe("v3/t", qos=1)
    pub = PahoClient(broker.port, "pub", version=4)
    pub.publish("v3/t", b"x", qos=1, retain=True)
    [live] = sub.wait_messages(1)
    assert brief(live) == ("v3/t", b"x", 1, False)
    sub.subscribe("v3/t", qos=1)
    [_, again] = sub.wait_messages(2)
    assert brief(again) == ("v3/t", b"x", 1, True)


def test_application_retained_publish(broker: RunningBroker) -> None:
    """`Broker.publish(retain=True)` from the application is stored like a client's."""
    broker.call(lambda: broker.broker.publish("app/state", b"on", qos=1, retain=True))
    sub = PahoClient(broker.port, "sub", version=4)
    sub.subscribe("app/+", qos=1)
    assert [brief(m) for m in sub.wait_messages(1)] == [("app/state", b"on", 1, True)]


def test_max_retained_refuses_new_topics_but_replaces(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """The retained store is bounded: a new topic beyond `max_retained` is
    refused and counted, while replacing an existing one still works."""
    b = broker_factory(config=BrokerConfig(max_retained=2))
    pub = PahoClient(b.port, "pub")
    for topic in ("m/1", "m/2", "m/3"):
        pub.publish(topic, b"v1", qos=1, retain=True)
    pub.publish("m/1", b"v2", qos=1, retain=True)  # replacing is still allowed
    assert b.stats.dropped_retained_full == 1
    sub = PahoClient(b.port, "sub")
    sub.subscribe("m/+", qos=1)
    sub.fence()
    assert sorted((m.topic, m.payload) for m in sub.messages) == [("m/1", b"v2"), ("m/2", b"v1")]
