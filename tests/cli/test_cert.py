"""`thingshub cert create` as an operator runs it: the four files, their modes, the
names in the server certificate, a chain that verifies, and what it refuses."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

FILES = ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem")


def cert_create(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thingshub", "cert", "create", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_writes_a_ca_and_a_server_certificate_for_the_hosts(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    r = cert_create(
        "--host",
        "localhost",
        "--host",
        "iot.example.net",
        "--host",
        "10.0.0.7",
        "--host",
        "::1",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name in FILES:
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == (0o600 if name.endswith("-key.pem") else 0o644), name
    assert f"--tls-cert {out / 'server.pem'} --tls-key {out / 'server-key.pem'}" in r.stdout
    assert f"devices trust {out / 'ca.pem'}" in r.stdout

    ca, server = load(out / "ca.pem"), load(out / "server.pem")
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "iot.example.net"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("::1"),
    ]
    # The server certificate is the CA's, for serving TLS only; the CA signs nothing else.
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for cert in (ca, server):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    now = dt.datetime.now(dt.UTC)
    assert ca.not_valid_before_utc < now < server.not_valid_after_utc
    assert (server.not_valid_after_utc - now).days in (824, 825)
    assert (ca.not_valid_after_utc - now).days in (3649, 3650)


def test_refuses_to_overwrite_and_force_keeps_the_ca(tmp_path: Path) -> None:
    assert cert_create("--host", "localhost", "--out", str(tmp_path)).returncode == 0
    before = {name: (tmp_path / name).read_bytes() for name in FILES}

    again = cert_create("--host", "other.example", "--out", str(tmp_path))
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"thingshub: error: {tmp_path / 'server.pem'} and {tmp_path / 'server-key.pem'} already"
        " exist: give --force to replace the server certificate (the CA is kept)"
    )
    assert {name: (tmp_path / name).read_bytes() for name in FILES} == before

    os.chmod(tmp_path / "server-key.pem", 0o644)  # replaced with the key's own mode
    forced = cert_create("--host", "other.example", "--out", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "CA kept" in forced.stdout
    assert (tmp_path / "ca.pem").read_bytes() == before["ca.pem"]
    assert (tmp_path / "ca-key.pem").read_bytes() == before["ca-key.pem"]
    assert (tmp_path / "server-key.pem").read_bytes() != before["server-key.pem"]
    assert stat.S_IMODE((tmp_path / "server-key.pem").stat().st_mode) == 0o600
    server = load(tmp_path / "server.pem")
    server.verify_directly_issued_by(load(tmp_path / "ca.pem"))  # devices need nothing new
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["other.example"]


def test_a_new_server_certificate_from_the_existing_ca(tmp_path: Path) -> None:
    """Renewal: with the server files moved away, the CA devices trust signs again."""
    assert cert_create("--host", "localhost", "--out", str(tmp_path)).returncode == 0
    ca = (tmp_path / "ca.pem").read_bytes()
    (tmp_path / "server.pem").unlink()
    (tmp_path / "server-key.pem").unlink()
    r = cert_create("--host", "localhost", "--out", str(tmp_path))
    assert r.returncode == 0 and "CA kept" in r.stdout
    assert (tmp_path / "ca.pem").read_bytes() == ca


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "bad name"], "--host 'bad name' is neither an IP address nor a DNS name"),
        (["--host", "-x.example"], "is neither an IP address nor a DNS name"),
        (["--host", "*.com"], "is neither an IP address nor a DNS name"),
        (["--host", "bücher.example"], "xn--"),
        ([], "Missing option '--host'"),
    ],
)
def test_bad_hosts_are_refused_and_nothing_is_written(
    tmp_path: Path, args: list[str], message: str
) -> None:
    r = cert_create(*args, "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_half_present_ca_is_refused(tmp_path: Path) -> None:
    assert cert_create("--host", "localhost", "--out", str(tmp_path)).returncode == 0
    for name in ("ca-key.pem", "server.pem", "server-key.pem"):
        (tmp_path / name).unlink()
    r = cert_create("--host", "localhost", "--out", str(tmp_path))
    assert r.returncode == 2
    assert f"{tmp_path / 'ca.pem'} exists without {tmp_path / 'ca-key.pem'}" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem"]


def test_wildcards_and_duplicates(tmp_path: Path) -> None:
    r = cert_create(
        "--host",
        "*.iot.example.net",
        "--host",
        "LOCALHOST.",
        "--host",
        "localhost",
        "--out",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    sans = load(tmp_path / "server.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert sans.value.get_values_for_type(x509.DNSName) == ["*.iot.example.net", "localhost"]
