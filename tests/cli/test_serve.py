"""`thingshub serve` and the client subcommands, as an operator runs them: real processes.

These follow the README's quick start: start the server, create a product and
a device with the CLI, connect the device with mosquitto_pub (both logins),
and see it online through the API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

READY = re.compile(r"ThingsHub ready: MQTT on [\d.]+:(\d+), HTTP on http://[\d.]+:(\d+)")


class Server:
    def __init__(self, proc: subprocess.Popen[str], data_dir: Path, lines: list[str]) -> None:
        self.proc = proc
        self.data_dir = data_dir
        self.lines = lines
        ports = json.loads((data_dir / "ports.json").read_text())
        self.mqtt_port = int(ports["mqtt"])
        self.http_port = int(ports["http"])
        self.api_key = (data_dir / "api-key").read_text().strip()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "THINGSHUB_DATA_DIR": str(self.data_dir), "COLUMNS": "200"}
        result = subprocess.run(
            [sys.executable, "-m", "thingshub", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check:
            assert result.returncode == 0, result.stderr + result.stdout
        return result

    def api(self) -> httpx.Client:
        """A client of the API; the caller closes it (use it in a `with`)."""
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.http_port}",
            headers={"Authorization": f"Bearer {self.api_key}"},
        )


def start_server(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, expect_ready: bool = True
) -> tuple[subprocess.Popen[str], list[str]]:
    cmd = [
        sys.executable,
        "-m",
        "thingshub",
        "serve",
        "--data-dir",
        str(data_dir),
        "--mqtt-port",
        "0",
        "--http-port",
        "0",
        *extra,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if expect_ready and READY.search(line):
            return proc, lines
    if expect_ready:
        proc.kill()
        pytest.fail("serve did not become ready:\n" + "\n".join(lines))
    proc.wait(10)
    return proc, lines


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    proc, lines = start_server(tmp_path / "data")
    srv = Server(proc, tmp_path / "data", lines)
    yield srv
    if proc.poll() is None:
        code, out = stop(proc)
        assert code == 0, out


def test_first_start_prints_the_key_once_and_keeps_it_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, lines = start_server(data)
    key = (data / "api-key").read_text().strip()
    assert stat.S_IMODE((data / "api-key").stat().st_mode) == 0o600
    assert any(key in line for line in lines)
    code, out = stop(proc)
    assert code == 0 and "ThingsHub stopped" in out
    proc, lines = start_server(data)
    assert not any(key in line for line in lines)  # shown once only
    assert (data / "api-key").read_text().strip() == key
    assert stop(proc, signal.SIGINT)[0] == 0


def test_the_data_dir_and_every_file_in_it_are_private(tmp_path: Path) -> None:
    """Device keys, the pepper and the secrets live in the database: another local
    user must not read it. A data dir an older version left open is tightened."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "api-key").write_text("an-older-key\n")
    (data / "api-key").chmod(0o644)
    proc, _ = start_server(data)
    try:
        srv = Server(proc, data, [])
        assert srv.api_key == "an-older-key"
        with srv.api() as api:
            assert api.post("/api/v1/products", json={"id": "p", "name": "P"}).status_code == 201
            device = api.post("/api/v1/products/p/devices", json={"name": "d"})
            assert device.status_code == 201
            upload = api.post(
                "/api/v1/products/p/firmware",
                data={"version": "1.0", "module": "m"},
                files={"file": ("fw.bin", b"\x00" * 4096)},
            )
            assert upload.status_code == 201, upload.text
        seen = {
            p.relative_to(data).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in data.rglob("*")
        }
        seen["."] = stat.S_IMODE(data.stat().st_mode)
        assert {"thingshub.db", "thingshub.db-wal", "api-key", "ports.json"} <= set(seen)
        assert any(name.startswith("firmware/") and name != "firmware" for name in seen)
        loose = {
            name: oct(mode)
            for name, mode in seen.items()
            if mode != (0o700 if (data / name).is_dir() else 0o600)
        }
        assert not loose, f"readable by others: {loose}"
    finally:
        assert stop(proc)[0] == 0


def test_ports_json_and_health(server: Server) -> None:
    r = httpx.get(f"http://127.0.0.1:{server.http_port}/healthz")
    assert r.json() == {"status": "ok"}
    with socket.create_connection(("127.0.0.1", server.mqtt_port), timeout=2):
        pass


