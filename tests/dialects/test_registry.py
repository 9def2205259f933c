"""The dialect registry (dialects/registry.py): which dialect answers which question.

Logins go to the first dialect, in the registry's order, whose credential form
they are in; a dialect registered later is asked first, before the catch-alls;
every other question (topic rights, decoding, encoding, what a device listens
to) is asked of every dialect. The default registry speaks OneNET, then
ThingsPanel, whose logins take anything. Dialects here are defined in the
tests; the real ones are asked through the default registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.dialects.toy import Toy
from thingshub.core.messages import (
    Call,
    Control,
    DeviceRef,
    ImageDelta,
    ImageGetRequest,
    OtaInform,
    TelemetryReport,
)
from thingshub.core.model import Device, Point
from thingshub.dialects.onenet import OneNet
from thingshub.dialects.onenet.token import make_token
from thingshub.dialects.port import Login, PasswordCheck, Wire
from thingshub.dialects.registry import Registry, default_registry
from thingshub.dialects.thing import Thing
from thingshub.dialects.thingspanel import ThingsPanel

REF = DeviceRef("p", "d", "dn")
KEY = "a2V5LW9mLXRoZS1kZXZpY2UtMzItYnl0ZXMtbG9uZyE="


@dataclass(frozen=True)
class Marker:
    """A message only the dialect named `carrier` carries."""

    carrier: str


class Stub:
    """A dialect that owns `{name}/...`, takes logins whose user name starts with
    `{name}:` (or every login, when `catch_all`), and carries `Marker`s of its name.
    It decodes its `open_topics` too (a payload of "-" as nothing)."""

    def __init__(
        self, name: str, *, catch_all: bool = False, open_topics: frozenset[str] = frozenset()
    ) -> None:
        self.name = name
        self.catch_all = catch_all
        self.open_topics = open_topics

    def login(self, client_id: str, username: str | None, password: bytes | None) -> Login | None:
        if username is None:
            return None
        if self.catch_all or username.startswith(self.name + ":"):
            return Login(self.name, ("u", username), password)
        return None

    def verify(self, login: Login, device: Device, now_s: int, password_ok: PasswordCheck) -> None:
        return None

    def owns(self, topic: str) -> bool:
        return topic.startswith(self.name + "/")

    def may_publish(self, ref: DeviceRef, topic: str) -> bool:
        return topic == f"{self.name}/{ref.name}/up"

    def may_subscribe(self, ref: DeviceRef, topic_filter: str) -> bool:
        return topic_filter == f"{self.name}/{ref.name}/down"

    def decode(self, ref: DeviceRef, topic: str, payload: bytes, now_ms: int) -> object | None:
        if topic == f"{self.name}/{ref.name}/up" or (topic in self.open_topics and payload != b"-"):
            return TelemetryReport([Point(self.name, now_ms, payload.decode())], now_ms)
        return None

    def encode(self, ref: DeviceRef, message: object) -> Wire | None:
        if isinstance(message, Marker) and message.carrier == self.name:
            return [(f"{self.name}/{ref.name}/down", self.name.encode())]
        return None

    def topics(self, ref: DeviceRef, kind: type) -> tuple[str, ...]:
        return (f"{self.name}/{ref.name}/down",) if kind is Marker else ()


def names(registry: Registry) -> list[str]:
    return [d.name for d in registry]


# ---------------------------------------------------------------- order and names


def test_dialects_keep_the_order_they_are_given_in() -> None:
    assert names(Registry([Stub("a"), Stub("b"), Stub("c")])) == ["a", "b", "c"]
    assert names(Registry()) == []


def test_a_registered_dialect_comes_first() -> None:
    registry = Registry([Stub("a"), Stub("b")])
    registry.register(Stub("x"))
    registry.register(Stub("y"))
    assert names(registry) == ["y", "x", "a", "b"]


def test_two_dialects_may_not_share_a_name() -> None:
    with pytest.raises(ValueError, match="'a' is already registered"):
        Registry([Stub("a"), Stub("a")])
    registry = Registry([Stub("a")])
    with pytest.raises(ValueError, match="'a' is already registered"):
        registry.register(Stub("a"))
    assert names(registry) == ["a"]  # the refused one left nothing behind


@given(
    st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=4),
    st.lists(st.sampled_from("ijklmnop"), unique=True, max_size=4),
)
def test_the_order_is_the_registered_ones_newest_first_then_the_given_ones(
    given_names: list[str], registered: list[str]
) -> None:
    registry = Registry(Stub(n) for n in given_names)
    for name in registered:
        registry.register(Stub(name))
    assert names(registry) == [*reversed(registered), *given_names]


def test_a_dialect_is_found_by_name() -> None:
    a, b = Stub("a"), Stub("b")
    registry = Registry([a, b])
    assert registry.get("b") is b
    with pytest.raises(KeyError):
        registry.get("c")


def test_the_default_registry_speaks_the_thing_model_then_onenet_then_thingspanel() -> None:
    """The thing model comes first: it owns part of OneNET's topic space."""
    registry = default_registry()
    assert names(registry) == ["thing", "onenet", "thingspanel"]
    assert isinstance(registry.get("thing"), Thing)
    assert isinstance(registry.get("onenet"), OneNet)
    assert isinstance(registry.get("thingspanel"), ThingsPanel)


