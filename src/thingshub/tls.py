"""The listeners' TLS: a server `SSLContext` from the operator's PEM files.

Rules:
- Every problem with the files is found at start, before anything listens,
  and is a `TlsError` with one sentence naming the file: missing or
  unreadable, not PEM, an encrypted key, a key that does not match the
  certificate. OpenSSL's own errors ("PEM lib") do not say which file is
  wrong, so the files are parsed with `cryptography` first, and OpenSSL then
  loads what is known to be good.
- Loading reads files: the platform calls `server_context` in a thread,
  never on the event loop.
- TLS 1.2 is the minimum: what constrained devices' TLS stacks (mbedTLS,
  wolfSSL, ESP-IDF) all speak, and nothing older is safe. Cipher suites are
  OpenSSL's defaults. No client certificates are asked for: devices log in
  with their token or password, now inside the encrypted connection.
- One context serves every TLS listener (MQTT and HTTPS): the same
  certificate names the host whichever port a client dials.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from pathlib import Path

log = logging.getLogger("thingshub")


class TlsError(Exception):
    """A certificate or key the server cannot use; the message says which and why."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None


def check_pair(cert: Path, key: Path) -> None:
    """Raise `TlsError` unless `cert` is a PEM certificate (chain, leaf first) and
    `key` the unencrypted PEM private key of its leaf; warn when it has expired, or
    when other users may read the key."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_pem = _read(cert, "certificate")
    key_pem = _read(key, "key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsError(
            f"cannot use the TLS certificate {cert}: it is not a PEM certificate"
        ) from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TlsError(
            f"cannot use the TLS key {key}: it is encrypted; give the key without a passphrase"
            " (and keep the file mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(f"cannot use the TLS key {key}: it is not a PEM private key") from None
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(der, spki) != private.public_key().public_bytes(
        der, spki
    ):
        raise TlsError(f"cannot use the TLS certificate {cert}: the key {key} does not match it")
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "the TLS key %s is readable by other users (mode %s): chmod 600 it", key, oct(mode)
        )
    expires = chain[0].not_valid_after_utc
    if expires < dt.datetime.now(dt.UTC):
        log.warning(
            "the TLS certificate %s expired on %s: clients that verify it will refuse to"
            " connect; renew it (thingshub cert create, with the same CA)",
            cert,
            expires.date().isoformat(),
        )


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The context every TLS listener serves with (blocking: reads the files)."""
    check_pair(cert, key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:  # unreachable in practice: checked above
        raise TlsError(f"cannot use the TLS certificate {cert}: {exc}") from None
    return ctx
