"""Summarise py-spy raw profiles (`py-spy record -f raw`, or `platform_bench.py --py-spy`).

    python bench/pyspy_summary.py PROFILE.txt [...] [--top 25] [--match thingshub/] [--lines]

Prints, for the functions of the profile, the share of samples in which each is on the
stack (inclusive %) and the share in which it is the innermost frame (self %). These
are the percentages bench/README.md quotes: a sample is 10 ms of the server's busy
time (py-spy leaves idle threads out by default), so inclusive % is the share of the
server's CPU spent in a function and everything it calls.

Why a script: a flame graph shows the shape, but a figure in a README must say which
function takes what share, reproducibly, from the file the benchmark wrote.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def read(paths: list[Path], lines: bool = False) -> list[tuple[list[str], int]]:
    """(frames outermost first, count) for every line of the raw profiles; frames are
    `function (file)`, or `function (file:line)` with `lines`."""
    stacks: list[tuple[list[str], int]] = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                frames = stack.split(";")
                if not lines:
                    frames = [_LINE.sub(")", f) for f in frames]
                stacks.append((frames, int(count)))
    return stacks


def summarise(
    stacks: list[tuple[list[str], int]], match: str
) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, and per function (with `match` in its name) inclusive and self."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, n in stacks:
        total += n
        for f in set(frames):
            if match in f:
                inclusive[f] += n
        if frames and match in frames[-1]:
            own[frames[-1]] += n
    return total, inclusive, own


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("profiles", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25, help="rows of each table (25)")
    p.add_argument("--match", default="", help="only functions whose frame contains this")
    p.add_argument("--lines", action="store_true", help="one row per line, not per function")
    a = p.parse_args(argv)
    total, inclusive, own = summarise(read(a.profiles, a.lines), a.match)
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total:,} samples")
    for title, table in (("inclusive", inclusive), ("self", own)):
        print(f"\n{title} %")
        for f, n in table.most_common(a.top):
            print(f"{100 * n / total:6.1f}  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
