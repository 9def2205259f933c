"""Run the Eclipse Paho MQTT interoperability suite against a broker.

The suite (github.com/eclipse/paho.mqtt.testing, `interoperability/client_test.py`
for 3.1.1 and `client_test5.py` for 5.0) is not part of this repository: check
it out anywhere and pass its path. Each test runs in its own process with a
time limit, because some of them loop forever against a broker that never
disconnects them, and the suite's own option parsing does not reach unittest.

    python scripts/paho_interop.py --suite /tmp/paho.mqtt.testing [--broker thingshub|mosquitto]

Both brokers are started here on free loopback ports, configured as open
brokers that refuse subscriptions to `test/nosubscribe` (the suite's
subscribe-failure test): ThingsHub as `thingshub broker --deny-subscribe
test/nosubscribe`, Mosquitto with an ACL file denying that topic.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TEST_TIMEOUT = 75.0

RUNNER = textwrap.dedent(
    """
    import sys, unittest, logging
    sys.path.insert(0, {interop!r})
    import {module} as m
    m.host, m.port = "127.0.0.1", {port}
    prefix = {prefix!r}
    m.topic_prefix = prefix
    m.topics = [prefix + t for t in ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")]
    m.wildtopics = [prefix + t for t in ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")]
    m.nosubscribe_topics = ("test/nosubscribe",)
    logging.getLogger().setLevel(logging.ERROR)
    result = unittest.TextTestRunner(verbosity=1).run(unittest.TestSuite([m.Test({test!r})]))
    sys.exit(0 if result.wasSuccessful() else 1)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_thingshub() -> tuple[subprocess.Popen[str], int]:
    cmd = [
        sys.executable,
        "-m",
        "thingshub",
        "broker",
        "--port",
        "0",
        "--deny-subscribe",
        "test/nosubscribe",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r":(\d+)\s*$", line)
    if not match:
        proc.kill()
        raise SystemExit(f"thingshub broker did not start: {line!r}")
    return proc, int(match.group(1))


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    workdir.chmod(0o755)  # mosquitto drops root privileges and must still read its files
    workdir.parent.chmod(0o755)
    acl = workdir / "acl"
    acl.write_text("topic deny test/nosubscribe\npattern readwrite #\ntopic readwrite #\n")
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nacl_file {acl}\n"
    )
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def list_tests(path: Path) -> list[str]:
    return re.findall(r"^\s+def (test\w+)\(self\)", path.read_text(), flags=re.M)


def run_suite(
    interop: Path, module: str, port: int, prefix: str, only: list[str]
) -> dict[str, str]:
    results: dict[str, str] = {}
    for test in list_tests(interop / f"{module}.py"):
        if only and not any(word in test for word in only):
            continue
        code = RUNNER.format(
            interop=str(interop), module=module, port=port, prefix=prefix, test=test
        )
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code],
                cwd=interop,
                check=False,
                capture_output=True,
                text=True,
                timeout=TEST_TIMEOUT,
            )
            outcome = "pass" if proc.returncode == 0 else "FAIL"
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
                print(f"--- {module}.{test} failed:\n" + "\n".join(tail), file=sys.stderr)
        except subprocess.TimeoutExpired:
            outcome = "TIMEOUT"
        results[test] = outcome
        print(f"{module}.{test}: {outcome} ({time.monotonic() - started:.1f} s)", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--suite", type=Path, required=True, help="checkout of eclipse/paho.mqtt.testing"
    )
    parser.add_argument("--broker", choices=["thingshub", "mosquitto"], default="thingshub")
    parser.add_argument(
        "-k",
        dest="only",
        action="append",
        default=[],
        help="run only tests whose name contains this (repeatable)",
    )
    args = parser.parse_args()
    interop = args.suite.resolve() / "interoperability"
    if not (interop / "client_test5.py").exists():
        raise SystemExit(f"no interoperability/client_test5.py under {args.suite}")
    with tempfile.TemporaryDirectory() as tmp:
        # One broker per suite, so the two suites (which reuse client ids) run side by side.
        procs = []
        ports = []
        for _ in range(2):
            proc, port = (
                start_thingshub()
                if args.broker == "thingshub"
                else start_mosquitto(Path(tempfile.mkdtemp(dir=tmp)))
            )
            procs.append(proc)
            ports.append(port)
        try:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                v3 = pool.submit(run_suite, interop, "client_test", ports[0], "", args.only)
                v5 = pool.submit(
                    run_suite, interop, "client_test5", ports[1], "client_test5/", args.only
                )
                r3, r5 = v3.result(), v5.result()
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    for name, results in (("MQTT 3.1.1 (client_test.py)", r3), ("MQTT 5.0 (client_test5.py)", r5)):
        passed = sum(1 for r in results.values() if r == "pass")
        failed = [t for t, r in results.items() if r != "pass"]
        print(
            f"{args.broker} {name}: {passed}/{len(results)} passed"
            + (f"; not passed: {', '.join(failed)}" if failed else "")
        )
    ok = all(r == "pass" for r in (*r3.values(), *r5.values()))
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
