"""`thingshub cert create`: a private CA and a server certificate, for fleets without a public CA.

Rules:
- Four files in one directory: `ca.pem`, `ca-key.pem` (the CA), `server.pem`,
  `server-key.pem` (what `serve --tls-cert/--tls-key` use). Keys are written
  mode 0600 from the start (never readable for a moment), certificates 0644.
  Devices trust `ca.pem` and nothing else.
- An existing CA in the directory (both of its files) is used again, not
  replaced: devices in the field trust it, and renewing the server
  certificate must not mean re-provisioning every one of them. A CA is made
  only where there is none.
- Existing server files are replaced only with `force`; otherwise nothing is
  written and the error names them.
- Keys are EC P-256 (ECDSA with SHA-256): a server handshake signs with the
  key, and an ECDSA signature costs a fraction of an RSA-2048 one, which
  counts when a fleet reconnects at once; the certificates are small, which
  counts on devices with a few KiB for TLS buffers; and every TLS stack
  devices use (mbedTLS, wolfSSL, BearSSL, ESP-IDF, OpenSSL) supports it.
- Validity: the CA 10 years (it is what devices are provisioned with), the
  server certificate 825 days, the longest that Apple's and other strict
  clients accept for a server certificate. Both start an hour early, so a
  device whose clock is a little behind still accepts them.
- Names: each `--host` becomes a subjectAltName, an IP address when it
  parses as one, else a DNS name (a leading `*.` is a wildcard). Clients
  check only the subjectAltName; the subject's CN is the first host, for
  people reading the certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825
#: How long before now the certificates become valid (device clocks lag).
BACKDATE = dt.timedelta(hours=1)

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "server.pem", "server-key.pem"

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class CertError(Exception):
    """Something the user must fix; the message says what."""


@dataclass(frozen=True)
class Created:
    """What `create` wrote (paths), and whether the CA was made or reused."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    ca_created: bool
    ca_fingerprint: str
    expires: dt.datetime


def parse_host(host: str) -> x509.GeneralName:
    """A `--host` as a subjectAltName: an IP address, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    name = host.strip().lower().rstrip(".")
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 2:  # *.example.com, never *.com
        labels = labels[1:]
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise CertError(
            f"--host {host!r} is neither an IP address nor a DNS name"
            " (letters, digits and hyphens; international names in their xn-- form)"
        )
    return x509.DNSName(name)


def _write(path: Path, data: bytes, mode: int, replace: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)  # an existing file keeps its mode through O_TRUNC
        f.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """ECDSA signatures only (a TLS handshake's, or certificates' for the CA)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ThingsHub"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ThingsHub private CA {now:%Y-%m-%d}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise CertError(f"cannot read the CA in {cert_path.parent}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise CertError(
            f"{cert_path} and {key_path} are not a PEM certificate and unencrypted key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path} is not an EC key (this command signs with EC P-256 CAs)")
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise CertError(f"{key_path} is not the key of {cert_path}")
    return cert, key


def _make_server(
    names: list[x509.GeneralName],
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    first = names[0].value
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first))])
    not_after = min(now + dt.timedelta(days=SERVER_DAYS), ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def create(out: Path, hosts: list[str], *, force: bool = False) -> Created:
    """Write the CA (unless one is there) and a server certificate for `hosts` into `out`."""
    if not hosts:
        raise CertError("give at least one --host: the name or address devices connect to")
    names: list[x509.GeneralName] = []
    for host in hosts:
        name = parse_host(host)
        if name not in names:
            names.append(name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertError(f"cannot create the directory {out}: {exc.strerror}") from None
    ca_cert, ca_key = out / CA_CERT, out / CA_KEY
    server_cert, server_key = out / SERVER_CERT, out / SERVER_KEY
    if ca_cert.exists() != ca_key.exists():
        have, lack = (ca_cert, ca_key) if ca_cert.exists() else (ca_key, ca_cert)
        raise CertError(
            f"{have} exists without {lack}: restore it, or remove both to make a new CA"
        )
    existing = [p for p in (server_cert, server_key) if p.exists()]
    if existing and not force:
        raise CertError(
            f"{' and '.join(str(p) for p in existing)} already exist: give --force to replace"
            " the server certificate (the CA is kept)"
        )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ca_created = not ca_cert.exists()
    try:
        if ca_created:
            ca, key = _make_ca(now)
            _write(ca_key, _pem_key(key), 0o600, replace=False)
            _write(ca_cert, ca.public_bytes(serialization.Encoding.PEM), 0o644, replace=False)
        else:
            ca, key = _load_ca(ca_cert, ca_key)
        server, skey = _make_server(names, ca, key, now)
        _write(server_key, _pem_key(skey), 0o600, replace=force)
        _write(server_cert, server.public_bytes(serialization.Encoding.PEM), 0o644, replace=force)
    except OSError as exc:
        raise CertError(f"cannot write to {out}: {exc.strerror or exc}") from None
    fingerprint = ca.fingerprint(hashes.SHA256()).hex(":").upper()
    return Created(
        ca_cert, server_cert, server_key, ca_created, fingerprint, server.not_valid_after_utc
    )
