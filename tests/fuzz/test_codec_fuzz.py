"""Fuzzing the MQTT codec with mutated valid streams.

The reader's documented outcomes (mqtt/codec/errors.py): on any input it
returns packets, returns None (more bytes needed), or raises a `CodecError`;
nothing else. And every packet it returns is one the writer can write again
and the reader read back equal: the server never holds a packet it could not
forward or answer.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.budget import FUZZ
from tests.fuzz.mutate import chunks, mqtt_streams, mutate
from thingshub.mqtt.codec import CodecError, Connect, Reader, encode
from thingshub.mqtt.codec.parser import decode_packet

SEEDS = mqtt_streams()


def read_all(data: bytes, rng: random.Random, version: int | None) -> None:
    reader = Reader(version, max_packet_size=rng.choice((64, 4096, 1 << 20)))
    try:
        for piece in chunks(data, rng):
            reader.feed(piece)
            while (packet := reader.next_packet()) is not None:
                at = packet.protocol_level if isinstance(packet, Connect) else reader.version
                again = encode(packet, at or 4)
                first, body = again[0], again[1 + _length_bytes(again) :]
                assert decode_packet(first, body, at) == packet
    except CodecError:
        return  # documented: the caller closes the connection


def _length_bytes(frame: bytes) -> int:
    n = 1
    while frame[n] & 0x80:
        n += 1
    return n


@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    rng=st.randoms(use_true_random=False),
    version=st.sampled_from([None, 3, 4, 5]),
)
def test_mutated_streams(seed: bytes, rng: random.Random, version: int | None) -> None:
    read_all(mutate(seed, rng, SEEDS, rounds=4), rng, version)


@FUZZ
@given(data=st.binary(max_size=512), rng=st.randoms(use_true_random=False))
def test_random_bytes(data: bytes, rng: random.Random) -> None:
    read_all(data, rng, None)
