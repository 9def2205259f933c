"""`thingshub serve` as a process of its own, as an operator runs it: on uvloop,
with its own file descriptor limit if asked. Its output goes to a file (never
a pipe nobody reads, which would stall it once full)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY = re.compile(r"ThingsHub ready: MQTT on [\d.]+:(\d+), HTTP on http://[\d.]+:(\d+)")
KEY = "test-key"


@dataclass
class Served:
    mqtt_port: int
    http_port: int
    api_key: str
    log: Path
    #: The process's id (a test may kill it: what follows is then a no-op).
    pid: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@contextmanager
def serving(tmp_path: Path, *, config: str = "", fd_limit: int | None = None) -> Iterator[Served]:
    """Start `serve` on free ports (TOML `config` if given), stop it at the end."""
    toml = tmp_path / "thingshub.toml"
    toml.write_text(config)
    limit = f"resource.setrlimit(resource.RLIMIT_NOFILE, ({fd_limit}, {fd_limit}));"
    launch = (
        "import resource, runpy, sys;"
        + (limit if fd_limit else "")
        + "sys.argv[0] = 'thingshub';"
        + "runpy.run_module('thingshub', run_name='__main__')"
    )
    log = tmp_path / "serve.log"
    args = ["--data-dir", str(tmp_path / "data"), "--mqtt-port", "0", "--http-port", "0"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", launch, "serve", *args, "--no-console", "--config", str(toml)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "THINGSHUB_API_KEY": KEY},
        )
    try:
        deadline = time.monotonic() + 30
        while not (ready := READY.search(log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("serve did not start:\n" + log.read_text())
            time.sleep(0.05)
        yield Served(int(ready.group(1)), int(ready.group(2)), KEY, log, proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
