"""Start and stop the MQTT servers under test, and read their CPU time and memory.

Why subprocesses started this way:
- CPU time and RSS are read from /proc/PID, so the PID we hold must be the server's own.
  Commands are therefore run without a shell, and the prefixes we add (`taskset`,
  `setpriv`) exec the server in place, keeping the PID.
- `taskset -c CPUS` pins the server to its own core, so the comparison is per core and
  the load generator on the other core never steals its CPU.
- `setpriv --pdeathsig TERM` makes the kernel stop the server if the benchmark dies
  without cleaning up, so a crashed or killed run never leaves brokers behind.
- Every server gets a fresh temporary directory for its config and log; the log tail is
  shown when a server fails to start, dies or refuses to stop.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# The queue limit is raised as for mosquitto (see `start_mosquitto`).
DEFAULT_THINGSHUB_CMD = (
    f"{shlex.quote(sys.executable)} -m thingshub broker --host {HOST} --port 0 --max-queued 1000000"
)
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# A ready line names the port as "127.0.0.1:PORT", "localhost:PORT", "[::1]:PORT" or
# "port PORT" / "port=PORT" / "port: PORT"; whichever comes first on the line wins.
_PORT_RE = re.compile(
    r"(?:(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|\])\s*:\s*|\bport\b\W{0,3})(\d{2,5})\b",
    re.IGNORECASE,
)


class ServerError(Exception):
    """A server could not be started, died, or did not stop."""


@dataclass
class Server:
    """One running server under test, known by its PID, host and port."""

    name: str
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    command: list[str]
    workdir: Path
    log_path: Path
    _log: IO[bytes] | None = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        """VmRSS of the server process in kB (0 once it has exited)."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server, all threads, in seconds."""
        try:
            text = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        # Fields after the command name, which is in parentheses and may hold spaces.
        rest = text[text.rindex(")") + 2 :].split()
        return (int(rest[11]) + int(rest[12])) / _CLK_TCK

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code (negative: signal).

        A clean server exits 0 on SIGTERM; anything else is reported by the caller.
        """
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.proc.returncode


def free_port(host: str = HOST) -> int:
    """A port the kernel considers free now (from its ephemeral range, never 1883)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _prefix(cpus: str | None) -> list[str]:
    prefix: list[str] = []
    if shutil.which("setpriv"):
        prefix += ["setpriv", "--pdeathsig", "TERM"]
    if cpus is not None:
        if not shutil.which("taskset"):
            raise ServerError("pinning asked for, but taskset is not installed")
        prefix += ["taskset", "-c", cpus]
    return prefix


def _can_connect(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _spawn(
    name: str,
    argv: list[str],
    workdir: Path,
    cpus: str | None,
    env: dict[str, str] | None = None,
) -> Server:
    log_path = workdir / "server.log"
    log = log_path.open("wb")
    command = _prefix(cpus) + argv
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
        )
    except OSError as exc:
        log.close()
        raise ServerError(f"{name}: cannot run {command[0]}: {exc}") from exc
    return Server(name, HOST, 0, proc, command, workdir, log_path, log)