def test_version_and_help() -> None:
    from thingshub import __version__

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "thingshub", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    version = run("--version")
    assert (version.returncode, version.stdout) == (0, f"{__version__}\n")
    for args in ((), ("--help",)):
        result = run(*args)
        assert "serve" in result.stdout and "broker" in result.stdout, args


def test_version_imports_no_command() -> None:
    """`--version` answers from the root callback: importing every command (the
    platform, the console) would take it from a fifth of a second to half of one."""
    probe = (
        "import sys; from thingshub.cli import main; sys.argv = ['thingshub', '--version']\n"
        "try:\n    main()\nexcept SystemExit as end:\n    code = end.code\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('thingshub.cli.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout + result.stderr


def test_a_taken_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for option in ("--mqtt-port", "--http-port"):
            cmd = [
                sys.executable,
                "-m",
                "thingshub",
                "serve",
                "--data-dir",
                str(tmp_path / "d"),
                "--mqtt-port",
                "0",
                "--http-port",
                "0",
                option,
                str(port),
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            assert result.returncode == 1
            assert "Traceback" not in result.stderr + result.stdout
            errors = [line for line in result.stderr.splitlines() if "error" in line]
            assert len(errors) == 1 and str(port) in errors[0], result.stderr


def test_an_unwritable_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "thingshub", "serve", "--data-dir", str(blocker / "data")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "data dir" in result.stderr and "not writable" in result.stderr


def test_settings_from_env_and_toml(tmp_path: Path) -> None:
    config = tmp_path / "thingshub.toml"
    config.write_text('api_key = "from-toml"\nlog_level = "warning"\n')
    proc, _ = start_server(tmp_path / "a", "--config", str(config))
    ports = json.loads((tmp_path / "a" / "ports.json").read_text())
    ok = httpx.get(
        f"http://127.0.0.1:{ports['http']}/api/v1/products",
        headers={"Authorization": "Bearer from-toml"},
    )
    assert ok.status_code == 200
    assert stop(proc)[0] == 0
    # The environment beats the file.
    proc, _ = start_server(
        tmp_path / "b", "--config", str(config), env={"THINGSHUB_API_KEY": "from-env"}
    )
    ports = json.loads((tmp_path / "b" / "ports.json").read_text())
    url = f"http://127.0.0.1:{ports['http']}/api/v1/products"
    assert httpx.get(url, headers={"Authorization": "Bearer from-env"}).status_code == 200
    assert httpx.get(url, headers={"Authorization": "Bearer from-toml"}).status_code == 401
    assert stop(proc)[0] == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("mqtt_port = 'many'\n")
    result = subprocess.run(
        [sys.executable, "-m", "thingshub", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "mqtt_port" in result.stderr


def test_cli_manages_products_and_devices(server: Server) -> None:
    out = server.cli("product", "create", "Greenhouse", "--id", "gh").stdout
    assert "gh" in out and "Greenhouse" in out
    assert "gh" in server.cli("product", "list").stdout
    off = ["product", "create", "Meters", "--id", "m", "--no-gateway-auto-register", "--json"]
    assert json.loads(server.cli(*off).stdout)["gateway_auto_register"] is False
    changed = server.cli("product", "set", "m", "--name", "Meter room", "--gateway-auto-register")
    assert "Meter room" in changed.stdout and "True" in changed.stdout
    assert json.loads(server.cli("product", "show", "m", "--json").stdout)["name"] == "Meter room"
    made = server.cli("product", "create", "Reg", "--id", "r", "--dynamic-registration", "--json")
    first_key = json.loads(made.stdout)["access_key"]
    assert json.loads(made.stdout)["dynamic_registration"] is True
    assert "access_key" in server.cli("product", "create", "T", "--id", "t").stdout  # shown once
    closed = server.cli("product", "set", "r", "--no-dynamic-registration", "--json").stdout
    assert json.loads(closed)["dynamic_registration"] is False
    rotated = json.loads(server.cli("product", "rotate-key", "r", "--json").stdout)["access_key"]
    assert len(rotated) == 44 and rotated != first_key
    assert "access_key" not in server.cli("product", "show", "r", "--json").stdout
    empty = server.cli("product", "set", "m", check=False)
    assert empty.returncode != 0 and "nothing to change" in empty.stderr
    assert "deleted" in server.cli("product", "delete", "m").stdout
    created = json.loads(
        server.cli("device", "create", "gh", "sensor-1", "--tag", "row=3", "--json").stdout
    )
    assert created["name"] == "sensor-1" and created["tags"] == {"row": "3"}
    shown = server.cli("device", "show", "gh", "sensor-1").stdout
    assert "sensor-1" in shown and "offline" in shown
    listed = json.loads(server.cli("device", "list", "gh", "--json").stdout)
    assert [d["name"] for d in listed] == ["sensor-1"]
    details = json.loads(server.cli("device", "connect", "gh", "sensor-1", "--json").stdout)
    assert details["port"] == server.mqtt_port and details["client_id"] == "sensor-1"
    assert details["onenet_username"] == "gh"
    assert details["onenet_password"].startswith("version=2018-10-31&res=products%2Fgh%2F")
    err = server.cli("device", "show", "gh", "nope", check=False)
    assert err.returncode == 1 and "does not exist" in err.stderr
    assert "deleted" in server.cli("device", "delete", "gh", "sensor-1").stdout
    assert "deleted" in server.cli("product", "delete", "gh").stdout


def test_quick_start_with_mosquitto_pub(server: Server) -> None:
    """The README's device examples, verbatim in spirit: both logins work."""
    server.cli("product", "create", "Demo", "--id", "demo")
    created = json.loads(server.cli("device", "create", "demo", "lamp", "--json").stdout)
    details = json.loads(server.cli("device", "connect", "demo", "lamp", "--json").stdout)
    base = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(server.mqtt_port), "-q", "1"]
    token_login = subprocess.run(
        [
            *base,
            "-i",
            "lamp",
            "-u",
            "demo",
            "-P",
            details["onenet_password"],
            "-t",
            "$sys/demo/lamp/image/get",
            "-m",
            "{}",
        ],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert token_login.returncode == 0, token_login.stderr
    password_login = subprocess.run(
        [
            *base,
            "-i",
            "lamp-tp",
            "-u",
            created["username"],
            "-P",
            created["password"],
            "-t",
            "devices/telemetry",
            "-m",
            '{"temperature": 21.5}',
        ],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert password_login.returncode == 0, password_login.stderr
    refused = subprocess.run(
        [
            *base,
            "-i",
            "lamp",
            "-u",
            created["username"],
            "-P",
            "wrong",
            "-t",
            "devices/telemetry",
            "-m",
            "{}",
        ],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert refused.returncode != 0
    # Online while a client holds the connection; the API shows it.
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(server.mqtt_port),
            "-i",
            "lamp-sub",
            "-u",
            created["username"],
            "-P",
            created["password"],
            "-t",
            "devices/command/lamp/+",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with server.api() as api:
            state = wait_online(api)
        assert state == "online"
    finally:
        sub.terminate()
        sub.wait(10)


def wait_online(api: httpx.Client) -> str | None:
    """The lamp's connection state, once online or after 10 s."""
    deadline = time.monotonic() + 10
    state = None
    while time.monotonic() < deadline:
        state = api.get("/api/v1/products/demo/devices/lamp").json()["connectionState"]
        if state == "online":
            break
        time.sleep(0.1)
    return state


def _open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


def test_serve_raises_its_open_file_limit_to_the_hard_one(tmp_path: Path) -> None:
    """Started under a soft limit of 256 (what many shells and units give, or
    less), serve raises it to the hard limit before it listens: otherwise the
    256th device would be refused on a machine that allows thousands."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > 256, "this machine's hard limit leaves nothing to raise"
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        proc, _ = start_server(tmp_path / "data")  # inherits the soft 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert _open_file_limits(proc.pid) == (hard, hard)
    finally:
        assert stop(proc)[0] == 0


def test_a_limit_that_cannot_be_raised_is_kept_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A system that refuses the raise (a sandbox, say) leaves the limit as it
    was and says so once: starting goes on."""
    import resource

    from thingshub.startup import raise_open_file_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    def refuse(_which: int, _limits: tuple[int, int]) -> None:
        raise OSError(1, "Operation not permitted")

    try:
        with monkeypatch.context() as m:
            m.setattr(resource, "setrlimit", refuse)
            assert raise_open_file_limit() == 256
        assert "cannot raise the open-file limit from 256" in caplog.text
        assert raise_open_file_limit() == hard  # and where the system allows it, raised
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
