"""Instructions per call of the thing-model post's pieces, one at a time, under callgrind.

    PYTHONPATH=SRC valgrind --tool=callgrind --instr-atstart=no \\
        --callgrind-out-file=/tmp/cg/p .venv/bin/python bench/thing_pieces.py --cg /tmp/cg/p

Why: `ingest_harness.py --shape thing` counts a whole message, SQLite and the
writer's batches included, and two runs of one tree differ by up to ~15k a
message; a cut of 2-5k in one piece cannot be seen there. Each piece here runs
3,000 times on the harness's message (k = 12345 of device 1: 10 typed values, a
time each) with callgrind counting only that loop, so its count is the piece's
own, to a few instructions. Each piece's dump is named after it (`callgrind_control
-d NAME PID`): an empty name would be taken as a pattern matching every callgrind
process on the machine, and dump theirs too. `nothing` is the loop's own cost (a lambda call),
included in every other line. `SRC` may be an older tree: a piece it does not
have is skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from login_harness import Counter
from platform_thing import BASE_MS, KEYS, thing_model, values
from thingshub.core import jsontext, thingchecks
from thingshub.core.messages import DeviceRef
from thingshub.core.thingmodel import parse_model
from thingshub.dialects.thing import Thing, onejson, posts

P = argparse.ArgumentParser()
P.add_argument("--cg")
P.add_argument("--calls", type=int, default=3000)
ARGS = P.parse_args()

K = 12345
_KEYS = [k.encode() for k in KEYS]
AT = b"%d" % (BASE_MS + K)
PARAMS = b",".join(
    b'"%s":{"value":%s,"time":%s}' % (key, v, AT)
    for key, v in zip(_KEYS, values(K, 1), strict=True)
)
PAYLOAD = b'{"id":"%d","version":"1.0","params":{%s}}' % (K + 1, PARAMS)
TOPIC = "$sys/bench/dev000001/thing/property/post"
REF = DeviceRef("bench", "dev000001", "n1")
COUNTER = Counter(ARGS.cg)


def count(name: str, piece: Callable[[], object]) -> None:
    for _ in range(200):  # warm: the interpreter's specialisations settle
        piece()
    COUNTER.start()
    for _ in range(ARGS.calls):
        piece()
    COUNTER.stop(name, ARGS.calls)  # a name: an empty one would dump every callgrind run


def main() -> None:
    thing = Thing()
    envelope = onejson.parse_request(PAYLOAD)
    model = parse_model(thing_model())
    checks = thingchecks.property_checks(model)
    post = thing.decode(REF, TOPIC, PAYLOAD, 1)
    raw = {v.identifier: v.value for v in post.data[0].properties}  # type: ignore[union-attr]
    count("nothing", lambda: None)
    count("loads", lambda: jsontext.loads(PAYLOAD))
    count("parse_request", lambda: onejson.parse_request(PAYLOAD))
    count("properties", lambda: posts.properties(envelope.params, envelope.id))
    count("request_id_of", lambda: onejson.request_id_of("12346"))
    count("may_publish", lambda: thing.may_publish(REF, TOPIC))
    count("decode", lambda: thing.decode(REF, TOPIC, PAYLOAD, 1))
    count("checks_a_call_each", lambda: {n: checks[n](v, n) for n, v in raw.items()})
    values_check = getattr(thingchecks, "values_check", None)
    if values_check is not None:
        at_once = values_check(model, checks)
        count("values_check", lambda: at_once(raw))


main()