def _wait_ready(server: Server, port: int | None, timeout: float) -> None:
    """Wait for the server to accept TCP connections; learn its port from its log if needed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(
                f"{server.name} exited with {server.proc.returncode} while starting:\n"
                f"{server.log_tail()}"
            )
        if port is None:
            for line in server.log_path.read_text(errors="replace").splitlines():
                m = _PORT_RE.search(line)
                if m and 0 < int(m.group(1)) < 65536:
                    port = int(m.group(1))
                    break
        if port is not None and _can_connect(server.host, port):
            server.port = port
            return
        time.sleep(0.05)
    what = "accept connections" if port else "print a line with its port"
    raise ServerError(f"{server.name} did not {what} within {timeout:.0f} s:\n{server.log_tail()}")


def mosquitto_config(port: int, extra: Sequence[str] = ()) -> str:
    """The config file text; `start_mosquitto` says why each line is there."""
    lines = [
        f"listener {port} {HOST}",
        "allow_anonymous true",
        "persistence false",
        "max_connections -1",
        "max_inflight_messages 100",
        "max_queued_messages 0",
        "log_dest stderr",
        "log_type error",
        "connection_messages false",
        *extra,
    ]
    return "".join(f"{line}\n" for line in lines)


def start_mosquitto(cpus: str | None, binary: str = MOSQUITTO, extra: Sequence[str] = ()) -> Server:
    """Mosquitto on a free loopback port with a throwaway config.

    Config choices, and why:
    - `persistence false`, `allow_anonymous true`: an open in-memory broker, like ours.
    - `max_connections -1`: no cap, for the 10,000-connection test.
    - The same QoS 1 limits as the ThingsHub command: 100 messages in flight per client
      (ThingsHub's default; mosquitto's is 20) and no practical queue cap (both default
      to 1,000, mosquitto's 0 means none, ThingsHub gets `--max-queued 1000000`). A QoS 1
      publisher is acked when the server has the message, not when the subscriber does,
      so 200 publishers outrun one subscriber's in-flight window, and with a 1,000 cap
      both servers drop most of shape B's QoS 1 messages (measured: 40-97% for
      mosquitto): the run would compare drop policies, not throughput.
    - `log_type error`: logging every connection would cost mosquitto in the connect test.
    - `extra`: more config lines (`--mosquitto-option`), which override these.
    """
    for _attempt in range(3):
        workdir = Path(tempfile.mkdtemp(prefix="bench-mosquitto-"))
        port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(mosquitto_config(port, extra))
        server = _spawn("mosquitto", [binary, "-c", str(conf)], workdir, cpus)
        try:
            _wait_ready(server, port, START_TIMEOUT)
            return server
        except ServerError as exc:
            server.stop()
            if "Address already in use" not in str(exc):  # else we lost the port race: retry
                raise
    raise ServerError("mosquitto: no free port after 3 attempts")


def start_command(name: str, command: str, cpus: str | None) -> Server:
    """Any server started by a command line, e.g. `thingshub broker`.

    If the command contains `{port}`, a free port is put there and we wait until it
    accepts connections. Otherwise the server must choose its port (`--port 0`) and
    print it in a line (e.g. "listening on 127.0.0.1:40123"), which we read from its
    output. Either way the command must exec the server itself, not a shell around it,
    or CPU and RSS would be the shell's.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    port = free_port() if "{port}" in command else None
    argv = shlex.split(command.replace("{port}", str(port)))
    server = _spawn(name, argv, workdir, cpus)
    try:
        _wait_ready(server, port, START_TIMEOUT)
    except ServerError:
        server.stop()
        raise
    return server


@dataclass
class PlatformServer(Server):
    """`thingshub serve`: the MQTT server plus its HTTP API, and how to call that API."""

    http_port: int = 0
    api_key: str = ""
    data_dir: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


def platform_command(data_dir: Path, database_url: str | None = None) -> list[str]:
    """The `thingshub serve` command line: free ports, data in `data_dir`, this venv."""
    argv = [sys.executable, "-m", "thingshub", "serve", "--data-dir", str(data_dir)]
    argv += ["--host", HOST, "--mqtt-port", "0", "--http-port", "0"]
    if database_url:
        argv += ["--database-url", database_url]
    return argv


