"""Fuzzing every dialect's decoders: topic + payload -> core message, and logins.

Documented outcomes (dialects/port.py, dialects/registry.py):
- `decode` returns a message or None, whatever the payload: a malformed one
  on a dialect's own topic becomes a message saying so, never an exception.
- `owns`, `may_publish`, `may_subscribe` answer a bool for any topic.
- `login` returns a `Login` or None, or raises `Unauthorized`; `verify` of a
  login returns or raises `Unauthorized`.
Topics are the dialects' own device-to-platform topics (their tables), with
random levels where the table has `+`, and random ones; payloads are the seed
corpus mutated, JSON that hypothesis makes up, and random bytes.
"""

from __future__ import annotations

import contextlib
import json

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.budget import FUZZ
from tests.fuzz.mutate import dialect_payloads, mutate, onenet_tokens
from thingshub.core.errors import Unauthorized
from thingshub.core.messages import DeviceRef
from thingshub.core.model import Device
from thingshub.dialects.onenet import topics as onenet_topics
from thingshub.dialects.onenet.token import make_token, parse_token, verify_device_token
from thingshub.dialects.port import Login
from thingshub.dialects.registry import default_registry
from thingshub.dialects.thing import ANSWERS, REQUESTS, subdev
from thingshub.dialects.thingspanel import topics as tp_topics

REGISTRY = default_registry()
REF = DeviceRef("p1", "d1", "dn1")
DEVICE = Device("p1", "d1", "dn1", "a2V5a2V5a2V5a2V5", "u1", "", 0, access_token="tok")
SEEDS = dialect_payloads()
#: The corpus's tokens, and one that is valid for DEVICE until 2100 (mutations of it
#: reach the signature check).
TOKENS = [*onenet_tokens(), make_token(DEVICE.key, "p1", "d1", 4_102_444_800)]

_OWN = onenet_topics.prefix(REF.product_id, REF.name)
PATTERNS = (
    [_OWN + p for p in onenet_topics.PUBLISH_PATTERNS]
    + [_OWN + "thing/" + p for p in (*REQUESTS, *ANSWERS)]
    + [_OWN + "thing/" + p for p in (*subdev.REQUESTS, *subdev.NOTES, *subdev.ANSWERS)]
    + [_OWN + "thing/service/+/invoke_reply"]
    + list(tp_topics.PUBLISH_PATTERNS)
)

level = st.text(st.characters(codec="utf-8", exclude_characters="/+#\x00"), max_size=12)
topics = st.one_of(
    st.builds(lambda p, lv: p.replace("+", lv), st.sampled_from(PATTERNS), level),
    st.text(max_size=40),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.sampled_from(SEEDS))
    if kind == 1:
        rng = draw(st.randoms(use_true_random=False))
        return mutate(draw(st.sampled_from(SEEDS)), rng, SEEDS)
    if kind == 2:
        return json.dumps(draw(json_values)).encode()
    return draw(st.binary(max_size=256))


@FUZZ
@given(topic=topics, payload=payloads(), now_ms=st.integers(0, 2**53))
def test_decode(topic: str, payload: bytes, now_ms: int) -> None:
    decoded = REGISTRY.decode(REF, topic, payload, now_ms)
    assert decoded is None or decoded[1] is not None
    for dialect in REGISTRY:
        assert isinstance(dialect.owns(topic), bool)
        assert isinstance(dialect.may_publish(REF, topic), bool)
        assert isinstance(dialect.may_subscribe(REF, topic), bool)


def _token(draw: st.DrawFn) -> bytes:
    rng = draw(st.randoms(use_true_random=False))
    raw = [t.encode() for t in TOKENS]
    return mutate(draw(st.sampled_from(raw)), rng, raw)


@FUZZ
@given(
    client_id=st.text(max_size=30),
    username=st.none() | st.text(max_size=30) | st.sampled_from(["p1", "d1", "u1", "tok"]),
    password=st.none() | st.binary(max_size=64) | st.composite(_token)(),
    now_s=st.integers(0, 2**40),
)
def test_login(client_id: str, username: str | None, password: bytes | None, now_s: int) -> None:
    try:
        login = REGISTRY.login(client_id, username, password)
    except Unauthorized:
        return
    if login is None:
        return
    assert isinstance(login, Login)
    with contextlib.suppress(Unauthorized):
        REGISTRY.get(login.dialect).verify(login, DEVICE, now_s, lambda d, p: p == "pw")


@FUZZ
@given(
    text=st.one_of(st.text(max_size=200), st.composite(_token)().map(lambda b: b.decode("latin-1")))
)
def test_onenet_token(text: str) -> None:
    with contextlib.suppress(Unauthorized):
        verify_device_token(parse_token(text), DEVICE, 1_700_000_000)