# ---------------------------------------------------------------- logins


def test_a_login_goes_to_the_first_dialect_whose_form_it_is_in() -> None:
    registry = Registry([Stub("a"), Stub("b"), Stub("any", catch_all=True)])
    login = registry.login("c", "b:device", b"pw")
    assert login is not None and login.dialect == "b"
    login = registry.login("c", "someone", b"pw")
    assert login is not None and login.dialect == "any"


def test_a_login_in_no_dialects_form_is_none() -> None:
    assert Registry([Stub("a")]).login("c", "b:device", b"pw") is None
    assert default_registry().login("c", None, None) is None


@given(st.lists(st.sampled_from("abcdef"), unique=True, min_size=1, max_size=5), st.data())
def test_a_later_registration_takes_a_shared_login_form_first(
    order: list[str], data: st.DataObject
) -> None:
    """Every dialect here takes every login: the first in the order wins, and a
    newly registered one is first."""
    registry = Registry(Stub(n, catch_all=True) for n in order)
    login = registry.login("c", "user", b"pw")
    assert login is not None and login.dialect == order[0]
    if data.draw(st.booleans()):
        registry.register(Stub("z", catch_all=True))
        login = registry.login("c", "user", b"pw")
        assert login is not None and login.dialect == "z"


def test_the_default_registry_tells_a_onenet_token_from_a_thingspanel_password() -> None:
    registry = default_registry()
    token = make_token(KEY, "p", "d", 2_000_000_000)
    onenet = registry.login("d", "p", token.encode())
    assert onenet is not None and onenet.dialect == "onenet"
    assert onenet.lookup == ("d", "p", "d")
    thingspanel = registry.login("any-client", "user-name", b"issued-password")
    assert thingspanel == Login("thingspanel", ("u", "user-name"), "issued-password")


def test_a_plugged_in_dialect_is_asked_before_thingspanels_catch_all() -> None:
    registry = default_registry()
    assert registry.login("c", "toy:p/d", KEY.encode()).dialect == "thingspanel"  # type: ignore[union-attr]
    registry.register(Toy())
    login = registry.login("c", "toy:p/d", KEY.encode())
    assert login is not None and login.dialect == "toy" and login.lookup == ("d", "p", "d")


# ---------------------------------------------------------------- topics


def test_a_topic_belongs_to_the_dialect_that_owns_it_or_to_other() -> None:
    registry = default_registry()
    assert registry.family("$sys/p/d/image/update") == "onenet"
    assert registry.family("devices/telemetry") == "thingspanel"
    assert registry.family("ota/devices/progress") == "thingspanel"
    assert registry.family("toy/p/d/temp") == "other"
    registry.register(Toy())
    assert registry.family("toy/p/d/temp") == "toy"


def test_a_device_may_publish_or_subscribe_where_any_dialect_allows_it() -> None:
    registry = Registry([Stub("a"), Stub("b")])
    assert registry.may_publish(REF, "a/d/up")
    assert registry.may_publish(REF, "b/d/up")
    assert not registry.may_publish(REF, "c/d/up")
    assert not registry.may_publish(REF, "a/other/up")
    assert registry.may_subscribe(REF, "a/d/down")
    assert registry.may_subscribe(REF, "b/d/down")
    assert not registry.may_subscribe(REF, "a/d/up")
    assert not Registry().may_publish(REF, "a/d/up")


def test_an_open_topic_is_granted_to_every_device_and_goes_to_its_dialect() -> None:
    a, b = Stub("a"), Stub("b", open_topics=frozenset({"b/open"}))
    registry = Registry([a, b])
    assert not b.may_publish(REF, "b/open")  # the registry asks nobody: the promise stands
    assert registry.may_publish(REF, "b/open")
    assert registry.may_publish(DeviceRef("q", "other", "x"), "b/open")
    report = TelemetryReport([Point("b", 1000, "1")], 1000)
    assert registry.decode(REF, "b/open", b"1", 1000) == (b, report)
    assert registry.decode(REF, "b/open", b"-", 1000) is None  # its dialect said nothing


def test_an_open_topic_another_dialect_owns_is_decoded_by_asking_round() -> None:
    a, b = Stub("a", open_topics=frozenset({"b/shared"})), Stub("b")
    registry = Registry([a, b])
    assert registry.may_publish(REF, "b/shared")
    decoded = registry.decode(REF, "b/shared", b"1", 1000)
    assert decoded is not None and decoded[0] is a  # asked in turn: a first
    registry.register(Stub("z"))  # a registration keeps the rule
    decoded = registry.decode(REF, "b/shared", b"1", 1000)
    assert decoded is not None and decoded[0] is a