def start_platform(
    cpus: str | None,
    database_url: str | None = None,
    timeout: float = START_TIMEOUT,
    extra: Sequence[str] = (),
    src: Path | None = None,
) -> PlatformServer:
    """The whole platform (`thingshub serve`) in a fresh data dir, on free ports.

    Why ports.json rather than the ready line: the platform writes it once both
    listeners are up (README), with both ports, while the ready line names two
    addresses. The API key is read from `<data-dir>/api-key`, where `serve` saves the
    key it generates. SQLite lives in the data dir, so it goes away with the workdir.
    `src` runs the thingshub package found there (a `src/` dir, e.g. of a commit
    extracted with `git archive`) instead of the installed one: PYTHONPATH comes first.
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench-platform-"))
    data_dir = workdir / "data"
    argv = platform_command(data_dir, database_url) + list(extra)
    env = None
    if src is not None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(src.resolve()), *filter(None, [env.get("PYTHONPATH")])]
        )
    base = _spawn("thingshub", argv, workdir, cpus, env)
    server = PlatformServer(
        base.name, base.host, 0, base.proc, base.command, workdir, base.log_path, base._log,
        data_dir=data_dir,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        ports: dict[str, int] | None = None
        while ports is None:
            if not server.alive():
                raise ServerError(
                    f"thingshub exited with {server.proc.returncode} while starting:\n"
                    f"{server.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ServerError(
                    f"thingshub did not write ports.json within {timeout:.0f} s:\n"
                    f"{server.log_tail()}"
                )
            with contextlib.suppress(OSError, ValueError):
                ports = json.loads((data_dir / "ports.json").read_text())
            if ports is None:
                time.sleep(0.05)
        server.http_port = int(ports["http"])
        server.api_key = (data_dir / "api-key").read_text().strip()
        _wait_ready(server, int(ports["mqtt"]), max(1.0, deadline - time.monotonic()))
    except (ServerError, OSError, KeyError, ValueError) as exc:
        server.stop()
        if isinstance(exc, ServerError):
            raise
        raise ServerError(f"thingshub: unreadable data dir after start: {exc}") from exc
    return server


def mosquitto_password_file(users: Sequence[tuple[str, str]], binary: str | None = None) -> Path:
    """A mosquitto password file for `users` ((name, password) pairs), in a new temp dir.

    Written as plaintext `name:password` lines and hashed in place by one
    `mosquitto_passwd -U` run: one process instead of one per user (10,000 runs of
    `mosquitto_passwd -b` take minutes). The hashes are mosquitto's own (PBKDF2-SHA512),
    so each login costs mosquitto what it costs in production.
    Started as root, mosquitto drops to its own user before it reads the file, so the
    file then belongs to that user and its dir lets it through. The caller removes the
    dir (`path.parent`).
    """
    tool = binary or shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    workdir = Path(tempfile.mkdtemp(prefix="bench-mosquitto-pw-"))
    path = workdir / "passwords"
    path.write_text("".join(f"{name}:{password}\n" for name, password in users))
    path.chmod(0o600)
    try:
        subprocess.run([tool, "-U", str(path)], check=True, capture_output=True, timeout=300)
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                import pwd

                owner = pwd.getpwnam("mosquitto")
                os.chown(path, owner.pw_uid, owner.pw_gid)
                workdir.chmod(0o711)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ServerError(f"mosquitto_passwd -U failed: {exc}") from exc
    return path


def tls_files() -> Path:
    """A private CA and a server certificate for 127.0.0.1 (`thingshub cert create`'s
    code), in a new temp dir the caller removes: `ca.pem`, `server.pem`, `server-key.pem`.

    Started as root, mosquitto reads its certificate files after dropping to its own
    user, so they then belong to that user (as in `mosquitto_password_file`).
    """
    from thingshub.certs import create

    workdir = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    create(workdir, [HOST, "localhost"])
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            import pwd

            owner = pwd.getpwnam("mosquitto")
            for path in workdir.iterdir():
                os.chown(path, owner.pw_uid, owner.pw_gid)
            workdir.chmod(0o711)
    return workdir


def mosquitto_tls_lines(tls_dir: Path) -> list[str]:
    """mosquitto.conf lines that put the listener behind TLS with these files."""
    return [
        f"cafile {tls_dir / 'ca.pem'}",
        f"certfile {tls_dir / 'server.pem'}",
        f"keyfile {tls_dir / 'server-key.pem'}",
    ]


def thingshub_tls_options(tls_dir: Path) -> str:
    """`thingshub broker` options that serve its port over TLS with these files."""
    cert, key = tls_dir / "server.pem", tls_dir / "server-key.pem"
    return f" --tls-cert {shlex.quote(str(cert))} --tls-key {shlex.quote(str(key))}"


def cpu_list(text: str) -> set[int]:
    """CPU numbers of a taskset-style list such as `0`, `1-3` or `0,2`."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def raise_open_files(need: int) -> None:
    """Raise our soft limit of open files to `need` (sockets of the load), or fail early."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(hard, max(need, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < need:
            raise SystemExit(f"need {need} open files, the hard limit is {hard}")


def machine_info() -> dict[str, Any]:
    """Where a run was measured: date, CPU model and count, kernel, Python, uvloop, git."""
    try:
        uv = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uv = "not installed (asyncio)"
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        rev = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip() or "none"  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        rev = "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uv,
        "git": rev,
    }


def mosquitto_version(binary: str = MOSQUITTO) -> str:
    try:
        out = subprocess.run(
            [binary, "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "unknown"
