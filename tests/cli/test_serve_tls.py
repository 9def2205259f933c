"""`thingshub serve` with TLS, as an operator runs it (the README's TLS section): the
options, environment and TOML settings, the ready line, a device with mosquitto_pub
verifying `ca.pem`, and one clear sentence (no traceback) for every certificate or
key the server cannot use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cli.test_serve import stop
from thingshub.certs import create
from thingshub.config import Settings, SettingsError, load

READY_TLS = re.compile(
    r"ThingsHub ready: MQTT over TLS on 127\.0\.0\.1:(\d+), HTTP on https://127\.0\.0\.1:(\d+)"
    r" \(API docs at /docs\)$"
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    create(out, ["localhost"])
    return out


def serve_command(data: Path, *args: str) -> list[str]:
    """`thingshub serve` on free ports (MQTT over TLS too), without the console."""
    return [sys.executable, "-m", "thingshub", "serve", "--data-dir", str(data),
            "--http-port", "0", "--mqtts-port", "0", "--no-console", *args]  # fmt: skip


def serve(data: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `serve` expecting it to refuse to start: its exit code and output."""
    r = subprocess.run(
        serve_command(data, "--mqtt-port", "0", *args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert r.stdout == ""
    return r.returncode, r.stderr


def mosquitto_pub(certs: Path, port: object, *args: str) -> subprocess.CompletedProcess[str]:
    """mosquitto_pub to localhost:`port` over TLS, trusting the CA of `certs`."""
    cafile = str(certs / "ca.pem")
    command = ["mosquitto_pub", "--cafile", cafile, "-h", "localhost", "-p", str(port), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def start_tls(
    data: Path, certs: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int, int]:
    """`serve` with TLS only (plain MQTT off), from the environment: the process, and
    its MQTT-over-TLS and HTTPS ports from the ready line."""
    proc = subprocess.Popen(
        serve_command(data, "--mqtt-port", "off", "--log-level", "warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "THINGSHUB_TLS_CERT": str(certs / "server.pem"),
            "THINGSHUB_TLS_KEY": str(certs / "server-key.pem"),
            **(env or {}),
        },
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or not READY_TLS.search(lines[-1]):
        line = proc.stdout.readline()  # the key, then the ready line; "" if it died
        if not line:
            proc.kill()
            pytest.fail("serve did not become ready:\n" + "\n".join(lines))
        lines.append(line.rstrip("\n"))
    ready = READY_TLS.search(lines[-1])
    assert ready is not None
    return proc, int(ready[1]), int(ready[2])


def test_tls_only_with_mosquitto_pub(tmp_path: Path, certs: Path) -> None:
    """The README's TLS section: serve with the files, plain MQTT off, a device
    verifying ca.pem connects by name (localhost) and publishes at QoS 1."""
    data = tmp_path / "data"
    proc, mqtts, http = start_tls(data, certs)
    try:
        ports = json.loads((data / "ports.json").read_text())
        assert ports == {"mqtts": mqtts, "http": http}
        key = (data / "api-key").read_text().strip()
        with httpx.Client(
            base_url=f"https://localhost:{http}",
            headers={"Authorization": f"Bearer {key}"},
            verify=ssl.create_default_context(cafile=certs / "ca.pem"),
        ) as api:
            api.post("/api/v1/products", json={"id": "demo", "name": "Demo"})
            dev = api.post("/api/v1/products/demo/devices", json={"name": "lamp"}).json()
            login = ["-i", "lamp", "-u", dev["username"], "-P", dev["password"]]
            pub = mosquitto_pub(certs, mqtts, "-q", "1", *login, "-t", "devices/telemetry",
                                "-m", '{"on": true}')  # fmt: skip
            assert pub.returncode == 0, pub.stderr
            latest = api.get("/api/v1/products/demo/devices/lamp/telemetry/latest").json()
            assert latest["on"]["value"] is True
        # The client commands find the HTTPS server in the data dir, and trust the CA;
        # a device's connection details name the TLS port, and no plain one.
        env = {
            **os.environ,
            "THINGSHUB_DATA_DIR": str(data),
            "SSL_CERT_FILE": str(certs / "ca.pem"),
        }
        cli = [sys.executable, "-m", "thingshub", "device"]
        shown = subprocess.run(
            [*cli, "connect", "demo", "lamp", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert shown.returncode == 0, shown.stderr
        details = json.loads(shown.stdout)
        assert (details["host"], details["port"], details["tls_port"]) == ("localhost", None, mqtts)
    finally:
        code, out = stop(proc)
    assert code == 0, out


def test_stalled_handshakes_on_uvloop(tmp_path: Path, certs: Path) -> None:
    """What tests/e2e/test_tls.py shows in-process, on the event loop `serve` runs
    (uvloop and its own TLS): a client that opens TCP and says nothing delays no
    device and is dropped after the connect timeout (MQTT) or head timeout (HTTPS)."""
    timeout = 2.0
    proc, mqtts, http = start_tls(
        tmp_path / "data",
        certs,
        {"THINGSHUB_CONNECT_TIMEOUT": str(timeout), "THINGSHUB_HTTP_HEAD_TIMEOUT": str(timeout)},
    )
    try:
        with (
            socket.create_connection(("127.0.0.1", mqtts), timeout=5) as stalled_mqtt,
            socket.create_connection(("127.0.0.1", http), timeout=5) as stalled_http,
        ):
            opened = time.monotonic()
            pub = mosquitto_pub(
                certs, str(mqtts), "-i", "x", "-u", "nobody", "-P", "x", "-t", "t", "-m", "m"
            )
            # Its TLS handshake went through at once: the broker refused the login.
            assert pub.returncode != 0 and "bad user name or password" in pub.stderr, pub.stderr
            for stalled in (stalled_mqtt, stalled_http):  # and both are still pending
                stalled.setblocking(False)
                with pytest.raises(BlockingIOError):
                    stalled.recv(1)
                stalled.setblocking(True)
            for stalled in (stalled_mqtt, stalled_http):
                stalled.settimeout(timeout + 5)
                with contextlib.suppress(ConnectionResetError):
                    assert stalled.recv(1) == b""
                assert timeout * 0.9 <= time.monotonic() - opened < timeout + 5
    finally:
        code, out = stop(proc)
    assert code == 0, out


def _write_bad_files(tmp: Path, certs: Path) -> None:
    """junk.pem, not PEM at all; locked.pem, the server key under a passphrase."""
    (tmp / "junk.pem").write_bytes(b"\x30\x82 this is DER, or anything but PEM")
    key = serialization.load_pem_private_key((certs / "server-key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    locked = serialization.BestAvailableEncryption(b"secret")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, locked)
    (tmp / "locked.pem").write_bytes(pem)


#: (certificate, key, the sentence): "certs/NAME" is cert create's, "tmp/NAME" the test's.
BAD = {
    "mismatched": ("certs/server.pem", "certs/ca-key.pem", "the key {key} does not match it"),
    "missing-cert": (
        "tmp/nope.pem",
        "certs/server-key.pem",
        "cannot read the TLS certificate {cert}: No such file or directory",
    ),
    "missing-key": (
        "certs/server.pem",
        "tmp/nope.pem",
        "cannot read the TLS key {key}: No such file or directory",
    ),
    "not-pem-cert": (
        "tmp/junk.pem",
        "certs/server-key.pem",
        "cannot use the TLS certificate {cert}: it is not a PEM certificate",
    ),
    "not-pem-key": (
        "certs/server.pem",
        "certs/ca.pem",
        "cannot use the TLS key {key}: it is not a PEM private key",
    ),
    "encrypted-key": (
        "certs/server.pem",
        "tmp/locked.pem",
        "cannot use the TLS key {key}: it is encrypted; give the key without a passphrase",
    ),
    "a-directory": (
        "tmp/",
        "certs/server-key.pem",
        "cannot read the TLS certificate {cert}: Is a directory",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_files_it_cannot_use_are_one_sentence_at_start(
    tmp_path: Path, certs: Path, case: str
) -> None:
    """In-process (the startup path `serve` runs), each case; nothing starts."""
    from thingshub.app import Platform
    from thingshub.startup import StartupError

    _write_bad_files(tmp_path, certs)
    where = {"certs": certs, "tmp": tmp_path}
    cert, key = (where[w] / name for w, _, name in (f.partition("/") for f in BAD[case][:2]))
    expected = BAD[case][2]
    settings = Settings(
        data_dir=tmp_path / "data",
        mqtt_port=0,
        http_port=0,
        mqtts_port=0,
        console=False,
        tls_cert=cert,
        tls_key=key,
    )

    async def start() -> str:
        platform = Platform(settings)
        try:
            await platform.start()
        except StartupError as exc:
            return str(exc)
        finally:
            await platform.stop()
        raise AssertionError("it started")

    message = asyncio.run(start())
    assert expected.format(cert=cert, key=key) in message
    assert "\n" not in message
    assert not (tmp_path / "data").exists()  # checked before anything else


def test_serve_refuses_a_key_that_does_not_match(tmp_path: Path, certs: Path) -> None:
    code, err = serve(
        tmp_path / "data",
        "--tls-cert",
        str(certs / "server.pem"),
        "--tls-key",
        str(certs / "ca-key.pem"),
    )
    assert code == 1
    assert err == (
        f"thingshub: error: cannot use the TLS certificate {certs / 'server.pem'}: the key"
        f" {certs / 'ca-key.pem'} does not match it\n"
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--tls-cert", "/x/server.pem"],
            {},
            "settings tls_cert and tls_key go together: tls_key is not set",
        ),
        ([], {"THINGSHUB_TLS_KEY": "/x/k.pem"}, "tls_cert is not set"),
        (["--mqtt-port", "off"], {}, "setting mqtt_port: off needs tls_cert and tls_key"),
        (["--mqtt-port", "of"], {}, "setting mqtt_port: 'of' is not a valid int"),
        (["--mqtts-port", "70000"], {}, "setting mqtts_port: 70000 is not a TCP port"),
    ],
)
def test_settings_that_do_not_fit_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    code, err = serve(tmp_path / "data", *args, env=env)
    assert code == 2
    assert err.startswith("thingshub: error: ") and message in err and err.count("\n") == 1


def test_tls_settings_from_the_environment_and_the_toml_file(tmp_path: Path) -> None:
    toml = tmp_path / "thingshub.toml"
    toml.write_text(
        'tls_cert = "/etc/th/server.pem"\ntls_key = "/etc/th/key.pem"\n'
        'mqtt_port = "off"\nmqtts_port = 9883\n'
    )
    s = load({}, {}, toml)
    assert (s.tls_cert, s.tls_key) == (Path("/etc/th/server.pem"), Path("/etc/th/key.pem"))
    assert s.mqtt_port is None and s.mqtts_port == 9883 and s.tls
    env = {
        "THINGSHUB_TLS_CERT": "/a.pem",
        "THINGSHUB_TLS_KEY": "/b.pem",
        "THINGSHUB_MQTTS_PORT": "0",
        "THINGSHUB_MQTT_PORT": "OFF",
    }
    s = load({"mqtt_port": "1884"}, env, toml)  # the option beats the environment
    assert (s.tls_cert, s.tls_key, s.mqtts_port, s.mqtt_port) == (
        Path("/a.pem"),
        Path("/b.pem"),
        0,
        1884,
    )
    assert load({}, {}).mqtts_port == 8883 and not load({}, {}).tls
    with pytest.raises(SettingsError, match="off needs tls_cert"):
        load({"mqtt_port": "off"}, {})


def test_the_broker_alone_over_tls(tmp_path: Path, certs: Path) -> None:
    """`thingshub broker --tls-cert --tls-key` (what bench/mqtt_broker.py --tls runs):
    its one port speaks TLS; a bad pair is one sentence and exit status 1."""
    files = ["--tls-cert", str(certs / "server.pem"), "--tls-key"]
    base = [sys.executable, "-m", "thingshub", "broker", "--port", "0"]
    bad = subprocess.run(
        [*base, *files, str(certs / "ca-key.pem")], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and bad.stderr.endswith("does not match it\n"), bad.stderr
    proc = subprocess.Popen(
        [*base, *files, str(certs / "server-key.pem")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = re.fullmatch(
            r"ThingsHub MQTT broker ready on 127\.0\.0\.1:(\d+) \(TLS\)\n", proc.stdout.readline()
        )
        assert ready is not None
        pub = mosquitto_pub(certs, ready[1], "-q", "1", "-t", "t", "-m", "m")
        assert pub.returncode == 0, pub.stderr
    finally:
        code, out = stop(proc)
    assert code == 0, out


def test_an_expired_certificate_is_served_with_a_warning(
    tmp_path: Path, certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refusing to start would turn a forgotten renewal into an outage of every
    device; clients that verify will refuse it anyway, so the log says so."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from thingshub.tls import server_context

    key = serialization.load_pem_private_key((certs / "server-key.pem").read_bytes(), None)
    ca_key = serialization.load_pem_private_key((certs / "ca-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    now = dt.datetime.now(dt.UTC)
    old = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=900))
        .not_valid_after(now - dt.timedelta(days=75))
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "old.pem").write_bytes(old.public_bytes(serialization.Encoding.PEM))
    with caplog.at_level("WARNING", logger="thingshub"):
        server_context(tmp_path / "old.pem", certs / "server-key.pem")
    expired = (now - dt.timedelta(days=75)).date().isoformat()
    assert f"the TLS certificate {tmp_path / 'old.pem'} expired on {expired}" in caplog.text


def test_a_key_others_may_read_is_served_with_a_warning(
    tmp_path: Path, certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from thingshub.tls import server_context

    shared = tmp_path / "key.pem"
    shared.write_bytes((certs / "server-key.pem").read_bytes())
    shared.chmod(0o644)
    with caplog.at_level("WARNING", logger="thingshub"):
        server_context(certs / "server.pem", shared)
    assert f"the TLS key {shared} is readable by other users (mode 0o644)" in caplog.text
    caplog.clear()
    shared.chmod(0o600)
    with caplog.at_level("WARNING", logger="thingshub"):
        server_context(certs / "server.pem", shared)
    assert caplog.text == ""
