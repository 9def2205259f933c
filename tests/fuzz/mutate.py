"""The seed corpus (tests/fuzz/corpus/) and the mutations applied to it.

The same mutations serve the in-process fuzzers (driven by hypothesis, which
shrinks a failure to a small example) and the socket fuzzer (driven by a
seeded `random.Random`, so a failing run is replayed from its seed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


def mqtt_streams() -> list[bytes]:
    """Valid client byte streams (CONNECT first) of MQTT 3.1, 3.1.1 and 5.0."""
    text = (CORPUS / "mqtt_streams.txt").read_text()
    return [bytes.fromhex(line) for line in text.split()]


def dialect_payloads() -> list[bytes]:
    """Payloads devices send (JSON of the three dialects), as the dialect tests show them."""
    lines = (CORPUS / "dialect_payloads.jsonl").read_text().splitlines()
    return [json.loads(line).encode("utf-8", "surrogateescape") for line in lines if line]


def onenet_tokens() -> list[str]:
    return (CORPUS / "onenet_tokens.txt").read_text().splitlines()


def mutate(data: bytes, rng: random.Random, others: list[bytes], rounds: int = 3) -> bytes:
    """`data` after up to `rounds` random edits: bit flips, byte overwrites (often a
    length: 0x00, 0x7F, 0x80, 0xFF), truncation, deletion, duplication, insertion
    of random bytes, and splicing with another seed."""
    out = bytearray(data)
    for _ in range(rng.randint(1, rounds)):
        op = rng.randrange(8)
        n = len(out)
        at = rng.randrange(n + 1)
        if op == 0 and n:
            out[at % n] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            out[at % n] = rng.choice((0x00, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            del out[at:]
        elif op == 3:
            del out[at : at + rng.randint(1, 8)]
        elif op == 4:
            out[at:at] = out[at : at + rng.randint(1, 16)]
        elif op == 5:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 6 and others:
            other = rng.choice(others)
            cut = rng.randrange(len(other) + 1)
            out[at:] = other[cut:]
        else:
            out[at:at] = rng.choice((b"\xff\xff\xff\xff\x7f", b"\x00\x00", b"\xc0\x00"))
    return bytes(out)


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    """`data` cut at random places, as a socket may deliver it."""
    out = []
    pos = 0
    while pos < len(data):
        step = rng.choice((1, 2, 3, 7, 64, 1 << 16))
        out.append(data[pos : pos + step])
        pos += step
    return out
