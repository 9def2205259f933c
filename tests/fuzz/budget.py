"""How much the fuzzers try: a short run in the default suite, more on demand.

`THINGSHUB_FUZZ_EXAMPLES` sets the examples of each in-process fuzz target
(hypothesis; default 300) and `THINGSHUB_FUZZ_CONNECTIONS` the connections of
the socket fuzzer (default 300); `THINGSHUB_FUZZ_SEED` its seed.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("THINGSHUB_FUZZ_EXAMPLES", "300"))
CONNECTIONS = int(os.environ.get("THINGSHUB_FUZZ_CONNECTIONS", "300"))
SEED = int(os.environ.get("THINGSHUB_FUZZ_SEED", "19"))

settings.register_profile(
    "fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("fuzz")
