"""The frames of one NATS message between nodes (bus/frames.py): a flush's
events and broadcasts in order, cut to the size NATS takes, and a damaged
message read up to its damage."""

from __future__ import annotations

import pytest

from thingshub.bus import frames
from thingshub.bus.frames import BROADCAST, EVENT


def test_frames_come_back_in_order() -> None:
    sent = [
        (BROADCAST, "login", b"p1/d1\n1\nn1\n1"),
        (EVENT, "presence", b'{"kind":"presence"}'),
        (BROADCAST, "cache.device", b""),
        (BROADCAST, "t\u00e9", bytes(range(256))),
    ]
    (message,) = frames.pack(sent, 1 << 20)
    assert list(frames.unpack(message)) == sent


def test_messages_are_cut_at_the_limit_never_inside_a_frame() -> None:
    sent = [(BROADCAST, "login", bytes([i]) * 40) for i in range(10)]
    one = len(frames.pack(sent[:1], 1 << 20)[0])  # 6 + 5 + 40 bytes
    messages = frames.pack(sent, 3 * one)
    assert [len(m) for m in messages] == [3 * one, 3 * one, 3 * one, one]
    assert [f for m in messages for f in frames.unpack(m)] == sent
    # A frame larger than the limit travels alone (NATS refuses it, as before).
    big = [(BROADCAST, "a", b"x"), (EVENT, "b", b"y" * 100), (BROADCAST, "c", b"z")]
    assert [len(list(frames.unpack(m))) for m in frames.pack(big, 50)] == [1, 1, 1]
    assert frames.pack([], 50) == []


def test_a_damaged_message_is_read_up_to_its_damage() -> None:
    good = frames.pack([(BROADCAST, "login", b"abc"), (EVENT, "presence", b"{}")], 999)[0]
    for damaged, error in [
        (good[:-1], "cut short"),
        (good + b"\x62\x00", "cut short"),
        (good + b"\x00\x00\x00\x00\x00\x00", "unknown type"),
        (good + b"\x62\x01\x00\x00\x00\x00\xff", "not UTF-8"),
    ]:
        read = []
        with pytest.raises(ValueError, match=error):
            for frame in frames.unpack(damaged):
                read.append(frame)
        whole = 1 if damaged == good[:-1] else 2
        assert read == list(frames.unpack(good))[:whole]
    with pytest.raises(ValueError, match="at most 255 bytes"):
        frames.pack([(BROADCAST, "x" * 256, b"")], 999)
