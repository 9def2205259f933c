"""The coverage rules of the project's test command, checked after a whole run.

Rules:
- The whole package `thingshub` is covered (statements and branches) at
  least as much as the floor, `fail_under` of [tool.coverage.report] in
  pyproject.toml.
- Every package named in FULL is covered completely: 100% of its statements
  and branches. A line that no test can reach in practice says so with a
  `# unreachable in practice` comment (excluded in pyproject.toml); a dead
  branch is removed instead.
- Reads the data the test run left in `.coverage`; prints one line per
  package, the missing lines of a package that breaks a rule, and exits 1
  when a rule is broken.
- Code run in subprocesses (`thingshub serve` and the CLI, started by
  tests/cli and tests/console) is measured too (`patch = ["subprocess"]`).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import coverage
from coverage.exceptions import NoDataError

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "thingshub"

#: Packages (paths under src/thingshub) that must be covered completely.
FULL = ("core", "dialects", "mqtt/codec", "mqtt/protocol")


def include(part: str) -> list[str]:
    """The coverage `include` patterns of a package of src/thingshub ("" for the modules
    at its top, which a `*` pattern cannot name without taking the packages too)."""
    if part:
        return [f"{SOURCE / part}/*"]
    return [str(path) for path in sorted(SOURCE.glob("*.py"))]


def percent(cov: coverage.Coverage, patterns: list[str], show: bool = False) -> float | None:
    """Covered statements and branches of the files matching `patterns`, in percent
    (None: no such file was measured); with `show`, the missing lines are printed."""
    out = sys.stdout if show else io.StringIO()
    try:
        return cov.report(
            include=patterns, file=out, show_missing=show, skip_covered=show, precision=1
        )
    except NoDataError:
        return None


def main() -> int:
    cov = coverage.Coverage(
        data_file=str(ROOT / ".coverage"), config_file=str(ROOT / "pyproject.toml")
    )
    cov.load()
    floor = float(cov.get_option("report:fail_under") or 0)
    broken: list[str] = []

    total = percent(cov, [f"{SOURCE}/*"])
    if total is None:
        print("coverage: no data; run the whole test suite first (./scripts/test)")
        return 1
    packages = sorted(p.name for p in SOURCE.iterdir() if (p / "__init__.py").is_file())
    parts = []
    for name in packages:
        pc = percent(cov, include(name))
        if pc is not None:
            parts.append(f"{name} {pc:.1f}")
    top = percent(cov, include(""))
    if top is not None:
        parts.append(f"top-level modules {top:.1f}")
    print("coverage of statements and branches, in percent:")
    print(f"  thingshub {total:.1f} (floor {floor:g})")
    print("  " + ", ".join(parts))
    if round(total, 1) < floor:
        broken.append(f"thingshub is {total:.1f}% covered, below the floor of {floor:g}%")

    for part in FULL:
        name = "thingshub." + part.replace("/", ".")
        pc = percent(cov, include(part))
        if pc is None:
            broken.append(f"{name} was not measured")
        elif pc < 100.0:
            print(f"\n{name} must be covered completely; missing:")
            percent(cov, include(part), show=True)
            broken.append(f"{name} is {pc:.2f}% covered, not 100%")
    for problem in broken:
        print(f"coverage rule broken: {problem}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