def test_a_plug_in_dialect_without_open_topics_is_asked_round() -> None:
    """A dialect written before the port had `open_topics` still registers; its
    topics are granted and decoded by asking round, as they always were."""
    old = Stub("old")
    del old.open_topics
    registry = Registry([Stub("a")])
    registry.register(old)  # type: ignore[arg-type]  # what an older plug-in is
    assert registry.may_publish(REF, "old/d/up") and not registry.may_publish(REF, "b/open")
    decoded = registry.decode(REF, "old/d/up", b"1", 1000)
    assert decoded is not None and decoded[0] is old


def test_thingspanels_open_topics_are_its_own_and_every_devices() -> None:
    registry = default_registry()
    thingspanel = registry.get("thingspanel")
    assert "devices/telemetry" in thingspanel.open_topics
    for topic in thingspanel.open_topics:
        assert registry.family(topic) == "thingspanel"
        for ref in (REF, DeviceRef("q", "other", "x")):
            assert thingspanel.may_publish(ref, topic)


def test_the_default_registry_grants_both_protocols_topics() -> None:
    registry = default_registry()
    assert registry.may_publish(REF, "$sys/p/d/image/update")
    assert registry.may_publish(REF, "devices/telemetry")
    assert not registry.may_publish(REF, "$sys/p/other/image/update")
    assert registry.may_subscribe(REF, "$sys/p/d/#")
    assert registry.may_subscribe(REF, "devices/command/dn/+")
    assert not registry.may_subscribe(REF, "devices/command/other/+")
    assert not registry.may_subscribe(REF, "#")


def test_covers_asks_whether_a_filter_takes_messages_of_a_kind() -> None:
    registry = default_registry()
    assert registry.covers(REF, ["$sys/p/d/image/update/delta"], ImageDelta)
    assert registry.covers(REF, ["devices/telemetry/control/dn", "$sys/p/d/#"], ImageDelta)
    assert registry.covers(REF, ["ota/devices/inform/+"], OtaInform)
    assert not registry.covers(REF, ["$sys/p/d/image/update/accepted"], ImageDelta)
    assert registry.covers(REF, ["$sys/p/d/ota/inform"], OtaInform)  # OneNET's notice
    assert not registry.covers(REF, ["$sys/p/d/image/#"], OtaInform)
    assert not registry.covers(REF, [], ImageDelta)
    assert not registry.covers(REF, ["#"], Control)  # no dialect names topics for it


# ---------------------------------------------------------------- messages


def test_a_message_is_decoded_by_the_dialect_whose_topic_it_is_on() -> None:
    a, b = Stub("a"), Stub("b")
    registry = Registry([a, b])
    decoded = registry.decode(REF, "b/d/up", b"21.5", 1000)
    assert decoded == (b, TelemetryReport([Point("b", 1000, "21.5")], 1000))
    assert registry.decode(REF, "c/d/up", b"21.5", 1000) is None


def test_the_default_registry_decodes_both_protocols() -> None:
    registry = default_registry()
    onenet = registry.decode(REF, "$sys/p/d/image/get", b"", 1)
    assert onenet is not None
    assert (onenet[0].name, onenet[1]) == ("onenet", ImageGetRequest(None))
    thingspanel = registry.decode(REF, "devices/telemetry", b'{"t":1}', 1_700_000_000_000)
    assert thingspanel is not None
    assert (thingspanel[0].name, thingspanel[1]) == (
        "thingspanel",
        TelemetryReport([Point("t", 1_700_000_000_000, 1)], 1_700_000_000_000),
    )
    assert registry.decode(REF, "$sys/p/other/image/get", b"", 1) is None


def test_a_message_is_encoded_by_the_dialect_that_carries_it() -> None:
    a, b = Stub("a"), Stub("b")
    registry = Registry([a, b])
    assert registry.encode(REF, Marker("b")) == (b, [("b/d/down", b"b")])
    assert registry.encode(REF, Marker("a")) == (a, [("a/d/down", b"a")])


def test_a_message_no_dialect_carries_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no dialect carries Marker"):
        Registry([Stub("a")]).encode(REF, Marker("b"))
    with pytest.raises(TypeError, match="no dialect carries Call"):
        default_registry().encode(REF, Call("toy", "command", "1", b""))


def test_calls_go_out_in_their_own_family() -> None:
    registry = default_registry()
    registry.register(Toy())
    for family, topic in [
        ("onenet", "$sys/p/d/cmd/request/7"),
        ("thingspanel", "devices/command/dn/7"),
        ("toy", "toy/p/d/call/7"),
    ]:
        dialect, wire = registry.encode(REF, Call(family, "command", "7", b"{}"))
        assert dialect.name == family
        assert wire == [(topic, b"{}")]
